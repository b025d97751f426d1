//! Each daemon in a PID namespace of its own, kept by two small processes
//! of its wrapper's:
//!
//! ```text
//! PID 1 of the VM, or a service's s6-supervise
//!  └ the wrapper (keeper): what the supervisor started and waits for
//!     └ the wrapper (reaper): PID 1 of the daemon's own PID namespace
//!        └ the daemon, and anything it starts
//! ```
//!
//! Why: whatever the daemon starts (a double fork, a new session) is in
//! that namespace, and the kernel kills all of it when the reaper exits,
//! which it does as soon as the daemon has. Nothing of a daemon outlives
//! it, or its service: the keeper dies with its supervisor (PDEATHSIG),
//! the reaper with the keeper, the namespace with the reaper. And the
//! daemon can name no process outside its namespace: not PID 1 of the VM,
//! not the VM's s6 processes, not a sibling daemon, whatever uid they
//! share (prlimit, setpriority(PRIO_USER), kill(-1) and ptrace all take
//! a PID or walk only the caller's namespace).
//!
//! The keeper passes the signals a supervisor sends (s6-svc -d is SIGTERM
//! then SIGCONT) to the reaper, the reaper to the daemon, and both end as
//! the daemon ended: the same exit code, or killed by the same signal, so
//! that PID 1 and s6 see the daemon's own end.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use syscalls::{syscall, Sysno};

use crate::error::{Context, Error, Result};
use crate::ns::{fork_into, require_single_thread};
use crate::parent::ParentWatch;
use crate::signals::{self, SignalFd, SIGCHLD, SIGHUP, SIGINT, SIGTERM};
use crate::spawn::{reap_any, ExitStatus};

const CLONE_NEWPID: usize = 0x2000_0000;
const SIGQUIT: i32 = 3;
const SIGUSR1: i32 = 10;
const SIGUSR2: i32 = 12;
const SIGCONT: i32 = 18;

/// What a supervisor may send a daemon, passed on by the keeper and the
/// reaper (blocked in both, read from a signalfd).
const FORWARDED: &[i32] = &[SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGTERM, SIGCONT];
/// The same, and the reaper's SIGCHLD: blocked from before the forks on.
const BLOCKED: &[i32] = &[
    SIGHUP, SIGINT, SIGQUIT, SIGUSR1, SIGUSR2, SIGTERM, SIGCONT, SIGCHLD,
];

/// Puts the calling wrapper's future daemon into a PID namespace of its
/// own. Returns only in the daemon-to-be (PID 2 of that namespace), with
/// the signal mask it had; the keeper and the reaper never return: they
/// exit as the daemon did.
pub fn into_own_pid_namespace() -> Result<()> {
    require_single_thread()?;
    // Blocked before the forks: no signal sent in between is lost.
    signals::block(BLOCKED)?;
    let watch = ParentWatch::of_self()?;
    // The daemon's status, from the reaper to the keeper.
    let (status_read, status_write) = crate::fds::pipe()?;
    // SAFETY: single-threaded (checked above); the child goes on as the
    // reaper, in Rust, as a process of its own.
    let forked = unsafe { fork_into(CLONE_NEWPID) }.op("clone a PID namespace")?;
    match forked {
        Some((_, reaper)) => {
            drop(status_write);
            keep(reaper, status_read)
        }
        None => {
            drop(status_read);
            // Dies with the keeper; and the keeper may have died first.
            watch.arm_and_check()?;
            drop(watch);
            // Before the daemon exists: it shares our uid (virtiofsd).
            not_dumpable()?;
            // SAFETY: single-threaded (the reaper is a new process with
            // the keeper's one thread); the child returns into the
            // wrapper's code, the reaper loops below.
            let forked = unsafe { fork_into(0) }.op("fork the daemon")?;
            match forked {
                Some((pid, daemon)) => reap(pid.as_raw_nonzero().get(), daemon, status_write),
                None => {
                    drop(status_write);
                    signals::unblock(BLOCKED)
                }
            }
        }
    }
}

/// The keeper: passes signals on to the reaper until it is gone, then ends
/// as the daemon did.
fn keep(reaper: OwnedFd, status: OwnedFd) -> ! {
    let status = run_keeper(&reaper, &status).unwrap_or_else(|e| {
        crate::say!("wrapper: {e}");
        ExitStatus::Code(111)
    });
    end_as(status)
}

fn run_keeper(reaper: &OwnedFd, status: &OwnedFd) -> Result<ExitStatus> {
    not_dumpable()?;
    let sigfd = SignalFd::new(FORWARDED)?;
    crate::fds::close_all_except(&[
        sigfd.as_fd().as_raw_fd(),
        reaper.as_raw_fd(),
        status.as_raw_fd(),
    ])?;
    loop {
        let ready = crate::event::wait_readable(&[sigfd.as_fd(), reaper.as_fd()])?;
        if ready[0] {
            while let Some(sig) = sigfd.read()? {
                // The reaper may be exiting already: ESRCH is fine.
                let _ = signals::send(reaper, sig);
            }
        }
        if ready[1] {
            break;
        }
    }
    let own = wait_pidfd(reaper)?;
    // What the reaper wrote of the daemon's end; nothing if it was killed
    // (then its own end is all there is).
    let mut bytes = [0u8; 8];
    Ok(match rustix::io::read(status, &mut bytes) {
        Ok(8) => decode(bytes),
        _ => own,
    })
}

