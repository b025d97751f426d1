//! The real components of the end-to-end tests (virtiofsd, QEMU, the test
//! guest), as `cargo xtask tools` and `cargo xtask guest` leave them in the
//! project's cache, and the kernel's audit log, where Landlock denials show.

use std::path::{Path, PathBuf};

use sandbox_core::contract::{config, VmDir};

use crate::new_vm::NewVm;
use crate::StateDir;

/// The project's cache: /var/cache/vm-sandbox, or $VM_SANDBOX_CACHE. Its
/// layout is named here alone: `cargo xtask tools` and `guest` fill it
/// (xtask imports these), the tests find the real components in it.
pub fn cache() -> PathBuf {
    std::env::var_os("VM_SANDBOX_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/vm-sandbox"), PathBuf::from)
}

/// `cargo install --root` of virtiofsd.
pub fn virtiofsd_root() -> PathBuf {
    cache().join("virtiofsd")
}

pub fn virtiofsd() -> PathBuf {
    virtiofsd_root().join("bin/virtiofsd")
}

/// Where Debian's QEMU packages are unpacked (`dpkg -x`).
pub fn qemu_root() -> PathBuf {
    cache().join("qemu/root")
}

pub fn qemu() -> PathBuf {
    qemu_root().join("usr/bin/qemu-system-x86_64")
}

/// The test guest: [`kernel`] and [`initramfs`].
pub fn guest_dir() -> PathBuf {
    cache().join("guest")
}

/// A guest's kernel in a directory `cargo xtask` builds guests into
/// (`guest_dir()`, the kernel matrix's).
pub fn kernel_in(dir: &Path) -> PathBuf {
    dir.join("vmlinuz")
}

/// A guest's initramfs in such a directory.
pub fn initramfs_in(dir: &Path) -> PathBuf {
    dir.join("initramfs")
}

/// What the test guest writes to its storage (fs/) once it runs (its
/// `wait` mode, xtask/guest/init).
pub const HELLO: &str = "hello-from-guest.txt";

/// The test guest's kernel.
pub fn kernel() -> PathBuf {
    kernel_in(&guest_dir())
}

pub fn initramfs() -> PathBuf {
    initramfs_in(&guest_dir())
}

#[derive(Debug)]
pub struct Tools {
    pub virtiofsd: PathBuf,
    pub qemu: PathBuf,
    pub vmlinuz: PathBuf,
    pub initramfs: PathBuf,
}

impl Tools {
    /// The tools, or None (with a printed reason) when they are not built;
    /// under CI=true their absence fails the test.
    pub fn find(test: &str) -> Option<Tools> {
        let t = Tools {
            virtiofsd: virtiofsd(),
            qemu: qemu(),
            vmlinuz: kernel(),
            initramfs: initramfs(),
        };
        let missing: Vec<String> = [&t.virtiofsd, &t.qemu, &t.vmlinuz, &t.initramfs]
            .iter()
            .filter(|p| !p.is_file())
            .map(|p| p.display().to_string())
            .collect();
        if missing.is_empty() {
            return Some(t);
        }
        let why = format!(
            "{} missing (run cargo xtask tools && cargo xtask guest)",
            missing.join(", ")
        );
        if std::env::var_os("CI").is_some_and(|v| v == "true") {
            panic!("{test}: precondition missing under CI=true: {why}");
        }
        eprintln!("SKIP {test}: {why}");
        None
    }
}

impl StateDir {
    /// A VM booting the test guest under QEMU (TCG: /dev/kvm here is PVM)
    /// with 256 MiB, the guest's job chosen by `mode` (see
    /// xtask/guest/init).
    pub fn add_guest_vm(&self, name: &str, mode: &str) -> PathBuf {
        guest_vm(&self.0.join(name), mode).unwrap()
    }
}

/// [`StateDir::add_guest_vm`] at `dir`.
pub fn guest_vm(dir: &Path, mode: &str) -> std::io::Result<PathBuf> {
    Ok(NewVm::create(dir)?
        .test_guest(mode)?
        .qemu_tcg()?
        .set(config::MEMORY, "256")?
        .into_path())
}

/// The test guest's job: `mode` on its command line.
pub fn set_guest_mode(vm: &Path, mode: &str) -> std::io::Result<()> {
    let cmdline = format!("console=ttyS0 panic=-1 vmsandbox.mode={mode}");
    std::fs::write(VmDir::new(vm).config_file(config::CMDLINE), cmdline)
}

