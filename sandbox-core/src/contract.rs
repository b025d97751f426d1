//! The contract between the processes of a VM, and between them and the
//! run scripts of s6/, the tests and xtask: every name, path, fd number,
//! environment variable and limit two of them must agree on. The outer
//! vm-init creates the VM directory's entries, PID 1 passes the fds and
//! sets the run scripts' environment, each wrapper builds its daemon's
//! table and argv from them; every one of them names them through this
//! module, and the tidy test (tests/tests/tidy.rs) keeps them from being
//! spelled anywhere else, and the run scripts' numbers and names equal to
//! these.
//!
//! ```text
//! VMDIR/config/        read-only input (see [`config`])
//! VMDIR/fs/            the VM's storage (virtiofsd's, idmapped)
//! VMDIR/virtiofsd.sock vhost-user listener (outer binds; PID 1 -> wrap-virtiofsd fd 3)
//! VMDIR/api.sock       the VMM's API or QMP (outer binds; PID 1 -> wrap-vmm fd 3)
//! VMDIR/gpu.sock       vhost-user-gpu (outer binds; PID 1 accepts, -> wrap-gpu fd 3)
//! VMDIR/serial.fifo    the guest's console (the VMM writes; PID 1 reads)
//! VMDIR/serial.log     the console, bounded (root's; PID 1 writes)
//! VMDIR/vsock.d/vsock  cloud-hypervisor's vsock socket (the VMM binds)
//! ```

use std::path::{Path, PathBuf};

const STORAGE: &str = "fs";
const VIRTIOFSD_SOCKET: &str = "virtiofsd.sock";
const API_SOCKET: &str = "api.sock";
const GPU_SOCKET: &str = "gpu.sock";
const SERIAL_FIFO: &str = "serial.fifo";
const SERIAL_LOG: &str = "serial.log";
const VSOCK_DIR: &str = "vsock.d";
const VSOCK_SOCKET: &str = "vsock";

/// The mark PID 1 puts in front of every line a daemon writes to its
/// stdout or stderr before passing it on (`work/virtiofsd: ...`): no
/// daemon's line reads as one of vm-init's own (`vm-init: work: ...`).
pub fn output_mark(vm: &str, daemon: &str) -> String {
    format!("{vm}/{daemon}: ")
}

/// A line without its daemon's mark (one of [`output_mark`]'s), for the
/// readers of a daemon's output through vm-init; other lines unchanged.
pub fn unmarked(line: &str) -> &str {
    match line.split_once(": ") {
        Some((mark, rest)) if mark.contains('/') && !mark.contains(' ') => rest,
        _ => line,
    }
}

/// `vsock.d/` is a tmpfs of its own, which the outer vm-init mounts on the
/// host and gives to the VMM: whatever the VMM makes there (its table
/// allows sockets alone) fills that, never the state dir's file system.
/// cloud-hypervisor binds its one vsock socket there, and host programs one
/// per guest port they serve (`vsock_PORT`); sockets hold no data.
pub const VSOCK_DIR_SIZE: &str = "64k";
pub const VSOCK_DIR_INODES: u32 = 64;

/// The highest open-file limit of any daemon of a VM (virtiofsd's, see
/// its policy). Raising a hard limit takes host root: the outer vm-init
/// raises the VM's to this, each wrapper lowers its daemon's to its
/// policy's value, and `Policy::check` refuses a policy above it.
pub const NOFILE_CEILING: u64 = 65536;

/// vm-init's state dir when it is given none; the run scripts of s6/vm
/// and s6/vm-instance name it too (`importas -D`).
pub const DEFAULT_STATE_DIR: &str = "/run/vm";

/// The mark PID 1 puts on the output of the VM's own s6 tree
/// (`--services`), which holds every daemon's (see [`output_mark`]).
pub const SERVICES_MARK: &str = "s6";

/// Where PID 1 puts the scan directory of the VM's own s6-svscan
/// (--services), below the state dir as the VM's mount namespace shows
/// it.
pub const SCAN_DIR: &str = ".services";

