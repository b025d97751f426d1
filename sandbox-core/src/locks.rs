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
        match self.set_lock(slot, F_WRLCK) {
            Ok(()) => Ok(true),
            Err(Errno::EWOULDBLOCK | Errno::EACCES) => Ok(false),
            Err(e) => Err(Error::sys("fcntl F_OFD_SETLK", e)),
        }
    }

    /// Gives back slot `n`, locked by [`SlotFile::try_lock`].
    fn unlock(&self, slot: Slot) -> Result<()> {
        self.set_lock(slot, F_UNLCK)
            .map_err(|e| Error::sys("fcntl F_OFD_SETLK F_UNLCK", e))
    }

    /// F_OFD_SETLK of `kind` (a write lock, or none) on byte `slot`.
    fn set_lock(&self, slot: Slot, kind: i16) -> std::result::Result<(), Errno> {
        let lock = Flock {
            l_type: kind,
            l_whence: 0,
            l_start: i64::from(slot.index()),
            l_len: 1,
            l_pid: 0,
        };
        // SAFETY: the kernel reads one `struct flock` that lives for the call.
        unsafe {
            syscall!(
                Sysno::fcntl,
                self.0.as_raw_fd() as usize,
                F_OFD_SETLK,
                std::ptr::addr_of!(lock) as usize
            )
        }
        .map(drop)
        .map_err(Errno::from)
    }

    /// Locks the lowest free slot. The lock is held by this open file
    /// description: keep the SlotFile alive as long as the VM.
    ///
    /// Free means unlocked and no process of the host with an id of the
    /// slot's block. The lock goes when the last of the VM's outer and
    /// PID 1 exits, and PID 1's exit closes its files before the kernel
    /// kills the rest of the VM's PID namespace: a daemon of a VM killed a
    /// moment ago may still be there, dying, with the block's ids. Such a
    /// slot is skipped, never waited for. The processes are counted once
    /// the slot is locked: from then on no new process gets its ids but
    /// ours, so one found is one of another VM, and none found stays so.
    pub fn lock_lowest_free(&self) -> Result<Slot> {
        let mut lingering: Option<Vec<bool>> = None;
        for n in 0..SLOTS {
            let slot = Slot::new(n).expect("n < SLOTS");
            if lingering.as_ref().is_some_and(|l| l[n as usize]) {
                continue;
            }
            if !self.try_lock(slot)? {
                continue;
            }
            let found = slots_with_processes()?;
            if !found[n as usize] {
                return Ok(slot);
            }
            self.unlock(slot)?;
            lingering = Some(found);
        }
        Err(Error::Refused(format!(
            "no free id slot: all {SLOTS} are in use by a VM or by a process of their ids"
        )))
    }
}

/// Which slots' blocks hold the effective uid or gid of a live process of
/// the host: the owner of `/proc/PID`, which is the process's effective
/// ids whatever it is (only the files below a non-dumpable process's are
/// root's), and one stat where reading every `status` costs milliseconds.
/// A process of a VM has no other ids: none may change them outside its
/// block. A zombie runs nothing and is left out; a process gone while
/// being looked at too.
fn slots_with_processes() -> Result<Vec<bool>> {
    use std::os::unix::fs::MetadataExt;
    let mut found = vec![false; SLOTS as usize];
    let proc = Path::new("/proc");
    for entry in std::fs::read_dir(proc).op_path("read", proc)? {
        let Ok(entry) = entry else { continue };
        if !entry
            .file_name()
            .as_encoded_bytes()
            .iter()
            .all(u8::is_ascii_digit)
        {
            continue;
        }
        let Ok(meta) = entry.metadata() else { continue };
        let slots: Vec<Slot> = [meta.uid(), meta.gid()]
            .into_iter()
            .filter_map(Slot::of_host_id)
            .collect();
        if slots.is_empty() || !is_alive(&entry.path()) {
            continue;
        }
        for slot in slots {
            found[slot.index() as usize] = true;
        }
    }
    Ok(found)
}

/// Whether any thread of the process runs: a leader that exited shows
/// as a zombie while its other threads live on (a process of a VM
/// killed a moment ago is whole, but one whose leader called
/// pthread_exit is not).
fn is_alive(dir: &Path) -> bool {
    if !is_zombie(&dir.join("stat")) {
        return true;
    }
    std::fs::read_dir(dir.join("task"))
        .is_ok_and(|tasks| tasks.flatten().any(|t| !is_zombie(&t.path().join("stat"))))
}

/// The state in a `stat` file (after the command's closing parenthesis)
/// is Z, or the thread is gone.
fn is_zombie(stat: &Path) -> bool {
    std::fs::read_to_string(stat).map_or(true, |stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_alive_while_a_thread_of_it_runs() {
        assert!(is_alive(Path::new("/proc/self")));
        // A thread of ours, by its own directory: alive too.
        let tid = rustix::thread::gettid().as_raw_nonzero().get();
        assert!(is_alive(Path::new(&format!("/proc/self/task/{tid}"))));
        assert!(!is_alive(Path::new("/proc/no-such-process")));
    }
}
