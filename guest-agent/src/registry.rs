//! The commands running on behalf of the host, by stream id.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};

use crate::sys;
use crate::threads::lock;

/// One running command.
pub struct Cmd {
    pub pid: i32,
    /// The session that started it.
    pub gen: u64,
    pub stdin: Option<Sender<Vec<u8>>>,
    /// The master side of the command's terminal, if it runs on one.
    pub pty: Option<OwnedFd>,
}

/// Running commands by stream id.
#[derive(Clone, Default)]
pub struct Registry {
    cmds: Arc<Mutex<HashMap<u32, Cmd>>>,
}

impl Registry {
    /// The table, locked.
    pub fn cmds(&self) -> MutexGuard<'_, HashMap<u32, Cmd>> {
        lock(&self.cmds)
    }

    pub fn remove(&self, stream: u32, gen: u64) {
        let mut cmds = self.cmds();
        if cmds.get(&stream).is_some_and(|c| c.gen == gen) {
            cmds.remove(&stream);
        }
    }

    pub fn kill_all(&self) {
        for (_, cmd) in self.cmds().drain() {
            sys::kill_group(cmd.pid);
        }
    }

    /// Kill the commands running on a terminal: nobody is left to type into them.
    pub fn kill_terminals(&self) {
        for cmd in self.cmds().values().filter(|c| c.pty.is_some()) {
            sys::kill_group(cmd.pid);
        }
    }
}
