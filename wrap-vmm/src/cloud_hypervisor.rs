//! cloud-hypervisor, as Spectrum runs it: its API on the listener vm-init
//! bound (fd 3), its events on a pipe PID 1 reads (fd 4), the VM on its
//! command line. Its own seccomp filters and Landlock stay on.

use sandbox_core::landlock::Access;

use crate::policy::{arg, Specifics, VmConfig, API_FD, EVENT_FD, FS_TAG};

pub fn specifics(c: &VmConfig) -> Specifics {
    let d = c.dir();
    let p = |rel: &str| arg(c.path(rel));
    let mut s = Specifics {
        keep_fds: vec![API_FD, EVENT_FD],
        ..Specifics::default()
    };
    s.args(&[
        "--api-socket",
        &format!("fd={API_FD}"),
        "--event-monitor",
        &format!("fd={EVENT_FD}"),
    ]);
    s.args(&["--kernel", &p("config/vmlinux")]);
    if c.initramfs {
        s.args(&["--initramfs", &p("config/initramfs")]);
    }
    if let Some(cmdline) = &c.cmdline {
        s.args(&["--cmdline", cmdline]);
    }
    for disk in &c.disks {
        s.args(&["--disk", &format!("path={},readonly=on", disk.display())]);
    }
    s.args(&[
        "--fs",
        &format!("tag={FS_TAG},socket={}", arg(d.virtiofsd_socket())),
    ]);
    if c.gpu.is_some() {
        s.args(&["--gpu", &format!("socket={}", arg(d.gpu_socket()))]);
    }
    s.args(&["--memory", &format!("size={}M,shared=on", c.memory_mib)]);
    s.args(&[
        "--serial",
        &format!("file={}", arg(d.serial_fifo())),
        "--console",
        "off",
    ]);
    // It unlinks and binds its vsock socket (and connects to VSOCK_PORT
    // sockets host programs bind beside it).
    s.args(&[
        "--vsock",
        &format!("cid=3,socket={}", arg(d.vsock_socket())),
    ]);
    s.row(d.vsock_dir(), Access::Sockets, false);
    s
}
