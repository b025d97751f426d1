//! What the host must offer a VM, checked by the outer vm-init before it
//! creates anything: a host set up wrongly is one line and exit 100, never
//! a VM that starts and then falls over inside a wrapper. Nothing here
//! changes anything; it reads metadata and /etc/group only (and clones
//! the compositor's socket as a detached mount, which nothing else sees).

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Directories every daemon of a VM gets as a private tmpfs: a state dir
/// below one of them would not exist in any daemon's view.
pub const PRIVATE_DIRS: &[&str] = &["/tmp", "/dev/shm"];

/// The KVM device a VMM opens when the VM's config needs KVM.
pub const KVM_DEVICE: &str = "/dev/kvm";

/// `ls -l`'s first column: `crw-rw----`.
pub fn mode_string(mode: u32) -> String {
    let kind = match mode & 0o170000 {
        0o020000 => 'c',
        0o060000 => 'b',
        0o040000 => 'd',
        0o140000 => 's',
        0o120000 => 'l',
        0o010000 => 'p',
        _ => '-',
    };
    let mut s = String::from(kind);
    for (bit, c) in [
        (0o400, 'r'),
        (0o200, 'w'),
        (0o100, 'x'),
        (0o040, 'r'),
        (0o020, 'w'),
        (0o010, 'x'),
        (0o004, 'r'),
        (0o002, 'w'),
        (0o001, 'x'),
    ] {
        s.push(if mode & bit != 0 { c } else { '-' });
    }
    s
}

/// The name of id `id` in a passwd- or group-format file, or the number.
fn name_of(db: &str, id: u32) -> String {
    std::fs::read_to_string(db)
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.get(2) == Some(&id.to_string().as_str())).then(|| f[0].to_owned())
        })
        .unwrap_or_else(|| id.to_string())
}

/// `crw------- root:root`, as a user would see it with ls -l.
pub fn describe(meta: &std::fs::Metadata) -> String {
    format!(
        "{} {}:{}",
        mode_string(meta.mode()),
        name_of("/etc/passwd", meta.uid()),
        name_of("/etc/group", meta.gid())
    )
}

/// Refuses a state dir below a directory the daemons get privately.
pub fn check_not_private(state_dir: &Path) -> Result<()> {
    // Symlinks resolved: /var/run -> /run is fine, a link into /tmp is not.
    let real = std::fs::canonicalize(state_dir).unwrap_or_else(|_| state_dir.to_owned());
    match PRIVATE_DIRS.iter().find(|d| real.starts_with(d)) {
        Some(d) => Err(Error::Usage(format!(
            "state dir {} is under {d}, which every daemon of a VM gets as a private \
             tmpfs: the VM directory would not exist for them; use a directory under /run",
            state_dir.display()
        ))),
        None => Ok(()),
    }
}

/// Refuses `dir` (the state dir, a VM directory) when anyone but root can
/// change it or any directory above it: whoever can rename or replace it
/// chooses what vm-init binds, chowns and mounts as host root. A sticky
/// directory above it (like /var/tmp) is fine: others cannot rename root's
/// entries there.
pub fn check_root_only(what: &str, dir: &Path) -> Result<()> {
    let mut path: PathBuf = dir.to_owned();
    loop {
        let meta = std::fs::metadata(&path).map_err(|e| Error::path("stat", &path, e))?;
        let mode = meta.mode();
        let others_write = mode & 0o002 != 0 || (mode & 0o020 != 0 && meta.gid() != 0);
        let sticky = mode & 0o1000 != 0 && path != dir;
        if meta.uid() != 0 || (others_write && !sticky) {
            let which = if path == dir {
                String::new()
            } else {
                format!(" (through {})", path.display())
            };
            return Err(Error::Usage(format!(
                "{what} {} can be changed by others than root{which}: {} is {}; \
                 make it root's and not group- or world-writable",
                dir.display(),
                path.display(),
                describe(&meta)
            )));
        }
        if !path.pop() {
            return Ok(());
        }
    }
}

/// Whether host users other than root may search `meta` (a directory):
/// others' x, or the group's x for a group other than root's. With a
/// POSIX ACL the group bits are its mask, which named users and groups
/// get too: then the group's x is refused whatever the group.
fn others_may_search(path: &Path, meta: &std::fs::Metadata) -> bool {
    let mode = meta.mode();
    let acl = mode & 0o010 != 0
        && rustix::fs::getxattr(path, "system.posix_acl_access", &mut [0u8; 0][..]).is_ok();
    mode & 0o001 != 0 || (mode & 0o010 != 0 && (meta.gid() != 0 || acl))
}

