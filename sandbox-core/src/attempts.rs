//! Raw system calls the escape-matrix probe attempts and rustix does not
//! wrap. Compiled only with the `probe` feature, which no wrapper enables:
//! it exists so that the probe (tests/) needs no `unsafe` of its own.

use syscalls::{syscall, Sysno};

use crate::error::Errno;

const PTRACE_ATTACH: usize = 16;
const PTRACE_DETACH: usize = 17;
const CLONE_NEWUSER: usize = 0x1000_0000;
const CLONE_NEWNS: usize = 0x0002_0000;

/// PTRACE_ATTACH to `pid`; detaches at once if it ever succeeds.
pub fn ptrace_attach(pid: i32) -> Result<(), Errno> {
    // SAFETY: PTRACE_ATTACH with null addr/data reads no memory of ours.
    let r = unsafe { syscall!(Sysno::ptrace, PTRACE_ATTACH, pid as usize, 0usize, 0usize) };
    match r {
        Ok(_) => {
            // SAFETY: as above; undoes the attach the sandbox failed to stop.
            let _ = unsafe { syscall!(Sysno::ptrace, PTRACE_DETACH, pid as usize, 0usize, 0usize) };
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads 8 bytes at `addr` of `pid`'s memory with process_vm_readv.
pub fn process_vm_read(pid: i32, addr: usize) -> Result<(), Errno> {
    let mut buf = [0u8; 8];
    let local = [buf.as_mut_ptr() as usize, buf.len()];
    let remote = [addr, buf.len()];
    // SAFETY: `local` describes a live 8-byte buffer we own; `remote` is
    // only read by the kernel in the other process (if permitted at all).
    unsafe {
        syscall!(
            Sysno::process_vm_readv,
            pid as usize,
            local.as_ptr() as usize,
            1usize,
            remote.as_ptr() as usize,
            1usize,
            0usize
        )
    }
    .map(drop)
    .map_err(Into::into)
}

/// unshare(CLONE_NEWUSER).
pub fn unshare_user() -> Result<(), Errno> {
    // SAFETY: unshare of a user namespace touches no memory of ours.
    unsafe { syscall!(Sysno::unshare, CLONE_NEWUSER) }
        .map(drop)
        .map_err(Into::into)
}

/// unshare(CLONE_NEWNS).
pub fn unshare_mount() -> Result<(), Errno> {
    // SAFETY: unshare of a mount namespace touches no memory of ours.
    unsafe { syscall!(Sysno::unshare, CLONE_NEWNS) }
        .map(drop)
        .map_err(Into::into)
}

const IPC_CREAT: usize = 0o1000;
const IPC_RMID: usize = 0;

/// shmget(key, size, IPC_CREAT when `create` | mode): the segment's id.
pub fn shmget(key: i32, size: usize, create: bool, mode: u32) -> Result<i32, Errno> {
    let flags = mode as usize | if create { IPC_CREAT } else { 0 };
    // SAFETY: shmget takes plain integers and reads no memory of ours.
    unsafe { syscall!(Sysno::shmget, key as isize as usize, size, flags) }
        .map(|id| id as i32)
        .map_err(Into::into)
}

/// shmctl(id, IPC_RMID): removes a segment.
pub fn shm_remove(id: i32) -> Result<(), Errno> {
    // SAFETY: IPC_RMID with a null buffer reads and writes no memory.
    unsafe { syscall!(Sysno::shmctl, id as usize, IPC_RMID, 0usize) }
        .map(drop)
        .map_err(Into::into)
}
