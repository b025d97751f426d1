//! Signals as file descriptors: the signals vm-init handles are blocked and
//! read from a signalfd in its one event loop, so nothing runs in a signal
//! handler and nothing is lost between two polls.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use syscalls::{syscall, Sysno};

use crate::error::{Context, Error, Result};

pub const SIGHUP: i32 = 1;
pub const SIGINT: i32 = 2;
pub const SIGKILL: i32 = 9;
pub const SIGTERM: i32 = 15;
pub const SIGCHLD: i32 = 17;

const SIG_BLOCK: usize = 0;
const SIG_UNBLOCK: usize = 1;
const SFD_CLOEXEC: usize = 0o2_000_000;
const SFD_NONBLOCK: usize = 0o4_000;

fn mask_of(signals: &[i32]) -> u64 {
    signals.iter().fold(0, |m, &s| m | (1u64 << (s - 1)))
}

/// Blocks `signals` for the calling thread (and what it forks: the mask is
/// inherited, so a clone made after this reads the same signals).
pub fn block(signals: &[i32]) -> Result<()> {
    sigprocmask(SIG_BLOCK, signals).op("rt_sigprocmask SIG_BLOCK")
}

/// Unblocks `signals` for the calling thread.
pub fn unblock(signals: &[i32]) -> Result<()> {
    sigprocmask(SIG_UNBLOCK, signals).op("rt_sigprocmask SIG_UNBLOCK")
}

fn sigprocmask(how: usize, signals: &[i32]) -> std::result::Result<(), syscalls::Errno> {
    let mask = mask_of(signals);
    // SAFETY: the kernel reads 8 bytes of `mask`, which lives for the call.
    unsafe {
        syscall!(
            Sysno::rt_sigprocmask,
            how,
            std::ptr::addr_of!(mask) as usize,
            0usize,
            8usize
        )
    }
    .map(drop)
}

/// Gives `signal` its default action (SIG_DFL) in the calling process.
pub fn default_action(signal: i32) -> Result<()> {
    // The kernel's struct sigaction: handler, flags, restorer, mask.
    let action: [u64; 4] = [0; 4];
    // SAFETY: the kernel reads the 32-byte `action` (SIG_DFL, no flags,
    // an empty mask) and writes no old action (null).
    unsafe {
        syscall!(
            Sysno::rt_sigaction,
            signal as usize,
            action.as_ptr() as usize,
            0usize,
            8usize
        )
    }
    .map(drop)
    .op("rt_sigaction SIG_DFL")
}

/// Sends `signal` to the calling process.
pub fn raise(signal: i32) -> Result<()> {
    let pid = rustix::process::getpid().as_raw_nonzero().get();
    // SAFETY: kill(2) with our own PID; no memory is passed.
    unsafe { syscall!(Sysno::kill, pid as usize, signal as usize) }
        .map(drop)
        .op("kill self")
}

/// A non-blocking signalfd for `signals` (which must be blocked).
#[derive(Debug)]
pub struct SignalFd(OwnedFd);

impl SignalFd {
    pub fn new(signals: &[i32]) -> Result<SignalFd> {
        let mask = mask_of(signals);
        // SAFETY: -1 asks for a new fd; the kernel reads the 8-byte mask.
        let fd = unsafe {
            syscall!(
                Sysno::signalfd4,
                -1isize as usize,
                std::ptr::addr_of!(mask) as usize,
                8usize,
                SFD_CLOEXEC | SFD_NONBLOCK
            )
        }
        .op("signalfd4")?;
        // SAFETY: the kernel just returned this new fd, owned by nobody else.
        Ok(SignalFd(unsafe { OwnedFd::from_raw_fd(fd as i32) }))
    }

    /// The next pending signal, or None when none is pending.
    pub fn read(&self) -> Result<Option<i32>> {
        let mut info = [0u8; 128];
        match rustix::io::read(&self.0, &mut info) {
            Ok(128) => Ok(Some(i32::from_ne_bytes([
                info[0], info[1], info[2], info[3],
            ]))),
            Ok(n) => Err(Error::Refused(format!(
                "short read of {n} bytes from signalfd"
            ))),
            Err(rustix::io::Errno::AGAIN) => Ok(None),
            Err(e) => Err(Error::sys("read signalfd", e)),
        }
    }
}

impl AsFd for SignalFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// Sends `signal` to the process behind `pidfd` (no PID reuse race).
pub fn send(pidfd: impl AsFd, signal: i32) -> Result<()> {
    // SAFETY: a null siginfo and no flags: the kernel reads no memory.
    unsafe {
        syscall!(
            Sysno::pidfd_send_signal,
            pidfd.as_fd().as_raw_fd() as usize,
            signal as usize,
            0usize,
            0usize
        )
    }
    .map(drop)
    .op("pidfd_send_signal")
}
