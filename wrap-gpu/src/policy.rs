//! crosvm `device gpu`'s sandbox: the only one it gets, since crosvm
//! applies no jail of its own in that mode.
//!
//! The vhost-user socket: crosvm's `--fd` takes an already connected
//! socket, `--socket-path` binds one itself. We take `--fd`: vm-init binds
//! gpu.sock, accepts the VMM's connection and hands the connected fd (3)
//! to this wrapper. crosvm then needs no right to create anything in the
//! VM directory, and readiness needs no inotify watch or polling: the VMM's
//! connect completes against vm-init's listener at once.
//!
//! Every path, and why it is here:
//! - /usr, /lib, /lib64, /etc/ld.so.cache (read, exec): crosvm, Mesa and
//!   their libraries.
//! - /usr/share/drirc.d, /etc/drirc (read): Mesa's driver configuration.
//! - /usr/share/vulkan, /usr/share/glvnd (read): Vulkan ICD and GLVND json.
//! - /dev/dri/renderD* (device): the render nodes, the GPU itself; never the
//!   card* primary nodes (modesetting is the compositor's).
//! - /dev/udmabuf (device, when present): guest memory shared as dmabufs.
//! - /dev/null (device), /dev/urandom (read): what every program opens.
//! - /sys/dev/char, /sys/devices (read, when present): libdrm and Mesa find
//!   the PCI device behind a render node there.
//! - /proc (read): its own /proc; hidepid hides everyone else.
//! - /tmp, /dev/shm (read-write): private tmpfs; buffers travel as memfd
//!   and shm.
//! - the compositor's Wayland socket: connect(2) needs no Landlock right
//!   below ABI 9; being in the view is what allows it. The outer vm-init
//!   resolves it as host root (it may sit under a directory like
//!   /run/user/0, 0700, that the VM's ids cannot enter) and hands it over
//!   as a detached mount (fd 4); its group, when the socket needs one, is
//!   mapped into the VM and given to this daemon alone.
//!
//! Its root holds these paths and nothing else: of /dev only those
//! devices, of /run only the Wayland socket, nothing of the VM directory.
//!
//! Its system calls: [`SYSCALLS`], the only seccomp filter the project
//! installs itself (virtiofsd and the VMMs install their own).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use sandbox_core::caps::CapabilitySet;
use sandbox_core::cgroup::Limits;
use sandbox_core::contract::{config, fd, VmDir};
use sandbox_core::ids::GPU_UID;
use sandbox_core::ids::{is_mapped, COMPOSITOR_GID};
use sandbox_core::landlock::{Access, FsRule};
use sandbox_core::mount::ServiceMount;
use sandbox_core::policy::{
    rules, Exec, Handed, Policy, ALL_SCOPES, DEFAULT_MEMLOCK, SYSTEM_LIBRARIES,
};
use sandbox_core::rlimits::{Limit, Resource};
use sandbox_core::seccomp::{all, allow, arg_in, arg_masked, eq, fails, masked, Group};
use sandbox_core::vmconfig::VmConfig;
use sandbox_core::{Errno, Error};
use syscalls::Sysno;

pub const DEFAULT_PROGRAM: &str = "/usr/bin/crosvm";
/// The connected vhost-user socket vm-init passes.
pub const SOCKET_FD: i32 = fd::GPU_CONNECTION;
/// The compositor's socket, a detached mount vm-init passes.
pub const COMPOSITOR_FD: i32 = fd::GPU_COMPOSITOR;
/// Processes and threads of the GPU daemon's uid: one thread idle
/// (docs/DESIGN.md, "Measured: crosvm device gpu"); Mesa starts worker
/// threads when it renders.
pub const NPROC: u64 = 64;

