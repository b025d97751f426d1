//! The pieces of vm-init's one event loop: poll over fds and a one-shot
//! timer. (Children are reaped with spawn's waits, fds come from fds.)

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::time::{
    timerfd_create, timerfd_settime, Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags,
};

use crate::error::{Context, Error, Result};

/// What [`wait`] waits for on an fd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Readable, or hung up.
    Readable,
    /// A cgroup file changed (memory.events, ...: the kernel wakes poll
    /// with POLLPRI, and reading the file from its start re-arms it; such
    /// a file always polls readable).
    Changed,
}

/// Blocks until at least one of `fds` is readable (or hung up); returns a
/// flag per fd. No timeout: time is a timerfd like everything else.
pub fn wait_readable(fds: &[BorrowedFd<'_>]) -> Result<Vec<bool>> {
    let fds: Vec<_> = fds.iter().map(|fd| (*fd, Wait::Readable)).collect();
    wait(&fds)
}

/// [`wait_readable`], each fd for what it is paired with.
pub fn wait(fds: &[(BorrowedFd<'_>, Wait)]) -> Result<Vec<bool>> {
    let mut polls: Vec<PollFd<'_>> = fds
        .iter()
        .map(|(fd, wait)| {
            let flags = match wait {
                Wait::Readable => PollFlags::IN,
                Wait::Changed => PollFlags::PRI,
            };
            PollFd::new(fd, flags)
        })
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

    /// Stops it; an expiry not yet read is forgotten (the fd is no longer
    /// readable), as it is when the timer is armed again.
    pub fn disarm(&self) -> Result<()> {
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        let spec = Itimerspec {
            it_interval: zero,
            it_value: zero,
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
