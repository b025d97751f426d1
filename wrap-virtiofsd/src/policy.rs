//! virtiofsd's sandbox, as a table, and its argv.
//!
//! virtiofsd serves `VMDIR/fs` to one guest. It runs as root of the VM's
//! user namespace (it must create files owned by any guest id, and the
//! outer vm-init made `VMDIR/fs` an idmapped mount so those ids land on disk
//! unshifted), with only the capabilities file serving needs, inside the
//! VM's namespaces only.

use std::ffi::OsString;
use std::path::Path;

use sandbox_core::caps::CapabilitySet;
use sandbox_core::cgroup::Limits;
use sandbox_core::contract::{fd, VmDir, NOFILE_CEILING};
use sandbox_core::ids::VIRTIOFSD_UID;
use sandbox_core::landlock::{Access, FsRule};
use sandbox_core::mount::ServiceMount;
use sandbox_core::policy::{rules, Exec, Policy, ALL_SCOPES, DEFAULT_MEMLOCK, SYSTEM_LIBRARIES};
use sandbox_core::rlimits::{Limit, Resource};

/// Where Debian's virtiofsd package installs the daemon.
pub const DEFAULT_PROGRAM: &str = "/usr/libexec/virtiofsd";
/// The vhost-user listener vm-init bound, passed as this fd.
pub const SOCKET_FD: i32 = fd::VIRTIOFSD_LISTENER;
/// The user namespace PID 1 made that maps only the guest's ids (0..65535)
/// one to one, passed as this fd and joined after the mounts: virtiofsd's
/// CAP_SETUID and CAP_SETGID then reach the guest's ids and no service id
/// (it cannot become the VMM, whose /proc hidepid would then show it).
pub const USERNS_FD: i32 = fd::VIRTIOFSD_USERNS;
/// Processes and threads of virtiofsd's uid (its own in its user
/// namespace): 3 measured while serving; room for a few more.
pub const NPROC: u64 = 32;
/// Its cgroup's bounds, which the outer vm-init writes as host root (see
/// sandbox-core's cgroup.rs). Memory: 4.4 MiB resident measured serving
/// the demo guest; the guest's files it reads and writes are page cache
/// charged to it, which the kernel reclaims at the bound before it kills:
/// 256 MiB is room for a working set of them. No swap. Tasks: its NPROC,
/// the wrapper and its reaper. CPU: the kernel's default weight, as every
/// daemon of a VM: under contention each gets an equal share of its VM's.
pub const LIMITS: Limits = Limits {
    memory_max: 256 << 20,
    swap_max: 0,
    pids_max: NPROC + 2,
    cpu_weight: 100,
};
/// Open files: virtiofsd keeps one O_PATH fd per inode the guest has
/// looked up. The VM's ceiling, 65536, is generous for a desktop VM and
/// far below the host's nr_open; virtiofsd is told to leave it as it is
/// (`--rlimit-nofile 0`).
pub const NOFILE: u64 = NOFILE_CEILING;

/// CHOWN, DAC_OVERRIDE, FOWNER, FSETID, SETGID, SETUID: what virtiofsd
/// needs to act for any guest id on the guest's files. Not SETFCAP: file
/// capabilities are an xattr (security.capability), and xattrs are off
/// (no `--xattr`), so a guest has no way to set one.
/// Not DAC_READ_SEARCH: file handles are off (`--inode-file-handles=never`),
/// and open_by_handle_at with it would reach any inode of the file system.
/// Not MKNOD: `--modcaps=-mknod`, a guest makes no device nodes on host
/// storage (fifos and sockets need no capability).
pub const SERVING_CAPS: CapabilitySet = CapabilitySet::CHOWN
    .union(CapabilitySet::DAC_OVERRIDE)
    .union(CapabilitySet::FOWNER)
    .union(CapabilitySet::FSETID)
    .union(CapabilitySet::SETGID)
    .union(CapabilitySet::SETUID);

/// What virtiofsd is exec'd with: SERVING_CAPS plus SETPCAP. Running as
/// uid 0 it always applies its own capability set with libcap-ng
/// (`capng_apply(CAPNG_SELECT_BOTH)`, bounding set included), which fails
/// without SETPCAP; it then exits through an error path its own seccomp
/// filter kills (measured: SIGSYS on readlink). Its first act is to drop
/// SETPCAP with everything outside SERVING_CAPS, before it serves the
/// guest; our bounding set already holds nothing more, so SETPCAP can
/// drop, never add.
pub const CAPS: CapabilitySet = SERVING_CAPS.union(CapabilitySet::SETPCAP);

/// Landlock rows beyond the system libraries. `VMDIR/fs` is the only
/// writable path; /proc is read for /proc/sys/fs/nr_open and
/// /proc/self/fd (virtiofsd reopens its O_PATH fds through it); hidepid
/// makes every other process's /proc invisible anyway.
pub const TABLE: &[(&str, Access, bool)] = &[
    ("/proc", Access::Read, false),
    ("/dev/null", Access::Device, false),
];

