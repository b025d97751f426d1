//! vmm-api create|boot VMDIR [--notify-fd FD]
//!
//! The helper of cloud-hypervisor's Spectrum flow (wrap-vmm --api-only):
//! `create` sends the VM, built from VMDIR/config exactly as the argv flow
//! would pass it, as `PUT /api/v1/vm.create` to VMDIR's API socket and then
//! writes a newline to FD (the VMM service's readiness: the VM exists);
//! `boot` is the separate command that starts it (`PUT /api/v1/vm.boot`).
//! One line and exit 111 when cloud-hypervisor refuses or does not answer
//! within the time limit (`--timeout S`, 30 by default: connect, send and
//! answer together), 100 for usage.

#![forbid(unsafe_code)]

use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sandbox_core::contract::VmDir;
use sandbox_core::vmconfig::VmConfig;
use sandbox_core::Error;

const USAGE: &str = "usage: vmm-api create|boot VMDIR [--notify-fd FD] [--timeout S]";

/// The whole exchange, by default: far more than cloud-hypervisor takes
/// to create or boot a VM, and a VMM that accepts and never answers does
/// not hold up the VM's service for ever.
const EXCHANGE_MAX: Duration = Duration::from_secs(30);

/// One HTTP/1.1 request; returns the status line and body of the answer.
/// Connect, send and the answer together take at most `limit`.
fn put(socket: &Path, path: &str, body: &str, limit: Duration) -> Result<(String, String), Error> {
    let deadline = Instant::now() + limit;
    let late = || {
        Error::Refused(format!(
            "{}: no answer to {path} within {} s",
            socket.display(),
            limit.as_secs_f32()
        ))
    };
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
    };
    let is_late =
        |e: &std::io::Error| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
    let mut s = sandbox_core::fds::connect_unix(socket, Some(limit)).map_err(|e| match e {
        Error::Path { errno, .. } if errno == sandbox_core::Errno::EWOULDBLOCK => late(),
        e => e,
    })?;
    let request = format!(
        "PUT {path} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    // What is left of the limit bounds the send too (SO_SNDTIMEO).
    s.set_write_timeout(Some(left().ok_or_else(late)?))
        .map_err(|e| Error::path("set a send timeout on", socket, e))?;
    s.write_all(request.as_bytes()).map_err(|e| {
        if is_late(&e) {
            late()
        } else {
            Error::path("send the request to", socket, e)
        }
    })?;
    // The answer's head, then as much body as it says (the connection may
    // stay open: no read to end of file).
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(message) = wrap_vmm::cloud_hypervisor::http_message(&answer) {
            return Ok(message);
        }
        if answer.len() > 1 << 16 {
            return Err(Error::Refused(format!(
                "{}: an answer of more than 64 KiB",
                socket.display()
            )));
        }
        s.set_read_timeout(Some(left().ok_or_else(late)?))
            .map_err(|e| Error::path("set a read timeout on", socket, e))?;
        let n = match s.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if is_late(&e) => return Err(late()),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::path("read the answer from", socket, e)),
        };
        if n == 0 {
            return Err(Error::Refused(format!(
                "{}: the VMM closed the connection without an answer",
                socket.display()
            )));
        }
        answer.extend_from_slice(&chunk[..n]);
    }
}

fn run(args: &[String]) -> Result<(), Error> {
    let (cmd, vm_dir, options) = match args {
        [cmd, dir, options @ ..] => (cmd, PathBuf::from(dir), options),
        _ => return Err(Error::Usage(USAGE.into())),
    };
    let (mut notify, mut limit) = (None, EXCHANGE_MAX);
    for pair in options.chunks(2) {
        match pair {
            [flag, fd] if flag == "--notify-fd" => {
                notify = Some(
                    fd.parse::<i32>()
                        .map_err(|_| Error::Usage(format!("--notify-fd {fd:?} is not a number")))?,
                )
            }
            [flag, s] if flag == "--timeout" => {
                limit = s
                    .parse::<f32>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0 && *s <= 3600.0)
                    .map(Duration::from_secs_f32)
                    .ok_or_else(|| {
                        Error::Usage(format!(
                            "--timeout {s:?} is not a number of seconds in (0, 3600]"
                        ))
                    })?
            }
            _ => return Err(Error::Usage(USAGE.into())),
        }
    }
    let socket = VmDir::new(&vm_dir).api_socket();
    let (path, body) = match cmd.as_str() {
        "create" => {
            let config = VmConfig::read(&vm_dir)?;
            (
                "/api/v1/vm.create",
                wrap_vmm::cloud_hypervisor::vm_config_json(&config),
            )
        }
        "boot" => ("/api/v1/vm.boot", String::new()),
        _ => return Err(Error::Usage(USAGE.into())),
    };
    // Taken before anything is sent: a bad fd is a usage error.
    let notify = notify
        .map(|fd| sandbox_core::fds::take_fd(fd, "--notify-fd"))
        .transpose()?;
    let (status, answer) = put(&socket, path, &body, limit)?;
    if !(status.contains(" 204") || status.contains(" 200")) {
        return Err(Error::Refused(format!(
            "{path}: cloud-hypervisor answered {status:?} {}",
            answer.trim()
        )));
    }
    if let Some(fd) = notify {
        sandbox_core::fds::notify_ready(fd)?;
    }
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = run(&args) {
        match args.get(1) {
            Some(dir) => sandbox_core::say!("vmm-api: {dir}: {e}"),
            None => sandbox_core::say!("vmm-api: {e}"),
        }
        std::process::exit(e.exit_code().into());
    }
}