/// Refuses a state dir that host users other than root may traverse.
/// Below it, the guest's root owns fs/ (through the idmap) and the VMM
/// owns its FIFO and vsock.d: each can chmod what it owns, make a
/// setuid-root program or open a FIFO to everyone. Only a directory above
/// all of them that none of them can change keeps host users out whatever
/// they do; the state dir is that directory (PID 1 mounts over it and is
/// handed the VM directory as a mount, so nothing of the VM needs to
/// search it).
///
/// A root-only directory above the state dir cannot be the barrier: the
/// VM's processes reach the state dir's path (PID 1 mounts over it, the
/// daemons name the VM directory by it) as host users, so every directory
/// above it must let others search it.
pub fn check_closed(state_dir: &Path) -> Result<()> {
    let real =
        std::fs::canonicalize(state_dir).map_err(|e| Error::path("resolve", state_dir, e))?;
    for above in real.ancestors().skip(1) {
        let meta = std::fs::metadata(above).map_err(|e| Error::path("stat", above, e))?;
        if meta.mode() & 0o001 == 0 {
            return Err(Error::Usage(format!(
                "state dir {} is below {}, which is {}: the VM's processes could not reach \
                 the state dir's path; let others search it (chmod o+x {}) and make the \
                 state dir itself root's alone (chmod 0700 {})",
                state_dir.display(),
                above.display(),
                describe(&meta),
                above.display(),
                state_dir.display()
            )));
        }
    }
    let meta = std::fs::metadata(state_dir).map_err(|e| Error::path("stat", state_dir, e))?;
    if !others_may_search(state_dir, &meta) {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "state dir {} is {}: host users could reach what a VM's root and its daemons make \
         below it (a setuid-root program in fs/, a FIFO opened to all); make it root's \
         alone (chmod 0700 {})",
        state_dir.display(),
        describe(&meta),
        state_dir.display()
    )))
}

/// Why `dir` may lead out of `parent` (a directory of the host that only
/// root may traverse): it is a symlink, or a mount point (a bind mount or
/// a file system of its own, whose files may be mounted elsewhere too).
fn leads_out(dir: &Path, parent: &Path) -> Result<Option<&'static str>> {
    use rustix::fs::{statx, AtFlags, StatxFlags, CWD};
    let meta = std::fs::symlink_metadata(dir).map_err(|e| Error::path("stat", dir, e))?;
    if meta.file_type().is_symlink() {
        return Ok(Some("a symlink"));
    }
    let mount_id = |p: &Path| {
        statx(CWD, p, AtFlags::SYMLINK_NOFOLLOW, StatxFlags::MNT_ID)
            .map(|s| s.stx_mnt_id)
            .map_err(|e| Error::path("statx", p, e))
    };
    Ok((mount_id(dir)? != mount_id(parent)?).then_some("a mount point"))
}

/// One mount of this mount namespace, as /proc/self/mountinfo says it.
#[derive(Debug, PartialEq, Eq)]
struct MountInfo {
    id: u64,
    /// `major:minor` of its file system.
    dev: String,
    /// The directory of its file system it shows.
    root: PathBuf,
    /// Where it is mounted.
    point: PathBuf,
    nosuid_nodev: bool,
}

/// mountinfo's escapes (`\040` for a space) undone.
fn unescape(field: &str) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| b[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match octal {
            Some(d) => {
                out.push(d.iter().fold(0u8, |n, c| n.wrapping_mul(8) + (c - b'0')));
                i += 4;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split(' ').collect();
            let options: Vec<&str> = f.get(5)?.split(',').collect();
            Some(MountInfo {
                id: f.first()?.parse().ok()?,
                dev: (*f.get(2)?).to_owned(),
                root: unescape(f.get(3)?),
                point: unescape(f.get(4)?),
                nosuid_nodev: options.contains(&"nosuid") && options.contains(&"nodev"),
            })
        })
        .collect()
}

fn mountinfo() -> Result<Vec<MountInfo>> {
    let path = "/proc/self/mountinfo";
    let text = std::fs::read_to_string(path).map_err(|e| Error::path("read", path, e))?;
    Ok(parse_mountinfo(&text))
}

