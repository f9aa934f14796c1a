//! `--list`: a suite's tests, as lines or as JSON with their machines and cost (for
//! other schedulers), read from each spec's plan.

use super::budget::Cost;
use super::discover::SuiteTest;
use crate::error::printed;
use crate::plan::Plan;

/// A line per test: its id.
pub fn list_text(tests: &[SuiteTest]) -> String {
    tests.iter().map(|t| format!("{}\n", t.id)).collect()
}

/// A JSON array: per test its id, spec file, name, log folder name, machines (name,
/// memory in MiB, CPUs) and cost (`memory_mib`, with QEMU's overhead, and `cpus`), or
/// `error` for a spec that cannot be read.
pub fn list_json(tests: &[SuiteTest]) -> String {
    let list: Vec<serde_json::Value> = tests
        .iter()
        .map(|t| {
            let mut entry = serde_json::json!({
                "id": t.id,
                "path": t.path.display().to_string(),
                "folder": t.folder,
            });
            match &t.spec {
                Ok(spec) => {
                    let plan = Plan::of(spec);
                    let cost = Cost::of_plan(&plan);
                    entry["name"] = plan.name.clone().into();
                    entry["machines"] = plan
                        .machines
                        .iter()
                        .map(|(name, m)| {
                            serde_json::json!({"name": name, "memory_mib": m.memory_mib, "cpus": m.cpus})
                        })
                        .collect();
                    entry["memory_mib"] = cost.memory_mib.into();
                    entry["cpus"] = cost.cpus.into();
                }
                Err(e) => entry["error"] = printed(e).into(),
            }
            entry
        })
        .collect();
    let mut text = serde_json::to_string_pretty(&list).unwrap_or_else(|_| "[]".into());
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Spec;

    #[test]
    fn json_names_machines_and_cost() {
        let spec = Spec::parse(
            "x/flotilla.toml".as_ref(),
            "name = \"x\"\n[machines.a]\nmemory = 300\ncpus = 2\n",
        )
        .unwrap();
        let tests = [SuiteTest {
            id: "x".into(),
            path: "x/flotilla.toml".into(),
            folder: "x".into(),
            spec: Ok(spec),
        }];
        assert_eq!(list_text(&tests), "x\n");
        let json: serde_json::Value = serde_json::from_str(&list_json(&tests)).unwrap();
        assert_eq!(json[0]["machines"][0]["name"], "a");
        assert_eq!(json[0]["machines"][0]["memory_mib"], 300);
        assert_eq!(json[0]["cpus"], 2);
        assert_eq!(
            json[0]["memory_mib"],
            300 + super::super::budget::QEMU_OVERHEAD_MIB
        );
    }
}
