//! The VMM's sandbox and argv: what every VMM shares, here, and what one
//! VMM adds, beside the arguments that need it, in its own module:
//! cloud_hypervisor.rs (Spectrum's) and qemu.rs (stock distributions, and
//! CI, where cloud-hypervisor cannot be installed). `VMDIR/config/vmm`
//! chooses.
//!
//! Both run as the VMM's own uid in the VM's user namespace, with the host
//! `kvm` group mapped in and given to this daemon alone, no capabilities,
//! no_new_privs, both scopes, no TCP, private /tmp and /dev/shm, and a
//! /proc that shows only itself.
//!
//! fds: 3 is the API listener vm-init bound (cloud-hypervisor
//! `--api-socket fd=3`, QEMU's QMP chardev `fd=3`); 4 is the write end of
//! the event-monitor pipe vm-init reads (cloud-hypervisor only).

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use sandbox_core::caps::CapabilitySet;
use sandbox_core::cgroup::Limits;
use sandbox_core::contract::fd;
use sandbox_core::ids::VMM_UID;
use sandbox_core::landlock::{Access, FsRule};
use sandbox_core::mount::ServiceMount;
use sandbox_core::policy::{rules, Exec, Policy, ALL_SCOPES, SYSTEM_LIBRARIES};
use sandbox_core::rlimits::{Limit, Resource};
use sandbox_core::Error;

use crate::{cloud_hypervisor, qemu};

pub const API_FD: i32 = fd::VMM_API;
/// Processes and threads of the VMM's uid. QEMU (TCG, one vCPU): 4
/// measured; cloud-hypervisor runs one per vCPU and per device besides
/// its own few.
pub const NPROC: u64 = 128;
pub const EVENT_FD: i32 = fd::VMM_EVENTS;
/// Its private /tmp and /dev/shm, each bounded in bytes and inodes (a
/// size alone leaves empty files and sockets unbounded). cloud-hypervisor
/// uses neither (docs/DESIGN.md, "Measured: cloud-hypervisor": guest RAM
/// is a memfd, which lives on no mount); QEMU (TCG, memory-backend-memfd)
/// was measured to leave both empty for a whole guest run. Room for a few
/// temporary files, not for filling the host's memory with inodes.
pub const TMP_SIZE: &str = "16m";
pub const TMP_INODES: u32 = 256;
pub const SHM_SIZE: &str = "64m";
pub const SHM_INODES: u32 = 256;
/// Its cgroup's bounds, which the outer vm-init writes as host root (see
/// sandbox-core's cgroup.rs). Memory: the guest's RAM (`config/memory`: the
/// VMM touches it first, so it is charged here, but for the pages another
/// daemon writes first: docs/DESIGN.md, "Shared guest RAM") plus the VMM's
/// own and its /tmp and /dev/shm (80 MiB): QEMU under TCG measured 225 MiB
/// resident for a 256 MiB guest, and its translation cache may grow to 1
/// GiB on a long run, so TCG gets 1 GiB over the guest; under KVM (QEMU,
/// cloud-hypervisor, not measured here: neither runs a stock guest on this
/// host's PVM) 256 MiB. No swap: the guest's RAM stays in RAM. Tasks: its
/// NPROC (QEMU's block thread pool alone may have 64), the wrapper and its
/// reaper. CPU: the kernel's default weight, as every daemon of a VM (its
/// vCPUs are the guest's own work).
pub fn limits(c: &VmConfig) -> Limits {
    let overhead: u64 = if c.vmm == Vmm::Qemu && c.accel == "tcg" {
        1 << 30
    } else {
        256 << 20
    };
    Limits {
        memory_max: (c.memory_mib << 20) + overhead,
        swap_max: 0,
        pids_max: NPROC + 2,
        cpu_weight: 100,
    }
}
/// The virtio-fs tag the guest mounts.
pub const FS_TAG: &str = "virtiofs0";

pub use sandbox_core::vmconfig::{VmConfig, Vmm};