/// Its private /tmp and /dev/shm, each bounded in bytes and inodes (a
/// size alone leaves empty files unbounded). crosvm touched neither from
/// start to queue start (docs/DESIGN.md, "Measured: crosvm device gpu");
/// the path not measured there (cross-domain contexts) shares guest
/// memory through memfds, which live on no mount. /dev/shm keeps room for
/// a file per shared buffer should a library put them there, and its size
/// for their contents.
pub const TMP_SIZE: &str = "64m";
pub const TMP_INODES: u32 = 256;
pub const SHM_SIZE: &str = "512m";
pub const SHM_INODES: u32 = 1024;
/// Its cgroup's bounds, which the outer vm-init writes as host root (see
/// sandbox-core's cgroup.rs). Memory: its /dev/shm and /tmp above (576
/// MiB together: the display buffers it shares with the compositor) are
/// charged to it, with its own heap beside them; crosvm idles in one
/// thread with a few MiB resident (not measured under a real guest
/// driver: no GPU here). No swap. Tasks: its NPROC, the wrapper and its
/// reaper. CPU: the kernel's default weight, as every daemon of a VM.
pub const LIMITS: Limits = Limits {
    memory_max: 1 << 30,
    swap_max: 0,
    pids_max: NPROC + 2,
    cpu_weight: 100,
};

pub const TABLE: &[(&str, Access, bool)] = &[
    ("/proc", Access::Read, false),
    ("/dev/null", Access::Device, false),
    ("/dev/urandom", Access::Read, false),
    ("/dev/udmabuf", Access::Device, true),
    ("/sys/dev/char", Access::Read, true),
    ("/sys/devices", Access::Read, true),
    ("/usr/share/drirc.d", Access::Read, true),
    ("/usr/share/vulkan", Access::Read, true),
    ("/usr/share/glvnd", Access::Read, true),
    ("/etc/drirc", Access::Read, true),
    ("/tmp", Access::ReadWrite, false),
    ("/dev/shm", Access::ReadWrite, false),
];

// Argument values the rules compare (x86_64 Linux UAPI).
const AF_UNIX: u64 = 1;
const CLONE_THREAD: u64 = 0x1_0000;
const SIGABRT: u64 = 6;
const ENOSYS: i32 = 38;
const PROT_NONE: u64 = 0;
const PROT_READ: u64 = 1;
const PROT_WRITE: u64 = 2;
const PROT_EXEC: u64 = 4;
/// The sharing type of mmap's flags (MAP_SHARED, MAP_PRIVATE,
/// MAP_SHARED_VALIDATE, MAP_DROPPABLE), and the private one.
const MAP_TYPE: u64 = 0x0f;
const MAP_PRIVATE: u64 = 0x02;
const PR_SET_PDEATHSIG: u64 = 1;
const PR_SET_NAME: u64 = 15;
const PR_GET_NAME: u64 = 16;
const PR_CAPBSET_READ: u64 = 23;
const PR_SET_VMA: u64 = 0x5356_4d41;
const PR_GET_AUXV: u64 = 0x4155_5856;
const F_GETFD: u64 = 1;
const F_SETFD: u64 = 2;
const F_GETFL: u64 = 3;
const F_SETFL: u64 = 4;
const F_DUPFD_CLOEXEC: u64 = 1030;
const F_ADD_SEALS: u64 = 1033;
const F_GET_SEALS: u64 = 1034;
const TCGETS: u64 = 0x5401;
const FIONBIO: u64 = 0x5421;
const FIOCLEX: u64 = 0x5451;
const DMA_BUF_IOCTL_SYNC: u64 = 0x4008_6200;
const UDMABUF_CREATE_LIST: u64 = 0x4008_7543;
/// The type byte of an ioctl number, and DRM's ('d').
const IOCTL_TYPE: u64 = 0xff00;
const DRM_IOCTL_TYPE: u64 = 0x6400;

