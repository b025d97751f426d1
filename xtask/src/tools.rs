//! The real components CI and the demo run, fetched from registries into
//! the project's cache (`/var/cache/vm-sandbox`, or $VM_SANDBOX_CACHE):
//!
//! - virtiofsd 1.14.0 from crates.io (cargo install; needs libseccomp-dev
//!   and libcap-ng-dev);
//! - QEMU from Debian's packages, downloaded and unpacked with dpkg -x (an
//!   `apt-get install qemu-system-x86` would remove this image's qemu-utils
//!   backport);
//! - the test guest: Debian's cloud kernel and an initramfs of
//!   busybox-static, the virtio/virtiofs/ACPI modules and xtask/guest/init.
//!
//! Not under the build tree: it may be under /tmp, which every sandboxed
//! service covers with a private tmpfs.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{sh, Result};

pub const VIRTIOFSD_VERSION: &str = "1.14.0";

/// QEMU's packages and the libraries this image lacks (checked with ldd
/// after unpacking: a missing one is an error naming it).
const QEMU_PACKAGES: &[&str] = &[
    "qemu-system-x86",
    // The TCG accelerator is a module of qemu-system-common.
    "qemu-system-common",
    "qemu-system-data",
    "seabios",
    "libcapstone4",
    "libfdt1",
    "libibverbs1",
    "libpmem1",
    "librdmacm1",
    "libslirp0",
    "libvdeplug2",
    "libndctl6",
    "libdaxctl1",
    "libnl-3-200",
    "libnl-route-3-200",
];

/// Guest modules, in load order (the package ships no modules.dep).
pub const GUEST_MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "fuse",
    "virtiofs",
    "button",
    "evdev",
];

// The cache's layout is the tests' (they find the components there).
pub use tests::guest::{cache, guest_dir, qemu, qemu_root, virtiofsd, virtiofsd_root};

fn mkdir(p: &Path) -> Result {
    std::fs::create_dir_all(p).map_err(|e| format!("mkdir {}: {e}", p.display()))
}

fn step(what: &str) {
    eprintln!("xtask: {what}");
}

pub fn tools() -> Result {
    if virtiofsd().is_file() {
        step(&format!(
            "virtiofsd {VIRTIOFSD_VERSION}: {}",
            virtiofsd().display()
        ));
    } else {
        step(&format!(
            "building virtiofsd {VIRTIOFSD_VERSION} from crates.io (about a minute on 2 cores)"
        ));
        sh(crate::cargo()
            .args([
                "install",
                "virtiofsd",
                "--locked",
                "--version",
                VIRTIOFSD_VERSION,
                "--root",
            ])
            .arg(virtiofsd_root()))?;
    }
    let qroot = qemu_root();
    if qemu().is_file() && cache().join("qemu/.complete").is_file() {
        step(&format!("QEMU: {}", qemu().display()));
    } else {
        step("downloading and unpacking QEMU from Debian's packages");
        let debs = cache().join("qemu/debs");
        let _ = std::fs::remove_dir_all(cache().join("qemu"));
        mkdir(&debs)?;
        mkdir(&qroot)?;
        download(&debs, QEMU_PACKAGES)?;
        unpack(&debs, &qroot)?;
        let ldd = Command::new("ldd")
            .arg(qemu())
            .env("LD_LIBRARY_PATH", qemu_library_path())
            .output()
            .map_err(|e| format!("ldd: {e}"))?;
        let missing: Vec<String> = String::from_utf8_lossy(&ldd.stdout)
            .lines()
            .filter(|l| l.contains("not found"))
            .map(|l| l.trim().to_owned())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "QEMU needs libraries this machine lacks: {}",
                missing.join(", ")
            ));
        }
        sh(Command::new(qemu())
            .arg("--version")
            .env("LD_LIBRARY_PATH", qemu_library_path()))?;
        std::fs::write(cache().join("qemu/.complete"), "").map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The unpacked QEMU, run directly (not under wrap-vmm): its libraries,
/// modules and firmware from the cache, no defaults, no display.
pub fn qemu_command() -> Command {
    let prefix = qemu_root();
    let mut qemu = Command::new(qemu());
    qemu.env("LD_LIBRARY_PATH", qemu_library_path())
        .env(
            "QEMU_MODULE_DIR",
            prefix.join("usr/lib/x86_64-linux-gnu/qemu"),
        )
        .arg("-L")
        .arg(prefix.join("usr/share/qemu"))
        .arg("-L")
        .arg(prefix.join("usr/share/seabios"))
        .args(["-nodefaults", "-nographic", "-no-user-config"]);
    qemu
}

pub fn qemu_library_path() -> String {
    let root = qemu_root();
    format!(
        "{}:{}",
        root.join("usr/lib/x86_64-linux-gnu").display(),
        root.join("lib/x86_64-linux-gnu").display()
    )
}

fn download(into: &Path, packages: &[&str]) -> Result {
    // apt's _apt user cannot write into root's directories: a harmless
    // warning, the download runs as root then. A fresh machine may have no
    // package lists yet: update them once and try again.
    let get = || {
        sh(Command::new("apt-get")
            .arg("download")
            .args(packages)
            .current_dir(into))
    };
    get().or_else(|_| {
        sh(Command::new("apt-get").args(["update", "-qq"]))?;
        get()
    })
}