/// The mount `path` is on, and `path` as a path of that mount's file
/// system (from its root, whichever mount shows it).
fn place<'m>(path: &Path, mounts: &'m [MountInfo]) -> Result<(&'m MountInfo, PathBuf)> {
    use rustix::fs::{statx, AtFlags, StatxFlags, CWD};
    let real = std::fs::canonicalize(path).map_err(|e| Error::path("resolve", path, e))?;
    let id = statx(CWD, &real, AtFlags::empty(), StatxFlags::MNT_ID)
        .map_err(|e| Error::path("statx", &real, e))?
        .stx_mnt_id;
    let unlisted = || Error::path("find the mount of", path, crate::Errno::ENOENT);
    let mount = mounts.iter().find(|m| m.id == id).ok_or_else(unlisted)?;
    let rel = real.strip_prefix(&mount.point).map_err(|_| unlisted())?;
    Ok((mount, mount.root.join(rel)))
}

/// Refuses a VM directory that is a symlink or a mount point, or whose
/// file system is also mounted elsewhere from the VM directory or below
/// (a bind mount of it): what PID 1 and the daemons make in it would then
/// be reachable where the state dir's barrier does not stand. (Mounts of
/// other mount namespaces are not seen here.)
pub fn check_vm_dir_inside(state_dir: &Path, vm_dir: &Path) -> Result<()> {
    if let Some(what) = leads_out(vm_dir, state_dir)? {
        return Err(Error::Usage(format!(
            "VM directory {} is {what}: its files would be reachable outside the state dir \
             {}, which only root may traverse; make it a plain directory there",
            vm_dir.display(),
            state_dir.display()
        )));
    }
    let mounts = mountinfo()?;
    let (on, in_fs) = place(vm_dir, &mounts)?;
    match mounts
        .iter()
        .find(|m| m.dev == on.dev && m.root.starts_with(&in_fs))
    {
        None => Ok(()),
        Some(m) => Err(Error::Usage(format!(
            "VM directory {} is mounted at {} too (or a directory in it is): its files \
             would be reachable there, past the state dir {}, which only root may \
             traverse; unmount it",
            vm_dir.display(),
            m.point.display(),
            state_dir.display()
        ))),
    }
}

/// Refuses VM storage that leads out of the VM directory (a symlink, a
/// mount point) unless every mount of its files is nosuid,nodev. Through
/// the idmapped mount the guest's root makes files owned by host uid 0 on
/// disk, setuid ones and device nodes included (virtiofsd's own mount of
/// it is nosuid,nodev, the host's need not be): a plain fs/ is reachable
/// only through the state dir, which only root may traverse
/// ([`check_closed`]; other mounts of the VM directory are refused by
/// [`check_vm_dir_inside`]); what a symlink or a mount leads to may be
/// reachable from elsewhere. Whatever the guest does to fs/'s own mode
/// changes neither.
pub fn check_storage(vm_dir: &Path, fs: &Path) -> Result<()> {
    let Some(what) = leads_out(fs, vm_dir)? else {
        return Ok(());
    };
    let mounts = mountinfo()?;
    let (on, in_fs) = place(fs, &mounts)?;
    // Every mount showing the storage, or a directory above or below it.
    let suid = mounts.iter().find(|m| {
        m.dev == on.dev
            && (m.root.starts_with(&in_fs) || in_fs.starts_with(&m.root))
            && !m.nosuid_nodev
    });
    match suid {
        None => Ok(()),
        Some(m) => Err(Error::Usage(format!(
            "storage {} is {what}, and its files are mounted at {} without nosuid,nodev: \
             host users may reach them there, where a guest's root could leave a \
             setuid-root program; mount it nosuid,nodev or make {} a plain directory",
            fs.display(),
            m.point.display(),
            fs.display()
        ))),
    }
}

/// Whether a process of a uid of the VM's own, whose only host group is
/// `group` (the host's kvm group, when there is one), can open `device`
/// read-write by its mode.
fn group_or_others_rw(meta: &std::fs::Metadata, group: Option<u32>) -> bool {
    let mode = meta.mode();
    mode & 0o006 == 0o006 || (group == Some(meta.gid()) && mode & 0o060 == 0o060)
}