/// The reaper: PID 1 of the daemon's namespace. Passes signals on to the
/// daemon, reaps whatever is reparented to it, and once the daemon is
/// reaped says how it ended and exits (the kernel then kills the rest of
/// the namespace).
fn reap(pid: i32, daemon: OwnedFd, status: OwnedFd) -> ! {
    // A reaper that failed says so with 111, which the keeper then
    // relays (it finds no status of the daemon's in the pipe).
    let code: usize = match run_reaper(pid, &daemon, &status) {
        Ok(()) => 0,
        Err(e) => {
            crate::say!("wrapper: {e}");
            111
        }
    };
    // SAFETY: ends this process; nothing is left to run or drop.
    unsafe {
        let _ = syscall!(Sysno::exit_group, code);
    }
    unreachable!("exit_group returned")
}

/// `pid` is the daemon's in our namespace (a pidfd's fdinfo would give
/// it as the /proc we see numbers it: the VM's).
fn run_reaper(pid: i32, daemon: &OwnedFd, status: &OwnedFd) -> Result<()> {
    let sigfd = SignalFd::new(BLOCKED)?;
    crate::fds::close_all_except(&[
        sigfd.as_fd().as_raw_fd(),
        daemon.as_raw_fd(),
        status.as_raw_fd(),
    ])?;
    loop {
        crate::event::wait_readable(&[sigfd.as_fd()])?;
        while let Some(sig) = sigfd.read()? {
            if sig != SIGCHLD {
                let _ = signals::send(daemon, sig);
            }
        }
        while let Some((reaped, how)) = reap_any()? {
            if reaped == pid {
                rustix::io::write(status, &encode(how)).op("write the daemon's status")?;
                return Ok(());
            }
        }
    }
}

/// Ends the calling process as `status` says: the same code, or killed by
/// the same signal (without a core file of ours).
fn end_as(status: ExitStatus) -> ! {
    if let ExitStatus::Signal(sig) = status {
        let no_core = crate::rlimits::Limit {
            resource: crate::rlimits::Resource::Core,
            value: Some(0),
        };
        let _ = crate::rlimits::apply(&[no_core]);
        // (Rust's runtime ignores SIGPIPE: its default action back first.)
        let _ = signals::default_action(sig);
        let _ = signals::unblock(&[sig]);
        let _ = signals::raise(sig);
    }
    // Not killed by it (a signal whose default is to go on): the shell's
    // code for it.
    std::process::exit(status.relay_code().into())
}

fn not_dumpable() -> Result<()> {
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .op("prctl PR_SET_DUMPABLE 0")
}

fn wait_pidfd(pidfd: &OwnedFd) -> Result<ExitStatus> {
    loop {
        match rustix::process::waitid(
            rustix::process::WaitId::PidFd(pidfd.as_fd()),
            rustix::process::WaitIdOptions::EXITED,
        ) {
            Ok(Some(s)) => {
                return Ok(match (s.exit_status(), s.terminating_signal()) {
                    (Some(c), _) => ExitStatus::Code(c),
                    (None, Some(sig)) => ExitStatus::Signal(sig),
                    _ => ExitStatus::Unknown,
                })
            }
            Ok(None) => continue,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Error::sys("waitid on a pidfd", e)),
        }
    }
}

fn encode(status: ExitStatus) -> [u8; 8] {
    let (kind, value) = match status {
        ExitStatus::Code(c) => (0u32, c as u32),
        ExitStatus::Signal(s) => (1, s as u32),
        ExitStatus::Unknown => (2, 0),
    };
    let mut b = [0u8; 8];
    b[..4].copy_from_slice(&kind.to_ne_bytes());
    b[4..].copy_from_slice(&value.to_ne_bytes());
    b
}

fn decode(b: [u8; 8]) -> ExitStatus {
    let kind = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
    let value = u32::from_ne_bytes([b[4], b[5], b[6], b[7]]) as i32;
    match kind {
        0 => ExitStatus::Code(value),
        1 => ExitStatus::Signal(value),
        _ => ExitStatus::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_blocked_is_what_is_forwarded_and_sigchld() {
        let mut forwarded = FORWARDED.to_vec();
        forwarded.push(SIGCHLD);
        assert_eq!(BLOCKED, &forwarded[..]);
    }

    #[test]
    fn a_status_survives_the_pipe() {
        for s in [
            ExitStatus::Code(0),
            ExitStatus::Code(7),
            ExitStatus::Signal(31),
            ExitStatus::Unknown,
        ] {
            assert_eq!(decode(encode(s)), s);
        }
    }
}
