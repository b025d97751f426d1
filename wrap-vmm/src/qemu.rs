//! QEMU: the stock VMM of distributions, and the real VMM of CI. Its QMP
//! monitor on the listener vm-init bound (fd 3), guest RAM a shared memfd
//! (vhost-user needs it), its own seccomp filter (`-sandbox on`).

use std::path::{Path, PathBuf};

use sandbox_core::contract::config;
use sandbox_core::landlock::Access;

use crate::policy::{utf8, Specifics, VmConfig, API_FD, FS_TAG};

/// For a QEMU unpacked under PREFIX (PREFIX/usr/bin/qemu-system-x86_64),
/// PREFIX; "/" for a system QEMU.
pub fn prefix(program: &Path) -> PathBuf {
    program
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .map_or_else(|| PathBuf::from("/"), Path::to_owned)
}

/// A system QEMU's files are under /usr already; an unpacked one brings
/// its libraries and firmware under its prefix, and finds them there.
fn its_files(program: &Path) -> Specifics {
    let mut s = Specifics::default();
    let prefix = prefix(program);
    if prefix != Path::new("/") {
        for dir in ["usr/share/qemu", "usr/share/seabios", "usr/lib", "lib"] {
            s.row(prefix.join(dir), Access::ReadExec, true);
        }
        let libs = [
            prefix.join("usr/lib/x86_64-linux-gnu"),
            prefix.join("lib/x86_64-linux-gnu"),
        ];
        let joined = std::env::join_paths(libs).expect("no ':' in a prefix");
        s.env.push(("LD_LIBRARY_PATH".into(), joined));
    }
    for dir in ["usr/share/qemu", "usr/share/seabios"] {
        s.args(&["-L", &prefix.join(dir).display().to_string()]);
    }
    s
}

pub fn specifics(c: &VmConfig, program: &Path) -> Specifics {
    let d = c.dir();
    let input = |name: &str| utf8(d.config_file(name));
    let mut s = its_files(program);
    // What its libraries read of the host at start (measured with the
    // audit log): the CPUs possible and NUMA nodes (glib, libnuma), NVDIMM
    // buses (libndctl, through libpmem).
    s.row("/sys/devices/system/cpu/possible", Access::Read, true);
    s.row("/sys/devices/system/node", Access::Read, true);
    s.row("/sys/bus/nd/devices", Access::Read, true);
    s.args(&["-nodefaults", "-nographic", "-no-user-config"]);
    // Its own seccomp filter, like cloud-hypervisor's: no obsolete
    // syscalls, no setuid, no fork/exec, no setpriority.
    s.args(&[
        "-sandbox",
        "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny",
    ]);
    s.args(&[
        "-machine",
        &format!("q35,accel={},memory-backend=mem", c.accel),
    ]);
    s.args(&[
        "-object",
        &format!(
            "memory-backend-memfd,id=mem,size={}M,share=on",
            c.memory_mib
        ),
    ]);
    s.args(&["-m", &format!("{}M", c.memory_mib)]);
    // Its kernel, initramfs and disks: config/, readable (policy.rs).
    s.args(&["-kernel", &input(config::KERNEL)]);
    if c.initramfs {
        s.args(&["-initrd", &input(config::INITRAMFS)]);
    }
    if let Some(cmdline) = &c.cmdline {
        s.args(&["-append", cmdline]);
    }
    for disk in &c.disks {
        s.args(&[
            "-drive",
            &format!("file={},if=virtio,format=raw,readonly=on", disk.display()),
        ]);
    }
    s.args(&[
        "-chardev",
        &format!("socket,id=vfs,path={}", utf8(d.virtiofsd_socket())),
    ]);
    s.connects(d.virtiofsd_socket());
    s.args(&[
        "-device",
        &format!("vhost-user-fs-pci,chardev=vfs,tag={FS_TAG}"),
    ]);
    s.args(&[
        "-chardev",
        &format!("socket,id=qmp,fd={API_FD},server=on,wait=off"),
    ]);
    s.keeps(API_FD);
    s.args(&["-mon", "chardev=qmp,mode=control"]);
    // The guest's console: a FIFO PID 1 copies into serial.log, bounded.
    s.args(&["-serial", &format!("file:{}", utf8(d.serial_fifo()))]);
    s.row(d.serial_fifo(), Access::ReadWrite, false);
    // No GPU device: QEMU's view holds no gpu.sock, whatever config/gpu.
    s
}