/// The host's kvm group, read from /etc/group now (None without one).
pub fn kvm_group() -> Option<u32> {
    crate::ids::host_group_gid(
        &std::fs::read_to_string("/etc/group").unwrap_or_default(),
        "kvm",
    )
}

/// Refuses a VM that needs KVM on a host where the VMM could not open
/// /dev/kvm: its uid is the VM's own, and the only host group it gets is
/// the one named `kvm` (`kvm_gid`, when the host has one).
pub fn check_kvm(kvm_gid: Option<u32>) -> Result<()> {
    check_device_for_group(Path::new(KVM_DEVICE), "kvm", kvm_gid)
}

fn check_device_for_group(device: &Path, group: &str, gid: Option<u32>) -> Result<()> {
    let meta = std::fs::metadata(device).map_err(|e| {
        Error::Usage(format!(
            "the VM's config needs {}, which cannot be used: {}",
            device.display(),
            crate::Errno::from(e)
        ))
    })?;
    if group_or_others_rw(&meta, gid) {
        return Ok(());
    }
    let has = match gid {
        Some(g) => format!("the host's {group} group is {g}"),
        None => format!("the host has no {group} group"),
    };
    Err(Error::Usage(format!(
        "{} is {} and {has}: the VMM could not open it; give it a {group} group \
         and mode 0660, as udev does (groupadd -r {group}; chgrp {group} {dev}; chmod 0660 {dev})",
        device.display(),
        describe(&meta),
        dev = device.display()
    )))
}

/// The compositor's socket as the outer vm-init (host root) resolved it:
/// a detached mount of it for the GPU daemon's view, and the host group
/// the daemon needs to connect, if any.
#[derive(Debug)]
pub struct Compositor {
    pub tree: std::os::fd::OwnedFd,
    pub group: Option<u32>,
}

/// Resolves the compositor's socket as host root, which can reach it
/// where the VM's ids cannot (Spectrum's /run/user/0 is 0700 root),
/// without following anything a user other than root or the socket's
/// owner could change ([`walk_to_socket`]): such a user would choose what
/// the GPU daemon connects to, and which host group it gets. The clone is
/// made from the fd the walk reached, and its type, mode and group are
/// read from it, not from the path again.
pub fn compositor(path: &Path, etc_group: &str) -> Result<Compositor> {
    let socket = walk_to_socket(path)?;
    let tree = crate::mount::clone_at(&socket, path)?;
    let st = rustix::fs::fstat(&tree).map_err(|e| Error::path("compositor socket", path, e))?;
    let group = compositor_group(path, st.st_mode, st.st_gid, etc_group)?;
    Ok(Compositor { tree, group })
}

/// The kernel's own limit of symlinks on one path (MAXSYMLINKS).
const MAX_SYMLINKS: usize = 40;

/// A directory the walk took an entry from, and that entry.
#[derive(Debug)]
struct Step {
    dir: PathBuf,
    dir_stat: rustix::fs::Stat,
    /// The directory has an access ACL: its group bits are then the mask
    /// of every named user's and group's entry, not only its group's.
    dir_acl: bool,
    entry: PathBuf,
    entry_stat: rustix::fs::Stat,
}

/// `drwxrwxrwx nobody:nogroup`, of an fstat.
fn describe_stat(st: &rustix::fs::Stat) -> String {
    format!(
        "{} {}:{}",
        mode_string(st.st_mode),
        name_of("/etc/passwd", st.st_uid),
        name_of("/etc/group", st.st_gid)
    )
}

