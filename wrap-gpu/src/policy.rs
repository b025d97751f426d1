//! crosvm `device gpu`'s sandbox: the only one it gets, since crosvm
//! applies no jail of its own in that mode.
//!
//! The vhost-user socket: crosvm's `--fd` takes an already connected
//! socket, `--socket-path` binds one itself. We take `--fd`: vm-init binds
//! gpu.sock, accepts the VMM's connection and hands the connected fd (3)
//! to this wrapper. crosvm then needs no right to create anything in the
//! VM directory, and readiness needs no inotify watch or polling: the VMM's
//! connect completes against vm-init's listener at once.

use std::ffi::OsString;
use std::path::Path;

use sandbox_core::caps::CapabilitySet;
use sandbox_core::ids::GPU_UID;
use sandbox_core::landlock::{Access, FsRule};
use sandbox_core::mount::ServiceMount;
use sandbox_core::policy::{rules, Exec, Policy, ALL_SCOPES, SYSTEM_LIBRARIES};
use sandbox_core::rlimits::{Limit, Resource};

pub const DEFAULT_PROGRAM: &str = "/usr/bin/crosvm";
/// The connected vhost-user socket vm-init passes.
pub const SOCKET_FD: i32 = 3;
/// Spectrum's compositor socket, as crosvm is started there.
pub const WAYLAND_SOCKET: &str = "/run/user/0/wayland-1";

/// Read-only: what Mesa loads to identify and drive the GPU; read-write:
/// the render nodes and udmabuf. Optional rows are absent on hosts without
/// a GPU (like CI): the wrapper still builds its namespace from what exists.
pub const TABLE: &[(&str, Access, bool)] = &[
    ("/proc", Access::Read, false),
    ("/dev/null", Access::Device, false),
    ("/dev/dri", Access::Device, true),
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

/// `render`: the inside gid of the host's render group, when it is mapped.
pub fn policy(vm_dir: &Path, program: &Path, render: Option<u32>) -> Policy {
    let group = render;
    let mut landlock = rules(SYSTEM_LIBRARIES);
    landlock.extend(rules(TABLE));
    landlock.push(FsRule {
        path: program.to_owned(),
        access: Access::ReadExec,
        optional: false,
    });
    // The compositor's socket: connect(2) to a path socket needs no Landlock
    // right below ABI 9, but the file must be reachable; read is enough.
    landlock.push(FsRule {
        path: WAYLAND_SOCKET.into(),
        access: Access::Read,
        optional: true,
    });
    Policy {
        uid: GPU_UID,
        gid: GPU_UID,
        groups: group.into_iter().collect(),
        caps: CapabilitySet::empty(),
        mounts: vec![
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
            // Nothing of the VM directory: its socket comes as fd 3.
            ServiceMount::Only {
                dir: vm_dir.to_owned(),
                keep: vec![],
            },
        ],
        landlock,
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
        ],
        keep_fds: vec![SOCKET_FD],
        env: vec![("XDG_RUNTIME_DIR".into(), OsString::from("/run/user/0"))],
        cwd: "/".into(),
        allow_weaker_landlock: false,
    }
}

/// crosvm's argv as Spectrum runs it, with the connected fd for the socket.
pub fn argv(program: &Path) -> Exec {
    let args: Vec<OsString> = [
        "--no-syslog",
        "device",
        "gpu",
        "--fd",
        "3",
        "--wayland-sock",
        WAYLAND_SOCKET,
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

    #[test]
    fn table_is_absolute_unique_and_writes_only_devices_and_tmpfs() {
        let p = policy(
            Path::new("/run/vm/a"),
            Path::new(DEFAULT_PROGRAM),
            host_group_inside_gid("render"),
        );
        let mut seen = std::collections::HashSet::new();
        for r in &p.landlock {
            assert!(r.path.is_absolute());
            assert!(seen.insert(r.path.clone()), "{} twice", r.path.display());
            if r.access == Access::ReadWrite {
                assert!(
                    r.path == Path::new("/tmp") || r.path == Path::new("/dev/shm"),
                    "{}",
                    r.path.display()
                );
            }
            if r.access == Access::Device {
                assert!(r.path.starts_with("/dev"));
            }
        }
        assert!(!p.landlock.iter().any(|r| r.path == Path::new("/dev/kvm")));
        assert!(p.caps.is_empty());
        assert_eq!(p.groups, [host_group_inside_gid("render").unwrap()]);
    }

    #[test]
    fn argv_matches_crosvm_device_gpu() {
        let e = argv(Path::new(DEFAULT_PROGRAM));
        let a: Vec<_> = e.args.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(a[..3], ["--no-syslog", "device", "gpu"]);
        assert!(a.windows(2).any(|w| w == ["--fd", "3"]));
        assert!(
            !a.contains(&"--socket-path"),
            "crosvm must not bind its own socket"
        );
        assert!(a
            .windows(2)
            .any(|w| w == ["--params", r#"{"context-types":"cross-domain"}"#]));
    }
}