/// The VM's configuration: the entries of `VMDIR/config` that vmconfig
/// reads (a missing one takes its default there).
pub mod config {
    /// The directory, `VMDIR/config`.
    pub const DIR: &str = "config";
    /// The guest kernel (required).
    pub const KERNEL: &str = "vmlinux";
    pub const INITRAMFS: &str = "initramfs";
    /// The kernel's command line, one line.
    pub const CMDLINE: &str = "cmdline";
    /// A directory: each `*.img` in it is a read-only disk.
    pub const DISKS: &str = "blk";
    /// `cloud-hypervisor` or `qemu`.
    pub const VMM: &str = "vmm";
    /// Present: a GPU, through the compositor's socket it names.
    pub const GPU: &str = "gpu";
    /// Guest RAM in MiB.
    pub const MEMORY: &str = "memory";
    /// QEMU's accelerator: `kvm` or `tcg`.
    pub const ACCEL: &str = "accel";
    /// A directory: `limits/DAEMON` (a [`super::daemon`] name) holds lines
    /// over that daemon's cgroup bounds.
    pub const LIMITS: &str = "limits";
}

/// Each daemon's name: its service directory under `vm-init --services`
/// (s6/vm-services), the mark PID 1 puts on its output lines, and its
/// leaf in the VM's cgroup (sandbox-core's cgroup.rs).
pub mod daemon {
    pub const VIRTIOFSD: &str = "virtiofsd";
    pub const VMM: &str = "vmm";
    pub const GPU: &str = "gpu";
    pub const ALL: [&str; 3] = [VIRTIOFSD, VMM, GPU];
}

/// The project's programs, by the names the run scripts and vm-init (which
/// starts the wrappers from its own directory) call them.
pub mod bin {
    pub const VM_INIT: &str = "vm-init";
    pub const WRAP_VIRTIOFSD: &str = "wrap-virtiofsd";
    pub const WRAP_VMM: &str = "wrap-vmm";
    pub const WRAP_GPU: &str = "wrap-gpu";
    /// cloud-hypervisor's API helper (s6/vm-services-api).
    pub const VMM_API: &str = "vmm-api";
    /// What vm-init starts, each from its own directory.
    pub const WRAPPERS: [&str; 3] = [WRAP_VIRTIOFSD, WRAP_VMM, WRAP_GPU];
    /// vm-init and the wrappers: what runs a VM.
    pub const VM: [&str; 4] = [VM_INIT, WRAP_VIRTIOFSD, WRAP_VMM, WRAP_GPU];
    /// What a host installs, all in one directory.
    pub const INSTALLED: [&str; 5] = [VM_INIT, WRAP_VIRTIOFSD, WRAP_VMM, WRAP_GPU, VMM_API];
}

/// The environment the run scripts read.
pub mod env {
    /// vm-init --services sets these for its s6-svscan: the VM directory,
    /// and for each wrapper the arguments vm-init was given for it.
    pub const VM_DIR: &str = "VM_DIR";
    pub const VIRTIOFSD_ARGS: &str = "VM_SANDBOX_VIRTIOFSD_ARGS";
    pub const VMM_ARGS: &str = "VM_SANDBOX_VMM_ARGS";
    pub const GPU_ARGS: &str = "VM_SANDBOX_GPU_ARGS";
    /// A VM service's `vm.conf` (s6/vm, s6/vm-instance): the VM's name,
    /// the state dir (/run/vm by default) and more arguments of vm-init.
    pub const VM_CONF: &str = "vm.conf";
    pub const VM_NAME: &str = "VM_NAME";
    pub const VM_STATE_DIR: &str = "VM_STATE_DIR";
    pub const VM_INIT_ARGS: &str = "VM_INIT_ARGS";
}

/// The fds PID 1 passes to each wrapper, which passes them on to its
/// daemon under the same numbers.
pub mod fd {
    /// wrap-virtiofsd: the vhost-user listener (virtiofsd `--fd`).
    pub const VIRTIOFSD_LISTENER: i32 = 3;
    /// wrap-virtiofsd: the user namespace mapping the guest's ids only.
    pub const VIRTIOFSD_USERNS: i32 = 4;
    /// wrap-vmm: the API listener (cloud-hypervisor `--api-socket fd=`,
    /// QEMU's QMP chardev `fd=`).
    pub const VMM_API: i32 = 3;
    /// wrap-vmm: the event-monitor pipe's write end (cloud-hypervisor).
    pub const VMM_EVENTS: i32 = 4;
    /// wrap-gpu: the VMM's connection to gpu.sock (crosvm `--fd`).
    pub const GPU_CONNECTION: i32 = 3;
    /// wrap-gpu: the compositor's socket, a detached mount the outer made
    /// as host root (attached in the daemon's view, closed before exec).
    pub const GPU_COMPOSITOR: i32 = 4;
    /// Every wrapper (`--cgroup-fd`): the `cgroup.procs` of its daemon's
    /// leaf in the VM's cgroup, opened by the outer (closed before exec).
    pub const CGROUP: i32 = 6;

