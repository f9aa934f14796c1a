//! A small interactive QMP shell.
//!
//! ```text
//! cargo run -p flotilla-qmp --example qmp-shell -- /tmp/vm/qmp.sock
//! (qmp) query-status
//! {"running":false,"singlestep":false,"status":"prelaunch"}
//! (qmp) device_del {"id":"nic1"}
//! error: qmp: `device_del` failed: DeviceNotFound: Device 'nic1' not found
//! ```
//!
//! Each line is a command name optionally followed by a JSON object of
//! arguments. Events are printed as they arrive. `--agent` speaks the guest
//! agent dialect instead (e.g. `guest-info`).

use std::io::{BufRead, Write};
use std::time::Duration;

use flotilla_qmp::qga::GuestAgent;
use flotilla_qmp::Client;

enum Peer {
    Qmp(Client),
    Agent(GuestAgent),
}

#[tokio::main]
async fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let agent = args.iter().any(|a| a == "--agent");
    args.retain(|a| a != "--agent");
    let [path] = args.as_slice() else {
        eprintln!("usage: qmp-shell [--agent] SOCKET");
        std::process::exit(2);
    };
    let peer = if agent {
        match GuestAgent::connect_unix(path).await {
            Ok(a) => Peer::Agent(a.with_timeout(Duration::from_secs(10))),
            Err(e) => fail(&e),
        }
    } else {
        match Client::connect_unix_retry(path, Duration::from_secs(5)).await {
            Ok(c) => {
                let v = &c.greeting().version;
                println!("connected to qemu {} ({})", v.qemu, v.package);
                let mut events = c.subscribe();
                tokio::spawn(async move {
                    while let Some(item) = events.recv().await {
                        match item {
                            Ok(e) => println!(
                                "\nevent {} {} @{}.{:06}",
                                e.event, e.data, e.timestamp.seconds, e.timestamp.microseconds
                            ),
                            Err(lagged) => println!("\n{lagged}"),
                        }
                    }
                });
                Peer::Qmp(c)
            }
            Err(e) => fail(&e),
        }
    };

    // Standard input is read on a thread: the runtime here has no async stdin.
    let (tx, mut lines) = tokio::sync::mpsc::channel::<String>(1);
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        prompt();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });

    while let Some(line) = lines.recv().await {
        let line = line.trim();
        if line.is_empty() {
            prompt();
            continue;
        }
        if line == "quit-shell" || line == "exit" {
            break;
        }
        let (command, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let arguments = match rest.trim() {
            "" => None,
            json => match serde_json::from_str(json) {
                Ok(v) => Some(v),
                Err(e) => {
                    println!("error: arguments are not json: {e}");
                    prompt();
                    continue;
                }
            },
        };
        let result = match &peer {
            Peer::Qmp(c) => {
                c.execute_raw_timeout(command, arguments, Duration::from_secs(30))
                    .await
            }
            Peer::Agent(a) => a.execute_raw(command, arguments).await,
        };
        match result {
            Ok(value) => println!("{value}"),
            Err(e) => print_error(&e),
        }
        if let Peer::Qmp(c) = &peer {
            if c.is_closed() {
                println!("connection closed");
                break;
            }
        }
        prompt();
    }
}

fn prompt() {
    print!("(qmp) ");
    let _ = std::io::stdout().flush();
}

fn print_error(e: &dyn std::error::Error) {
    println!("error: {e}");
    let mut source = e.source();
    while let Some(cause) = source {
        println!("  caused by: {cause}");
        source = cause.source();
    }
}

fn fail(e: &flotilla_qmp::Error) -> ! {
    print_error(e);
    std::process::exit(1);
}