/// What one VMM adds to the policy every VMM shares, made item by item
/// with its argv: each argument with the rows, sockets and fds it needs
/// (cloud-hypervisor's own Landlock rules per config item are the model),
/// so that the daemon's view holds what its argv uses and nothing more.
#[derive(Debug, Default)]
pub struct Specifics {
    pub rows: Vec<FsRule>,
    /// The sockets it connects to: of the VM directory its view holds
    /// these and its rows alone.
    pub connect: Vec<PathBuf>,
    pub keep_fds: Vec<i32>,
    pub env: Vec<(String, OsString)>,
    pub argv: Vec<OsString>,
}

impl Specifics {
    pub(crate) fn args(&mut self, words: &[&str]) {
        self.argv.extend(words.iter().map(OsString::from));
    }

    pub(crate) fn row(&mut self, path: impl Into<PathBuf>, access: Access, optional: bool) {
        self.rows.push(FsRule {
            path: path.into(),
            access,
            optional,
        });
    }

    pub(crate) fn connects(&mut self, socket: PathBuf) {
        self.connect.push(socket);
    }

    pub(crate) fn keeps(&mut self, fd: i32) {
        self.keep_fds.push(fd);
    }

    /// `other`'s items added to these.
    pub(crate) fn extend(&mut self, other: Specifics) {
        self.rows.extend(other.rows);
        self.connect.extend(other.connect);
        self.keep_fds.extend(other.keep_fds);
        self.env.extend(other.env);
        self.argv.extend(other.argv);
    }
}

/// A path of the VM directory as argv text (vm-init refuses a VM
/// directory that is not UTF-8 or holds a comma).
pub(crate) fn utf8(path: PathBuf) -> String {
    path.into_os_string()
        .into_string()
        .expect("VM dir is UTF-8")
}

/// How the VMM gets the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// On its command line.
    Argv,
    /// Over its API (cloud-hypervisor's `--api-only`, Spectrum's flow:
    /// the vmm-api binary sends it). The policy is the argv flow's: it is
    /// made from the VM's config directory either way.
    Api,
}

/// The one place that tells the VMMs apart.
fn specifics(c: &VmConfig, program: &Path, flow: Flow) -> Result<Specifics, Error> {
    match (c.vmm, flow) {
        (Vmm::CloudHypervisor, flow) => Ok(cloud_hypervisor::specifics(c, flow)),
        (Vmm::Qemu, Flow::Argv) => Ok(qemu::specifics(c, program)),
        (Vmm::Qemu, Flow::Api) => Err(Error::Usage(
            "--api-only: only cloud-hypervisor is created over its API".into(),
        )),
    }
}

/// Its locked-memory limit: vhost-user and VFIO pin guest memory. Above
/// the kernel's default, so the outer vm-init raises the VM's hard limit
/// to it (only host root can).
pub fn memlock(c: &VmConfig) -> u64 {
    (c.memory_mib << 20) + (64 << 20)
}

/// The VMM's policy and argv. `kvm`: the inside gid of the host's kvm
/// group, when it is mapped.
pub fn build(
    c: &VmConfig,
    program: &Path,
    kvm: Option<u32>,
    flow: Flow,
) -> Result<(Policy, Exec), Error> {
    let mut own = specifics(c, program, flow)?;
    let exec = Exec {
        program: program.to_owned(),
        args: std::mem::take(&mut own.argv),
    };
    Ok((policy(c, program, kvm, own), exec))
}