    /// s6/vm, s6/vm-instance: vm-init's `--notify-fd`, their
    /// notification-fd.
    pub const VM_NOTIFY: i32 = 3;

    /// vm-init --services: where PID 1 parks each of the fds above for its
    /// s6-svscan, whose run scripts inherit them all and each move its own
    /// to the number above (`fdmove 3 10`). Every wrapper closes all but
    /// its policy's fds before exec: no daemon keeps another's.
    pub mod parked {
        pub const VIRTIOFSD_LISTENER: i32 = 10;
        pub const VIRTIOFSD_USERNS: i32 = 11;
        pub const VMM_API: i32 = 12;
        pub const VMM_EVENTS: i32 = 13;
        /// gpu.sock's listener: the GPU service accepts on it itself
        /// (s6-ipcserverd), one connection, one crosvm.
        pub const GPU_LISTENER: i32 = 14;
        pub const GPU_COMPOSITOR: i32 = 15;
        /// Each daemon's cgroup leaf (`--cgroup-fd` in the run scripts'
        /// VM_SANDBOX_*_ARGS): each wrapper takes its own.
        pub const VIRTIOFSD_CGROUP: i32 = 16;
        pub const VMM_CGROUP: i32 = 17;
        pub const GPU_CGROUP: i32 = 18;
    }

    /// The other fds of the run scripts of s6/vm-services and
    /// s6/vm-services-api.
    pub mod service {
        /// A wrapper's `--notify-fd`, the service's notification-fd: past
        /// the wrappers' own fds.
        pub const NOTIFY: i32 = 5;
        /// vm-services-api/vmm: vmm-api's `--notify-fd` (the VM exists),
        /// the service's notification-fd.
        pub const API_NOTIFY: i32 = 7;
        /// vm-services/gpu: the service's stdout, kept past s6-ipcserverd
        /// (which gives each child the connection as stdin and stdout).
        pub const GPU_STDOUT: i32 = 5;
    }
}

/// A VM directory, `STATE/NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmDir(PathBuf);

impl VmDir {
    pub fn new(path: impl Into<PathBuf>) -> VmDir {
        VmDir(path.into())
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn config(&self) -> PathBuf {
        self.0.join(config::DIR)
    }

    /// `VMDIR/config/NAME`, NAME one of [`config`]'s.
    pub fn config_file(&self, name: &str) -> PathBuf {
        self.config().join(name)
    }

    pub fn storage(&self) -> PathBuf {
        self.0.join(STORAGE)
    }

    pub fn virtiofsd_socket(&self) -> PathBuf {
        self.0.join(VIRTIOFSD_SOCKET)
    }

    pub fn api_socket(&self) -> PathBuf {
        self.0.join(API_SOCKET)
    }

    pub fn gpu_socket(&self) -> PathBuf {
        self.0.join(GPU_SOCKET)
    }

    pub fn serial_fifo(&self) -> PathBuf {
        self.0.join(SERIAL_FIFO)
    }

    pub fn serial_log(&self) -> PathBuf {
        self.0.join(SERIAL_LOG)
    }

    pub fn vsock_dir(&self) -> PathBuf {
        self.0.join(VSOCK_DIR)
    }

    pub fn vsock_socket(&self) -> PathBuf {
        self.vsock_dir().join(VSOCK_SOCKET)
    }

    /// Every entry named here, the vsock socket (in `vsock.d/`) last.
    pub fn entries(&self) -> [PathBuf; 9] {
        [
            self.config(),
            self.storage(),
            self.virtiofsd_socket(),
            self.api_socket(),
            self.gpu_socket(),
            self.serial_fifo(),
            self.serial_log(),
            self.vsock_dir(),
            self.vsock_socket(),
        ]
    }

    /// Every path a socket (or FIFO) is bound or made at: each must fit
    /// in sun_path.
    pub fn socket_paths(&self) -> [PathBuf; 5] {
        [
            self.virtiofsd_socket(),
            self.api_socket(),
            self.gpu_socket(),
            self.vsock_socket(),
            self.serial_fifo(),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_direct_children_but_the_vsock_socket() {
        let d = VmDir::new("/run/vm/a");
        let [entries @ .., socket] = d.entries();
        for p in entries {
            assert_eq!(p.parent(), Some(Path::new("/run/vm/a")), "{}", p.display());
        }
        assert_eq!(socket, d.vsock_socket());
        assert_eq!(d.vsock_socket().parent(), Some(d.vsock_dir().as_path()));
    }
}