/// Opens `path` (absolute) one component at a time, each with
/// O_PATH|O_NOFOLLOW on the fd of the directory before it, so that what
/// is checked is what is reached. Then, with the owner of what it reached
/// known: every directory passed through must be root's or that owner's,
/// and writable by no one else (a sticky one, like /tmp, only when the
/// entry taken from it is root's or that owner's); a symlink is followed
/// only when it and its directory are root's (`/var/run -> /run`). Returns
/// the O_PATH fd of what the path names.
pub fn walk_to_socket(path: &Path) -> Result<std::os::fd::OwnedFd> {
    use rustix::fs::{openat, readlinkat, FileType, Mode, OFlags, CWD};
    use std::os::unix::ffi::OsStringExt;
    let what = "compositor socket";
    if !path.is_absolute() {
        return Err(Error::Usage(format!(
            "{what} {} is not an absolute path",
            path.display()
        )));
    }
    let flags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let open_root = || {
        openat(CWD, "/", flags | OFlags::DIRECTORY, Mode::empty())
            .map_err(|e| Error::path(what, path, e))
    };
    // The directories from / to where the walk is, each with its path.
    let mut stack = vec![(open_root()?, PathBuf::from("/"))];
    let mut todo = VecDeque::new();
    queue(&mut todo, path);
    let mut steps = Vec::new();
    let mut links = 0;
    let mut reached = None;
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            // Back to the directory the walk came from (it holds it).
            if stack.len() > 1 {
                stack.pop();
            }
            reached = None;
            continue;
        }
        let (dir, dir_path) = stack.last().expect("/ is never popped");
        let entry_path = dir_path.join(&name);
        let fd = openat(dir, name.as_os_str(), flags, Mode::empty())
            .map_err(|e| Error::path(what, path, e))?;
        let step = Step::taken((dir, dir_path), (&fd, &entry_path))?;
        let kind = FileType::from_raw_mode(step.entry_stat.st_mode);
        steps.push(step);
        match kind {
            FileType::Symlink => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Error::path(what, path, crate::Errno(40))); // ELOOP
                }
                let target = readlinkat(&fd, "", Vec::new())
                    .map_err(|e| Error::path("readlink", &entry_path, e))?;
                let target = PathBuf::from(OsString::from_vec(target.into_bytes()));
                if target.is_absolute() {
                    stack.truncate(1);
                }
                queue(&mut todo, &target);
                reached = None;
            }
            FileType::Directory => {
                stack.push((fd, entry_path));
                reached = None;
            }
            _ if todo.is_empty() => reached = Some(fd),
            // A component that is not a directory, with more after it.
            _ => return Err(Error::path(what, path, crate::Errno(20))), // ENOTDIR
        }
    }
    let Some(socket) = reached else {
        // The path names a directory (or /).
        return Err(Error::path(what, path, crate::Errno(88))); // ENOTSOCK
    };
    trusted(socket, &steps, (what, path))
}

/// `socket`, if no step of the walk to it could be changed by a user
/// other than root or its owner.
fn trusted(
    socket: std::os::fd::OwnedFd,
    steps: &[Step],
    (what, path): (&'static str, &Path),
) -> Result<std::os::fd::OwnedFd> {
    let owner = rustix::fs::fstat(&socket)
        .map_err(|e| Error::path(what, path, e))?
        .st_uid;
    for step in steps {
        if let Some(why) = untrusted_step(step, owner) {
            return Err(Error::Usage(format!(
                "{what} {}: {why}: a user other than root or the socket's owner could \
                 choose what the GPU daemon connects to; name the socket by a path only \
                 root (or its owner) can change",
                path.display()
            )));
        }
    }
    Ok(socket)
}

/// Puts the names of `p` before what is left to walk.
fn queue(todo: &mut VecDeque<OsString>, p: &Path) {
    use std::path::Component;
    for c in p.components().rev() {
        match c {
            Component::Normal(n) => todo.push_front(n.to_owned()),
            Component::ParentDir => todo.push_front("..".into()),
            _ => {}
        }
    }
}

impl Step {
    /// The step that took `entry` (an O_PATH fd) from `dir`.
    fn taken(
        (dir, dir_path): (&std::os::fd::OwnedFd, &Path),
        (entry, entry_path): (&std::os::fd::OwnedFd, &Path),
    ) -> Result<Step> {
        use rustix::fs::fstat;
        let dir_stat = fstat(dir).map_err(|e| Error::path("stat", dir_path, e))?;
        let entry_stat = fstat(entry).map_err(|e| Error::path("stat", entry_path, e))?;
        // (An O_PATH fd has no xattrs of its own: through /proc.)
        let dir_acl = rustix::fs::getxattr(
            format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(dir)),
            "system.posix_acl_access",
            &mut [0u8; 0][..],
        )
        .is_ok();
        Ok(Step {
            dir: dir_path.to_owned(),
            dir_stat,
            dir_acl,
            entry: entry_path.to_owned(),
            entry_stat,
        })
    }
}

