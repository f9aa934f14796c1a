//! A small synchronous dev client for the agent, talking to QEMU's chardev socket.
//!
//! ```text
//! agent-client SOCK run PROG ARGS...     run argv, stream output, print the exit status
//! agent-client SOCK sh SCRIPT            run /bin/sh -c SCRIPT
//! agent-client SOCK stdin SCRIPT         like sh, feeding this process's stdin to it
//! agent-client SOCK kill-after MS SCRIPT start SCRIPT, send Kill after MS milliseconds
//! agent-client SOCK timeout MS SCRIPT   run SCRIPT with timeout_ms = MS
//! agent-client SOCK par N SCRIPT         run N copies of SCRIPT at once (streams 1..=N)
//! agent-client SOCK garbage              send garbage and a bad frame, print the replies
//! agent-client SOCK bench N              time N round trips of `true`
//! agent-client SOCK push LOCAL REMOTE    copy a file into the guest (mode preserved)
//! agent-client SOCK pull REMOTE LOCAL    copy a file out of the guest (mode preserved)
//! agent-client SOCK shutdown [reboot]    power off (or reboot) the guest
//! ```
//!
//! Exits with the command's exit code (128 + signal when killed).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use flotilla_agent::proto::{
    decode, Command, Decoded, ErrorBody, ExecRequest, ExitStatus, FileDone, FileInfo, FilePull,
    FilePush, Frame, Hello, HelloReply, Kind, ShutdownRequest, MAX_CHUNK, PROTOCOL_VERSION,
};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Conn {
    sock: UnixStream,
    buf: Vec<u8>,
}

impl Conn {
    fn connect(path: &str) -> Result<Conn> {
        let sock = UnixStream::connect(path).map_err(|e| format!("connecting to {path}: {e}"))?;
        Ok(Conn {
            sock,
            buf: Vec::new(),
        })
    }

    fn send(&mut self, frame: &Frame) -> Result<()> {
        self.sock.write_all(&frame.to_bytes())?;
        Ok(())
    }