pub fn policy(vm_dir: &Path, program: &Path) -> Policy {
    let mut landlock = rules(SYSTEM_LIBRARIES);
    landlock.extend(rules(TABLE));
    landlock.push(FsRule {
        path: program.to_owned(),
        access: Access::ReadExec,
        optional: false,
    });
    landlock.push(FsRule {
        path: VmDir::new(vm_dir).storage(),
        access: Access::ReadWrite,
        optional: false,
    });
    Policy {
        vm_dir: vm_dir.to_owned(),
        uid: VIRTIOFSD_UID,
        gid: VIRTIOFSD_UID,
        groups: vec![],
        caps: CAPS,
        // No /tmp, no /dev/shm: virtiofsd writes nowhere but the shared
        // dir. Of the VM directory its view holds fs/ alone: not the VMM's
        // API or the GPU daemon's socket, which its DAC_OVERRIDE would open.
        mounts: vec![ServiceMount::ProcHidden],
        landlock,
        connect: vec![],
        handed: vec![],
        scopes: ALL_SCOPES.to_vec(),
        rlimits: vec![
            Limit {
                resource: Resource::Nofile,
                value: Some(NOFILE),
            },
            Limit {
                resource: Resource::Core,
                value: Some(0),
            },
            // Measured: 3 threads serving a guest (no thread pool asked).
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
        env: vec![],
        // virtiofsd probes openat2(2) on its cwd ("."), and without it
        // resolves guest paths without RESOLVE_BENEATH-style protection:
        // its cwd must be readable, and the shared dir is.
        cwd: VmDir::new(vm_dir).storage(),
        // Set-id capabilities that reach the guest's ids only.
        join_user_namespace: Some(USERNS_FD),
        allow_weaker_landlock: false,
        syscalls: None,
    }
}

/// virtiofsd's argv, each flag for a reason:
/// - `--fd 3`: the listener vm-init bound: the VMM can connect the moment
///   it starts, no polling for readiness.
/// - `--sandbox none`: ours replaces virtiofsd's own namespace sandbox
///   (which needs to create namespaces: our policy forbids that).
/// - `--seccomp kill`: virtiofsd's own syscall filter stays on, strictest.
/// - `--inode-file-handles=never`: no CAP_DAC_READ_SEARCH needed.
/// - `--modcaps=-mknod:-setfcap`: the two capabilities of virtiofsd's
///   default set we do not grant (see SERVING_CAPS).
/// - `--rlimit-nofile 0`: keep the limit the policy set.
/// - `--xattr` is not given: no xattrs, so no security.* labels from guests.
/// - no `--tag`: the VMM names the tag (virtiofs0).
pub fn argv(vm_dir: &Path, program: &Path) -> Exec {
    let shared = VmDir::new(vm_dir).storage();
    let args: Vec<OsString> = vec![
        "--fd".into(),
        SOCKET_FD.to_string().into(),
        "--shared-dir".into(),
        shared.into(),
        "--sandbox".into(),
        "none".into(),
        "--seccomp".into(),
        "kill".into(),
        "--inode-file-handles=never".into(),
        "--modcaps=-mknod:-setfcap".into(),
        "--rlimit-nofile".into(),
        "0".into(),
    ];
    Exec {
        program: program.to_owned(),
        args,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Policy {
        policy(Path::new("/run/vm/a"), Path::new(DEFAULT_PROGRAM))
    }

    #[test]
    fn keeps_the_invariants_of_every_policy() {
        p().check().unwrap();
    }

    #[test]
    fn only_the_shared_dir_is_writable() {
        let writable: Vec<_> = p()
            .landlock
            .into_iter()
            .filter(|r| r.access == Access::ReadWrite)
            .map(|r| r.path)
            .collect();
        assert_eq!(writable, [Path::new("/run/vm/a/fs")]);
        // No device but /dev/null: /dev/kvm is the VMM's alone.
        let devices: Vec<_> = p()
            .landlock
            .into_iter()
            .filter(|r| r.access == Access::Device)
            .map(|r| r.path)
            .collect();
        assert_eq!(devices, [Path::new("/dev/null")]);
        assert!(p().landlock.iter().all(|r| r.path != Path::new("/")));
    }

    #[test]
    fn sees_only_its_storage_of_the_vm_dir() {
        let of_vm_dir: Vec<_> = p()
            .view()
            .into_iter()
            .filter(|v| v.path.starts_with("/run/vm"))
            .map(|v| v.path)
            .collect();
        assert_eq!(of_vm_dir, [Path::new("/run/vm/a/fs")]);
        assert!(p().connect.is_empty(), "virtiofsd connects to nothing");
    }

    #[test]
    fn exact_capability_set() {
        assert_eq!(SERVING_CAPS.bits().count_ones(), 6);
        assert!(!p().caps.contains(CapabilitySet::SETFCAP));
        assert_eq!(p().caps, SERVING_CAPS | CapabilitySet::SETPCAP);
        assert!(!p().caps.contains(CapabilitySet::DAC_READ_SEARCH));
        assert!(!p().caps.contains(CapabilitySet::SYS_ADMIN));
        assert_eq!(p().uid, 0);
    }

    #[test]
    fn argv_is_what_virtiofsd_1_14_accepts() {
        let e = argv(Path::new("/run/vm/a"), Path::new(DEFAULT_PROGRAM));
        let a: Vec<_> = e.args.iter().map(|s| s.to_str().unwrap()).collect();
        assert_eq!(
            a,
            [
                "--fd",
                "3",
                "--shared-dir",
                "/run/vm/a/fs",
                "--sandbox",
                "none",
                "--seccomp",
                "kill",
                "--inode-file-handles=never",
                "--modcaps=-mknod:-setfcap",
                "--rlimit-nofile",
                "0"
            ]
        );
        assert!(!a.contains(&"--tag"));
    }
}