fn unpack(debs: &Path, root: &Path) -> Result {
    let entries = std::fs::read_dir(debs).map_err(|e| e.to_string())?;
    for e in entries.flatten() {
        if e.path().extension().is_some_and(|x| x == "deb") {
            sh(Command::new("dpkg-deb").arg("-x").arg(e.path()).arg(root))?;
        }
    }
    Ok(())
}

/// The guest: Debian's current cloud kernel and an initramfs built with
/// busybox's cpio (no root needed).
pub fn guest() -> Result {
    let kernel = cloud_kernel_package()?;
    let modules: Vec<(&str, bool)> = GUEST_MODULES.iter().map(|&m| (m, true)).collect();
    build_guest(
        &guest_dir(),
        &kernel,
        include_str!("../guest/init"),
        &modules,
    )
}

/// The package of Debian's current cloud kernel (linux-image-cloud-amd64's).
pub fn cloud_kernel_package() -> Result<String> {
    let kernel_package = || -> Option<String> {
        let depends = Command::new("apt-cache")
            .args(["depends", "linux-image-cloud-amd64"])
            .output()
            .ok()?;
        String::from_utf8_lossy(&depends.stdout)
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("Depends: ")
                    .filter(|p| p.starts_with("linux-image-"))
                    .map(str::to_owned)
            })
    };
    match kernel_package() {
        Some(k) => Ok(k),
        None => {
            sh(Command::new("apt-get").args(["update", "-qq"]))?;
            kernel_package().ok_or_else(|| "apt-cache knows no linux-image-cloud-amd64".into())
        }
    }
}

/// `dir`/vmlinuz and `dir`/initramfs: the kernel of Debian package `kernel`
/// and a busybox initramfs running `init` after loading `modules` in their
/// order, each (name, required): a module that is not required is skipped
/// when the kernel has it built in. Rebuilt when any of them changes.
pub fn build_guest(dir: &Path, kernel: &str, init: &str, modules: &[(&str, bool)]) -> Result {
    let stamp = format!("{kernel}\n{init}\n{modules:?}");
    if tests::guest::kernel_in(dir).is_file()
        && std::fs::read_to_string(dir.join("initramfs.stamp")).is_ok_and(|i| i == stamp)
    {
        step(&format!("guest: {}", dir.display()));
        return Ok(());
    }
    step(&format!(
        "downloading {kernel} and busybox-static, building {}",
        dir.display()
    ));
    let _ = std::fs::remove_dir_all(dir);
    let (debs, x, root) = (dir.join("debs"), dir.join("x"), dir.join("root"));
    for d in [&debs, &x, &root] {
        mkdir(d)?;
    }
    download(&debs, &[kernel, "busybox-static"])?;
    unpack(&debs, &x)?;
    let version = kernel
        .trim_start_matches("linux-image-")
        .trim_end_matches("-unsigned");
    let vmlinuz = x.join(format!("boot/vmlinuz-{version}"));
    std::fs::copy(&vmlinuz, tests::guest::kernel_in(dir))
        .map_err(|e| format!("copy {}: {e}", vmlinuz.display()))?;
    for sub in ["bin", "proc", "sys", "dev", "mnt", "etc", "lib/modules"] {
        mkdir(&root.join(sub))?;
    }
    let busybox = x.join("bin/busybox");
    std::fs::copy(&busybox, root.join("bin/busybox")).map_err(|e| format!("copy busybox: {e}"))?;
    let tree = x.join(format!("lib/modules/{version}/kernel"));
    let mut order = Vec::new();
    for &(m, required) in modules {
        let to = root.join(format!("lib/modules/{m}.ko"));
        if let Some(found) = find(&tree, &format!("{m}.ko")) {
            std::fs::copy(&found, &to).map_err(|e| e.to_string())?;
        } else if let Some(found) = find(&tree, &format!("{m}.ko.xz")) {
            // Newer Debian kernels compress their modules.
            let out = std::fs::File::create(&to).map_err(|e| e.to_string())?;
            sh(Command::new("xz").arg("-dc").arg(&found).stdout(out))?;
        } else if required {
            return Err(format!("module {m} not in {kernel}"));
        } else {
            continue;
        }
        order.push(m);
    }
    std::fs::write(root.join("lib/modules/load-order"), order.join("\n") + "\n")
        .map_err(|e| e.to_string())?;
    std::fs::write(root.join("init"), init).map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(root.join("init"), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    let out = std::fs::File::create(tests::guest::initramfs_in(dir)).map_err(|e| e.to_string())?;
    sh(Command::new("sh")
        .arg("-c")
        .arg(format!("find . | {} cpio -o -H newc", busybox.display()))
        .current_dir(&root)
        .stdout(out))?;
    std::fs::write(dir.join("initramfs.stamp"), stamp).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&x);
    let _ = std::fs::remove_dir_all(&debs);
    Ok(())
}

fn find(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        if p.is_dir() {
            if let Some(f) = find(&p, name) {
                return Some(f);
            }
        } else if p.file_name().is_some_and(|n| n == name) {
            return Some(p);
        }
    }
    None
}
