//! vmm-api create|boot VMDIR [--notify-fd FD]
//!
//! The helper of cloud-hypervisor's Spectrum flow (wrap-vmm --api-only):
//! `create` sends the VM, built from VMDIR/config exactly as the argv flow
//! would pass it, as `PUT /api/v1/vm.create` to VMDIR's API socket and then
//! writes a newline to FD (the VMM service's readiness: the VM exists);
//! `boot` is the separate command that starts it (`PUT /api/v1/vm.boot`).
//! One line and exit 111 when cloud-hypervisor refuses, 100 for usage.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use sandbox_core::vmconfig::VmConfig;
use sandbox_core::vmdir::VmDir;
use sandbox_core::Error;

const USAGE: &str = "usage: vmm-api create|boot VMDIR [--notify-fd FD]";

/// One HTTP/1.1 request; returns the status line and body of the answer.
fn put(socket: &Path, path: &str, body: &str) -> Result<(String, String), Error> {
    let mut s = UnixStream::connect(socket).map_err(|e| Error::path("connect", socket, e))?;
    let request = format!(
        "PUT {path} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(request.as_bytes())
        .map_err(|e| Error::path("send the request to", socket, e))?;
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
        let n = s
            .read(&mut chunk)
            .map_err(|e| Error::path("read the answer from", socket, e))?;
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
    let (cmd, vm_dir, notify) = match args {
        [cmd, dir] => (cmd, PathBuf::from(dir), None),
        [cmd, dir, flag, fd] if flag == "--notify-fd" => (
            cmd,
            PathBuf::from(dir),
            Some(
                fd.parse::<i32>()
                    .map_err(|_| Error::Usage(format!("--notify-fd {fd:?} is not a number")))?,
            ),
        ),
        _ => return Err(Error::Usage(USAGE.into())),
    };
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
    let (status, answer) = put(&socket, path, &body)?;
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
