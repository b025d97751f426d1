//! Parent death. Every process of a VM dies with the one that started it:
//! PR_SET_PDEATHSIG(SIGKILL), then a check that the parent is still the one
//! we expect, since it may have died before the signal was armed.
//!
//! The kernel clears PDEATHSIG on every uid or gid change, so [`arm`] is
//! called again after each of them.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::{poll, PollFd, PollFlags};
use rustix::process::{
    getpid, getppid, pidfd_open, set_parent_process_death_signal, PidfdFlags, Signal,
};

use crate::error::{Context, Error, Result};

/// How a process outside a PID namespace recognizes its rightful parent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExpectedParent {
    /// getppid() must be this PID.
    Pid(i32),
    /// The parent's /proc/PID/comm must be this (s6 exports no PID of its
    /// own; a reparented process's new parent is s6-svscan or init).
    Comm(&'static str),
    /// A wrapper inside a VM: started by the VM's PID 1, or by the
    /// s6-supervise of a service of the VM's own s6-svscan (vm-init
    /// --services) holding the service's `supervise/lock`, or by an
    /// s6-ipcserverd that supervise runs (a per-connection service).
    InsideVm,
}

/// Arms PR_SET_PDEATHSIG(SIGKILL) for the calling thread.
pub fn arm() -> Result<()> {
    set_parent_process_death_signal(Some(Signal::KILL)).op("prctl PR_SET_PDEATHSIG")
}

/// Outside a PID namespace: arms PDEATHSIG, then checks the parent.
/// Returns the parent's PID.
pub fn arm_and_check(expected: &ExpectedParent) -> Result<i32> {
    arm()?;
    let ppid = getppid().map_or(0, |p| p.as_raw_nonzero().get());
    match expected {
        ExpectedParent::Pid(want) if *want == ppid => Ok(ppid),
        ExpectedParent::Pid(want) => Err(Error::Refused(format!(
            "parent is PID {ppid}, not {want}: the supervisor is gone"
        ))),
        ExpectedParent::InsideVm if ppid == 1 => Ok(ppid),
        ExpectedParent::InsideVm => {
            // An s6-ipcserverd's supervise is the lock holder; it runs in
            // the service directory too.
            let supervise = match comm(ppid)?.as_str() {
                "s6-ipcserverd" => parent_of(ppid)?,
                _ => ppid,
            };
            if comm(supervise)? != "s6-supervise"
                || !std::path::Path::new("supervise/lock").exists()
            {
                return Err(Error::Refused(format!(
                    "parent is PID {ppid}, neither the VM's PID 1 nor a service's \
                     s6-supervise: the supervisor is gone"
                )));
            }
            check_supervise_lock(supervise)?;
            Ok(ppid)
        }
        ExpectedParent::Comm(want) => {
            let comm = comm(ppid)?;
            if comm == *want {
                Ok(ppid)
            } else {
                Err(Error::Refused(format!(
                    "parent PID {ppid} is {comm:?}, not {want}: the supervisor is gone"
                )))
            }
        }
    }
}

fn comm(pid: i32) -> Result<String> {
    let path = format!("/proc/{pid}/comm");
    let comm = std::fs::read_to_string(&path).op_path("read", &path)?;
    Ok(comm.trim_end_matches('\n').to_owned())
}

fn parent_of(pid: i32) -> Result<i32> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).op_path("read", &path)?;
    // Fields after the command's closing parenthesis: state ppid ...
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse().ok())
        .ok_or_else(|| Error::Refused(format!("{path}: no parent PID")))
}

/// Under s6 the working directory is the service directory, and its
/// `supervise/lock` is held by the s6-supervise that runs the service. A
/// run script whose supervisor died before it asked for the supervisor's
/// PID (`getpid -P`) got its reaper's PID instead, which getppid() then
/// matches: the lock tells them apart. Its holder must be our parent; a
/// lock held by nobody (the supervisor is gone) or by another process (a
/// new supervisor that started a new copy) is a refusal.
pub fn check_supervise_lock(ppid: i32) -> Result<()> {
    let lock = std::path::Path::new("supervise/lock");
    if !lock.exists() {
        // Not started by s6-supervise from a service directory.
        return Ok(());
    }
    match crate::locks::posix_lock_holder(lock)? {
        Some(holder) if holder == ppid => Ok(()),
        Some(holder) => Err(Error::Refused(format!(
            "supervise/lock is held by PID {holder}, not by our parent {ppid}: \
             the supervisor that started us is gone"
        ))),
        None => Err(Error::Refused(format!(
            "supervise/lock is held by nobody, and our parent is PID {ppid}: \
             the supervisor that started us is gone"
        ))),
    }
}

/// A pidfd of the calling process, opened before it clones a child into a
/// new PID namespace: there getppid() returns 0, so the child checks this
/// fd instead.
#[derive(Debug)]
pub struct ParentWatch(OwnedFd);

impl ParentWatch {
    pub fn of_self() -> Result<ParentWatch> {
        pidfd_open(getpid(), PidfdFlags::empty())
            .op("pidfd_open of self")
            .map(ParentWatch)
    }

    /// In the child: arms PDEATHSIG, then fails if the parent already exited
    /// (a pidfd polls readable once its process is gone).
    pub fn arm_and_check(&self) -> Result<()> {
        arm()?;
        if self.has_exited()? {
            return Err(Error::Refused(
                "the outer process exited before PID 1 armed PDEATHSIG".into(),
            ));
        }
        Ok(())
    }

    pub fn has_exited(&self) -> Result<bool> {
        let mut fds = [PollFd::new(&self.0, PollFlags::IN)];
        let n = poll(
            &mut fds,
            Some(&rustix::event::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            }),
        )
        .op("poll the parent's pidfd")?;
        Ok(n > 0)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}
