//! Talking to the VMM: readiness, a clean guest shutdown, and a forced
//! stop. cloud-hypervisor: HTTP/1.1 over its API socket plus the JSON
//! events of `--event-monitor`; QEMU: QMP, one JSON message per line.
//! Everything is non-blocking and driven by vm-init's event loop.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use sandbox_core::Error;

pub use sandbox_core::vmconfig::Vmm;

/// Bytes of the VMM's stream PID 1 keeps while it waits for readiness, and
/// how many of the newest it keeps when that is exceeded (more than any
/// marker it looks for).
const PENDING_MAX: usize = 4096;
const PENDING_KEEP: usize = 256;

/// What the VMM said, as far as vm-init cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Said {
    Nothing,
    /// The VM runs: cloud-hypervisor's "booted" event, QMP capabilities on.
    Ready,
    /// The stream ended (the VMM is exiting).
    Closed,
    /// cloud-hypervisor refused the power button: it has no running VM
    /// (created over its API and never booted), so no guest will power off.
    NotRunning,
}

/// The API request vm-init is waiting on an answer to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Request {
    PowerButton,
    Shutdown,
}

#[derive(Debug)]
pub struct Control {
    kind: Vmm,
    api: PathBuf,
    /// cloud-hypervisor: the event-monitor pipe; QEMU: the QMP connection.
    stream: Option<Stream>,
    /// cloud-hypervisor: the connection of the last API request.
    request: Option<(Request, UnixStream)>,
    ready: bool,
    buf: Vec<u8>,
}

#[derive(Debug)]
enum Stream {
    Events(std::fs::File),
    Qmp(UnixStream),
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl Fn(std::io::Error) -> Error + 'a {
    move |e| Error::path(op, path, e)
}

/// Never waits: a VMM that listens and never accepts (its backlog full)
/// is an error here, not a PID 1 blocked in connect(2) that no signal
/// ends. The stream comes back non-blocking.
fn connect(path: &Path) -> Result<UnixStream, Error> {
    sandbox_core::fds::connect_unix(path, None)
}

impl Control {
    /// For cloud-hypervisor, `events` is the read end of the event-monitor
    /// pipe. For QEMU, connects to the QMP listener now: QEMU greets when
    /// it accepts, which is when its main loop runs.
    pub fn new(kind: Vmm, api: PathBuf, events: Option<OwnedFd>) -> Result<Control, Error> {
        let stream = match kind {
            Vmm::CloudHypervisor => events.map(|fd| Stream::Events(std::fs::File::from(fd))),
            Vmm::Qemu => Some(Stream::Qmp(connect(&api)?)),
        };
        if let Some(Stream::Events(f)) = &stream {
            sandbox_core::fds::set_nonblocking(f)?;
        }
        Ok(Control {
            kind,
            api,
            stream,
            request: None,
            ready: false,
            buf: Vec::new(),
        })
    }

