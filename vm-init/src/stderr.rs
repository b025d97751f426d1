//! The daemons' stderr, through PID 1. Each wrapper, and the daemon it
//! becomes, writes into a pipe of its own; PID 1 copies whole lines to its
//! stderr (s6's log, as before) and remembers the daemon's last error
//! line, so that when a daemon ends the VM, vm-init's one line says what
//! the daemon said (an upstream cloud-hypervisor refusing `--gpu`:
//! `error: unexpected argument '--gpu' found`), not only its status.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use sandbox_core::spawn::ExitStatus;
use sandbox_core::{fds, Error};

/// A line longer than this is passed on in pieces.
const LINE_MAX: usize = 4096;
/// What is kept of a remembered line.
const KEPT_MAX: usize = 300;
/// Reads per wake-up: a daemon that writes without pause still leaves PID
/// 1 time for its other fds.
const READS_PER_WAKE: usize = 16;

#[derive(Debug)]
pub struct StderrRelay {
    read: Option<File>,
    partial: Vec<u8>,
    last: Option<String>,
    last_error: Option<String>,
}

impl StderrRelay {
    /// The relay, and the write end to pass to the child as its fd 2.
    pub fn new() -> Result<(StderrRelay, OwnedFd), Error> {
        let (read, write) = fds::stderr_pipe()?;
        let relay = StderrRelay {
            read: Some(File::from(read)),
            partial: Vec::new(),
            last: None,
            last_error: None,
        };
        Ok((relay, write))
    }

    /// The fd to poll, until the pipe's last writer is gone.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.read.as_ref().map(AsFd::as_fd)
    }

    /// Copies what is there, whole lines at a time. True when it stopped
    /// with more perhaps left, to give PID 1's other fds their turn.
    pub fn pump(&mut self) -> bool {
        let mut chunk = [0u8; 8192];
        for _ in 0..READS_PER_WAKE {
            let Some(read) = &mut self.read else {
                return false;
            };
            match read.read(&mut chunk) {
                Ok(0) => {
                    self.read = None;
                    self.flush_partial();
                    return false;
                }
                Ok(n) => self.take(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(_) => {
                    self.read = None;
                    return false;
                }
            }
        }
        true
    }

    /// Everything the pipe holds now (the daemon has ended: its lines are
    /// all written), then stops polling it.
    pub fn drain(&mut self) {
        while self.pump() {}
        self.read = None;
        self.flush_partial();
    }

    /// What to add to a line about the daemon ending with `status`: its
    /// last line with "error" or "panicked" in it, or after a non-zero exit
    /// its last line at all.
    pub fn said(&self, status: ExitStatus) -> String {
        let line = self.last_error.as_ref().or(match status {
            ExitStatus::Code(c) if c != 0 => self.last.as_ref(),
            _ => None,
        });
        line.map(|l| format!(" ({l:?})")).unwrap_or_default()
    }

    fn take(&mut self, bytes: &[u8]) {
        self.partial.extend_from_slice(bytes);
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            self.pass_on(&line);
        }
        if self.partial.len() > LINE_MAX {
            self.flush_partial();
        }
    }

    fn flush_partial(&mut self) {
        if !self.partial.is_empty() {
            let mut line = std::mem::take(&mut self.partial);
            line.push(b'\n');
            self.pass_on(&line);
        }
    }

    /// One line to our stderr in one write (several daemons share s6's
    /// log pipe), and remembered.
    fn pass_on(&mut self, line: &[u8]) {
        let _ = std::io::stderr().lock().write_all(line);
        let text = String::from_utf8_lossy(line).trim().to_owned();
        if text.is_empty() {
            return;
        }
        let kept: String = text.chars().take(KEPT_MAX).collect();
        let lower = kept.to_lowercase();
        if lower.contains("error") || lower.contains("panicked") {
            self.last_error = Some(kept.clone());
        }
        self.last = Some(kept);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay_of(text: &[u8]) -> StderrRelay {
        let (mut r, w) = StderrRelay::new().unwrap();
        File::from(w).write_all(text).unwrap();
        r.drain();
        r
    }

    #[test]
    fn the_last_error_line_is_what_it_said() {
        let clap = b"error: unexpected argument '--gpu' found\n\nUsage: cloud-hypervisor [OPTIONS]\n\nFor more information, try '--help'.\n";
        let r = relay_of(clap);
        assert_eq!(
            r.said(ExitStatus::Code(2)),
            " (\"error: unexpected argument '--gpu' found\")"
        );
        // No error line: the last line, but only for a non-zero exit.
        let r = relay_of(b"wrap-gpu: /dev/udmabuf is absent\nno newline at the end");
        assert_eq!(r.said(ExitStatus::Code(1)), " (\"no newline at the end\")");
        assert_eq!(r.said(ExitStatus::Signal(31)), "");
        assert_eq!(relay_of(b"").said(ExitStatus::Code(1)), "");
    }
}
