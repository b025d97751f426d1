//! A sibling service for the escape matrix: binds an abstract unix socket,
//! leaves marker files in its private /tmp and /dev/shm, says it is ready on
//! stdout, and waits to be killed.
//!
//! target NAME

#![forbid(unsafe_code)]

use std::io::Write;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};

fn main() {
    let name = std::env::args().nth(1).unwrap_or_else(|| {
        eprintln!("target: usage: target ABSTRACT-NAME");
        std::process::exit(100)
    });
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract address");
    let listener = UnixListener::bind_addr(&addr).unwrap_or_else(|e| {
        eprintln!("target: bind @{name}: {e}");
        std::process::exit(111)
    });
    for marker in ["/tmp/target-marker", "/dev/shm/target-marker"] {
        std::fs::write(marker, b"target\n").unwrap_or_else(|e| {
            eprintln!("target: write {marker}: {e}");
            std::process::exit(111)
        });
    }
    // stdout is the readiness pipe the harness passed (s6 style: a newline).
    let mut out = std::io::stdout();
    if out.write_all(b"\n").and_then(|()| out.flush()).is_err() {
        eprintln!("target: cannot signal readiness on stdout");
        std::process::exit(111);
    }
    // Accept and drop connections until killed: a connect that got through
    // would succeed, which is what the probe must never see.
    for conn in listener.incoming() {
        drop(conn);
    }
}