/// One AUDIT_GET or AUDIT_SET exchange with the kernel's audit; returns
/// the `enabled` field of the status (AUDIT_GET) or 0 (AUDIT_SET's ack).
fn audit(request: u16, enabled: u32) -> std::io::Result<u32> {
    use rustix::net::netlink::{SocketAddrNetlink, AUDIT};
    use rustix::net::{recv, sendto, socket, AddressFamily, RecvFlags, SendFlags, SocketType};
    const AUDIT_GET: u16 = 1000;
    const NLM_F_REQUEST_ACK: u16 = 1 | 4;
    let fd = socket(AddressFamily::NETLINK, SocketType::RAW, Some(AUDIT))?;
    // struct nlmsghdr, then struct audit_status { mask, enabled, ... }.
    let mut msg = Vec::with_capacity(56);
    msg.extend_from_slice(&56u32.to_ne_bytes());
    msg.extend_from_slice(&request.to_ne_bytes());
    msg.extend_from_slice(&NLM_F_REQUEST_ACK.to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    for field in [1u32, enabled, 0, 0, 0, 0, 0, 0, 0, 0] {
        msg.extend_from_slice(&field.to_ne_bytes());
    }
    sendto(&fd, &msg, SendFlags::empty(), &SocketAddrNetlink::new(0, 0))?;
    let mut answer = [0u8; 256];
    loop {
        let (n, _) = recv(&fd, &mut answer, RecvFlags::empty())?;
        let kind = u16::from_ne_bytes(answer[4..6].try_into().unwrap());
        if kind == 2 {
            // NLMSG_ERROR: error 0 is the ack.
            let error = i32::from_ne_bytes(answer[16..20].try_into().unwrap());
            if n < 20 || error != 0 {
                return Err(std::io::Error::from_raw_os_error(-error));
            }
            if request != AUDIT_GET {
                return Ok(0);
            }
        } else if kind == AUDIT_GET && n >= 24 {
            return Ok(u32::from_ne_bytes(answer[20..24].try_into().unwrap()));
        }
    }
}

/// The kernel's audit on, and printk's rate limit off (it dropped
/// records), for as long as a test of this process holds it; then both as
/// they were found. There is no auditd here: the kernel logs Landlock's
/// records (type 1423/1424) to dmesg, which the tests read.
#[derive(Debug)]
pub struct KernelAudit(());

static AUDIT_USERS: std::sync::Mutex<(usize, Option<(u32, String)>)> =
    std::sync::Mutex::new((0, None));

pub fn enable_kernel_audit() -> std::io::Result<KernelAudit> {
    const AUDIT_GET: u16 = 1000;
    const AUDIT_SET: u16 = 1001;
    let mut users = AUDIT_USERS.lock().unwrap_or_else(|e| e.into_inner());
    if users.0 == 0 {
        let ratelimit = std::fs::read_to_string("/proc/sys/kernel/printk_ratelimit")?;
        let enabled = audit(AUDIT_GET, 0)?;
        std::fs::write("/proc/sys/kernel/printk_ratelimit", "0")?;
        audit(AUDIT_SET, 1)?;
        users.1 = Some((enabled, ratelimit));
    }
    users.0 += 1;
    Ok(KernelAudit(()))
}

impl Drop for KernelAudit {
    fn drop(&mut self) {
        const AUDIT_SET: u16 = 1001;
        let mut users = AUDIT_USERS.lock().unwrap_or_else(|e| e.into_inner());
        users.0 -= 1;
        if users.0 == 0 {
            if let Some((enabled, ratelimit)) = users.1.take() {
                let _ = audit(AUDIT_SET, enabled);
                let _ = std::fs::write("/proc/sys/kernel/printk_ratelimit", ratelimit.trim());
            }
        }
    }
}

/// The kernel log (dmesg), as one string.
pub fn kernel_log() -> String {
    let out = std::process::Command::new("dmesg").output().expect("dmesg");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Landlock denial records (audit type 1423) of the domains created by the
/// wrapper at `wrapper` (type 1424 names the domain's creator), in `log`.
pub fn landlock_denials(log: &str, wrapper: &Path) -> Vec<String> {
    let exe = format!("exe=\"{}\"", wrapper.display());
    let domain = |l: &str| {
        l.split_whitespace()
            .find_map(|w| w.strip_prefix("domain="))
            .map(str::to_owned)
    };
    let ours: Vec<String> = log
        .lines()
        .filter(|l| l.contains("type=1424") && l.contains(&exe))
        .filter_map(domain)
        .collect();
    log.lines()
        .filter(|l| l.contains("type=1423") && domain(l).is_some_and(|d| ours.contains(&d)))
        .map(str::to_owned)
        .collect()
}