/// crosvm `device gpu`'s system calls (x86_64). Derived from two sources:
/// every call measured on the real daemon's path (docs/DESIGN.md,
/// "Measured: crosvm device gpu": start, vhost-user handshake, queue
/// start, compositor connect, exit) and crosvm's own policy for its jailed
/// GPU device (in crosvm's source at f1e797a6, jail/seccomp/x86_64/
/// gpu_device.policy and gpu_common.policy), which is kept
/// against real rendering. Never narrower than that policy for rendering;
/// what it has that is left out, and what is here beyond both, say why.
///
/// Left out of crosvm's policy: userfaultfd and its ioctls (vmm-swap, a
/// VM-process feature `device gpu` never uses), io_uring_enter and
/// io_uring_register (io_uring_setup fails instead, below: a ring's
/// operations would bypass this filter), sched_getparam and
/// sched_getscheduler (its common device policy, not its GPU one).
#[cfg(target_arch = "x86_64")]
pub const SYSCALLS: &[Group] = &[
    Group {
        why: "exec and start: the wrapper installs the filter, then execs \
              crosvm, whose loader and libc need these (measured); what may \
              be exec'd is bounded by Landlock's read-exec rows",
        rules: &[
            allow(Sysno::execve),
            allow(Sysno::arch_prctl),
            allow(Sysno::set_tid_address),
            allow(Sysno::set_robust_list),
            allow(Sysno::rseq),
            allow(Sysno::prlimit64),
            allow(Sysno::getrandom),
            allow(Sysno::brk),
            allow(Sysno::access),
            allow(Sysno::open),
            allow(Sysno::openat),
            allow(Sysno::close),
            allow(Sysno::read),
            allow(Sysno::pread64),
            allow(Sysno::stat),
            allow(Sysno::lstat),
            allow(Sysno::fstat),
            allow(Sysno::newfstatat),
            allow(Sysno::statx),
            allow(Sysno::fstatfs),
            allow(Sysno::lseek),
            allow(Sysno::sigaltstack),
            allow(Sysno::rt_sigaction),
            allow(Sysno::rt_sigprocmask),
            allow(Sysno::rt_sigreturn),
            allow(Sysno::restart_syscall),
            allow(Sysno::sched_getaffinity),
            allow(Sysno::exit),
            allow(Sysno::exit_group),
        ],
    },
    Group {
        why: "what crosvm's libraries do before its main runs, where no \
              policy of crosvm's own could be in force yet: libcap's \
              constructor finds the highest capability by reading the \
              bounding set, prctl(PR_CAPBSET_READ, N) for N around 40-48 \
              (measured on crosvm and on Debian's capsh). A read of the \
              daemon's own set, which is empty; the option alone is \
              allowed, not the other capability prctls",
        rules: &[arg_in(Sysno::prctl, 0, &[PR_CAPBSET_READ])],
    },
    Group {
        why: "memory: no mapping both writable and executable, none made \
              executable later (crosvm's rules: no JIT in the daemon), and \
              none executable and shared: a shared executable mapping \
              beside a writable one of the same memfd is W+X memory in two \
              halves. Executable mappings are the loader's kind, private: \
              the filter precedes exec, so ld.so must map every library. \
              A private one of a file the daemon can write still sees what \
              is written there until the page is copied (README)",
        rules: &[
            arg_in(
                Sysno::mmap,
                2,
                &[PROT_READ | PROT_WRITE, PROT_NONE, PROT_WRITE, PROT_READ],
            ),
            all(
                Sysno::mmap,
                &[
                    eq(2, PROT_READ | PROT_EXEC),
                    masked(3, MAP_TYPE, MAP_PRIVATE),
                ],
            ),
            arg_in(
                Sysno::mprotect,
                2,
                &[PROT_READ | PROT_WRITE, PROT_NONE, PROT_READ],
            ),
            allow(Sysno::munmap),
            allow(Sysno::mremap),
            // Beyond crosvm's (which lists seven advice values): glibc and
            // Mesa also give others (MADV_HUGEPAGE, MADV_WILLNEED), and no
            // advice grants more than the mapping already does.
            allow(Sysno::madvise),
            allow(Sysno::membarrier),
        ],
    },
    Group {
        why: "the vhost-user connection (fd 3) and the event loop around \
              it (measured; crosvm's policy)",
        rules: &[
            allow(Sysno::recvmsg),
            allow(Sysno::sendmsg),
            allow(Sysno::recvfrom),
            allow(Sysno::sendto),
            allow(Sysno::write),
            allow(Sysno::readv),
            allow(Sysno::writev),
            allow(Sysno::epoll_create1),
            allow(Sysno::epoll_ctl),
            allow(Sysno::epoll_wait),
            allow(Sysno::epoll_pwait),
            allow(Sysno::poll),
            allow(Sysno::ppoll),
            allow(Sysno::eventfd2),
            allow(Sysno::pipe2),
            allow(Sysno::dup),
            allow(Sysno::dup2),
            allow(Sysno::getsockopt),
            allow(Sysno::shutdown),
            arg_in(
                Sysno::fcntl,
                1,
                &[
                    F_DUPFD_CLOEXEC,
                    F_GETFD,
                    F_SETFD,
                    F_GETFL,
                    F_SETFL,
                    F_ADD_SEALS,
                    F_GET_SEALS,
                ],
            ),
        ],
    },
    Group {
        why: "the compositor: AF_UNIX only, no network at all. Beyond \
              crosvm's rule (stream sockets only): the datagram socket it \
              opens for /dev/log and its two socketpairs (measured)",
        rules: &[
            arg_in(Sysno::socket, 0, &[AF_UNIX]),
            arg_in(Sysno::socketpair, 0, &[AF_UNIX]),
            allow(Sysno::connect),
        ],
    },
    Group {
        why: "threads, never processes: clone only with CLONE_THREAD \
              (crosvm's rule)",
        rules: &[
            arg_masked(Sysno::clone, 0, CLONE_THREAD, &[CLONE_THREAD]),
            allow(Sysno::futex),
            allow(Sysno::gettid),
            allow(Sysno::getpid),
            allow(Sysno::sched_yield),
            allow(Sysno::nanosleep),
            allow(Sysno::clock_nanosleep),
            allow(Sysno::clock_gettime),
            allow(Sysno::gettimeofday),
            arg_in(
                Sysno::prctl,
                0,
                &[
                    PR_SET_NAME,
                    PR_GET_NAME,
                    PR_SET_VMA,
                    PR_SET_PDEATHSIG,
                    PR_GET_AUXV,
                ],
            ),
            // abort(3); kill is crosvm's, Landlock's signal scope keeps it
            // inside the daemon's own domain.
            arg_in(Sysno::tgkill, 2, &[SIGABRT]),
            allow(Sysno::kill),
        ],
    },
    Group {
        why: "fail, so that the library falls back instead of the daemon \
              dying: clone3's flags sit in memory the filter cannot read \
              (glibc then uses clone, whose flags it can); io_uring's \
              operations would not pass this filter (crosvm's executor then \
              uses epoll)",
        rules: &[
            fails(Sysno::clone3, ENOSYS),
            fails(Sysno::io_uring_setup, ENOSYS),
        ],
    },
    Group {
        why: "guest memory and buffers shared with the compositor and the \
              GPU: memfd with seals, dmabuf sync, udmabuf, DRM (crosvm's \
              policy)",
        rules: &[
            allow(Sysno::memfd_create),
            allow(Sysno::ftruncate),
            allow(Sysno::fallocate),
            // crosvm's rule is `arg1 & 0x6400`, meant as DRM's ioctl type;
            // as written it admits any number sharing one of those bits.
            // Here: DRM's type byte exactly, the named ioctls, and TCGETS
            // (isatty(3) of logging code, which crosvm's mask admits).
            arg_masked(Sysno::ioctl, 1, IOCTL_TYPE, &[DRM_IOCTL_TYPE]),
            arg_in(
                Sysno::ioctl,
                1,
                &[
                    DMA_BUF_IOCTL_SYNC,
                    UDMABUF_CREATE_LIST,
                    FIONBIO,
                    FIOCLEX,
                    TCGETS,
                ],
            ),
        ],
    },
    Group {
        why: "Mesa and the Vulkan loader: driver and ICD files, the shader \
              cache under /tmp, AMD's scheduling calls (crosvm's policy)",
        rules: &[
            allow(Sysno::getdents),
            allow(Sysno::getdents64),
            allow(Sysno::readlink),
            allow(Sysno::readlinkat),
            allow(Sysno::getcwd),
            allow(Sysno::uname),
            allow(Sysno::sysinfo),
            allow(Sysno::getuid),
            allow(Sysno::geteuid),
            allow(Sysno::getgid),
            allow(Sysno::getegid),
            allow(Sysno::mkdir),
            allow(Sysno::rename),
            allow(Sysno::unlink),
            allow(Sysno::unlinkat),
            allow(Sysno::flock),
            allow(Sysno::inotify_init1),
            allow(Sysno::inotify_add_watch),
            allow(Sysno::inotify_rm_watch),
            allow(Sysno::setpriority),
            allow(Sysno::sched_setscheduler),
            allow(Sysno::sched_setaffinity),
            allow(Sysno::kcmp),
        ],
    },
];

