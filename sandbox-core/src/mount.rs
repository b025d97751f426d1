//! Mounts: the VM's mount namespace (built by PID 1) and each service's
//! (built by its wrapper, nested in the VM's). Everything here runs before
//! Landlock, since a Landlock domain cannot mount.

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::CWD;
use rustix::mount::{
    mount, mount_change, move_mount, open_tree, unmount, MountFlags, MountPropagationFlags,
    MoveMountFlags, OpenTreeFlags, UnmountFlags,
};
use syscalls::{syscall, Sysno};

use crate::error::{Context, Error, Result};

const AT_RECURSIVE: usize = 0x8000;
const AT_EMPTY_PATH: usize = 0x1000;
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
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

/// A detached copy of the mount at the file `fd` names (an O_PATH fd):
/// what was reached by a walk, never by the path again.
pub fn clone_at(fd: &OwnedFd, what: &Path) -> Result<OwnedFd> {
    open_tree(
        fd,
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .op_path("open_tree clone", what)
}

/// Marks a detached tree as idmapped through `userns` (an fd of a user
/// namespace): ids of files are shifted by that namespace's maps.
pub fn idmap_tree(tree: &OwnedFd, userns: impl AsFd, what: &Path) -> Result<()> {
    // nosuid, nodev: a guest's root can make setuid-root files and device
    // nodes on the storage; nothing of the VM may use them.
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
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

/// A tmpfs bounded in bytes (`size=`) and in inodes (`nr_inodes=`: every
/// file, directory, socket, FIFO and symlink, its root included). A size
/// alone bounds only what files hold: empty files and sockets cost none of
/// it, and a tmpfs's default inode count is half the host's RAM pages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tmpfs {
    pub mode: u32,
    /// The host id owning its root (uid and gid), when not the caller's.
    pub owner: Option<u32>,
    pub size: &'static str,
    pub inodes: u32,
}

/// Mounts `tmpfs` on `target`: nosuid, nodev, noexec.
pub fn mount_tmpfs(target: &Path, tmpfs: &Tmpfs) -> Result<()> {
    let Tmpfs {
        mode,
        owner,
        size,
        inodes,
    } = *tmpfs;
    let mut data = format!("mode={mode:o},size={size},nr_inodes={inodes}");
    if let Some(id) = owner {
        data.push_str(&format!(",uid={id},gid={id}"));
    }
    let data = CString::new(data).map_err(|_| Error::Usage("tmpfs size contains NUL".into()))?;
    mount(
        "tmpfs",
        target,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC,
        data.as_c_str(),
    )
    .op_path("mount tmpfs on", target)
}

/// Whether `path` (not followed) is the root of a mount, and whether that
/// mount is a tmpfs.
pub fn mount_root(path: &Path) -> Result<Option<MountRoot>> {
    use rustix::fs::{AtFlags, StatxAttributes, StatxFlags};
    let st = rustix::fs::statx(
        CWD,
        path,
        AtFlags::NO_AUTOMOUNT | AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::empty(),
    )
    .op_path("statx", path)?;
    if !st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT) {
        return Ok(None);
    }
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let fs = rustix::fs::statfs(path).op_path("statfs", path)?;
    Ok(Some(if fs.f_type as i64 == TMPFS_MAGIC {
        MountRoot::Tmpfs
    } else {
        MountRoot::Other
    }))
}

/// What [`mount_root`] found mounted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MountRoot {
    Tmpfs,
    Other,
}

/// A nosuid,nodev tmpfs on which programs may run: the scan directory of
/// a VM's own s6, and the state dirs of tests on a host whose /run is not
/// a tmpfs.
pub fn mount_state_tmpfs(target: &Path) -> Result<()> {
    mount(
        "tmpfs",
        target,
        "tmpfs",
        MountFlags::NOSUID | MountFlags::NODEV,
        c"mode=755",
    )
    .op_path("mount tmpfs on", target)
}

/// Whether `path` is on a nosuid,nodev file system already.
pub fn is_nosuid_nodev(path: &Path) -> bool {
    use rustix::fs::StatVfsMountFlags as F;
    rustix::fs::statvfs(path).is_ok_and(|s| s.f_flag.contains(F::NOSUID | F::NODEV))
}

/// Detaches the mount at `target`.
pub fn detach(target: &Path) -> Result<()> {
    unmount(target, UnmountFlags::DETACH).op_path("unmount", target)
}

