//! A client for the management sockets of `vde_switch` and `wirefilter`.
//!
//! A VLAN is partitioned by moving its switch's ports between the switch's internal
//! 802.1Q VLANs: frames never cross between them. Port `n` belongs to machine number
//! `n` (see [`crate::Nic::port`]). A link is impaired by its wirefilter's settings.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Error;

/// vde_switch prompts `vde$ `, wirefilter `VDEwf$ `.
const PROMPT: &[u8] = b"$ ";

/// A connection to one switch's management socket.
#[derive(Debug)]
pub struct Mgmt {
    path: PathBuf,
    stream: UnixStream,
}

impl Mgmt {
    /// Connects and reads the banner.
    pub fn connect(path: &Path) -> Result<Mgmt, Error> {
        let io = |doing: &str| {
            let doing = doing.to_owned();
            let path = path.to_path_buf();
            move |source| Error::Mgmt {
                path,
                doing,
                source,
            }
        };
        let stream = UnixStream::connect(path).map_err(io("connecting"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(io("setting a timeout"))?;
        let mut m = Mgmt {
            path: path.to_path_buf(),
            stream,
        };
        m.read_reply("reading the banner")?;
        Ok(m)
    }

    fn read_reply(&mut self, doing: &str) -> Result<String, Error> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while !out.ends_with(PROMPT) {
            let n = self.stream.read(&mut buf).map_err(|source| Error::Mgmt {
                path: self.path.clone(),
                doing: doing.to_owned(),
                source,
            })?;
            if n == 0 {
                return Err(Error::Mgmt {
                    path: self.path.clone(),
                    doing: doing.to_owned(),
                    source: std::io::ErrorKind::UnexpectedEof.into(),
                });
            }
            out.extend_from_slice(&buf[..n]);
            if out.len() > 1 << 20 {
                break;
            }
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Runs one command; fails unless the switch answers `1000 Success`.
    pub fn command(&mut self, command: &str) -> Result<String, Error> {
        self.stream
            .write_all(format!("{command}\n").as_bytes())
            .map_err(|source| Error::Mgmt {
                path: self.path.clone(),
                doing: format!("sending `{command}`"),
                source,
            })?;
        let reply = self.read_reply(&format!("reading the answer to `{command}`"))?;
        let status = reply
            .lines()
            .find(|l| {
                l.len() >= 4
                    && l.as_bytes()[..4].iter().all(u8::is_ascii_digit)
                    && l.starts_with('1')
            })
            .unwrap_or("")
            .to_owned();
        if status.starts_with("1000") {
            Ok(reply)
        } else {
            Err(Error::MgmtRefused {
                path: self.path.clone(),
                command: command.to_owned(),
                answer: status,
            })
        }
    }

    /// Puts each group of ports into its own switch VLAN (group 0 stays on VLAN 0).
    pub fn partition(&mut self, groups: &[Vec<u16>]) -> Result<(), Error> {
        for (i, ports) in groups.iter().enumerate() {
            let vid = i as u16 * 10;
            if vid != 0 {
                // Creating an existing VLAN fails harmlessly; ignore that answer.
                let _ = self.command(&format!("vlan/create {vid}"));
            }
            for port in ports {
                self.command(&format!("port/setvlan {port} {vid}"))?;
            }
        }
        Ok(())
    }

    /// Applies an impairment (wirefilter management socket).
    pub fn impair(&mut self, impairment: &crate::impairment::Impairment) -> Result<(), Error> {
        for command in impairment.commands() {
            self.command(&command)?;
        }
        Ok(())
    }

    /// Puts the ports back on VLAN 0.
    pub fn heal(&mut self, ports: &[u16]) -> Result<(), Error> {
        for port in ports {
            self.command(&format!("port/setvlan {port} 0"))?;
        }
        Ok(())
    }
}
