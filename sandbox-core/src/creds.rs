//! Ids: supplementary groups, then gid, then uid (each later step needs the
//! capability the one after it gives up).

use rustix::process::{Gid, Uid};
use rustix::thread::{set_thread_groups, set_thread_res_gid, set_thread_res_uid};

use crate::error::{Context, Result};

/// Becomes `uid`/`gid` with exactly `groups`, real, effective and saved.
/// The process must be single-threaded: these are the per-thread calls.
/// Clears PDEATHSIG when the ids change: re-arm it afterwards.
pub fn switch_ids(uid: u32, gid: u32, groups: &[u32]) -> Result<()> {
    let groups: Vec<Gid> = groups.iter().map(|&g| Gid::from_raw(g)).collect();
    set_thread_groups(&groups).op("setgroups")?;
    let gid = Gid::from_raw(gid);
    set_thread_res_gid(gid, gid, gid).op("setresgid")?;
    let uid = Uid::from_raw(uid);
    set_thread_res_uid(uid, uid, uid).op("setresuid")
}

/// Joins the user namespace open as `fd` (a namespace below ours, made by
/// PID 1: see `ns::guest_ids_user_namespace`). Our ids there are what its
/// maps make of them, and our capabilities reach only what it maps.
pub fn join_user_namespace(fd: std::os::fd::RawFd) -> Result<()> {
    const F_GETFD: usize = 1;
    // SAFETY: F_GETFD on a number reads no memory; it fails (EBADF) when
    // the number is not an open fd, which is all we ask.
    if unsafe { syscalls::syscall!(syscalls::Sysno::fcntl, fd as usize, F_GETFD) }.is_err() {
        return Err(crate::Error::Usage(format!(
            "fd {fd} (the user namespace to join) is not open"
        )));
    }
    // SAFETY: the fd is open (checked above) and only borrowed for the
    // call; it stays open until `fds::close_all_except` runs after.
    let ns = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    rustix::thread::move_into_link_name_space(ns, Some(rustix::thread::LinkNameSpaceType::User))
        .op("setns into the guest-ids user namespace")
}