/// The VM's mount namespace, built by PID 1 in the namespace clone_vm made:
/// private propagation, the host rootfs read-only, a fresh /proc for the
/// VM's PID namespace, the state dir replaced by one holding only this VM,
/// whose directory is `vm_tree`: a detached tree of it the outer vm-init
/// made as host root. PID 1 could not reach it by path: the state dir is
/// root's alone (`host::check_closed`) and PID 1's ids are the VM's.
/// Mounting over the state dir needs only search on the directories above.
pub fn build_vm_namespace(state_dir: &Path, name: &str, vm_tree: &OwnedFd) -> Result<PathBuf> {
    // Private first: nothing below may leak to the host's mount namespace.
    make_private()?;
    // The caller's working directory is a host path: leave it.
    std::env::set_current_dir("/").op_path("chdir", "/")?;
    let vm_dir = state_dir.join(name);
    // The host rootfs, every submount included (/sys, /dev, ...), read-only.
    // Device nodes stay usable: a read-only mount does not stop opening a
    // device for writing, only writing to the file system. (The VM's
    // directory, detached, stays writable.)
    make_readonly_recursive(Path::new("/"))?;
    mount_proc(Path::new("/proc"), false)?;
    // Other VMs' directories must not exist here at all, not merely be
    // unreadable: a tmpfs covers the state dir, holding only this VM's.
    mount_tmpfs(
        state_dir,
        &Tmpfs {
            mode: 0o755,
            owner: None,
            size: "64k",
            // Its root and the VM's mount point.
            inodes: 8,
        },
    )?;
    std::fs::create_dir(&vm_dir).op_path("mkdir", &vm_dir)?;
    attach(vm_tree, &vm_dir)?;
    Ok(vm_dir)
}

/// One mount of a service's private namespace, made fresh.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceMount {
    /// A private tmpfs (mode 1777) on this path, of this size (tmpfs
    /// `size=`) and this many inodes (`nr_inodes=`, its root included).
    Tmpfs {
        target: PathBuf,
        size: &'static str,
        inodes: u32,
    },
    /// A fresh /proc with hidepid=invisible.
    ProcHidden,
}

impl ServiceMount {
    pub fn target(&self) -> &Path {
        match self {
            ServiceMount::Tmpfs { target, .. } => target,
            ServiceMount::ProcHidden => Path::new("/proc"),
        }
    }
}

/// One path of a service's view, bound from the same path of the VM's
/// mount namespace. A service's root holds these and nothing else.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Visible {
    pub path: PathBuf,
    /// Bound read-write (the daemon's own files); read-only otherwise.
    pub writable: bool,
    /// Skipped when absent; a missing required path is an error.
    pub optional: bool,
    /// Attached from this fd (a detached mount the caller holds) instead
    /// of bound from the path.
    pub from: Option<std::os::fd::RawFd>,
}

/// Where a service's new root is put together before pivot_root: /tmp
/// exists on every host, and whatever it held that the view names was
/// cloned before the tmpfs covers it.
const STAGING: &str = "/tmp";

/// Creates the mount point of a bind: a directory for a directory, an
/// empty file for anything else (a socket, a device node, a log).
fn mount_point(path: &Path, is_dir: bool) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).op_path("mkdir", parent)?;
    }
    let made = if is_dir {
        std::fs::create_dir(path).map(drop)
    } else {
        std::fs::File::create_new(path).map(drop)
    };
    match made {
        // Inside a bind made just before (/usr, then /usr/share/vulkan).
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other.op_path("create mount point", path),
    }
}