/// Why a step of the walk to a socket owned by `owner` could be changed
/// by someone else, if it could.
fn untrusted_step(step: &Step, owner: u32) -> Option<String> {
    let trusted = |uid: u32| uid == 0 || uid == owner;
    let (dir, entry) = (&step.dir_stat, &step.entry_stat);
    let mode = dir.st_mode;
    let writable = mode & 0o002 != 0 || (mode & 0o020 != 0 && (dir.st_gid != 0 || step.dir_acl));
    let sticky = mode & 0o1000 != 0;
    let symlink = entry.st_mode & 0o170000 == 0o120000;
    if !trusted(dir.st_uid) || (writable && !sticky) {
        return Some(format!("{} is {}", step.dir.display(), describe_stat(dir)));
    }
    if symlink && (entry.st_uid != 0 || dir.st_uid != 0) {
        return Some(format!(
            "{} is a symlink of {} in {} ({})",
            step.entry.display(),
            name_of("/etc/passwd", entry.st_uid),
            step.dir.display(),
            describe_stat(dir)
        ));
    }
    if writable && !trusted(entry.st_uid) {
        return Some(format!(
            "{} is {}'s, in {} ({})",
            step.entry.display(),
            name_of("/etc/passwd", entry.st_uid),
            step.dir.display(),
            describe_stat(dir)
        ));
    }
    None
}

