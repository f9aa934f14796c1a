//! A Python script's run: the package written into the run, `python3 -m flotilla.run`
//! started beside a socket it connects to, its requests served until it ends, and its
//! end turned into the test's verdict.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flotilla_host::process::{describe_status, Process};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;

use super::args::Args;
use super::machine_calls::MachineCalls;
use super::package;
use super::run_calls::RunCalls;
use crate::error::Error;
use crate::junit::Subtests;
use crate::log::Log;
use crate::world::World;

/// The protocol's version, in the greeting; the package checks it.
pub(crate) const PROTOCOL: u64 = 1;
/// The Python program, unless `$FLOTILLA_PYTHON` names another.
const PYTHON: &str = "python3";
/// How many of the script's last stderr lines an error quotes.
const STDERR_TAIL: usize = 20;
/// The longest request line served (a longer one is not the protocol).
const MAX_REQUEST: usize = 64 << 20;
/// How long the script may take to exit once it said how it ended.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// One request: a call of the run (or of `machine`), its arguments, and the script's
/// line that made it.
#[derive(Debug, Deserialize)]
struct Request {
    id: Value,
    call: String,
    #[serde(default)]
    machine: Option<String>,
    #[serde(default)]
    args: Map<String, Value>,
    #[serde(default)]
    at: Option<At>,
}

/// A place in the script: the innermost frame outside the package.
#[derive(Debug, Clone, Deserialize)]
struct At {
    file: PathBuf,
    line: usize,
}

/// How the script said it ended (its `end` call).
enum End {
    Passed,
    Syntax {
        line: usize,
        column: usize,
        message: String,
    },
    Failed {
        /// The file of `line`, when the client names it (an attached client).
        file: Option<PathBuf>,
        line: usize,
        message: String,
        traceback: String,
    },
}

/// Who runs against the machines: the spec's Python script, started here, or a client
/// of its own that attaches to `socket` (its relative host paths start at `base`).
pub(crate) enum Client {
    Script(PathBuf),
    Attached { socket: PathBuf, base: PathBuf },
}

/// Serves `client` against `world`'s machines until it ends or `cancel`; its subtests
/// go to `subtests`. The verdict is the test's.
pub(crate) async fn run(
    client: Client,
    world: &World,
    log: &Log,
    cancel: CancellationToken,
    subtests: Subtests,
) -> Result<(), Error> {
    match client {
        Client::Script(path) => run_script(&path, world, log, cancel, subtests).await,
        Client::Attached { socket, base } => {
            let listener = bind(&socket)?;
            log.info(&format!(
                "waiting for a Python client at {}",
                socket.display()
            ));
            let mut server = Server::new(world, None, base, log, subtests);
            let served = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => server.serve(stream, &cancel).await,
                    Err(source) => Err(Error::Io { what: format!("accepting on {}", socket.display()), source }),
                },
                _ = cancel.cancelled() => Ok(()),
            };
            let _ = std::fs::remove_file(&socket);
            served?;
            server.verdict(Exit::Client, &cancel, log)
        }
    }
}

/// Binds the Unix socket at `path` (one left by an earlier run is replaced).
fn bind(path: &Path) -> Result<UnixListener, Error> {
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path).map_err(|source| Error::Io {
        what: format!("listening on {}", path.display()),
        source,
    })
}

/// Runs the Python script at `path`: `python3 -m flotilla.run` with the package
/// written into the run.
async fn run_script(
    path: &Path,
    world: &World,
    log: &Log,
    cancel: CancellationToken,
    subtests: Subtests,
) -> Result<(), Error> {
    let script = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let dir = world.run_dir.join("python");
    let pythonpath = package::write(&dir)?;
    let socket = dir.join("run.sock");
    let listener = bind(&socket)?;
    let child = start(&script, &pythonpath, &socket, log).await?;
    let base = script.parent().unwrap_or(Path::new("/")).to_path_buf();
    let mut server = Server::new(world, Some(script.clone()), base, log, subtests);
    let served = tokio::select! {
        accepted = listener.accept() => match accepted {
            Ok((stream, _)) => server.serve(stream, &cancel).await,
            Err(source) => Err(Error::Io { what: format!("accepting on {}", socket.display()), source }),
        },
        _ = child.process.exited() => Ok(()),
        _ = cancel.cancelled() => Ok(()),
    };
    // The script said how it ended, or the connection closed: it exits now, or is
    // made to (at once when the run is cancelled).
    let grace = if cancel.is_cancelled() {
        Duration::ZERO
    } else {
        EXIT_GRACE
    };
    let (status, stderr) = child.exit(grace).await;
    served?;
    server.verdict(Exit::Process { status, stderr }, &cancel, log)
}

/// How the client went, besides what it said: a script's process exit (`None`: it
/// was stopped) and its last stderr lines, or an attached client's closed connection.
enum Exit {
    Process {
        status: Option<std::process::ExitStatus>,
        stderr: String,
    },
    Client,
}

