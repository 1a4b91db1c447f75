//! The demo fleet's service: a tiny HTTP server whose `/health` reports the
//! version installed under its release directory, plus `restart`, which
//! replaces a running instance the way an init script would.
//!
//! It is a hidden subcommand of `convoy` so the demo needs no other program.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::CliError;

#[derive(Debug, clap::Subcommand)]
pub enum DemoServiceCommand {
    /// Serve HTTP on 127.0.0.1:PORT, reporting `<root>/current/VERSION`.
    Serve {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        root: PathBuf,
    },
    /// Stop the instance recorded in `<root>/service.pid` (if any) and start
    /// a new one detached; returns once the new one answers.
    Restart {
        #[arg(long)]
        port: u16,
        #[arg(long)]
        root: PathBuf,
    },
    /// Stop the recorded instance.
    Stop {
        #[arg(long)]
        root: PathBuf,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |source| CliError::Io { path: path.to_path_buf(), source }
}

pub fn run(cmd: DemoServiceCommand) -> Result<(), CliError> {
    match cmd {
        DemoServiceCommand::Serve { port, root } => serve(port, &root),
        DemoServiceCommand::Restart { port, root } => {
            stop(&root)?;
            let exe = std::env::current_exe().map_err(io(Path::new("/proc/self/exe")))?;
            let log_path = root.join("service.log");
            let log = std::fs::OpenOptions::new().create(true).append(true).open(&log_path).map_err(io(&log_path))?;
            let log2 = log.try_clone().map_err(io(&log_path))?;
            use std::os::unix::process::CommandExt;
            let child = std::process::Command::new(exe)
                .args(["__demo-service", "serve", "--port", &port.to_string(), "--root"])
                .arg(&root)
                .stdin(std::process::Stdio::null())
                .stdout(log)
                .stderr(log2)
                // Its own process group: it outlives this command and the
                // agent's step, as a daemon would.
                .process_group(0)
                .spawn()
                .map_err(io(&root))?;
            let pid_path = root.join("service.pid");
            std::fs::write(&pid_path, child.id().to_string()).map_err(io(&pid_path))?;
            // Wait until it answers, so the restart step fails if it cannot start.
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    println!("demo-service restarted (pid {}) on port {port}", child.id());
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(CliError::Demo(format!(
                "demo-service did not listen on port {port} within 10s; see {}",
                log_path.display()
            )))
        }
        DemoServiceCommand::Stop { root } => stop(&root),
    }
}

fn stop(root: &Path) -> Result<(), CliError> {
    let pid_path = root.join("service.pid");
    let Ok(pid) = std::fs::read_to_string(&pid_path) else { return Ok(()) };
    let pid = pid.trim();
    if pid.is_empty() || !pid.chars().all(|c| c.is_ascii_digit()) {
        return Ok(());
    }
    let _ = std::process::Command::new("kill").arg(pid).status();
    // Wait for it to go so the port is free for the next instance.
    let deadline = Instant::now() + Duration::from_secs(10);
    while Path::new(&format!("/proc/{pid}")).exists() && Instant::now() < deadline {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.split_whitespace().nth(2) == Some("Z") {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_file(&pid_path);
    Ok(())
}

fn serve(port: u16, root: &Path) -> Result<(), CliError> {
    let version_path = root.join("current").join("VERSION");
    let version = std::fs::read_to_string(&version_path).map_err(io(&version_path))?.trim().to_string();
    // A release shipping a BROKEN marker starts but reports itself unhealthy:
    // the bad release of `convoy demo --bad-release`.
    let broken = root.join("current").join("BROKEN").exists();
    let listener = TcpListener::bind(("127.0.0.1", port)).map_err(io(root))?;
    eprintln!("demo-service {version} listening on 127.0.0.1:{port}");
    for conn in listener.incoming() {
        let Ok(mut conn) = conn else { continue };
        let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
        // Read the whole request head: a client may send it in several
        // writes, and closing on a partial one would reset the connection.
        let mut buf = Vec::new();
        let mut chunk = [0u8; 2048];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
            match conn.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let req = String::from_utf8_lossy(&buf);
        let path = req.split_whitespace().nth(1).unwrap_or("/");
        let (status, body) = match path {
            "/health" if broken => {
                ("503 Service Unavailable", format!("{{\"status\":\"broken\",\"version\":\"{version}\"}}"))
            }
            "/health" => ("200 OK", format!("{{\"status\":\"ok\",\"version\":\"{version}\"}}")),
            "/" => ("200 OK", format!("demo-service {version}\n")),
            _ => ("404 Not Found", "not found\n".to_string()),
        };
        let _ = write!(
            conn,
            "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
    Ok(())
}