/// The host group the GPU daemon needs for a socket of `mode` and `gid`:
/// none when anyone may connect or when it is the render group (which
/// the daemon has anyway); refused when only the owner may connect, or
/// when the group would give the daemon more than the socket (root's,
/// kvm's, or an id of the VMs' blocks).
pub fn compositor_group(path: &Path, mode: u32, gid: u32, etc_group: &str) -> Result<Option<u32>> {
    use crate::ids::{host_group_gid, BLOCK, FIRST_ID, SLOTS};
    const S_IFSOCK: u32 = 0o140000;
    if mode & 0o170000 != S_IFSOCK {
        return Err(Error::path(
            "compositor socket",
            path,
            crate::Errno(88), // ENOTSOCK
        ));
    }
    let refuse = |why: String| {
        Err(Error::Usage(format!(
            "compositor socket {} is {} group {gid}: {why}",
            path.display(),
            mode_string(mode)
        )))
    };
    if mode & 0o002 != 0 {
        return Ok(None);
    }
    if mode & 0o020 == 0 {
        return refuse(
            "only its owner may connect; give it a group with write permission              (0660 root:wayland, say)"
                .into(),
        );
    }
    let vm_ids = u64::from(FIRST_ID)..u64::from(FIRST_ID) + u64::from(SLOTS) * u64::from(BLOCK);
    if gid == 0 {
        refuse("the GPU daemon would get the root group; give the socket a group of its own".into())
    } else if Some(gid) == host_group_gid(etc_group, "kvm") {
        refuse("the GPU daemon would get /dev/kvm with the kvm group".into())
    } else if vm_ids.contains(&u64::from(gid)) {
        refuse("that id belongs to a VM's block".into())
    } else if Some(gid) == host_group_gid(etc_group, "render") {
        Ok(None)
    } else {
        Ok(Some(gid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_compositor_group_is_given_only_when_needed_and_harmless() {
        let groups = "root:x:0:\nkvm:x:994:\nrender:x:992:\nwayland:x:15:\n";
        let p = Path::new("/run/user/0/wayland-1");
        let g = |mode, gid| compositor_group(p, mode, gid, groups);
        assert_eq!(g(0o140660, 15).unwrap(), Some(15));
        assert_eq!(g(0o140777, 0).unwrap(), None);
        assert_eq!(g(0o140660, 992).unwrap(), None);
        for (mode, gid, why) in [
            (0o140600, 15, "only its owner may connect"),
            (0o140660, 0, "root group"),
            (0o140660, 994, "/dev/kvm"),
            (0o140660, 1 << 20, "a VM's block"),
        ] {
            let e = g(mode, gid).unwrap_err();
            assert!(e.to_string().contains(why), "{e}");
            assert_eq!(e.exit_code(), crate::EXIT_USAGE);
        }
        let e = g(0o100660, 15).unwrap_err().to_string();
        assert!(e.contains("Socket operation on non-socket"), "{e}");
    }

    #[test]
    fn a_state_dir_others_may_search_is_refused_with_the_fix() {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("host-closed-{}", std::process::id()));
        std::fs::create_dir(&d).unwrap();
        let with = |mode: u32| {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).unwrap();
            check_closed(&d)
        };
        assert!(with(0o700).is_ok());
        for mode in [0o755, 0o711, 0o701] {
            let e = with(mode).unwrap_err();
            assert_eq!(e.exit_code(), crate::EXIT_USAGE);
            let fix = format!("chmod 0700 {}", d.display());
            assert!(e.to_string().contains(&fix), "{e}");
        }
        // The group's x: fine only for root's group.
        let root_group = std::fs::metadata(&d).unwrap().gid() == 0;
        assert_eq!(with(0o750).is_ok(), root_group);
        // Below a directory the VM's processes cannot search.
        let below = d.join("state");
        std::fs::create_dir(&below).unwrap();
        std::fs::set_permissions(&below, std::fs::Permissions::from_mode(0o700)).unwrap();
        let e = with(0o700).and_then(|()| check_closed(&below)).unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("chmod o+x {}", d.display())),
            "{e}"
        );
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o711)).unwrap();
        assert!(check_closed(&below).is_ok());
        std::fs::remove_dir(&below).unwrap();
        with(0o700).unwrap();
        // A plain directory stays in; a symlink leads out.
        let (plain, link) = (d.join("plain"), d.join("link"));
        std::fs::create_dir(&plain).unwrap();
        std::os::unix::fs::symlink("/", &link).unwrap();
        assert_eq!(leads_out(&plain, &d).unwrap(), None);
        assert_eq!(leads_out(&link, &d).unwrap(), Some("a symlink"));
        assert!(check_vm_dir_inside(&d, &link).is_err());
        assert!(check_storage(&d, &plain).is_ok());
        // The host's / honours setuid bits.
        let e = check_storage(&d, &link).unwrap_err().to_string();
        assert!(e.contains("a symlink") && e.contains("nosuid,nodev"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn the_walk_to_a_socket_follows_only_what_root_or_its_owner_can_change() {
        use std::os::unix::fs::{lchown, symlink, PermissionsExt};
        let chmod =
            |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        let top = std::env::temp_dir().join(format!("host-walk-{}", std::process::id()));
        let run = top.join("run");
        std::fs::create_dir_all(&run).unwrap();
        chmod(&top, 0o755);
        chmod(&run, 0o755);
        let socket = run.join("wayland-0");
        let _listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        let refused = |p: &Path, says: &str| {
            let e = walk_to_socket(p).unwrap_err();
            assert_eq!(e.exit_code(), crate::EXIT_USAGE, "{e}");
            assert!(e.to_string().contains(says), "{says}: {e}");
        };
        walk_to_socket(&socket).unwrap();
        walk_to_socket(&run.join("../run/./wayland-0")).unwrap();
        // A directory others may write: they could put anything there.
        chmod(&run, 0o777);
        refused(&socket, &format!("{} is drwxrwxrwx", run.display()));
        // Sticky, like /tmp: others cannot replace the socket's owner's entry.
        chmod(&run, 0o1777);
        walk_to_socket(&socket).unwrap();
        // Group-writable, root's group, but an ACL gives user 1234 write:
        // the group bits are the ACL's mask (user::rwx user:1234:rwx
        // group::r-x mask::rwx other::r-x, in the kernel's xattr form).
        chmod(&run, 0o775);
        let mut acl = 2u32.to_le_bytes().to_vec();
        for (tag, perm, id) in [
            (0x01u16, 7u16, u32::MAX),
            (0x02, 7, 1234),
            (0x04, 5, u32::MAX),
            (0x10, 7, u32::MAX),
            (0x20, 5, u32::MAX),
        ] {
            acl.extend(tag.to_le_bytes());
            acl.extend(perm.to_le_bytes());
            acl.extend(id.to_le_bytes());
        }
        let attr = "system.posix_acl_access";
        let flags = rustix::fs::XattrFlags::empty();
        if rustix::fs::setxattr(&run, attr, &acl, flags).is_ok() {
            refused(&socket, &format!("{} is drwxrwxr-x", run.display()));
            rustix::fs::removexattr(&run, attr).unwrap();
        }
        chmod(&run, 0o755);
        let missing = walk_to_socket(&run.join("none")).unwrap_err();
        assert_eq!(missing.exit_code(), crate::EXIT_SYSCALL, "{missing}");
        if rustix::process::geteuid().is_root() {
            // A symlink root made, in a directory of root's: followed,
            // absolute or relative.
            symlink(&socket, top.join("abs")).unwrap();
            symlink("run/wayland-0", top.join("rel")).unwrap();
            walk_to_socket(&top.join("abs")).unwrap();
            walk_to_socket(&top.join("rel")).unwrap();
            // A symlink of another user's: not followed.
            lchown(top.join("rel"), Some(65534), None).unwrap();
            refused(&top.join("rel"), "is a symlink of");
            // The attack: a directory of another user's holding a symlink
            // (root's) to a root-owned socket.
            let theirs = top.join("theirs");
            std::fs::create_dir(&theirs).unwrap();
            symlink(&socket, theirs.join("wayland-0")).unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            refused(&theirs.join("wayland-0"), &theirs.display().to_string());
            // In a sticky directory, an entry of someone else's.
            chmod(&run, 0o1777);
            let sub = run.join("sub");
            std::fs::create_dir(&sub).unwrap();
            std::fs::rename(&socket, sub.join("wayland-0")).unwrap();
            lchown(&sub, Some(65534), None).unwrap();
            refused(&sub.join("wayland-0"), &sub.display().to_string());
            // ... unless it is the socket's owner's.
            lchown(sub.join("wayland-0"), Some(65534), None).unwrap();
            walk_to_socket(&sub.join("wayland-0")).unwrap();
        }
        std::fs::remove_dir_all(&top).unwrap();
    }

    #[test]
    fn mountinfo_lines_are_read_with_their_escapes() {
        let text =
            "36 35 98:0 /mnt1 /mnt/a\\040b rw,nosuid,nodev,noatime master:1 - ext3 /dev/root rw\n\
                    37 35 0:5 / /run rw,nosuid - tmpfs tmpfs rw\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(
            m[0],
            MountInfo {
                id: 36,
                dev: "98:0".into(),
                root: "/mnt1".into(),
                point: "/mnt/a b".into(),
                nosuid_nodev: true,
            }
        );
        assert!(!m[1].nosuid_nodev);
        // This process's own mounts: / is among them.
        assert!(mountinfo()
            .unwrap()
            .iter()
            .any(|m| m.point == Path::new("/")));
    }

    #[test]
    fn mode_strings_read_like_ls() {
        assert_eq!(mode_string(0o020600), "crw-------");
        assert_eq!(mode_string(0o020660), "crw-rw----");
        assert_eq!(mode_string(0o041777), "drwxrwxrwx");
        assert_eq!(mode_string(0o100644), "-rw-r--r--");
    }

    #[test]
    fn private_dirs_are_refused_with_the_path() {
        let e = check_not_private(Path::new("/tmp/x/state")).unwrap_err();
        assert_eq!(e.exit_code(), 100);
        assert!(e.to_string().contains("/tmp/x/state"), "{e}");
        assert!(check_not_private(Path::new("/dev/shm/s")).is_err());
        assert!(check_not_private(Path::new("/run/vm")).is_ok());
        // A prefix of a name is not a parent: /tmpfoo is not under /tmp.
        assert!(check_not_private(Path::new("/tmpfoo")).is_ok());
    }

    #[test]
    fn a_device_only_root_can_open_is_refused() {
        // /dev/null is 0666: anyone opens it.
        assert!(check_device_for_group(Path::new("/dev/null"), "kvm", None).is_ok());
        let e = check_device_for_group(Path::new("/nonexistent/kvm"), "kvm", None).unwrap_err();
        assert_eq!(e.exit_code(), 100);
        assert!(e.to_string().contains("/nonexistent/kvm"), "{e}");
    }

    #[test]
    fn group_access_needs_the_mapped_group_and_both_bits() {
        use std::os::unix::fs::PermissionsExt;
        let f = std::env::temp_dir().join(format!("host-check-{}", std::process::id()));
        std::fs::write(&f, "").unwrap();
        let with = |mode: u32, group: Option<u32>| {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            group_or_others_rw(&std::fs::metadata(&f).unwrap(), group)
        };
        let gid = std::fs::metadata(&f).unwrap().gid();
        assert!(!with(0o600, Some(gid)), "owner only");
        assert!(with(0o660, Some(gid)), "the mapped group");
        assert!(!with(0o660, None), "no group mapped");
        assert!(!with(0o660, Some(gid + 1)), "another group");
        assert!(!with(0o640, Some(gid)), "read only");
        assert!(with(0o666, None), "anyone");
        std::fs::remove_file(&f).unwrap();
    }
}
