//! A daemon's stdout and stderr, through PID 1, marked and bounded.
//!
//! Each wrapper, and the daemon it becomes, writes into two pipes of its
//! own; PID 1 copies whole lines to its own stdout and stderr (s6's log)
//! with the VM and the daemon in front (`work/virtiofsd: ...`,
//! [`sandbox_core::contract::output_mark`]), so that no daemon can write a
//! line that reads as vm-init's own (`vm-init: work: ...`), and with
//! control characters escaped, so that none can rewrite a terminal's or a
//! log viewer's screen.
//!
//! What a daemon may put into the host's log is bounded: its pipes are
//! read at [`RATE`] bytes a second at most (after a first [`BURST`]), so
//! that a daemon writing without end waits in write(2) rather than PID 1
//! spinning in read(2), and at most [`TOTAL_MAX`] bytes of it per VM start
//! are passed on; the rest is counted, and one line says how much was
//! dropped. Once the VM has ended (or the daemon), what the pipes hold is
//! read once and nothing is waited for: a daemon, or a child of one,
//! still writing cannot keep PID 1 from ending the VM.
//!
//! PID 1 also remembers the daemon's last error line, so that when a
//! daemon ends the VM, vm-init's one line says what the daemon said (an
//! upstream cloud-hypervisor refusing `--gpu`: `error: unexpected
//! argument '--gpu' found`), not only its status.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use sandbox_core::spawn::ExitStatus;
use sandbox_core::{fds, Error};

/// A line longer than this is passed on in pieces.
const LINE_MAX: usize = 4096;
/// What is kept of a remembered line.
const KEPT_MAX: usize = 300;
/// Bytes a second read from one daemon's pipes, after a first burst:
/// far above what a working daemon logs, far below what fills a log.
pub const RATE: u64 = 64 << 10;
pub const BURST: u64 = 256 << 10;
/// Bytes of one daemon's output passed on per VM start, marks included:
/// a daemon with more to say than this is flooding, not logging.
pub const TOTAL_MAX: u64 = 256 << 10;
/// The read of one wake-up.
const CHUNK: usize = 8192;
/// The most one write(2) to a pipe carries without another writer's
/// bytes in between.
const PIPE_BUF: usize = 4096;
/// What is read of each pipe once the VM has ended: a pipe's buffer,
/// the daemon's last words.
const LAST_WORDS: usize = 64 << 10;

/// One of the two pipes.
#[derive(Debug)]
struct Pipe {
    read: Option<File>,
    partial: Vec<u8>,
    /// 1 or 2: where its lines go.
    to: i32,
}

/// How much may be read now: a token bucket of [`RATE`] a second.
#[derive(Debug)]
struct Rate {
    tokens: u64,
    at: Instant,
}

impl Rate {
    fn refill(&mut self, now: Instant) {
        let earned = now.saturating_duration_since(self.at).as_micros() as u64 * RATE / 1_000_000;
        if earned > 0 {
            self.tokens = (self.tokens + earned).min(BURST);
            self.at = now;
        }
    }
}

#[derive(Debug)]
pub struct OutputRelay {
    /// `VM/daemon: `, in front of every line.
    mark: String,
    /// How vm-init's own lines about this relay begin: `vm-init: VM: daemon`.
    said_by: String,
    pipes: [Pipe; 2],
    rate: Rate,
    passed: u64,
    dropped: u64,
    last: Option<String>,
    last_error: Option<String>,
}

impl OutputRelay {
    /// The relay of daemon `tag` (`virtiofsd`, `vmm`, `gpu`, `s6`) of VM
    /// `vm`, and the write ends to pass to the child as its fd 1 and 2.
    pub fn new(vm: &str, tag: &str) -> Result<(OutputRelay, OwnedFd, OwnedFd), Error> {
        let (out_read, out_write) = fds::stderr_pipe()?;
        let (err_read, err_write) = fds::stderr_pipe()?;
        let pipe = |read: OwnedFd, to| Pipe {
            read: Some(File::from(read)),
            partial: Vec::new(),
            to,
        };
        let relay = OutputRelay {
            mark: sandbox_core::contract::output_mark(vm, tag),
            said_by: format!("vm-init: {vm}: {tag}"),
            pipes: [pipe(out_read, 1), pipe(err_read, 2)],
            rate: Rate {
                tokens: BURST,
                at: Instant::now(),
            },
            passed: 0,
            dropped: 0,
            last: None,
            last_error: None,
        };
        Ok((relay, out_write, err_write))
    }

    /// What the rate has earned since the last read: called before each
    /// poll, so that a relay that used its rate is polled again once it
    /// may read ([`OutputRelay::waits_for`] says when).
    pub fn refill(&mut self) {
        self.rate.refill(Instant::now());
    }

