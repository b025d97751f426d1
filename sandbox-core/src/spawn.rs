//! Starting a program with exact fds, from a single-threaded parent (PID 1).
//!
//! Everything the child needs is built before the clone: between clone and
//! exec the child only makes raw system calls, allocates nothing, and on
//! failure writes a fixed line to fd 2 and exits 111.

use std::ffi::{CString, OsStr};
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::process::Pid;
use syscalls::{syscall, Sysno};

use crate::error::{Error, Result};
use crate::ns::require_single_thread;

const F_DUPFD_CLOEXEC: usize = 1030;
const CLOSE_RANGE_CLOEXEC: usize = 1 << 2;
const SIG_SETMASK: usize = 2;
const PR_SET_PDEATHSIG: usize = 1;
const SIGKILL: usize = 9;
/// Passed fds land here first, out of the way of every target number.
const SCRATCH_FD: usize = 512;
pub const MAX_PASSED_FDS: usize = 8;

/// A program, its argv, its whole environment and the fds it gets.
#[derive(Debug)]
pub struct Command {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    fds: Vec<(RawFd, RawFd)>,
    what: String,
}

fn cstring(s: &OsStr) -> Result<CString> {
    CString::new(s.as_bytes()).map_err(|_| Error::Usage(format!("argument {s:?} contains NUL")))
}

impl Command {
    pub fn new(program: &Path) -> Result<Command> {
        let c = cstring(program.as_os_str())?;
        Ok(Command {
            program: c.clone(),
            argv: vec![c],
            envp: Vec::new(),
            fds: Vec::new(),
            what: program.display().to_string(),
        })
    }

    pub fn arg(&mut self, a: impl AsRef<OsStr>) -> Result<&mut Command> {
        self.argv.push(cstring(a.as_ref())?);
        Ok(self)
    }

    pub fn env(&mut self, key: &str, value: impl AsRef<OsStr>) -> Result<&mut Command> {
        let mut kv = key.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(value.as_ref().as_bytes());
        self.envp
            .push(CString::new(kv).map_err(|_| Error::Usage(format!("env {key} contains NUL")))?);
        Ok(self)
    }

    /// The child gets `source` (an fd of ours) as fd `target`, without
    /// close-on-exec. Every other fd but 0, 1, 2 is closed at exec; a
    /// target of 0, 1 or 2 replaces that one.
    pub fn pass_fd(&mut self, source: RawFd, target: RawFd) -> &mut Command {
        assert!(self.fds.len() < MAX_PASSED_FDS, "too many passed fds");
        assert!(
            (0..SCRATCH_FD as RawFd).contains(&target),
            "fd {target} out of range"
        );
        self.fds.push((source, target));
        self
    }
}

/// A started child: its pid and a pidfd (the event loop polls it).
#[derive(Debug)]
pub struct Child {
    pub pid: Pid,
    pub pidfd: OwnedFd,
}

fn fail(msg: &[u8]) -> ! {
    // SAFETY: writes a static buffer to fd 2 and exits; no memory is
    // allocated or freed in the child.
    unsafe {
        let _ = syscall!(Sysno::write, 2usize, msg.as_ptr() as usize, msg.len());
        let _ = syscall!(Sysno::exit_group, 111usize);
    }
    unreachable!("exit_group returned")
}