/// Starts `python3 -m flotilla.run SCRIPT` in the script's folder; its stdout lines go to
/// the log, its stderr lines too and to its tail.
async fn start(
    script: &Path,
    pythonpath: &Path,
    socket: &Path,
    log: &Log,
) -> Result<Script, Error> {
    let python = std::env::var_os("FLOTILLA_PYTHON").unwrap_or_else(|| PYTHON.into());
    let mut command = tokio::process::Command::new(&python);
    command
        .arg("-B")
        .args(["-m", "flotilla.run"])
        .arg(script)
        .env("PYTHONPATH", pythonpath)
        .env("FLOTILLA_SOCKET", socket)
        .env("PYTHONUNBUFFERED", "1")
        .current_dir(script.parent().unwrap_or(Path::new("/")))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let (process, stdio) = Process::spawn("python3", command).await.map_err(|e| {
        let program = python.to_string_lossy();
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::Setup {
                what: format!(
                    "`{program}` is not installed: Python scripts need Python 3.9 or newer"
                ),
                hint: "install python3 (apt-get install python3), or name one in FLOTILLA_PYTHON"
                    .into(),
            }
        } else {
            Error::Io {
                what: format!("starting {program}"),
                source: e,
            }
        }
    })?;
    let stderr = Arc::new(Mutex::new(VecDeque::new()));
    let mut readers = Vec::new();
    if let Some(out) = stdio.stdout {
        readers.push(forward(out, log.clone(), None));
    }
    if let Some(err) = stdio.stderr {
        readers.push(forward(err, log.clone(), Some(stderr.clone())));
    }
    Ok(Script {
        process,
        stderr,
        readers,
    })
}

/// The script's process, and the readers of its output.
struct Script {
    process: Process,
    /// The last lines of its stderr.
    stderr: Arc<Mutex<VecDeque<String>>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Script {
    /// Waits for the script to exit, `grace` at most, else stops it; its exit status
    /// (`None`: stopped), once its output is read to the end.
    async fn exit(self, grace: Duration) -> (Option<std::process::ExitStatus>, String) {
        let status = match tokio::time::timeout(grace, self.process.exited()).await {
            Ok(status) => Some(status),
            Err(_) => {
                self.process.close(Duration::from_secs(1)).await;
                None
            }
        };
        // A child of the script may hold its output open: a second at most.
        for reader in self.readers {
            let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
        }
        (status, tail(&self.stderr))
    }
}

/// Logs each line of `stream`; with `tail`, keeps the last ones there too.
fn forward(
    stream: impl AsyncRead + Unpin + Send + 'static,
    log: Log,
    tail: Option<Arc<Mutex<VecDeque<String>>>>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            log.info(&line);
            if let Some(Ok(mut t)) = tail.as_ref().map(|t| t.lock()) {
                if t.len() == STDERR_TAIL {
                    t.pop_front();
                }
                t.push_back(line);
            }
        }
    })
}

fn tail(lines: &Mutex<VecDeque<String>>) -> String {
    lines
        .lock()
        .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
        .unwrap_or_default()
}

/// One connection's state: what its calls act on and share, and how the script ended.
struct Server {
    world: World,
    /// The script, when the run started it (an attached client names its own files).
    script: Option<PathBuf>,
    machines: MachineCalls,
    run: RunCalls,
    end: Option<End>,
    /// The place of the latest call: where the script was.
    at: Option<At>,
}

impl Server {
    fn new(
        world: &World,
        script: Option<PathBuf>,
        base: PathBuf,
        log: &Log,
        subtests: Subtests,
    ) -> Server {
        Server {
            world: world.clone(),
            script,
            machines: MachineCalls::new(base, log.dir().to_path_buf()),
            run: RunCalls::new(log.clone(), subtests),
            end: None,
            at: None,
        }
    }