    /// The fds to poll now: none while the relay waits for its rate.
    pub fn fds(&self) -> Vec<BorrowedFd<'_>> {
        if self.rate.tokens == 0 {
            return Vec::new();
        }
        self.pipes
            .iter()
            .filter_map(|p| p.read.as_ref().map(AsFd::as_fd))
            .collect()
    }

    /// While the relay has used its rate: how long until it may read again.
    pub fn waits_for(&self) -> Option<Duration> {
        let open = self.pipes.iter().any(|p| p.read.is_some());
        (open && self.rate.tokens == 0)
            .then(|| Duration::from_micros(CHUNK as u64 * 1_000_000 / RATE))
    }

    /// Reads what its rate allows now (once that is used it is not polled:
    /// see [`OutputRelay::fds`]).
    pub fn pump(&mut self) {
        self.rate.refill(Instant::now());
        for i in 0..2 {
            while self.rate.tokens > 0 {
                let want = CHUNK.min(self.rate.tokens as usize);
                match self.read(i, want) {
                    Some(n) => self.rate.tokens -= n as u64,
                    None => break,
                }
            }
        }
    }

    /// The VM has ended, or the daemon has: what the pipes hold now, at
    /// most [`LAST_WORDS`] of each, is all that is read; then the relay
    /// stops, and says how much it dropped.
    pub fn finish(&mut self) {
        for i in 0..2 {
            let mut left = LAST_WORDS;
            while left > 0 {
                match self.read(i, CHUNK.min(left)) {
                    Some(n) => left -= n.max(1),
                    None => break,
                }
            }
            self.pipes[i].read = None;
            self.flush_partial(i);
        }
        self.say_dropped();
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

    /// One read of at most `want` bytes from pipe `i`: how many, or None
    /// when there is nothing now (or any more).
    fn read(&mut self, i: usize, want: usize) -> Option<usize> {
        let mut chunk = [0u8; CHUNK];
        let read = self.pipes[i].read.as_mut()?;
        match read.read(&mut chunk[..want]) {
            Ok(0) => {
                self.pipes[i].read = None;
                self.flush_partial(i);
                if self.pipes.iter().all(|p| p.read.is_none()) {
                    self.say_dropped();
                }
                None
            }
            Ok(n) => {
                self.take(i, &chunk[..n]);
                Some(n)
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => Some(0),
            Err(e) if e.kind() == ErrorKind::WouldBlock => None,
            Err(_) => {
                self.pipes[i].read = None;
                None
            }
        }
    }

    fn take(&mut self, i: usize, bytes: &[u8]) {
        // Past the total nothing more is passed on: counted, not cut into
        // lines (a flood of empty lines would otherwise cost PID 1 a line's
        // work per byte, at its rate, for as long as the daemon floods).
        if self.dropped > 0 {
            self.pipes[i].partial.clear();
            self.dropped += bytes.len() as u64;
            return;
        }
        self.pipes[i].partial.extend_from_slice(bytes);
        while let Some(end) = self.pipes[i].partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pipes[i].partial.drain(..=end).collect();
            self.pass_on(i, &line[..line.len() - 1]);
        }
        if self.pipes[i].partial.len() > LINE_MAX {
            self.flush_partial(i);
        }
    }

    fn flush_partial(&mut self, i: usize) {
        if !self.pipes[i].partial.is_empty() {
            let line = std::mem::take(&mut self.pipes[i].partial);
            self.pass_on(i, &line);
        }
    }

    /// One line, marked and escaped, in one write (several daemons share
    /// s6's log pipe), while the budget lasts; remembered either way.
    fn pass_on(&mut self, i: usize, line: &[u8]) {
        let text = escape(line);
        // What it costs the log: the mark and the newline too (a flood of
        // empty lines is a flood all the same).
        let cost = (self.mark.len() + text.len() + 1) as u64;
        if self.passed + cost > TOTAL_MAX {
            if self.dropped == 0 {
                sandbox_core::say!(
                    "{}: more than {} KiB of output this start: the rest is dropped",
                    self.said_by,
                    TOTAL_MAX >> 10
                );
            }
            self.dropped += line.len() as u64 + 1;
        } else {
            self.passed += cost;
            // Each piece marked and at most PIPE_BUF long: a write that
            // size is never split by another writer of the same log pipe.
            let room = PIPE_BUF - self.mark.len() - 1;
            for piece in pieces(&text, room) {
                let marked = format!("{}{piece}\n", self.mark);
                let _ = match self.pipes[i].to {
                    1 => std::io::stdout().lock().write_all(marked.as_bytes()),
                    _ => std::io::stderr().lock().write_all(marked.as_bytes()),
                };
            }
        }
        if i == 1 {
            self.remember(text.trim());
        }
    }

    fn remember(&mut self, text: &str) {
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

    fn say_dropped(&mut self) {
        if self.dropped > 0 {
            sandbox_core::say!(
                "{}: {} bytes of its output were dropped (over {} KiB)",
                self.said_by,
                self.dropped,
                TOTAL_MAX >> 10
            );
            self.dropped = 0;
        }
    }
}

/// `text` in pieces of at most `room` bytes, cut between characters.
fn pieces(text: &str, room: usize) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    loop {
        if rest.len() <= room {
            out.push(rest);
            return out;
        }
        let mut cut = room;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push(&rest[..cut]);
        rest = &rest[cut..];
    }
}

/// The line as text with every control character but tab as `\xNN`, and
/// the characters that reorder or break a line in a viewer (bidi
/// overrides and isolates, line and paragraph separators) as `\u{NNNN}`.
fn escape(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        {
            out.push_str(&format!("\\u{{{:04x}}}", u32::from(c)));
        } else if c.is_control() && c != '\t' {
            out.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn relay_of(text: &[u8]) -> OutputRelay {
        let (mut r, _out, err) = OutputRelay::new("t", "vmm").unwrap();
        File::from(err).write_all(text).unwrap();
        r.finish();
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

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape(b"a\rb\x1b[2Jc\td"), "a\\x0db\\x1b[2Jc\td");
        assert_eq!(escape("a\u{202e}b".as_bytes()), "a\\u{202e}b");
    }

    #[test]
    fn long_lines_go_in_pieces_cut_between_characters() {
        let text = "é".repeat(3000);
        let p = pieces(&text, 4001);
        assert!(p.iter().all(|s| s.len() <= 4001));
        assert_eq!(p.concat(), text);
        assert_eq!(pieces("", 10), [""]);
    }
}
