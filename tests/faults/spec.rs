//! The test a run is made of: three machines on VLAN 1 and a script that works them in
//! rounds (commands, pings across the VLAN, copies), with the fault's own lines in the
//! round it fires in. Written into a folder of its own with the files the script copies.

use std::path::Path;

use crate::fault::{Fault, ROUNDS};

/// The test's limit; a run's bound is this plus `SLACK_SECS`.
pub const TIMEOUT_SECS: u64 = 60;
pub const SLACK_SECS: u64 = 15;

const SPEC: &str = "\
name = \"faults\"
script = \"test.rhai\"
boot_timeout = 45

[machines.ash]
memory = 256

[machines.birch]
init = \"agent\"

[machines.cedar]
init = \"systemd\"
";

const FETCH: &str = "\
#!/bin/bash
# Fetches ash's /big (192.168.1.1) over HTTP/1.0 with bash's /dev/tcp (no wget in
# the image).
exec 3<>/dev/tcp/192.168.1.1/8080
printf 'GET /big HTTP/1.0\\r\\n\\r\\n' >&3
cat <&3 > /tmp/got
";

/// The plain test's limit: it boots the machines cold and saves their states (a trixie
/// systemd machine finishes its boot in about 40 s on a loaded host), unbounded by
/// the runs' bound.
pub const WARM_UP_TIMEOUT_SECS: u64 = 600;

/// Writes the spec, script and data files for `fault` (none: the plain test, whose
/// limit is [`WARM_UP_TIMEOUT_SECS`]) into `dir`.
pub fn write(dir: &Path, fault: Option<&Fault>) {
    std::fs::create_dir_all(dir).unwrap();
    let mut script = format!(
        "// Fault campaign: {}\nstart_all();\n\
         // A restored systemd machine finishes its boot, which empties /tmp.\n\
         cedar.succeed(\"systemctl is-system-running --wait || true\", 90);\n\
         log(\"FAULT-CUE\");\nfor round in 0..{ROUNDS} {{\n",
        fault.map(Fault::describe).unwrap_or_else(|| "none".into())
    );
    if let Some(f) = fault {
        let lines = f.in_script();
        if !lines.is_empty() {
            script.push_str(&format!("    if round == {} {{\n", f.round));
            for l in lines.lines() {
                script.push_str(&format!("        {l}\n"));
            }
            script.push_str("    }\n");
        }
    }
    script.push_str(
        "    ash.succeed(\"cat /proc/loadavg\", 10);\n\
         \x20   birch.succeed(\"head -c 4096 /dev/urandom | md5sum\", 10);\n\
         \x20   cedar.succeed(\"uptime\", 10);\n\
         \x20   birch.copy_to(\"payload.bin\", \"/tmp/payload\");\n\
         \x20   cedar.copy_to(\"payload.bin\", \"/tmp/payload\");\n\
         \x20   ash.copy_to(\"payload.bin\", \"/tmp/payload\");\n\
         \x20   // Not fatal: a fault of another machine or of the VLAN must be named by\n\
         \x20   // the next call, not by this guest's failed ping.\n\
         \x20   let p = ash.execute(\"ping -c1 -W2 birch && ping -c1 -W2 cedar; sleep 0.3\", 10);\n\
         \x20   log(`ping: ${p.status}`);\n\
         }\nlog(\"FAULT-DONE\");\n\
         // Every machine once more: a machine that died after its last round is named.\n\
         ash.succeed(\"true\", 10);\nbirch.succeed(\"true\", 10);\ncedar.succeed(\"true\", 10);\n\
         ash.wait_until_succeeds(\"ping -c1 -W2 birch && ping -c1 -W2 cedar\", 20);\n",
    );
    std::fs::write(
        dir.join("flotilla.toml"),
        format!(
            "timeout = {}\n{SPEC}",
            if fault.is_some() {
                TIMEOUT_SECS
            } else {
                WARM_UP_TIMEOUT_SECS
            }
        ),
    )
    .unwrap();
    std::fs::write(dir.join("test.rhai"), script).unwrap();
    std::fs::write(dir.join("fetch.sh"), FETCH).unwrap();
    let payload: Vec<u8> = (0..64 * 1024u32).map(|i| (i * 7 + i / 251) as u8).collect();
    std::fs::write(dir.join("payload.bin"), &payload).unwrap();
    std::fs::write(dir.join("big.bin"), payload.repeat(16)).unwrap();
}
