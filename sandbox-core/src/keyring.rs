//! Kernel keyrings (keyrings(7)): what a VM's processes start with.
//!
//! Of a process's keyrings only the session keyring crosses fork and exec
//! (the thread and process keyrings do not survive exec, and a fork starts
//! without a process keyring), so the session keyring is what a launcher
//! hands down: a login's (pam_keyinit) holds its secrets, and every
//! process started below shares and may write it. The user keyring is the
//! uid's, looked up in the caller's user namespace (since Linux 5.3 each
//! user namespace has its own register of them): a VM's processes, in
//! the VM's user namespaces and with the VM's host ids, never reach the
//! launcher's, and theirs go with the VM's user namespaces.

use syscalls::{syscall, Sysno};

use crate::error::{Context, Errno, Result};

const KEYCTL_JOIN_SESSION_KEYRING: usize = 1;

/// Replaces the calling thread's session keyring with a new, empty,
/// anonymous one owned by its real uid. Nothing of the previous one stays
/// reachable through it; what is added to the new one lives as long as
/// the processes that hold it.
///
/// A kernel built without keys (ENOSYS) has no keyring to leak: that is
/// not an error.
pub fn join_new_session_keyring() -> Result<()> {
    // SAFETY: a null name asks for an anonymous keyring; the kernel reads
    // no memory of ours.
    match unsafe { syscall!(Sysno::keyctl, KEYCTL_JOIN_SESSION_KEYRING, 0usize) } {
        Ok(_) => Ok(()),
        Err(e) if Errno::from(e) == Errno::ENOSYS => Ok(()),
        Err(e) => Err(e).op("keyctl KEYCTL_JOIN_SESSION_KEYRING (a new session keyring)"),
    }
}