/// No list for other architectures yet: the wrapper refuses to run crosvm
/// unfiltered (sandbox_core::seccomp::compile says so in one line).
#[cfg(not(target_arch = "x86_64"))]
pub const SYSCALLS: &[Group] = &[];

/// What of the host's GPU this daemon gets, found before anything starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuHost {
    /// Where the compositor's socket is, on the host and in the view.
    pub wayland: PathBuf,
    pub render_nodes: Vec<PathBuf>,
    pub udmabuf: bool,
    /// The inside-gid of the socket's group, when the outer mapped it.
    pub compositor_group: Option<u32>,
}

impl GpuHost {
    /// The compositor's socket from the VM's config (the outer vm-init
    /// resolved it and hands it over as fd 4), and the host's render
    /// nodes. A VM that asks for a GPU gets one or a one-line error: no
    /// render node is exit 111.
    pub fn find(vm_dir: &Path) -> Result<GpuHost, Error> {
        let config = VmConfig::read(vm_dir)?;
        let wayland = config.gpu.ok_or_else(|| {
            Error::Usage(format!(
                "{}: the VM has no GPU",
                VmDir::new(vm_dir).config_file(config::GPU).display()
            ))
        })?;
        let mut render_nodes: Vec<PathBuf> = std::fs::read_dir("/dev/dri")
            .map(|d| {
                d.filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| {
                        p.file_name()
                            .is_some_and(|n| n.to_string_lossy().starts_with("renderD"))
                    })
                    .collect()
            })
            .unwrap_or_default();
        render_nodes.sort();
        if render_nodes.is_empty() {
            return Err(Error::path(
                "find a render node under",
                "/dev/dri",
                Errno::ENOENT,
            ));
        }
        let udmabuf = Path::new("/dev/udmabuf").exists();
        if !udmabuf {
            sandbox_core::say!(
                "wrap-gpu: {}: /dev/udmabuf is absent: going on without it",
                vm_dir.display()
            );
        }
        Ok(GpuHost {
            wayland,
            render_nodes,
            udmabuf,
            compositor_group: is_mapped(COMPOSITOR_GID).then_some(COMPOSITOR_GID),
        })
    }
}

