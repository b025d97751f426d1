//! Mounts: the VM's mount namespace (built by PID 1) and each service's
//! (built by its wrapper, nested in the VM's). Everything here runs before
//! Landlock, since a Landlock domain cannot mount.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::CWD;
use rustix::mount::{
    mount, mount_change, move_mount, open_tree, MountFlags, MountPropagationFlags, MoveMountFlags,
    OpenTreeFlags,
};
use syscalls::{syscall, Sysno};

use crate::error::{Context, Error, Result};

const AT_RECURSIVE: usize = 0x8000;
const AT_EMPTY_PATH: usize = 0x1000;
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

fn mount_setattr(dirfd: i32, path: &Path, flags: usize, attr: &MountAttr) -> Result<()> {
    let c_path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::Usage(format!("path {} contains NUL", path.display())))?;
    // SAFETY: `c_path` and `attr` are live for the call and the size passed
    // is the size of `struct mount_attr`; the kernel only reads them.
    unsafe {
        syscall!(
            Sysno::mount_setattr,
            dirfd as isize as usize,
            c_path.as_ptr() as usize,
            flags,
            attr as *const MountAttr as usize,
            std::mem::size_of::<MountAttr>()
        )
    }
    .map(drop)
    .op_path("mount_setattr", path)
}

/// Cuts this mount namespace off from propagation in both directions: a
/// mount made here never reaches the host, and none of the host's reach us.
pub fn make_private() -> Result<()> {
    mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .op_path("make mounts private under", "/")
}

/// Makes every mount at and below `path` read-only and nosuid (no setuid
/// binary of the host gains anything here). Mounts inherited from the host
/// are locked in this namespace: they can be made stricter, never looser.
pub fn make_readonly_recursive(path: &Path) -> Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    mount_setattr(CWD.as_raw_fd(), path, AT_RECURSIVE, &attr)
}

/// A detached copy of the mount tree at `path` (open_tree OPEN_TREE_CLONE),
/// to be attached elsewhere with [`attach`] after `path` is covered.
pub fn clone_tree(path: &Path) -> Result<OwnedFd> {
    open_tree(
        CWD,
        path,
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE,
    )
    .op_path("open_tree clone", path)
}

/// Marks a detached tree as idmapped through `userns` (an fd of a user
/// namespace): ids of files are shifted by that namespace's maps.
pub fn idmap_tree(tree: &OwnedFd, userns: impl AsFd, what: &Path) -> Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_fd().as_raw_fd() as u64,
    };
    mount_setattr(
        tree.as_raw_fd(),
        Path::new(""),
        AT_EMPTY_PATH | AT_RECURSIVE,
        &attr,
    )
    .map_err(|e| match e {
        Error::Path { errno, .. } => Error::path(
            "idmapped mount (mount_setattr MOUNT_ATTR_IDMAP) of",
            what,
            errno,
        ),
        other => other,
    })
}

