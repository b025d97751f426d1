//! The pieces of vm-init's one event loop: poll over fds, a one-shot
//! timer, reaping every child (known or not), s6 readiness.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::process::{waitpid, Pid, WaitOptions};
use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
};

use crate::error::{Context, Error, Result};
use crate::spawn::ExitStatus;

/// Blocks until at least one of `fds` is readable (or hung up); returns a
/// flag per fd. No timeout: time is a timerfd like everything else.
pub fn wait_readable(fds: &[BorrowedFd<'_>]) -> Result<Vec<bool>> {
    let mut polls: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::new(fd, PollFlags::IN))
        .collect();
    loop {
        match poll(&mut polls, None) {
            Ok(_) => break,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Error::sys("poll", e)),
        }
    }
    Ok(polls.iter().map(|p| !p.revents().is_empty()).collect())
}

/// A one-shot monotonic timer as an fd.
#[derive(Debug)]
pub struct Timer(OwnedFd);

impl Timer {
    pub fn new() -> Result<Timer> {
        timerfd_create(
            TimerfdClockId::Monotonic,
            TimerfdFlags::CLOEXEC | TimerfdFlags::NONBLOCK,
        )
        .op("timerfd_create")
        .map(Timer)
    }

    /// Fires once, `after` from now.
    pub fn arm(&self, after: Duration) -> Result<()> {
        let spec = Itimerspec {
            it_interval: rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: rustix::time::Timespec {
                tv_sec: after.as_secs() as i64,
                // A zero it_value disarms: make "now" one nanosecond.
                tv_nsec: i64::from(after.subsec_nanos()).max(i64::from(after.is_zero())),
            },
        };
        timerfd_settime(&self.0, TimerfdTimerFlags::empty(), &spec)
            .map(drop)
            .op("timerfd_settime")
    }
}

impl AsFd for Timer {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Reaps one exited child, any child: Ok(None) when none is left to reap
/// right now. PID 1 calls this until None on every SIGCHLD, so orphans
/// reparented to it never stay zombies.
pub fn reap_any() -> Result<Option<(i32, ExitStatus)>> {
    // wait(2), the -1 case: any child. (rustix's waitpid(None) is
    // waitpid(0): only children in our process group, and every daemon
    // runs in a session of its own.)
    match rustix::process::wait(WaitOptions::NOHANG) {
        Ok(Some((pid, status))) => Ok(Some((
            pid.as_raw_nonzero().get(),
            ExitStatus::from_wait(Some(status)),
        ))),
        Ok(None) | Err(rustix::io::Errno::CHILD) => Ok(None),
        Err(e) => Err(Error::sys("waitpid", e)),
    }
}

/// Waits for one given child (blocking).
pub fn wait_for(pid: Pid) -> Result<ExitStatus> {
    loop {
        match waitpid(Some(pid), WaitOptions::empty()) {
            Ok(status) => return Ok(ExitStatus::from_wait(status.map(|(_, s)| s))),
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Error::sys("waitpid", e)),
        }
    }
}

/// Checks that `fd` is an open descriptor (an s6 notification fd, a passed
/// socket) and takes ownership of it.
pub fn take_fd(fd: RawFd, what: &str) -> Result<OwnedFd> {
    if fd < 3 {
        return Err(Error::Usage(format!(
            "{what} {fd} is one of stdin, stdout, stderr"
        )));
    }
    // SAFETY: only borrowed for the F_GETFD probe below, which fails with
    // EBADF (and then we own nothing) if `fd` is not open.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    if rustix::io::fcntl_getfd(borrowed).is_err() {
        return Err(Error::Usage(format!(
            "{what} {fd} is not an open file descriptor"
        )));
    }
    // SAFETY: `fd` is open (checked above) and this process's argv says it
    // was handed to us for this purpose: nothing else in this process owns it.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// s6 readiness: one newline on the notification fd, then close it.
pub fn notify_ready(fd: OwnedFd) -> Result<()> {
    rustix::io::write(&fd, b"\n")
        .map(drop)
        .op("write readiness to the notification fd")
}

/// Sets O_NONBLOCK on an fd the event loop reads.
pub fn set_nonblocking(fd: impl AsFd) -> Result<()> {
    let flags = rustix::fs::fcntl_getfl(&fd).op("fcntl F_GETFL")?;
    rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK).op("fcntl F_SETFL")
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).op("pipe")
}
