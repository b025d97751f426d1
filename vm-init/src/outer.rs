//! The outer process: the one s6-supervise starts and sees. It checks
//! everything it can before it creates anything, takes the VM's locks,
//! binds the VM's sockets as host root, creates PID 1 in the VM's
//! namespaces, writes its id maps, relays signals to it and exits with its
//! status. It does nothing else.

use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::{chown, DirBuilderExt, FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use sandbox_core::cgroup::{Made, VmCgroup};
use sandbox_core::event;
use sandbox_core::fds::take_fd;
use sandbox_core::ids::{self, Slot, VMM_UID};
use sandbox_core::locks::{lock_vm_dir, SlotFile};
use sandbox_core::mount::{self, MountRoot, Tmpfs};
use sandbox_core::ns::{clone_vm, Cloned, MapsPending, Running};
use sandbox_core::parent::{self, ParentWatch};
use sandbox_core::rlimits::{self, Resource};
use sandbox_core::signals::{self, SignalFd, SIGCHLD};
use sandbox_core::spawn;
use sandbox_core::{fds, host, keyring, landlock, Error};

use crate::args::Args;
use crate::pid1;
use crate::serial::SerialRelay;
use crate::vm::{HandedMounts, Listeners, Vm, SIGNALS};
use sandbox_core::contract::{bin, VmDir, NOFILE_CEILING, VSOCK_DIR_INODES, VSOCK_DIR_SIZE};
use sandbox_core::vmconfig::VmConfig;

/// sun_path is 108 bytes with its NUL.
const SUN_PATH_MAX: usize = 107;

/// Host groups mapped into the VM one by one: (inside gid, host gid).
type HostGroups = Vec<(u32, u32)>;

/// Every check that needs no privilege and changes nothing, so that bad
/// input is a one-line error before anything is created.
fn check(args: &Args) -> Result<Vm, Error> {
    check_landlock(args)?;
    host::check_not_private(&args.state_dir)?;
    let dir = VmDir::new(args.state_dir.join(args.name.as_str()));
    is_dir("unknown VM", dir.path())?;
    is_dir("missing config", &dir.config())?;
    // The whole config, checked as wrap-vmm will read it: a missing kernel
    // or a disk path with a comma stops the VM before anything exists.
    let config = VmConfig::read(dir.path())?;
    // vm-init binds, chowns and mounts in these as host root.
    host::check_root_only("state dir", &args.state_dir)?;
    host::check_root_only("VM directory", dir.path())?;
    // Whatever the guest's root or a daemon makes below the VM directory,
    // host users must not reach it: the state dir is the barrier, and the
    // VM directory must sit behind it.
    host::check_closed(&args.state_dir)?;
    host::check_vm_dir_inside(&args.state_dir, dir.path())?;
    let (host_groups, gpu) = host_groups_and_gpu(&config)?;
    is_dir("missing storage", &dir.storage())?;
    host::check_storage(dir.path(), &dir.storage())?;
    for path in dir.socket_paths() {
        let len = path.as_os_str().len();
        if len > SUN_PATH_MAX {
            return Err(Error::Usage(format!(
                "socket path {} is {len} bytes, longer than sun_path allows ({SUN_PATH_MAX})",
                path.display()
            )));
        }
    }
    let bin_dir = wrappers_dir()?;
    let services = args
        .services
        .as_deref()
        .map(crate::services::read)
        .transpose()?;
    let cgroups = crate::cgroups::check(args, &config, &dir)?;
    Ok(Vm {
        dir,
        kind: config.vmm,
        gpu,
        bin_dir,
        host_groups,
        allow_weaker_landlock: args.allow_weaker_landlock,
        services,
        vmm_memlock: wrap_vmm::policy::memlock(&config),
        cgroups,
    })
}

/// Every daemon's sandbox needs Landlock ABI 6: refused here, before
/// anything exists, rather than by the first wrapper after.
fn check_landlock(args: &Args) -> Result<(), Error> {
    let abi = landlock::kernel_abi();
    landlock::check_abi(abi, args.allow_weaker_landlock)?;
    if let Some(missing) = landlock::compat(abi).missing {
        sandbox_core::say!(
            "vm-init: {}: Landlock ABI {abi} lacks {missing}: running every daemon with a \
             weaker sandbox, as --allow-weaker-landlock asks",
            args.name
        );
    }
    Ok(())
}

fn is_dir(what: &str, path: &Path) -> Result<(), Error> {
    if path.is_dir() {
        return Ok(());
    }
    Err(Error::Usage(format!(
        "{what}: {} is not a directory",
        path.display()
    )))
}

/// The host groups mapped into the VM ((inside gid, host gid)), the
/// compositor's socket of a VM with a GPU, and /dev/kvm checked for a VMM
/// that uses it.
fn host_groups_and_gpu(config: &VmConfig) -> Result<(HostGroups, Option<host::Compositor>), Error> {
    let etc_group =
        std::fs::read_to_string("/etc/group").map_err(|e| Error::path("read", "/etc/group", e))?;
    if config.uses_kvm() {
        host::check_kvm(ids::host_group_gid(&etc_group, "kvm"))?;
    }
    let mut host_groups = ids::host_groups(&etc_group);
    // The compositor's socket, resolved here as host root: the VM's ids
    // may not even enter its directory. Its group, when it needs one, is
    // mapped for the GPU daemon alone.
    let gpu = match &config.gpu {
        Some(path) => Some(host::compositor(path, &etc_group)?),
        None => None,
    };
    if let Some(g) = gpu.as_ref().and_then(|c| c.group) {
        host_groups.push((ids::COMPOSITOR_GID, g));
    }
    Ok((host_groups, gpu))
}

/// vm-init's own directory, which holds every wrapper it starts.
fn wrappers_dir() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::path("find own executable", "/proc/self/exe", e))?;
    let bin_dir = exe.parent().map(Path::to_owned).unwrap_or_default();
    for wrapper in bin::WRAPPERS {
        if !bin_dir.join(wrapper).is_file() {
            return Err(Error::path(
                "find wrapper",
                bin_dir.join(wrapper),
                sandbox_core::Errno::ENOENT,
            ));
        }
    }
    Ok(bin_dir)
}

