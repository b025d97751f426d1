//! Locks that live exactly as long as a VM: a VM's own lock (flock on its
//! directory, so no file is created) and its id slot (an OFD byte-range
//! lock on byte N of one host-wide file, [`SLOT_FILE`], so 256 slots need
//! one file, not 256 that would stay behind). The slot file is the same
//! whatever the state dir: two VMs in two state dirs never share ids. Both are owned by the open file
//! description: inherited by PID 1 across the clone, released by the kernel
//! when the last process holding it is gone, whatever killed it.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use rustix::fs::{flock, FlockOperation};
use syscalls::{syscall, Sysno};

use crate::error::{Context, Errno, Error, Result};
use crate::ids::{Slot, SLOTS};

/// Takes the VM's own lock: fails with `Refused` if another vm-init holds it.
pub fn lock_vm_dir(vm_dir: &Path) -> Result<File> {
    let dir = File::open(vm_dir).op_path("open", vm_dir)?;
    match flock(&dir, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(dir),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(Error::Refused(format!(
            "{} is locked: this VM is already running",
            vm_dir.display()
        ))),
        Err(e) => Err(Error::path("flock", vm_dir, e)),
    }
}

/// `struct flock` of fcntl(2) on x86_64 and aarch64.
#[repr(C)]
struct Flock {
    l_type: i16,
    l_whence: i16,
    l_start: i64,
    l_len: i64,
    l_pid: i32,
}

const F_OFD_SETLK: usize = 37;
const F_WRLCK: i16 = 1;

/// The slot file, opened once per process that takes slots.
#[derive(Debug)]
pub struct SlotFile(File);

const F_GETLK: usize = 5;
const F_UNLCK: i16 = 2;

/// The PID holding a POSIX (fcntl) lock on `path`, if any: how
/// s6-supervise marks its service directory as supervised
/// (`supervise/lock`, held for its whole life, released when it dies).
pub fn posix_lock_holder(path: &Path) -> Result<Option<i32>> {
    let file = File::open(path).op_path("open", path)?;
    let mut lock = Flock {
        l_type: F_WRLCK,
        l_whence: 0,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    // SAFETY: the kernel reads and writes one `struct flock` that lives
    // for the call.
    unsafe {
        syscall!(
            Sysno::fcntl,
            file.as_raw_fd() as usize,
            F_GETLK,
            std::ptr::addr_of_mut!(lock) as usize
        )
    }
    .op_path("fcntl F_GETLK", path)?;
    Ok((lock.l_type != F_UNLCK).then_some(lock.l_pid))
}

/// The one slot file of the host, in a directory only root may enter.
pub const SLOT_FILE: &str = "/run/vm-sandbox/slots";

impl SlotFile {
    pub fn open() -> Result<SlotFile> {
        let path = Path::new(SLOT_FILE);
        let dir = path.parent().expect("the slot file has a directory");
        match std::fs::DirBuilder::new().mode(0o700).create(dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(Error::path("mkdir", dir, e))
            }
            _ => {}
        }
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .op_path("open", path)
            .map(SlotFile)
    }

    /// Tries to lock slot `n`; Ok(false) when another VM holds it.
    pub fn try_lock(&self, slot: Slot) -> Result<bool> {
        let lock = Flock {
            l_type: F_WRLCK,
            l_whence: 0,
            l_start: i64::from(slot.index()),
            l_len: 1,
            l_pid: 0,
        };
        // SAFETY: the kernel reads one `struct flock` that lives for the call.
        let r = unsafe {
            syscall!(
                Sysno::fcntl,
                self.0.as_raw_fd() as usize,
                F_OFD_SETLK,
                std::ptr::addr_of!(lock) as usize
            )
        };
        match r {
            Ok(_) => Ok(true),
            Err(e) if matches!(Errno::from(e), Errno::EWOULDBLOCK | Errno::EACCES) => Ok(false),
            Err(e) => Err(Error::sys("fcntl F_OFD_SETLK", e)),
        }
    }

    /// Locks the lowest free slot. The lock is held by this open file
    /// description: keep the SlotFile alive as long as the VM.
    pub fn lock_lowest_free(&self) -> Result<Slot> {
        for n in 0..SLOTS {
            let slot = Slot::new(n).expect("n < SLOTS");
            if self.try_lock(slot)? {
                return Ok(slot);
            }
        }
        Err(Error::Refused(format!(
            "no free id slot: all {SLOTS} are in use"
        )))
    }
}