    /// The fds the event loop should watch for this VMM.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        let mut v = Vec::new();
        match &self.stream {
            Some(Stream::Events(f)) => v.push(f.as_fd()),
            Some(Stream::Qmp(s)) => v.push(s.as_fd()),
            None => {}
        }
        if let Some((_, r)) = &self.request {
            v.push(r.as_fd());
        }
        v
    }

    /// Reads whatever is readable; returns what it meant.
    pub fn on_readable(&mut self) -> Result<Said, Error> {
        if let Some((what, mut r)) = self.request.take() {
            let mut answer = [0u8; 512];
            match r.read(&mut answer) {
                Ok(n) if n > 0 => {
                    let head = String::from_utf8_lossy(&answer[..n]);
                    let status = head.lines().next().unwrap_or("").to_owned();
                    if !status.contains(" 204") && !status.contains(" 200") {
                        sandbox_core::say!(
                            "vm-init: the VMM answered {} with {status:?}",
                            match what {
                                Request::PowerButton => "the power button",
                                Request::Shutdown => "vmm.shutdown",
                            }
                        );
                        if what == Request::PowerButton {
                            return Ok(Said::NotRunning);
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.request = Some((what, r)),
                _ => {}
            }
        }
        let mut chunk = [0u8; 4096];
        let n = match &mut self.stream {
            None => return Ok(Said::Nothing),
            Some(Stream::Events(f)) => f.read(&mut chunk),
            Some(Stream::Qmp(s)) => s.read(&mut chunk),
        };
        let n = match n {
            Ok(0) => {
                self.stream = None;
                return Ok(Said::Closed);
            }
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Said::Nothing),
            Err(e) => return Err(Error::sys("read from the VMM", e)),
        };
        if self.ready {
            return Ok(Said::Nothing);
        }
        match self.kind {
            // Pretty-printed JSON objects: kept without white space.
            Vmm::CloudHypervisor => self.buf.extend(
                chunk[..n]
                    .iter()
                    .copied()
                    .filter(|b| !b.is_ascii_whitespace()),
            ),
            Vmm::Qemu => self.buf.extend_from_slice(&chunk[..n]),
        }
        match self.kind {
            Vmm::CloudHypervisor => {
                if contains(&self.buf, br#""event":"booted""#) {
                    self.ready = true;
                    self.buf.clear();
                    return Ok(Said::Ready);
                }
            }
            Vmm::Qemu => {
                if contains(&self.buf, b"\"QMP\"") && !contains(&self.buf, b"\"return\"") {
                    self.buf.clear();
                    self.qmp(r#"{"execute":"qmp_capabilities"}"#)?;
                } else if contains(&self.buf, b"\"return\"") {
                    self.ready = true;
                    self.buf.clear();
                    return Ok(Said::Ready);
                }
            }
        }
        // Before readiness only the last bytes matter (a marker split over
        // two reads): a VMM that writes without end gets no more of PID 1's
        // memory than this.
        if self.buf.len() > PENDING_MAX {
            self.buf.drain(..self.buf.len() - PENDING_KEEP);
        }
        Ok(Said::Nothing)
    }

    fn qmp(&mut self, command: &str) -> Result<(), Error> {
        let Some(Stream::Qmp(s)) = &mut self.stream else {
            return Err(Error::Refused("no QMP connection to the VMM".into()));
        };
        // A few bytes into an empty socket buffer: never blocks in practice,
        // and a full buffer is an error we report, not wait on.
        s.write_all(format!("{command}\r\n").as_bytes())
            .map_err(|e| Error::path("write QMP command to", &self.api, e))
    }

    fn http_put(&mut self, what: Request, path: &str) -> Result<(), Error> {
        let mut s = connect(&self.api)?;
        let request =
            format!("PUT {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n");
        // A few bytes into a new connection's empty buffer; never waited on.
        s.write_all(request.as_bytes())
            .map_err(io_err("send API request to", &self.api))?;
        self.request = Some((what, s));
        Ok(())
    }

    /// Asks for a clean guest shutdown (the ACPI power button).
    pub fn request_powerdown(&mut self) -> Result<(), Error> {
        match self.kind {
            Vmm::CloudHypervisor => self.http_put(Request::PowerButton, "/api/v1/vm.power-button"),
            Vmm::Qemu => self.qmp(r#"{"execute":"system_powerdown"}"#),
        }
    }

    /// The guest did not power off in time: tell the VMM to exit now.
    pub fn force_stop(&mut self) -> Result<(), Error> {
        match self.kind {
            Vmm::CloudHypervisor => self.http_put(Request::Shutdown, "/api/v1/vmm.shutdown"),
            Vmm::Qemu => self.qmp(r#"{"execute":"quit"}"#),
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_booted_event_in_pretty_json() {
        let ev = b"{\n  \"timestamp\": {\"secs\": 0},\n  \"source\": \"vm\",\n  \"event\": \"booted\",\n  \"properties\": null\n}\n\n";
        let compact: Vec<u8> = ev
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        assert!(contains(&compact, br#""event":"booted""#));
        assert!(!contains(b"\"event\": \"booting\"", br#""event":"booted""#));
    }
}
