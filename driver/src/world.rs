//! What a test script acts on, in Rhai or in Python: a network's machines, its fabric,
//! its polling conditions, and the run's private folder.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::conditions::Conditions;
use crate::error::Error;
use crate::fabric::Fabric;
use crate::fleet::Fleet;
use crate::machine::Machine;

/// What scripts act on in a [`Fleet`].
#[derive(Clone)]
pub(crate) struct World {
    pub machines: BTreeMap<String, Arc<Machine>>,
    pub fabric: Arc<Fabric>,
    pub conditions: Arc<Conditions>,
    /// The run's private folder (sockets; a Python script's package and socket).
    pub run_dir: PathBuf,
}

impl World {
    /// What scripts act on in `fleet`.
    pub fn of(fleet: &Fleet) -> World {
        World {
            machines: fleet.machines().clone(),
            fabric: fleet.fabric.clone(),
            conditions: fleet.conditions.clone(),
            run_dir: fleet.run_dir().to_path_buf(),
        }
    }

    /// Boots every machine, in parallel (a script's `start_all`).
    pub async fn start_all(&self) -> Result<(), Error> {
        crate::machine::start_all(&self.machines).await
    }
}