/// Sockets, FIFOs and directories the outer creates in the VM directory as
/// host root, each owned by the host id of the one service that uses it,
/// and removed when the VM ends (or, after a kill -9, at the next start):
/// nothing a daemon made of them (a mode, a setuid bit, a socket) outlives
/// the VM.
#[derive(Debug, Default)]
struct Created {
    /// Sockets and FIFOs.
    sockets: Vec<PathBuf>,
    /// tmpfs mounts on the host, detached before their directories go.
    mounts: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
}

impl Drop for Created {
    fn drop(&mut self) {
        for p in &self.sockets {
            let _ = std::fs::remove_file(p);
        }
        for p in &self.mounts {
            let _ = mount::detach(p);
        }
        for p in &self.dirs {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// Detaches the tmpfs a VM that was killed left mounted at `path` (the
/// mount of [`create_files`]); anything else mounted there is not
/// vm-init's and is refused.
fn detach_stale(path: &Path) -> Result<(), Error> {
    if std::fs::symlink_metadata(path).is_err() {
        return Ok(());
    }
    match mount::mount_root(path)? {
        None => Ok(()),
        Some(MountRoot::Tmpfs) => mount::detach(path),
        Some(MountRoot::Other) => Err(Error::Usage(format!(
            "{} is a mount point, and not of the tmpfs vm-init mounts there",
            path.display()
        ))),
    }
}

/// Removes what a VM that was killed left at `path`, if it is of the kind
/// the outer makes there (never follows a symlink, never removes anything
/// else): the next thing is created fresh, exclusively.
fn remove_stale(
    path: &Path,
    kind: &str,
    is_kind: impl Fn(&std::fs::FileType) -> bool,
) -> Result<(), Error> {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !is_kind(&meta.file_type()) {
        return Err(Error::Usage(format!(
            "{} exists and is not a {kind}",
            path.display()
        )));
    }
    if meta.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
    .map_err(|e| Error::path("remove stale", path, e))
}

fn bind_listener(path: &Path, owner: u32, created: &mut Created) -> Result<UnixListener, Error> {
    remove_stale(path, "socket", |t| t.is_socket())?;
    let listener = UnixListener::bind(path).map_err(|e| Error::path("bind", path, e))?;
    created.sockets.push(path.to_owned());
    chown(path, Some(owner), Some(owner)).map_err(|e| Error::path("chown", path, e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::path("chmod", path, e))?;
    Ok(listener)
}

/// Binds the VM's sockets and creates the VMM's files, each owned by the
/// host id of the service that connects to or writes it. The VM directory
/// itself stays host root's: no process of the VM can add or remove
/// anything there but through these.
fn create_files(vm: &Vm, slot: Slot, created: &mut Created) -> Result<Listeners, Error> {
    let vmm = slot.host_id(VMM_UID);
    // The VMM connects to virtiofsd's and the GPU daemon's sockets.
    let virtiofsd = bind_listener(&vm.dir.virtiofsd_socket(), vmm, created)?;
    // PID 1 (root of the VM's namespace) connects to the API socket.
    let api = bind_listener(&vm.dir.api_socket(), slot.host_id(0), created)?;
    let gpu = if vm.gpu.is_some() {
        Some(bind_listener(&vm.dir.gpu_socket(), vmm, created)?)
    } else {
        None
    };
    // The guest's console: the VMM writes the FIFO (its own, made fresh),
    // PID 1 copies it into serial.log (root's, bounded: see serial.rs).
    let log = vm.dir.serial_log();
    remove_stale(&log, "regular file", |t| t.is_file())?;
    let log_file = std::fs::OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o640)
        .open(&log)
        .map_err(|e| Error::path("create", &log, e))?;
    let fifo = vm.dir.serial_fifo();
    remove_stale(&fifo, "FIFO", |t| t.is_fifo())?;
    fds::make_fifo(&fifo, 0o600)?;
    created.sockets.push(fifo.clone());
    chown(&fifo, Some(vmm), Some(vmm)).map_err(|e| Error::path("chown", &fifo, e))?;
    // Opened for reading now, without blocking: the VMM's open for
    // writing then never waits for a reader.
    let fifo_read = fds::open_fifo_reader(&fifo)?;
    // The VMM's sockets: a small tmpfs of their own (see contract.rs), so that
    // binding sockets until ENOSPC fills that and not the file system of
    // the state dir (the host's /run). Its root is the VMM's, 0700.
    let vsock = vm.dir.vsock_dir();
    detach_stale(&vsock)?;
    remove_stale(&vsock, "directory", |t| t.is_dir())?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&vsock)
        .map_err(|e| Error::path("mkdir", &vsock, e))?;
    created.dirs.push(vsock.clone());
    mount::mount_tmpfs(
        &vsock,
        &Tmpfs {
            mode: 0o700,
            owner: Some(vmm),
            size: VSOCK_DIR_SIZE,
            inodes: VSOCK_DIR_INODES,
        },
    )?;
    created.mounts.push(vsock.clone());
    Ok(Listeners {
        virtiofsd,
        api,
        gpu,
        serial: SerialRelay::new(fifo_read, log_file),
    })
}

/// A detached, idmapped copy of `VMDIR/fs` for the VM's user namespace.
/// A file system without idmapped mounts is an error, never a fallback to
/// shifted ownership.
fn idmapped_storage(
    vm: &Vm,
    child: &sandbox_core::ns::VmChild,
) -> Result<std::os::fd::OwnedFd, Error> {
    let fs = vm.dir.storage();
    let tree = mount::clone_tree(&fs)?;
    mount::idmap_tree(&tree, child.user_namespace()?, &fs)?;
    Ok(tree)
}

pub fn run(args: &Args) -> Result<u8, Error> {
    let mut vm = check(args)?;
    let notify = args
        .notify_fd
        .map(|fd| take_fd(fd, "--notify-fd"))
        .transpose()?;
    // The supervisor may have died before we armed PDEATHSIG: check it now,
    // before anything is created.
    let supervisor = parent::arm_and_check(&args.parent)?;
    parent::check_supervise_lock(supervisor)?;
    let vm_lock: File = lock_vm_dir(vm.dir.path())?;
    let slots = SlotFile::open()?;
    let slot = slots.lock_lowest_free()?;
    let mut created = Created::default();
    let listeners = create_files(&vm, slot, &mut created)?;
    let (made, cgroup) = make_cgroup(args, &vm, slot)?;
    // Hard limits only host root can raise; each wrapper lowers them to its
    // daemon's values. Open files: the highest of any daemon's. Locked
    // memory: the VMM's, which pins guest RAM (the others keep the
    // kernel's default).
    // Without CAP_SYS_RESOURCE (some containers) the host's limits stay the
    // ceiling: each daemon then gets the lower of the two.
    rlimits::raise_hard(Resource::Nofile, Some(NOFILE_CEILING))?;
    rlimits::raise_hard(Resource::Memlock, Some(vm.vmm_memlock))?;
    // The VM's session keyring, new, empty and host root's, in place of the
    // launcher's (a login's holds its secrets): PID 1 and every s6 process
    // of the VM inherit it, and it goes when they and we are gone. Root's,
    // not PID 1's own: a daemon with PID 1's uid (virtiofsd) could read a
    // keyring of that uid by id and link it, or replace PID 1's with one of
    // its own (KEYCTL_SESSION_TO_PARENT takes a parent whose keyring is the
    // caller's uid's). Each wrapper gives its daemon one of its own.
    keyring::join_new_session_keyring()?;
    // Blocked before the clone: PID 1 inherits the mask and reads the same
    // signals from its own signalfd; none can arrive in between unseen.
    signals::block(SIGNALS)?;
    let watch = ParentWatch::of_self()?;
    match clone_vm()? {
        Cloned::Child(pending) => {
            // PID 1. The outer cleans up what it created, not us.
            std::mem::forget((created, made));
            let code = match handed_mounts(pending, &watch) {
                Ok(mounts) => {
                    pid1::run(args, &vm, slot, (listeners, cgroup), mounts, watch, notify)
                }
                Err(e) => {
                    sandbox_core::say!("vm-init: {}: PID 1: {e}", args.name);
                    e.exit_code()
                }
            };
            std::process::exit(code.into());
        }
        Cloned::Parent(child) => {
            let sigfd = SignalFd::new(SIGNALS)?;
            child.write_id_maps(slot, &vm.host_groups)?;
            // Storage does not depend on the slot: fs/ is mounted idmapped
            // through the VM's user namespace, so the guest's uid N is N on
            // disk. Only host root can make it; PID 1 attaches it.
            let storage = idmapped_storage(&vm, &child)?;
            // The VM directory as host root reaches it: PID 1 cannot
            // search the state dir.
            let vm_dir = mount::clone_tree(vm.dir.path())?;
            let running = child.release(&[vm_dir.as_fd(), storage.as_fd()])?;
            drop((vm_dir, storage));
            // PID 1 holds the only copies that matter now.
            drop((notify, listeners, watch, vm.gpu.take(), cgroup));
            relay_signals(&sigfd, &running)?;
            let status = spawn::wait(running.pid)?;
            drop((made, created, vm_lock, slots));
            Ok(status.relay_code())
        }
    }
}

/// The VM's cgroup (see cgroups.rs), made for the slot the VM holds: its
/// leaves' fds for PID 1, and the outer's hold, which kills and removes it
/// when it drops, whatever escaped the VM's PID namespaces. None on a host
/// without cgroup v2 with the opt-out, said in one line now.
fn make_cgroup(
    args: &Args,
    vm: &Vm,
    slot: Slot,
) -> Result<(Option<Made>, Option<VmCgroup>), Error> {
    match &vm.cgroups {
        Ok(plan) => {
            let name = args.name.as_str();
            let (made, cgroup) = VmCgroup::create(&plan.parent, name, slot.index(), &plan.daemons)?;
            Ok((Some(made), Some(cgroup)))
        }
        Err(missing) => {
            crate::cgroups::say_unbounded(args, missing);
            Ok((None, None))
        }
    }
}

/// PID 1, once the outer wrote its id maps: the mounts the outer made for
/// it, in [`HandedMounts`]' order.
fn handed_mounts(pending: MapsPending, watch: &ParentWatch) -> Result<HandedMounts, Error> {
    let fds = pending.wait_for_id_maps()?;
    watch.arm_and_check()?;
    let [vm_dir, storage] = <[_; 2]>::try_from(fds).map_err(|_| {
        Error::Refused("the outer sent no mount of the VM directory and of fs/".into())
    })?;
    Ok(HandedMounts { vm_dir, storage })
}

/// Passes every signal but SIGCHLD on to PID 1 until it exits.
fn relay_signals(sigfd: &SignalFd, running: &Running) -> Result<(), Error> {
    loop {
        let ready = event::wait_readable(&[sigfd.as_fd(), running.pidfd.as_fd()])?;
        if ready[0] {
            while let Some(sig) = sigfd.read()? {
                if sig != SIGCHLD {
                    // PID 1 may be exiting already: ESRCH is fine.
                    let _ = signals::send(&running.pidfd, sig);
                }
            }
        }
        if ready[1] {
            return Ok(());
        }
    }
}