    fn recv(&mut self) -> Result<Frame> {
        loop {
            match decode(&self.buf) {
                Decoded::Frame(f, n) => {
                    self.buf.drain(..n);
                    return Ok(f);
                }
                Decoded::Skip(n) => {
                    eprintln!("client: skipping {n} garbage bytes");
                    self.buf.drain(..n);
                }
                Decoded::Invalid {
                    consumed, error, ..
                } => {
                    eprintln!("client: invalid frame: {error}");
                    self.buf.drain(..consumed);
                }
                Decoded::Incomplete => {
                    let mut chunk = [0u8; 65536];
                    let n = self.sock.read(&mut chunk)?;
                    if n == 0 {
                        return Err("connection closed".into());
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }

    fn hello(&mut self) -> Result<HelloReply> {
        let t = Instant::now();
        self.send(&Frame::json(
            Kind::Hello,
            0,
            &Hello {
                version: PROTOCOL_VERSION,
            },
        ))?;
        loop {
            let f = self.recv()?;
            if f.kind == Kind::HelloReply {
                let r: HelloReply = f.parse_json()?;
                eprintln!(
                    "client: hello: agent {} proto {} boot_ms {} ({:?})",
                    r.agent_version,
                    r.version,
                    r.boot_ms,
                    t.elapsed()
                );
                return Ok(r);
            }
            eprintln!(
                "client: ignoring {:?} on stream {} before hello",
                f.kind, f.stream
            );
        }
    }

    /// Run a command on `stream`, printing output; returns its status.
    fn run(
        &mut self,
        stream: u32,
        command: Command,
        stdin: Option<Vec<u8>>,
        kill_after: Option<Duration>,
        quiet: bool,
    ) -> Result<ExitStatus> {
        let req = ExecRequest {
            command,
            env: vec![("FLOTILLA".into(), "1".into())],
            cwd: None,
            stdin: stdin.is_some(),
            timeout_ms: None,
            pty: None,
        };
        self.run_req(stream, req, stdin, kill_after, quiet)
    }

    fn run_req(
        &mut self,
        stream: u32,
        req: ExecRequest,
        stdin: Option<Vec<u8>>,
        kill_after: Option<Duration>,
        quiet: bool,
    ) -> Result<ExitStatus> {
        self.send(&Frame::json(Kind::Exec, stream, &req))?;
        if let Some(data) = stdin {
            for chunk in data.chunks(MAX_CHUNK) {
                self.send(&Frame::new(Kind::Stdin, stream, chunk.to_vec()))?;
            }
            self.send(&Frame::new(Kind::StdinClose, stream, Vec::new()))?;
        }
        if let Some(after) = kill_after {
            std::thread::sleep(after);
            self.send(&Frame::new(Kind::Kill, stream, Vec::new()))?;
        }
        let start = Instant::now();
        loop {
            let f = self.recv()?;
            if f.stream != stream {
                eprintln!("client: {:?} on other stream {}", f.kind, f.stream);
                continue;
            }
            match f.kind {
                Kind::Stdout if !quiet => {
                    eprint!("[{:>6} ms] ", start.elapsed().as_millis());
                    std::io::stdout().write_all(&f.payload)?;
                    std::io::stdout().flush()?;
                }
                Kind::Stderr if !quiet => {
                    eprint!("[{:>6} ms] stderr: ", start.elapsed().as_millis());
                    std::io::stderr().write_all(&f.payload)?;
                }
                Kind::Stdout | Kind::Stderr => {}
                Kind::Exit => return Ok(f.parse_json()?),
                Kind::Error => {
                    let e: ErrorBody = f.parse_json()?;
                    return Err(format!("agent error: {}", e.message).into());
                }
                other => eprintln!("client: unexpected {other:?}"),
            }
        }
    }
}

fn exit_code(status: &ExitStatus) -> i32 {
    eprintln!("client: exit status {status:?}");
    status
        .code
        .unwrap_or_else(|| 128 + status.signal.unwrap_or(0))
}

fn main() {
    match real_main() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("agent-client: {e}");
            std::process::exit(1);
        }
    }
}

fn real_main() -> Result<i32> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (sock, cmd, rest) = match args.as_slice() {
        [sock, cmd, rest @ ..] => (*sock, *cmd, rest),
        _ => return Err("usage: agent-client SOCK (run|sh|stdin|kill-after|garbage|bench|push|pull|shutdown) ...".into()),
    };
    let mut c = Conn::connect(sock)?;
    c.hello()?;
    let owned = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    match (cmd, rest) {
        ("run", argv) => {
            let st = c.run(1, Command::Argv(owned(argv)), None, None, false)?;
            Ok(exit_code(&st))
        }
        ("sh", [script]) => {
            let st = c.run(1, Command::Shell(script.to_string()), None, None, false)?;
            Ok(exit_code(&st))
        }
        ("stdin", [script]) => {
            let mut data = Vec::new();
            std::io::stdin().read_to_end(&mut data)?;
            let st = c.run(
                1,
                Command::Shell(script.to_string()),
                Some(data),
                None,
                false,
            )?;
            Ok(exit_code(&st))
        }
        ("kill-after", [ms, script]) => {
            let after = Duration::from_millis(ms.parse()?);
            let st = c.run(
                1,
                Command::Shell(script.to_string()),
                None,
                Some(after),
                false,
            )?;
            Ok(exit_code(&st))
        }
        ("timeout", [ms, script]) => {
            let req = ExecRequest {
                command: Command::Shell(script.to_string()),
                env: Vec::new(),
                cwd: None,
                stdin: false,
                timeout_ms: Some(ms.parse()?),
                pty: None,
            };
            let st = c.run_req(1, req, None, None, false)?;
            Ok(exit_code(&st))
        }
        ("par", [n, script]) => {
            let n: u32 = n.parse()?;
            let t = Instant::now();
            for stream in 1..=n {
                let req = ExecRequest {
                    command: Command::Shell(script.to_string()),
                    env: vec![("N".into(), stream.to_string())],
                    cwd: None,
                    stdin: false,
                    timeout_ms: None,
                    pty: None,
                };
                c.send(&Frame::json(Kind::Exec, stream, &req))?;
            }
            let mut left = n;
            while left > 0 {
                let f = c.recv()?;
                match f.kind {
                    Kind::Stdout => {
                        print!("[{}] {}", f.stream, String::from_utf8_lossy(&f.payload))
                    }
                    Kind::Exit => {
                        left -= 1;
                        let st: ExitStatus = f.parse_json()?;
                        println!("[{}] exit {:?} at {:?}", f.stream, st.code, t.elapsed());
                    }
                    other => println!("[{}] {other:?}", f.stream),
                }
            }
            Ok(0)
        }
        ("garbage", []) => {
            c.sock.write_all(b"this is not a frame")?;
            let mut bad = Frame::new(Kind::Stdin, 9, b"xyz".to_vec()).to_bytes();
            bad[4] = 0x66;
            c.sock.write_all(&bad)?;
            let mut huge = Frame::new(Kind::Stdin, 10, Vec::new()).to_bytes();
            huge[12..16].copy_from_slice(&u32::MAX.to_le_bytes());
            c.sock.write_all(&huge)?;
            c.send(&Frame::new(Kind::Exec, 11, b"{not json".to_vec()))?;
            for _ in 0..4 {
                let f = c.recv()?;
                let e: ErrorBody = f.parse_json()?;
                println!("error on stream {}: {}", f.stream, e.message);
            }
            let st = c.run(
                1,
                Command::Argv(vec!["echo".into(), "still alive".into()]),
                None,
                None,
                false,
            )?;
            Ok(exit_code(&st))
        }
        ("bench", [n]) => {
            let n: u32 = n.parse()?;
            let mut times = Vec::new();
            for i in 0..n {
                let t = Instant::now();
                let st = c.run(i + 1, Command::Argv(vec!["true".into()]), None, None, true)?;
                if st.code != Some(0) {
                    return Err(format!("`true` failed: {st:?}").into());
                }
                times.push(t.elapsed());
            }
            times.sort();
            let total: Duration = times.iter().sum();
            println!(
                "exec round trip of `true` x{n}: mean {:.2} ms, median {:.2} ms, min {:.2} ms, max {:.2} ms",
                total.as_secs_f64() * 1000.0 / f64::from(n),
                times[times.len() / 2].as_secs_f64() * 1000.0,
                times[0].as_secs_f64() * 1000.0,
                times[times.len() - 1].as_secs_f64() * 1000.0,
            );
            Ok(0)
        }
        ("push", [local, remote]) => {
            let t = Instant::now();
            let mut file = std::fs::File::open(local)?;
            let mode = file.metadata()?.permissions().mode() & 0o7777;
            let stream = 1;
            c.send(&Frame::json(
                Kind::FilePush,
                stream,
                &FilePush {
                    path: remote.to_string(),
                    mode,
                    create_dirs: true,
                },
            ))?;
            let mut buf = vec![0u8; MAX_CHUNK];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                c.send(&Frame::new(Kind::FileData, stream, buf[..n].to_vec()))?;
            }
            c.send(&Frame::new(Kind::FileEnd, stream, Vec::new()))?;
            let f = c.recv()?;
            match f.kind {
                Kind::FileDone => {
                    let d: FileDone = f.parse_json()?;
                    println!(
                        "pushed {} bytes (mode {mode:o}) in {:?}",
                        d.size,
                        t.elapsed()
                    );
                    Ok(0)
                }
                _ => Err(format!("push failed: {}", String::from_utf8_lossy(&f.payload)).into()),
            }
        }
        ("pull", [remote, local]) => {
            let t = Instant::now();
            let stream = 1;
            c.send(&Frame::json(
                Kind::FilePull,
                stream,
                &FilePull {
                    path: remote.to_string(),
                },
            ))?;
            let f = c.recv()?;
            if f.kind != Kind::FileInfo {
                return Err(format!("pull failed: {}", String::from_utf8_lossy(&f.payload)).into());
            }
            let info: FileInfo = f.parse_json()?;
            let mut out = std::fs::File::create(local)?;
            let mut got = 0u64;
            loop {
                let f = c.recv()?;
                match f.kind {
                    Kind::FileData => {
                        got += f.payload.len() as u64;
                        out.write_all(&f.payload)?;
                    }
                    Kind::FileEnd => break,
                    _ => {
                        return Err(
                            format!("pull failed: {}", String::from_utf8_lossy(&f.payload)).into(),
                        )
                    }
                }
            }
            out.set_permissions(std::fs::Permissions::from_mode(info.mode))?;
            println!(
                "pulled {got} bytes (announced {}, mode {:o}) in {:?}",
                info.size,
                info.mode,
                t.elapsed()
            );
            Ok(0)
        }
        ("shutdown", rest) => {
            let reboot = rest == ["reboot"];
            c.send(&Frame::json(Kind::Shutdown, 0, &ShutdownRequest { reboot }))?;
            let f = c.recv()?;
            println!("reply: {:?}", f.kind);
            Ok(0)
        }
        _ => Err(format!("unknown command {cmd:?} {rest:?}").into()),
    }
}