/// Attaches a detached tree (from [`clone_tree`]) at `target`.
pub fn attach(tree: &OwnedFd, target: &Path) -> Result<()> {
    move_mount(
        tree,
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .op_path("move_mount onto", target)
}

/// A fresh procfs for the calling process's PID namespace. With `hide`, the
/// mount has hidepid=invisible: a process sees only the processes it could
/// ptrace-read, which for a sandboxed service means itself.
pub fn mount_proc(target: &Path, hide: bool) -> Result<()> {
    let data: &std::ffi::CStr = if hide { c"hidepid=invisible" } else { c"" };
    mount(
        "proc",
        target,
        "proc",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        data,
    )
    .op_path("mount proc on", target)
}

/// A private tmpfs, world-writable with the sticky bit like /tmp, so a
/// service of any uid can use it; `size` bounds what it can hold.
pub fn mount_tmpfs(target: &Path, mode: u32, size: &str) -> Result<()> {
    let data = CString::new(format!("mode={mode:o},size={size}"))
        .map_err(|_| Error::Usage("tmpfs size contains NUL".into()))?;
    mount(
        "tmpfs",
        target,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        data.as_c_str(),
    )
    .op_path("mount tmpfs on", target)
}

/// The VM's mount namespace, built by PID 1 in the namespace clone_vm made:
/// private propagation, the host rootfs read-only, a fresh /proc for the
/// VM's PID namespace, the state dir replaced by one holding only this VM.
pub fn build_vm_namespace(state_dir: &Path, name: &str) -> Result<PathBuf> {
    // Private first: nothing below may leak to the host's mount namespace.
    make_private()?;
    // The caller's working directory is a host path: leave it.
    std::env::set_current_dir("/").op_path("chdir", "/")?;
    // Clone the VM's directory while it is still writable and visible.
    let vm_dir = state_dir.join(name);
    let tree = clone_tree(&vm_dir)?;
    // The host rootfs, every submount included (/sys, /dev, ...), read-only.
    // Device nodes stay usable: a read-only mount does not stop opening a
    // device for writing, only writing to the file system.
    make_readonly_recursive(Path::new("/"))?;
    mount_proc(Path::new("/proc"), false)?;
    // Other VMs' directories must not exist here at all, not merely be
    // unreadable: a tmpfs covers the state dir, holding only this VM's.
    mount_tmpfs(state_dir, 0o755, "64k")?;
    std::fs::create_dir(&vm_dir).op_path("mkdir", &vm_dir)?;
    attach(&tree, &vm_dir)?;
    Ok(vm_dir)
}

/// One mount of a service's private namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceMount {
    /// A private tmpfs (mode 1777) of this size on this path.
    Tmpfs { target: PathBuf, size: &'static str },
    /// A fresh /proc with hidepid=invisible.
    ProcHidden,
    /// `dir` replaced by a read-only tmpfs holding only the paths `keep`
    /// (relative, may be nested), each bound from what was there: the VM
    /// directory as one daemon sees it, or /dev with only its devices.
    /// Absent paths are skipped (gpu.sock of a VM without a GPU).
    Only { dir: PathBuf, keep: Vec<String> },
}

/// Replaces `dir` by a read-only tmpfs holding only `keep`: everything
/// else of the directory (other daemons' sockets, the VM's config, its
/// storage) does not exist in this mount namespace. DAC cannot keep uid-0
/// daemons (virtiofsd, with DAC_OVERRIDE) from each other's sockets, and
/// Landlock below ABI 9 does not restrict connect(2) to a path socket.
pub fn keep_only(dir: &Path, keep: &[String]) -> Result<()> {
    let mut trees = Vec::new();
    for name in keep {
        let path = dir.join(name);
        if !path.starts_with(dir) || name.split('/').any(|c| c == ".." || c.is_empty()) {
            return Err(Error::Usage(format!(
                "{name:?} is not a path below {}",
                dir.display()
            )));
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        trees.push((path.clone(), meta.is_dir(), clone_tree(&path)?));
    }
    mount_tmpfs(dir, 0o755, "16k")?;
    for (path, is_dir, tree) in &trees {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).op_path("mkdir", parent)?;
        }
        // A bind needs a mount point of its own kind: a directory for a
        // directory, a file for anything else (a socket, a log).
        if *is_dir {
            std::fs::create_dir(path).op_path("mkdir", path)?;
        } else {
            std::fs::File::create(path).op_path("create", path)?;
        }
        attach(tree, path)?;
    }
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    mount_setattr(CWD.as_raw_fd(), dir, 0, &attr)
}

/// A service's own mount namespace, nested in the VM's.
pub fn build_service_namespace(mounts: &[ServiceMount]) -> Result<()> {
    // SAFETY: NEWNS alone does not unshare the fd table, the only flag that
    // makes unshare unsafe for other threads.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
        .op("unshare mount namespace")?;
    make_private()?;
    for m in mounts {
        match m {
            ServiceMount::Tmpfs { target, size } => mount_tmpfs(target, 0o1777, size)?,
            ServiceMount::ProcHidden => mount_proc(Path::new("/proc"), true)?,
            ServiceMount::Only { dir, keep } => keep_only(dir, keep)?,
        }
    }
    Ok(())
}