fn policy(c: &VmConfig, program: &Path, kvm: Option<u32>, own: Specifics) -> Policy {
    let group = kvm.filter(|_| c.uses_kvm());
    let mut landlock = rules(SYSTEM_LIBRARIES);
    let mut add = |path: PathBuf, access, optional| {
        landlock.push(FsRule {
            path,
            access,
            optional,
        })
    };
    add(program.to_owned(), Access::ReadExec, false);
    // cloud-hypervisor reads /proc/self/maps; hidepid hides the rest.
    add("/proc".into(), Access::Read, false);
    add("/dev/urandom".into(), Access::Read, false);
    add("/dev/null".into(), Access::Device, false);
    if c.uses_kvm() {
        add("/dev/kvm".into(), Access::Device, false);
    }
    let d = c.dir();
    // Its kernel, initramfs and disks (and its cwd, below).
    add(d.config(), Access::Read, false);
    add("/tmp".into(), Access::ReadWrite, false);
    add("/dev/shm".into(), Access::ReadWrite, false);
    landlock.extend(own.rows);
    let memory = c.memory_mib << 20;
    Policy {
        vm_dir: c.vm_dir.clone(),
        uid: VMM_UID,
        gid: VMM_UID,
        groups: group.into_iter().collect(),
        caps: CapabilitySet::empty(),
        mounts: vec![
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
        ],
        landlock,
        // The backends' sockets its argv names. Not api.sock (it has the
        // listener as fd 3), not fs/ (virtiofsd serves it).
        connect: own.connect,
        handed: vec![],
        scopes: ALL_SCOPES.to_vec(),
        rlimits: vec![
            // Guest RAM is a memfd grown with ftruncate, which is checked
            // against RLIMIT_FSIZE: the limit must cover it. (The serial
            // log is PID 1's to bound: the VMM writes a FIFO.)
            Limit {
                resource: Resource::Fsize,
                value: Some(memory + (256 << 20)),
            },
            Limit {
                resource: Resource::Memlock,
                value: Some(memlock(c)),
            },
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
        ],
        keep_fds: own.keep_fds,
        env: own.env,
        // Its config: a directory its table lets it read (QEMU opens its
        // cwd; measured with the audit log).
        cwd: d.config(),
        join_user_namespace: None,
        allow_weaker_landlock: false,
        // Both VMMs install their own, per-thread filters.
        syscalls: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandbox_core::ids::host_group_inside_gid;

    fn config(vmm: Vmm) -> VmConfig {
        VmConfig {
            vm_dir: "/run/vm/a".into(),
            vmm,
            initramfs: true,
            cmdline: Some("console=ttyS0 quiet".into()),
            disks: vec!["/run/vm/a/config/blk/root.img".into()],
            gpu: Some("/run/user/0/wayland-1".into()),
            memory_mib: 256,
            accel: "tcg".into(),
        }
    }

    fn strs(e: &Exec) -> Vec<&str> {
        e.args.iter().map(|s| s.to_str().unwrap()).collect()
    }

    fn argv(c: &VmConfig, program: &Path) -> Exec {
        build(c, program, None, Flow::Argv).unwrap().1
    }

    fn policy(c: &VmConfig, program: &Path, kvm: Option<u32>) -> Policy {
        build(c, program, kvm, Flow::Argv).unwrap().0
    }

    #[test]
    fn cloud_hypervisor_argv() {
        let c = config(Vmm::CloudHypervisor);
        let e = argv(&c, Path::new("/usr/bin/cloud-hypervisor"));
        assert_eq!(
            strs(&e),
            [
                "--api-socket",
                "fd=3",
                "--event-monitor",
                "fd=4",
                "--kernel",
                "/run/vm/a/config/vmlinux",
                "--initramfs",
                "/run/vm/a/config/initramfs",
                "--cmdline",
                "console=ttyS0 quiet",
                "--disk",
                "path=/run/vm/a/config/blk/root.img,readonly=on",
                "--fs",
                "tag=virtiofs0,socket=/run/vm/a/virtiofsd.sock",
                "--gpu",
                "socket=/run/vm/a/gpu.sock",
                "--memory",
                "size=256M,shared=on",
                "--serial",
                "file=/run/vm/a/serial.fifo",
                "--console",
                "off",
                "--vsock",
                "cid=3,socket=/run/vm/a/vsock.d/vsock",
            ]
        );
    }

    #[test]
    fn qemu_argv_uses_the_bound_qmp_fd_and_shared_memfd() {
        let c = config(Vmm::Qemu);
        let e = argv(&c, Path::new("/opt/q/usr/bin/qemu-system-x86_64"));
        let a = strs(&e);
        let has = |pair: [&str; 2]| a.windows(2).any(|w| w == pair);
        assert!(has(["-L", "/opt/q/usr/share/qemu"]));
        assert!(has(["-machine", "q35,accel=tcg,memory-backend=mem"]));
        assert!(has([
            "-object",
            "memory-backend-memfd,id=mem,size=256M,share=on"
        ]));
        assert!(has(["-chardev", "socket,id=qmp,fd=3,server=on,wait=off"]));
        assert!(has([
            "-device",
            "vhost-user-fs-pci,chardev=vfs,tag=virtiofs0"
        ]));
        assert!(has(["-serial", "file:/run/vm/a/serial.fifo"]));
        assert!(has([
            "-sandbox",
            "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
        ]));
        for flag in ["-nodefaults", "-nographic", "-no-user-config"] {
            assert!(a.contains(&flag));
        }
        assert!(
            !a.iter().any(|s| s.contains("path=/run/vm/a/qmp")),
            "QEMU must not bind QMP itself"
        );
    }

    #[test]
    fn tables_write_only_the_serial_fifo_and_vsock_dir() {
        for vmm in [Vmm::CloudHypervisor, Vmm::Qemu] {
            policy(&config(vmm), Path::new("/usr/bin/vmm"), None)
                .check()
                .unwrap();
        }
        for vmm in [Vmm::CloudHypervisor, Vmm::Qemu] {
            let p = policy(
                &config(vmm),
                Path::new("/usr/bin/vmm"),
                host_group_inside_gid("kvm"),
            );
            // Policy::check covers absolute paths, no path twice and writes
            // only below the VM dir, its tmpfs and /dev; of the VM dir, the
            // VMM writes only these two.
            p.check().unwrap();
            for r in &p.landlock {
                if r.path.starts_with("/run/vm/a") && r.access.writes() {
                    assert!(
                        r.path.ends_with("serial.fifo") || r.path.ends_with("vsock.d"),
                        "{} writable",
                        r.path.display()
                    );
                }
            }
            assert!(p.caps.is_empty());
            assert_eq!(p.uid, VMM_UID);
            let kvm = host_group_inside_gid("kvm").unwrap();
            let want: &[u32] = if vmm == Vmm::Qemu { &[] } else { &[kvm] };
            assert_eq!(p.groups, want, "kvm only for a VMM that uses /dev/kvm");
        }
    }

    /// A socket is in a VMM's view when its argv uses it: QEMU has no GPU
    /// device, so no gpu.sock, whatever config/gpu says.
    #[test]
    fn the_view_holds_the_sockets_the_argv_uses() {
        let d = config(Vmm::CloudHypervisor).dir();
        for (vmm, gpu, want) in [
            (
                Vmm::CloudHypervisor,
                true,
                vec![d.virtiofsd_socket(), d.gpu_socket()],
            ),
            (Vmm::CloudHypervisor, false, vec![d.virtiofsd_socket()]),
            (Vmm::Qemu, true, vec![d.virtiofsd_socket()]),
        ] {
            let mut c = config(vmm);
            if !gpu {
                c.gpu = None;
            }
            let (p, e) = build(&c, Path::new("/usr/bin/vmm"), None, Flow::Argv).unwrap();
            assert_eq!(p.connect, want, "{vmm:?}, GPU {gpu}");
            for socket in &p.connect {
                let named = strs(&e)
                    .iter()
                    .any(|a| a.contains(socket.to_str().unwrap()));
                assert!(named, "{vmm:?}: {} not in its argv", socket.display());
            }
        }
        let api_only = build(&config(Vmm::Qemu), Path::new("/q"), None, Flow::Api);
        assert_eq!(api_only.unwrap_err().exit_code(), 100);
    }

    #[test]
    fn kvm_only_when_used() {
        let mut c = config(Vmm::Qemu);
        let has_kvm = |c: &VmConfig| {
            policy(c, Path::new("/usr/bin/q"), None)
                .landlock
                .iter()
                .any(|r| r.path == Path::new("/dev/kvm"))
        };
        assert!(!has_kvm(&c));
        c.accel = "kvm".into();
        assert!(has_kvm(&c));
        assert!(has_kvm(&config(Vmm::CloudHypervisor)));
    }

    #[test]
    fn fsize_covers_guest_ram() {
        let p = policy(
            &config(Vmm::CloudHypervisor),
            Path::new("/usr/bin/ch"),
            None,
        );
        let fsize = p
            .rlimits
            .iter()
            .find(|l| l.resource == Resource::Fsize)
            .unwrap();
        assert!(fsize.value.unwrap() > 256 << 20);
    }
}
