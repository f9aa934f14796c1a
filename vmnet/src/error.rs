//! The crate's error type.

use std::path::PathBuf;

use crate::addr::{MAX_MACHINES, MAX_VLAN};

/// What is wrong with a network description.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("machine `{machine}`: VLAN {vlan} is out of range (1 to {MAX_VLAN})")]
    VlanRange { machine: String, vlan: u32 },
    #[error("machine `{machine}`: VLAN {vlan} is listed twice")]
    VlanTwice { machine: String, vlan: u8 },
    #[error("{0} machines is more than one network can address ({MAX_MACHINES})")]
    TooManyMachines(usize),
    #[error("no machine `{0}` in the network")]
    NoSuchMachine(String),
    #[error("machine `{machine}` is not on VLAN {vlan}")]
    NotOnVlan { machine: String, vlan: u8 },
    #[error("finding a free port on 127.0.0.1")]
    FreePort(#[source] std::io::Error),
    #[error("vde_switch management socket {path}: {doing}")]
    Mgmt {
        path: PathBuf,
        doing: String,
        #[source]
        source: std::io::Error,
    },
    #[error("vde_switch management socket {path}: `{command}` answered `{answer}`")]
    MgmtRefused {
        path: PathBuf,
        command: String,
        answer: String,
    },
}
