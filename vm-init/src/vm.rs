//! What PID 1 gets from the outer vm-init: the VM as the outer's checks
//! found it, the mounts and listening sockets the outer made as host root,
//! and the signals both read.

use std::os::unix::net::UnixListener;
use std::path::PathBuf;

use sandbox_core::contract::VmDir;
use sandbox_core::host;
use sandbox_core::signals::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};

use crate::serial::SerialRelay;
use crate::vmm::Vmm;

/// The signals vm-init reads from a signalfd (outer and PID 1 alike).
pub const SIGNALS: &[i32] = &[SIGTERM, SIGINT, SIGHUP, SIGCHLD];

/// What vm-init knows of a VM once its directory passed the checks.
#[derive(Debug)]
pub struct Vm {
    pub dir: VmDir,
    pub kind: Vmm,
    /// A GPU: the compositor's socket, resolved as host root, for wrap-gpu.
    pub gpu: Option<host::Compositor>,
    /// The directory holding vm-init and the wrappers it starts.
    pub bin_dir: PathBuf,
    /// Host groups mapped into the VM one by one: (inside gid, host gid).
    pub host_groups: Vec<(u32, u32)>,
    /// The explicit opt-out, passed on to every wrapper.
    pub allow_weaker_landlock: bool,
    /// --services: the service directories PID 1's s6-svscan runs.
    pub services: Option<crate::services::Templates>,
    /// The VMM's locked-memory limit, from its policy (it pins guest RAM).
    pub vmm_memlock: u64,
    /// The VM's cgroup; what the host lacks only with --allow-no-cgroups.
    pub cgroups: Result<crate::cgroups::Plan, String>,
}

/// The mounts the outer makes as host root and hands PID 1 with the
/// id-map handshake, in this order.
#[derive(Debug)]
pub struct HandedMounts {
    /// The VM directory: PID 1 cannot reach it by path (the state dir is
    /// root's alone); attached below the tmpfs over the state dir.
    pub vm_dir: std::os::fd::OwnedFd,
    /// `VMDIR/fs`, idmapped for the VM's user namespace, over the plain one.
    pub storage: std::os::fd::OwnedFd,
}

/// The listening sockets PID 1 hands to the wrappers, and the two ends of
/// the guest's console it copies between.
#[derive(Debug)]
pub struct Listeners {
    pub virtiofsd: UnixListener,
    pub api: UnixListener,
    pub gpu: Option<UnixListener>,
    pub serial: SerialRelay,
}