    /// Greets the script, then answers its requests until it closes the connection
    /// (or `cancel`, which drops the call under way).
    async fn serve(&mut self, stream: UnixStream, cancel: &CancellationToken) -> Result<(), Error> {
        let (read, mut write) = stream.into_split();
        let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_REQUEST));
        let io = |source| Error::Io {
            what: "talking to the Python script".into(),
            source,
        };
        let hello = self.hello();
        write
            .write_all(format!("{hello}\n").as_bytes())
            .await
            .map_err(io)?;
        loop {
            let line = tokio::select! {
                line = lines.next() => line,
                _ = cancel.cancelled() => return Ok(()),
            };
            let line = match line {
                None => return Ok(()),
                Some(Ok(line)) => line,
                Some(Err(LinesCodecError::Io(source))) => return Err(io(source)),
                Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                    return Err(Error::Internal(format!(
                        "the Python script sent a request longer than {MAX_REQUEST} bytes: \
                         not the protocol"
                    )))
                }
            };
            let answer = tokio::select! {
                answer = self.answer(&line) => answer,
                _ = cancel.cancelled() => return Ok(()),
            };
            write
                .write_all(format!("{answer}\n").as_bytes())
                .await
                .map_err(io)?;
            // The client said how it ended: nothing more to serve.
            if self.end.is_some() {
                return Ok(());
            }
        }
    }

    /// The greeting: the protocol's version, the machines and their VLANs, the VLANs,
    /// the log folder.
    fn hello(&self) -> Value {
        let machines: Vec<Value> = self
            .world
            .machines
            .keys()
            .map(|name| json!({"name": name, "vlans": self.world.fabric.vlans_of(name)}))
            .collect();
        json!({
            "protocol": PROTOCOL,
            "machines": machines,
            "vlans": self.world.fabric.vlans(),
            "out_dir": self.machines.out.display().to_string(),
        })
    }

    /// The answer line to one request line.
    async fn answer(&mut self, line: &str) -> Value {
        let request: Request = match serde_json::from_str(line) {
            Ok(r) => r,
            Err(e) => return json!({"id": null, "error": format!("not a request: {e}")}),
        };
        if let Some(at) = &request.at {
            if self.script.as_ref().map_or(true, |s| *s == at.file) {
                self.at = Some(at.clone());
            }
        }
        let args = Args {
            call: &request.call,
            map: &request.args,
        };
        let result = match (&request.machine, request.call.as_str()) {
            (None, "end") => self.end(&args),
            (None, call) => Box::pin(self.run.call(&self.world, call, &args)).await,
            (Some(name), call) => match self.world.machines.get(name) {
                // Boxed: the calls' futures together are large.
                Some(m) => Box::pin(self.machines.call(m, call, &args)).await,
                None => Err(format!("no machine `{name}` in this run")),
            },
        };
        match result {
            Ok(value) => json!({"id": request.id, "value": value}),
            Err(message) => json!({"id": request.id, "error": message}),
        }
    }

    /// The script's `end`: passed, a syntax error, or a failure at a line.
    fn end(&mut self, args: &Args<'_>) -> Result<Value, String> {
        let number =
            |v: &Value, key: &str| v.get(key).and_then(Value::as_u64).unwrap_or(0) as usize;
        let text =
            |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or("").to_owned();
        let end = if let Some(s) = args.map.get("syntax").filter(|v| v.is_object()) {
            End::Syntax {
                line: number(s, "line"),
                column: number(s, "column"),
                message: text(s, "message"),
            }
        } else if let Some(e) = args.map.get("error").filter(|v| v.is_object()) {
            End::Failed {
                file: e.get("file").and_then(Value::as_str).map(PathBuf::from),
                line: number(e, "line"),
                message: text(e, "message"),
                traceback: text(e, "traceback"),
            }
        } else {
            End::Passed
        };
        self.end = Some(end);
        Ok(Value::Null)
    }

    /// The test's verdict from how the script ended and how its process exited
    /// (`None`: it was stopped).
    fn verdict(mut self, exit: Exit, cancel: &CancellationToken, log: &Log) -> Result<(), Error> {
        // The script's file, else (an attached client) the file of its latest call.
        let file = self
            .script
            .clone()
            .or_else(|| self.at.as_ref().map(|a| a.file.clone()))
            .unwrap_or_default();
        let at_line = self.at.as_ref().map_or(0, |a| a.line);
        let located = |file: PathBuf, line: usize, message: String| Error::Script {
            column: first_column(&file, line),
            file,
            line,
            message,
        };
        let passed = match &exit {
            Exit::Process { status, .. } => status.is_some_and(|s| s.success()),
            Exit::Client => true,
        };
        match self.end.take() {
            _ if cancel.is_cancelled() => Err(located(file, at_line, "cancelled".into())),
            Some(End::Passed) if passed => Ok(()),
            Some(End::Syntax {
                line,
                column,
                message,
            }) => Err(Error::ScriptSyntax {
                file,
                line,
                column,
                message,
            }),
            Some(End::Failed {
                file: failed_in,
                line,
                message,
                traceback,
            }) => {
                if !traceback.is_empty() {
                    log.file_only(&format!(
                        "Python traceback (the script's frames):\n{traceback}"
                    ));
                }
                self.run.end_open(&message);
                Err(located(failed_in.unwrap_or(file), line, message))
            }
            _ => {
                let message = match exit {
                    Exit::Process { status, stderr } => {
                        let how = status.map_or("was stopped".to_owned(), describe_status);
                        let mut message =
                            format!("the Python script ended without a verdict: python3 {how}");
                        if !stderr.is_empty() {
                            message.push_str(&format!("; its last lines on stderr:\n{stderr}"));
                        }
                        message
                    }
                    Exit::Client => {
                        "the Python client closed its connection without a verdict".to_owned()
                    }
                };
                self.run.end_open(&message);
                Err(located(file, at_line, message))
            }
        }
    }
}

/// The column of the first character of `line` that is not a blank (1 when unknown).
fn first_column(file: &Path, line: usize) -> usize {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| s.lines().nth(line.wrapping_sub(1)).map(str::to_owned))
        .map_or(1, |l| l.len() - l.trim_start().len() + 1)
}