/// `render`: the inside gid of the host's render group, when it is mapped.
pub fn policy(vm_dir: &Path, program: &Path, render: Option<u32>, host: &GpuHost) -> Policy {
    let mut landlock = rules(SYSTEM_LIBRARIES);
    landlock.extend(rules(TABLE));
    landlock.push(FsRule {
        path: program.to_owned(),
        access: Access::ReadExec,
        optional: false,
    });
    for node in &host.render_nodes {
        landlock.push(FsRule {
            path: node.clone(),
            access: Access::Device,
            optional: false,
        });
    }
    let mounts = vec![
        ServiceMount::Tmpfs {
            target: "/tmp".into(),
            size: TMP_SIZE,
            inodes: TMP_INODES,
        },
        ServiceMount::Tmpfs {
            target: "/dev/shm".into(),
            size: SHM_SIZE,
            inodes: SHM_INODES,
        },
        ServiceMount::ProcHidden,
    ];
    let runtime_dir = host
        .wayland
        .parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_owned);
    Policy {
        // Nothing of it in the view: its socket comes as fd 3.
        vm_dir: vm_dir.to_owned(),
        uid: GPU_UID,
        gid: GPU_UID,
        // The compositor's group, when its socket needs one, is this
        // daemon's alone: no other policy names it.
        groups: render.into_iter().chain(host.compositor_group).collect(),
        caps: CapabilitySet::empty(),
        mounts,
        landlock,
        // Nothing of the VM directory: its socket comes as fd 3.
        connect: vec![],
        // The compositor's socket, as the outer resolved it (fd 4).
        handed: vec![Handed {
            path: host.wayland.clone(),
            fd: COMPOSITOR_FD,
        }],
        scopes: ALL_SCOPES.to_vec(),
        rlimits: vec![
            Limit {
                resource: Resource::Nofile,
                value: Some(4096),
            },
            Limit {
                resource: Resource::Core,
                value: Some(0),
            },
            Limit {
                resource: Resource::Nproc,
                value: Some(NPROC),
            },
            // Nothing to pin: the kernel's default, not the VMM's.
            Limit {
                resource: Resource::Memlock,
                value: Some(DEFAULT_MEMLOCK),
            },
        ],
        keep_fds: vec![SOCKET_FD],
        env: vec![("XDG_RUNTIME_DIR".into(), OsString::from(runtime_dir))],
        cwd: "/".into(),
        join_user_namespace: None,
        allow_weaker_landlock: false,
        syscalls: Some(SYSCALLS),
    }
}

