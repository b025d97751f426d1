//! The contract between the processes of a VM: the VM directory's entries
//! and the fds each wrapper is given. The outer vm-init creates the
//! entries, PID 1 passes the fds, each wrapper builds its daemon's table
//! and argv from them; every one of them names them through this module,
//! and a tidy test keeps the names from being spelled anywhere else.
//!
//! ```text
//! VMDIR/config/        read-only input (kernel, initramfs, cmdline, blk/, vmm, gpu, ...)
//! VMDIR/fs/            the VM's storage (virtiofsd's, idmapped)
//! VMDIR/virtiofsd.sock vhost-user listener (outer binds; PID 1 -> wrap-virtiofsd fd 3)
//! VMDIR/api.sock       the VMM's API or QMP (outer binds; PID 1 -> wrap-vmm fd 3)
//! VMDIR/gpu.sock       vhost-user-gpu (outer binds; PID 1 accepts, -> wrap-gpu fd 3)
//! VMDIR/serial.fifo    the guest's console (the VMM writes; PID 1 reads)
//! VMDIR/serial.log     the console, bounded (root's; PID 1 writes)
//! VMDIR/vsock.d/vsock  cloud-hypervisor's vsock socket (the VMM binds)
//! ```

use std::path::{Path, PathBuf};

const CONFIG: &str = "config";
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
        /// Each daemon's cgroup leaf (`--cgroup-fd`, in the run scripts'
        /// VM_SANDBOX_*_ARGS): each wrapper takes its own.
        pub const VIRTIOFSD_CGROUP: i32 = 16;
        pub const VMM_CGROUP: i32 = 17;
        pub const GPU_CGROUP: i32 = 18;
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
        self.0.join(CONFIG)
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
        for p in [
            d.config(),
            d.storage(),
            d.virtiofsd_socket(),
            d.api_socket(),
            d.gpu_socket(),
            d.serial_fifo(),
            d.serial_log(),
            d.vsock_dir(),
        ] {
            assert_eq!(p.parent(), Some(Path::new("/run/vm/a")), "{}", p.display());
        }
        assert_eq!(d.vsock_socket().parent(), Some(d.vsock_dir().as_path()));
    }
}
