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
//!   below ABI 9; being in the view is what allows it.
//!
//! Its root holds these paths and nothing else: of /dev only those
//! devices, of /run only the Wayland socket, nothing of the VM directory.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use sandbox_core::caps::CapabilitySet;
use sandbox_core::ids::GPU_UID;
use sandbox_core::landlock::{Access, FsRule};
use sandbox_core::mount::ServiceMount;
use sandbox_core::policy::{rules, Exec, Policy, ALL_SCOPES, DEFAULT_MEMLOCK, SYSTEM_LIBRARIES};
use sandbox_core::rlimits::{Limit, Resource};
use sandbox_core::vmdir::fd;
use sandbox_core::{Errno, Error};

pub const DEFAULT_PROGRAM: &str = "/usr/bin/crosvm";
/// The connected vhost-user socket vm-init passes.
pub const SOCKET_FD: i32 = fd::GPU_CONNECTION;
/// Processes and threads of the GPU daemon's uid: one thread idle
/// (facts/crosvm.md); Mesa starts worker threads when it renders.
pub const NPROC: u64 = 64;
/// Spectrum's compositor socket, as crosvm is started there; a VM's
/// `config/gpu` may name another.
pub const DEFAULT_WAYLAND_SOCKET: &str = "/run/user/0/wayland-1";

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

/// What of the host's GPU this daemon gets, found before anything starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuHost {
    pub wayland: PathBuf,
    pub render_nodes: Vec<PathBuf>,
    pub udmabuf: bool,
}

impl GpuHost {
    /// Reads `VMDIR/config/gpu` (empty, or the compositor's socket path) and
    /// looks for the render nodes. A VM that asks for a GPU gets one or a
    /// one-line error: no socket or no render node is exit 111.
    pub fn find(vm_dir: &Path) -> Result<GpuHost, Error> {
        let config = std::fs::read_to_string(vm_dir.join("config/gpu")).unwrap_or_default();
        let wayland = PathBuf::from(match config.trim() {
            "" => DEFAULT_WAYLAND_SOCKET,
            p => p,
        });
        if !wayland.is_absolute() {
            return Err(Error::Usage(format!(
                "config/gpu: {} is not an absolute path",
                wayland.display()
            )));
        }
        use std::os::unix::fs::FileTypeExt;
        match std::fs::metadata(&wayland) {
            Ok(m) if m.file_type().is_socket() => {}
            Ok(_) => return Err(Error::path("compositor socket", &wayland, Errno(88))),
            Err(e) => return Err(Error::path("compositor socket", &wayland, e)),
        }
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
            size: "64m",
        },
        // Buffers travel through memfd and shm.
        ServiceMount::Tmpfs {
            target: "/dev/shm".into(),
            size: "512m",
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
        groups: render.into_iter().collect(),
        caps: CapabilitySet::empty(),
        mounts,
        landlock,
        // The compositor. Nothing of the VM directory: its socket comes as
        // fd 3.
        connect: vec![host.wayland.clone()],
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
        "3",
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

    fn host() -> GpuHost {
        GpuHost {
            wayland: DEFAULT_WAYLAND_SOCKET.into(),
            render_nodes: vec!["/dev/dri/renderD128".into()],
            udmabuf: true,
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
        assert_eq!(p.groups, [host_group_inside_gid("render").unwrap()]);
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
