//! The calls that act on the whole run (requests without `"machine"`): `start_all`,
//! `log`, subtests, and the network's `partition`, `heal`, `capture_vlan`,
//! `http_get`.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{json, Value};

use super::args::Args;
use crate::error::chain_inline;
use crate::junit::{begin_subtest, OpenSubtest, SubtestStack, Subtests};
use crate::log::Log;
use crate::world::World;

/// What a connection's run-wide calls share: the subtests under way, by token.
pub(super) struct RunCalls {
    log: Log,
    subtests: Subtests,
    stack: SubtestStack,
    open: HashMap<u64, OpenSubtest>,
    next: u64,
}

type Reply = Result<Value, String>;

impl RunCalls {
    pub fn new(log: Log, subtests: Subtests) -> RunCalls {
        RunCalls {
            log,
            subtests,
            stack: SubtestStack::default(),
            open: HashMap::new(),
            next: 0,
        }
    }

    pub async fn call(&mut self, world: &World, name: &str, args: &Args<'_>) -> Reply {
        match name {
            "start_all" => world
                .start_all()
                .await
                .map(|()| Value::Null)
                .map_err(|e| chain_inline(&e)),
            "log" => {
                self.log.info(args.str("text")?);
                Ok(Value::Null)
            }
            "subtest_begin" => {
                let open = begin_subtest(&self.log, &self.stack, &self.subtests, args.str("name")?);
                self.next += 1;
                self.open.insert(self.next, open);
                Ok(json!(self.next))
            }
            "subtest_end" => {
                let token = args.u64("token")?;
                let open = self
                    .open
                    .remove(&token)
                    .ok_or_else(|| format!("subtest_end: no subtest {token} is under way"))?;
                let failure = match args.map.get("failure") {
                    None | Some(Value::Null) => None,
                    Some(_) => Some(args.str("failure")?.to_owned()),
                };
                open.end(failure);
                Ok(Value::Null)
            }
            "partition" => {
                let groups: Vec<Vec<String>> = args
                    .map
                    .get("groups")
                    .and_then(|g| serde_json::from_value(g.clone()).ok())
                    .ok_or("partition: `groups` must be lists of machine names")?;
                let vlan = args.vlan()?;
                world
                    .fabric
                    .partition(vlan, &groups)
                    .await
                    .map_err(|e| chain_inline(&e))?;
                Ok(Value::Null)
            }
            "heal" => {
                world
                    .fabric
                    .heal(args.vlan()?)
                    .await
                    .map_err(|e| chain_inline(&e))?;
                Ok(Value::Null)
            }
            "capture_vlan" => {
                let vlan = args.vlan()?;
                let path = self.log.dir().join(format!("vlan{vlan}.pcap"));
                world
                    .fabric
                    .capture_vlan(vlan, &path)
                    .await
                    .map_err(|e| chain_inline(&e))?;
                Ok(json!(path.display().to_string()))
            }
            "http_get" => crate::http::get(args.str("url")?, Duration::from_secs(30))
                .await
                .map(Value::String)
                .map_err(|e| chain_inline(&e)),
            other => Err(format!("no call `{other}`")),
        }
    }

    /// Ends the subtests a script left open (it failed inside them), innermost first.
    pub fn end_open(&mut self, failure: &str) {
        let mut open: Vec<(u64, OpenSubtest)> = self.open.drain().collect();
        open.sort_by_key(|(token, _)| std::cmp::Reverse(*token));
        for (_, subtest) in open {
            subtest.end(Some(failure.to_owned()));
        }
    }
}