/// crosvm's argv as Spectrum runs it, with the connected fd for the socket.
pub fn argv(program: &Path, host: &GpuHost) -> Exec {
    let wayland = host.wayland.display().to_string();
    let args: Vec<OsString> = [
        "--no-syslog",
        "device",
        "gpu",
        "--fd",
        &SOCKET_FD.to_string(),
        "--wayland-sock",
        &wayland,
        "--params",
        r#"{"context-types":"cross-domain"}"#,
    ]
    .iter()
    .map(OsString::from)
    .collect();
    Exec {
        program: program.to_owned(),
        args,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandbox_core::ids::host_group_inside_gid;
    use sandbox_core::vmconfig::DEFAULT_COMPOSITOR_SOCKET;

    fn host() -> GpuHost {
        GpuHost {
            wayland: DEFAULT_COMPOSITOR_SOCKET.into(),
            render_nodes: vec!["/dev/dri/renderD128".into()],
            udmabuf: true,
            compositor_group: Some(COMPOSITOR_GID),
        }
    }

    fn p() -> Policy {
        policy(
            Path::new("/run/vm/a"),
            Path::new(DEFAULT_PROGRAM),
            host_group_inside_gid("render"),
            &host(),
        )
    }

    #[test]
    fn writes_only_its_tmpfs_and_nothing_of_the_vm_dir() {
        let p = p();
        p.check().unwrap();
        for r in &p.landlock {
            if r.access == Access::ReadWrite {
                assert!(
                    r.path == Path::new("/tmp") || r.path == Path::new("/dev/shm"),
                    "{}",
                    r.path.display()
                );
            }
            assert!(
                !r.path.starts_with("/run/vm/a"),
                "nothing of the VM dir: {}",
                r.path.display()
            );
        }
        assert!(!p.landlock.iter().any(|r| r.path == Path::new("/dev/kvm")));
        assert!(p
            .landlock
            .iter()
            .any(|r| r.path == Path::new("/dev/dri/renderD128") && r.access == Access::Device));
        assert!(
            !p.landlock.iter().any(|r| r.path == Path::new("/dev/dri")),
            "render nodes only, not card*"
        );
        assert!(p.caps.is_empty());
        assert_eq!(
            p.groups,
            [host_group_inside_gid("render").unwrap(), COMPOSITOR_GID]
        );
        assert_eq!(
            p.handed,
            [Handed {
                path: DEFAULT_COMPOSITOR_SOCKET.into(),
                fd: 4
            }]
        );
    }

    #[test]
    fn dev_and_run_hold_only_what_it_uses() {
        let p = p();
        let under = |dir: &str| -> Vec<PathBuf> {
            p.view()
                .into_iter()
                .filter(|v| v.path.starts_with(dir))
                .map(|v| v.path)
                .collect()
        };
        let mut dev = under("/dev");
        dev.sort();
        // /dev/shm is a private tmpfs, not the host's.
        assert_eq!(
            dev,
            [
                "/dev/dri/renderD128",
                "/dev/null",
                "/dev/shm",
                "/dev/udmabuf",
                "/dev/urandom"
            ]
            .map(PathBuf::from)
        );
        assert!(p.mounts.iter().any(|m| m.target() == Path::new("/dev/shm")));
        assert_eq!(under("/run"), [PathBuf::from("/run/user/0/wayland-1")]);
    }

    use sandbox_core::seccomp::{allows, compile, Verdict};

    const MAP_SHARED: u64 = 0x01;
    /// What ld.so passes for a library's segments: MAP_PRIVATE,
    /// MAP_FIXED, MAP_DENYWRITE (which the kernel ignores).
    const LOADER_FLAGS: u64 = MAP_PRIVATE | 0x10 | 0x800;

    fn verdict(call: Sysno, args: [u64; 6]) -> Verdict {
        allows(SYSCALLS, call, &args)
    }

    #[test]
    fn the_measured_path_passes() {
        // docs/DESIGN.md, "Measured: crosvm device gpu": every call seen
        // from start to exit.
        let measured = "access arch_prctl brk close connect epoll_create1 epoll_ctl \
            epoll_wait eventfd2 execve exit_group fcntl getrandom gettid madvise mmap \
            mprotect munmap newfstatat openat poll prctl pread64 prlimit64 read recvmsg \
            rseq rt_sigaction sched_getaffinity sendmsg set_robust_list set_tid_address \
            sigaltstack socket socketpair statx write";
        for name in measured.split_whitespace() {
            let call: Sysno = name.parse().unwrap();
            // The arguments the path uses: AF_UNIX sockets, libcap's
            // PR_CAPBSET_READ, the loader's private read-exec mappings,
            // F_GETFD.
            let args = match call {
                Sysno::socket | Sysno::socketpair => [AF_UNIX, 1, 0, 0, 0, 0],
                Sysno::prctl => [PR_CAPBSET_READ, 40, 0, 0, 0, 0],
                Sysno::mmap => [0, 4096, PROT_READ | PROT_EXEC, LOADER_FLAGS, 3, 0],
                Sysno::mprotect => [0, 4096, PROT_READ, 0, 0, 0],
                Sysno::fcntl => [3, F_GETFD, 0, 0, 0, 0],
                _ => [0; 6],
            };
            assert_eq!(verdict(call, args), Verdict::Allow, "{name}");
        }
        // /dev/log is a datagram socket.
        assert_eq!(
            verdict(Sysno::socket, [AF_UNIX, 2, 0, 0, 0, 0]),
            Verdict::Allow
        );
        // The guest memory fd, mapped shared and read-write.
        let rw = PROT_READ | PROT_WRITE;
        assert_eq!(
            verdict(Sysno::mmap, [0, 1 << 20, rw, MAP_SHARED, 5, 0]),
            Verdict::Allow
        );
    }

    #[test]
    fn never_narrower_than_crosvms_gpu_policy() {
        // Every call of crosvm's gpu_device.policy + gpu_common.policy at
        // f1e797a6 (x86_64), but the ones SYSCALLS's doc leaves out.
        let crosvm = "brk clock_gettime clone clone3 close dup2 dup epoll_create1 epoll_ctl \
            epoll_pwait epoll_wait eventfd2 exit exit_group ftruncate futex getcwd getpid \
            gettid gettimeofday io_uring_setup kill madvise membarrier memfd_create mremap \
            munmap nanosleep clock_nanosleep pipe2 poll ppoll read readlink readlinkat readv \
            recvfrom recvmsg restart_syscall rseq rt_sigaction rt_sigprocmask rt_sigreturn \
            sched_getaffinity sched_yield sendmsg sendto set_robust_list sigaltstack tgkill \
            write writev uname unlinkat connect fcntl fstat getdents getdents64 geteuid \
            getrandom getuid ioctl lseek lstat mmap mprotect open openat stat statx sysinfo \
            fstatfs prctl getsockopt shutdown fallocate flock inotify_add_watch inotify_init1 \
            inotify_rm_watch mkdir newfstatat rename setpriority unlink sched_setscheduler \
            sched_setaffinity kcmp access getgid getegid socket";
        let named: Vec<Sysno> = SYSCALLS
            .iter()
            .flat_map(|g| g.rules)
            .map(|r| r.call)
            .collect();
        for name in crosvm.split_whitespace() {
            let call: Sysno = name.parse().unwrap();
            assert!(named.contains(&call), "{name} is in crosvm's policy");
        }
        // Its argument rules, kept: the ioctls rendering needs.
        for nr in [
            0x6440_u64,
            0xc010_64b2,
            DMA_BUF_IOCTL_SYNC,
            UDMABUF_CREATE_LIST,
        ] {
            assert_eq!(
                verdict(Sysno::ioctl, [3, nr, 0, 0, 0, 0]),
                Verdict::Allow,
                "{nr:#x}"
            );
        }
    }

    #[test]
    fn what_a_compromised_daemon_wants_kills_it() {
        for call in [
            Sysno::ptrace,
            Sysno::process_vm_readv,
            Sysno::mount,
            Sysno::unshare,
            Sysno::setns,
            Sysno::setuid,
            Sysno::bpf,
            Sysno::keyctl,
            Sysno::add_key,
            Sysno::perf_event_open,
            Sysno::userfaultfd,
            Sysno::io_uring_enter,
            Sysno::bind,
            Sysno::listen,
            Sysno::shmget,
            Sysno::seccomp,
            Sysno::execveat,
            // The other ways to executable memory: a protection key's
            // mprotect, READ_IMPLIES_EXEC, SysV's SHM_EXEC, and a file's
            // pages moved under an executable mapping.
            Sysno::pkey_mprotect,
            Sysno::personality,
            Sysno::shmat,
            Sysno::remap_file_pages,
        ] {
            assert_eq!(verdict(call, [0; 6]), Verdict::Kill, "{}", call.name());
        }
        // Network sockets, processes, executable memory, foreign ioctls.
        assert_eq!(verdict(Sysno::socket, [2, 1, 0, 0, 0, 0]), Verdict::Kill);
        assert_eq!(verdict(Sysno::socket, [16, 3, 0, 0, 0, 0]), Verdict::Kill);
        assert_eq!(verdict(Sysno::clone, [17, 0, 0, 0, 0, 0]), Verdict::Kill);
        let rwx = PROT_READ | PROT_WRITE | PROT_EXEC;
        assert_eq!(verdict(Sysno::mmap, [0, 4096, rwx, 0, 0, 0]), Verdict::Kill);
        let rx = PROT_READ | PROT_EXEC;
        assert_eq!(
            verdict(Sysno::mprotect, [0, 4096, rx, 0, 0, 0]),
            Verdict::Kill
        );
        // An executable alias shared with a writable mapping of a memfd:
        // MAP_SHARED, MAP_SHARED_VALIDATE, or MAP_SHARED among other bits.
        for flags in [MAP_SHARED, 0x03, MAP_SHARED | 0x20, MAP_SHARED | 0x800] {
            assert_eq!(
                verdict(Sysno::mmap, [0, 4096, rx, flags, 5, 0]),
                Verdict::Kill,
                "{flags:#x}"
            );
        }
        assert_eq!(
            verdict(Sysno::mmap, [0, 4096, PROT_EXEC, MAP_PRIVATE, 5, 0]),
            Verdict::Kill
        );
        // Of the capability prctls, the read alone: not PR_SET_KEEPCAPS,
        // PR_CAPBSET_DROP, PR_CAP_AMBIENT.
        for option in [8, 24, 47] {
            assert_eq!(
                verdict(Sysno::prctl, [option, 0, 0, 0, 0, 0]),
                Verdict::Kill,
                "{option}"
            );
        }
        // TIOCSTI (0x5412) shares a bit with crosvm's 0x6400 mask, not its type.
        assert_eq!(
            verdict(Sysno::ioctl, [0, 0x5412, 0, 0, 0, 0]),
            Verdict::Kill
        );
        assert_eq!(verdict(Sysno::prctl, [22, 0, 0, 0, 0, 0]), Verdict::Kill);
        assert_eq!(verdict(Sysno::clone3, [0; 6]), Verdict::Fail(ENOSYS));
        compile(SYSCALLS).unwrap();
    }

    #[test]
    fn argv_matches_crosvm_device_gpu() {
        let e = argv(Path::new(DEFAULT_PROGRAM), &host());
        let a: Vec<_> = e.args.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(
            a,
            [
                "--no-syslog",
                "device",
                "gpu",
                "--fd",
                "3",
                "--wayland-sock",
                "/run/user/0/wayland-1",
                "--params",
                r#"{"context-types":"cross-domain"}"#
            ]
        );
        assert!(
            !a.contains(&"--socket-path"),
            "crosvm must not bind its own socket"
        );
    }
}