/// Starts `cmd`. The caller must be single-threaded (checked).
pub fn spawn(cmd: &Command) -> Result<Child> {
    require_single_thread()?;
    let argv: Vec<*const u8> = cmd
        .argv
        .iter()
        .map(|c| c.as_ptr().cast())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const u8> = cmd
        .envp
        .iter()
        .map(|c| c.as_ptr().cast())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let empty_mask: u64 = 0;
    // SAFETY: single-threaded (checked above); the child makes only raw
    // system calls on memory prepared here, then execs or exits.
    let forked = unsafe { crate::ns::fork_into(0) }
        .map_err(|e| Error::path("clone to start", &cmd.what, e))?;
    let Some((pid, pidfd)) = forked else {
        // Child. Only raw system calls on memory prepared above.
        // SAFETY: each call reads only buffers built before the clone that
        // stay alive until execve replaces the process image.
        unsafe {
            if syscall!(
                Sysno::rt_sigprocmask,
                SIG_SETMASK,
                std::ptr::addr_of!(empty_mask) as usize,
                0usize,
                8usize
            )
            .is_err()
            {
                fail(b"spawn: rt_sigprocmask failed\n");
            }
            if syscall!(Sysno::prctl, PR_SET_PDEATHSIG, SIGKILL).is_err() {
                fail(b"spawn: PR_SET_PDEATHSIG failed\n");
            }
            let mut scratch = [0usize; MAX_PASSED_FDS];
            for (i, &(src, _)) in cmd.fds.iter().enumerate() {
                match syscall!(Sysno::fcntl, src as usize, F_DUPFD_CLOEXEC, SCRATCH_FD) {
                    Ok(fd) => scratch[i] = fd,
                    Err(_) => fail(b"spawn: fcntl F_DUPFD_CLOEXEC of a passed fd failed\n"),
                }
            }
            if syscall!(
                Sysno::close_range,
                3usize,
                u32::MAX as usize,
                CLOSE_RANGE_CLOEXEC
            )
            .is_err()
            {
                fail(b"spawn: close_range failed\n");
            }
            for (i, &(_, target)) in cmd.fds.iter().enumerate() {
                if syscall!(Sysno::dup3, scratch[i], target as usize, 0usize).is_err() {
                    fail(b"spawn: dup3 of a passed fd failed\n");
                }
            }
            let _ = syscall!(
                Sysno::execve,
                cmd.program.as_ptr() as usize,
                argv.as_ptr() as usize,
                envp.as_ptr() as usize
            );
        }
        fail(b"spawn: execve failed\n");
    };
    Ok(Child { pid, pidfd })
}

/// Waits for one given child (blocking).
pub fn wait(pid: Pid) -> Result<ExitStatus> {
    loop {
        match rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty()) {
            Ok(status) => return Ok(ExitStatus::from_wait(status.map(|(_, s)| s))),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Error::sys("waitpid", e)),
        }
    }
}

/// Reaps one exited child, any child: Ok(None) when none is left to reap
/// right now. PID 1 calls this until None on every SIGCHLD, so orphans
/// reparented to it never stay zombies.
pub fn reap_any() -> Result<Option<(i32, ExitStatus)>> {
    // wait(2), the -1 case: any child. (rustix's waitpid(None) is
    // waitpid(0): only children in our process group, and every daemon
    // runs in a session of its own.)
    match rustix::process::wait(rustix::process::WaitOptions::NOHANG) {
        Ok(Some((pid, status))) => Ok(Some((
            pid.as_raw_nonzero().get(),
            ExitStatus::from_wait(Some(status)),
        ))),
        Ok(None) | Err(rustix::io::Errno::CHILD) => Ok(None),
        Err(e) => Err(Error::sys("waitpid", e)),
    }
}

/// How a child ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
    Unknown,
}

impl ExitStatus {
    pub fn from_wait(status: Option<rustix::process::WaitStatus>) -> ExitStatus {
        match status {
            Some(s) if s.exited() => ExitStatus::Code(s.exit_status().unwrap_or(0)),
            Some(s) if s.signaled() => ExitStatus::Signal(s.terminating_signal().unwrap_or(0)),
            _ => ExitStatus::Unknown,
        }
    }

    /// The exit code a parent relaying this status should use (shell style).
    pub fn relay_code(self) -> u8 {
        match self {
            ExitStatus::Code(c) => c as u8,
            ExitStatus::Signal(s) => 128 + s as u8,
            ExitStatus::Unknown => 111,
        }
    }
}

impl std::fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitStatus::Code(c) => write!(f, "exited with status {c}"),
            // The filter kills without a word; the kernel logs which call
            // it was, and the user needs to be told where to look.
            ExitStatus::Signal(31) => f.write_str(
                "killed by SIGSYS: a system call outside its seccomp allow-list \
                 (dmesg or the audit log names it: type=1326 ... syscall=N)",
            ),
            ExitStatus::Signal(s) => write!(f, "killed by signal {s}"),
            ExitStatus::Unknown => write!(f, "ended in an unknown way"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seccomp_kill_says_where_the_call_is_named() {
        let line = ExitStatus::Signal(31).to_string();
        assert!(line.contains("seccomp allow-list"), "{line}");
        assert!(
            line.contains("dmesg") && line.contains("type=1326"),
            "{line}"
        );
        assert!(!line.contains('\n'), "one line: {line}");
    }
}