/// A service's own mount namespace, nested in the VM's, whose root is a
/// read-only tmpfs holding exactly `view` (each path bound from the VM's
/// namespace, read-only unless writable, nosuid, and nodev unless the path
/// is itself a device node: a directory never carries usable devices)
/// and the fresh `mounts`. Nothing else of the host exists there: no
/// /run, /var/run, /tmp or /dev/log with host sockets, no other VM's
/// directory, no device but the daemon's own. DAC cannot keep a uid-0
/// daemon (virtiofsd, with DAC_OVERRIDE) from a socket, and Landlock
/// below ABI 9 does not restrict connect(2) to a path socket: what is not
/// in the view cannot be connected to, opened or even named.
pub fn build_service_namespace(mounts: &[ServiceMount], view: &[Visible]) -> Result<()> {
    // SAFETY: NEWNS alone does not unshare the fd table, the only flag that
    // makes unshare unsafe for other threads.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }
        .op("unshare mount namespace")?;
    make_private()?;
    let trees = view_trees(mounts, view)?;
    let root = Path::new(STAGING);
    // Read-only once built: it holds the view's mount points and nothing
    // else (a GPU daemon's, the largest, has fewer than 100).
    mount_tmpfs(
        root,
        &Tmpfs {
            mode: 0o755,
            owner: None,
            size: "1m",
            inodes: 1024,
        },
    )?;
    let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
    for t in &trees {
        let target = inside(&t.view.path);
        mount_point(&target, t.is_dir)?;
        attach(&t.tree, &target)?;
    }
    for m in mounts {
        let target = inside(m.target());
        mount_point(&target, true)?;
        match m {
            &ServiceMount::Tmpfs { size, inodes, .. } => mount_tmpfs(
                &target,
                &Tmpfs {
                    mode: 0o1777,
                    owner: None,
                    size,
                    inodes,
                },
            )?,
            ServiceMount::ProcHidden => mount_proc(&target, true)?,
        }
    }
    // Flags last, parents first: a writable path bound below a read-only
    // one gets its write access back.
    for t in &trees {
        let mut set = MOUNT_ATTR_NOSUID;
        let mut clear = 0;
        if t.view.writable {
            clear |= MOUNT_ATTR_RDONLY;
        } else {
            set |= MOUNT_ATTR_RDONLY;
        }
        if !t.device {
            set |= MOUNT_ATTR_NODEV;
        }
        let attr = MountAttr {
            attr_set: set,
            attr_clr: clear,
            propagation: 0,
            userns_fd: 0,
        };
        mount_setattr(CWD.as_raw_fd(), &inside(&t.view.path), AT_RECURSIVE, &attr)?;
    }
    pivot_into_read_only(root)
}

/// A path of a service's view, as a detached tree to attach.
struct ViewTree<'v> {
    view: &'v Visible,
    is_dir: bool,
    /// A device node, which keeps its device access (no nodev).
    device: bool,
    tree: OwnedFd,
}

/// The view's paths as detached trees, parents before children (/usr is
/// bound before /usr/share/vulkan, which then lands on top of it); a path
/// a mount covers is left out, an optional one that does not exist too.
fn view_trees<'v>(mounts: &[ServiceMount], view: &'v [Visible]) -> Result<Vec<ViewTree<'v>>> {
    let mut view: Vec<&Visible> = view
        .iter()
        .filter(|v| !mounts.iter().any(|m| m.target() == v.path))
        .collect();
    view.sort_by(|a, b| a.path.cmp(&b.path));
    let mut trees = Vec::new();
    for v in view {
        if !v.path.is_absolute() {
            return Err(Error::Usage(format!(
                "{} is not an absolute path",
                v.path.display()
            )));
        }
        if let Some(fd) = v.from {
            // SAFETY: the policy names an fd its wrapper holds open until
            // exec; it is only borrowed for this dup.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let tree =
                rustix::io::fcntl_dupfd_cloexec(fd, 0).op_path("take the mount of", &v.path)?;
            let st = rustix::fs::fstat(&tree).op_path("stat the mount of", &v.path)?;
            let kind = rustix::fs::FileType::from_raw_mode(st.st_mode);
            let device = matches!(
                kind,
                rustix::fs::FileType::CharacterDevice | rustix::fs::FileType::BlockDevice
            );
            let is_dir = kind == rustix::fs::FileType::Directory;
            trees.push(ViewTree {
                view: v,
                is_dir,
                device,
                tree,
            });
            continue;
        }
        // Followed: /lib -> usr/lib is bound as the directory it names.
        let meta = match std::fs::metadata(&v.path) {
            Err(e) if v.optional && e.kind() == std::io::ErrorKind::NotFound => continue,
            other => other.op_path("stat", &v.path)?,
        };
        use std::os::unix::fs::FileTypeExt;
        let device = meta.file_type().is_char_device() || meta.file_type().is_block_device();
        trees.push(ViewTree {
            view: v,
            is_dir: meta.is_dir(),
            device,
            tree: clone_tree(&v.path)?,
        });
    }
    Ok(trees)
}

/// `root` becomes the root, read-only; the VM's tree is let go of
/// entirely.
fn pivot_into_read_only(root: &Path) -> Result<()> {
    std::env::set_current_dir(root).op_path("chdir", root)?;
    rustix::process::pivot_root(".", ".").op_path("pivot_root", root)?;
    unmount(".", UnmountFlags::DETACH).op("detach the old root")?;
    std::env::set_current_dir("/").op_path("chdir", "/")?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    mount_setattr(CWD.as_raw_fd(), Path::new("/"), 0, &attr)
}
