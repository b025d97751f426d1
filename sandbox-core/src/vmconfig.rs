//! A VM's configuration, `VMDIR/config`, read and checked once: by the
//! outer vm-init before it creates anything (bad input is a one-line error
//! and nothing started), and by wrap-vmm, which builds the VMM's argv and
//! table from it. Plain data: nothing here talks to the kernel.

use std::path::{Path, PathBuf};

use crate::error::Error;

/// The compositor's socket when `config/gpu` is empty: Spectrum's, as
/// crosvm is started there.
pub const DEFAULT_COMPOSITOR_SOCKET: &str = "/run/user/0/wayland-1";

/// Guest RAM when `config/memory` (MiB) is absent.
pub const DEFAULT_MEMORY_MIB: u64 = 512;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vmm {
    CloudHypervisor,
    Qemu,
}

impl Vmm {
    pub fn default_program(self) -> &'static str {
        match self {
            Vmm::CloudHypervisor => "/usr/bin/cloud-hypervisor",
            Vmm::Qemu => "/usr/bin/qemu-system-x86_64",
        }
    }
}

/// Everything the argv and the table depend on, read from `VMDIR/config`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    pub vm_dir: PathBuf,
    pub vmm: Vmm,
    pub initramfs: bool,
    pub cmdline: Option<String>,
    pub disks: Vec<PathBuf>,
    /// A GPU, through the compositor's socket at this path: `config/gpu`
    /// present (empty for [`DEFAULT_COMPOSITOR_SOCKET`]).
    pub gpu: Option<PathBuf>,
    pub memory_mib: u64,
    /// QEMU only: `kvm` (default) or `tcg` (hosts whose /dev/kvm cannot
    /// run stock kernels, like PVM).
    pub accel: String,
}

fn usage(msg: String) -> Error {
    Error::Usage(msg)
}

impl VmConfig {
    /// Reads and checks the VM's config: a one-line error for anything that
    /// cannot be passed safely to the VMM, before anything is started.
    pub fn read(vm_dir: &Path) -> Result<VmConfig, Error> {
        let config = vm_dir.join("config");
        let text = |name: &str| -> Option<String> {
            std::fs::read_to_string(config.join(name))
                .ok()
                .map(|s| s.trim().to_owned())
        };
        let vmm = match text("vmm").as_deref() {
            None | Some("cloud-hypervisor") => Vmm::CloudHypervisor,
            Some("qemu") => Vmm::Qemu,
            Some(other) => {
                return Err(usage(format!(
                    "config/vmm is {other:?}: not cloud-hypervisor or qemu"
                )))
            }
        };
        if !config.join("vmlinux").is_file() {
            return Err(usage(format!(
                "missing kernel {}",
                config.join("vmlinux").display()
            )));
        }
        let mut disks = Vec::new();
        if let Ok(dir) = std::fs::read_dir(config.join("blk")) {
            for entry in dir.flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "img") {
                    disks.push(path);
                }
            }
        }
        disks.sort();
        for d in &disks {
            // Both VMMs take comma-separated options: a comma would inject one.
            if d.as_os_str().as_encoded_bytes().contains(&b',') {
                return Err(usage(format!("disk path {} contains ','", d.display())));
            }
        }
        let memory_mib = match text("memory") {
            None => DEFAULT_MEMORY_MIB,
            Some(m) => m
                .parse()
                .ok()
                .filter(|&m| (64..=1 << 20).contains(&m))
                .ok_or_else(|| {
                    usage(format!("config/memory is {m:?}: not a size in MiB from 64"))
                })?,
        };
        let accel = text("accel").unwrap_or_else(|| "kvm".into());
        if !matches!(accel.as_str(), "kvm" | "tcg") {
            return Err(usage(format!("config/accel is {accel:?}: not kvm or tcg")));
        }
        let gpu = match text("gpu") {
            None if !config.join("gpu").exists() => None,
            None => Some(PathBuf::from(DEFAULT_COMPOSITOR_SOCKET)),
            Some(p) if p.is_empty() => Some(PathBuf::from(DEFAULT_COMPOSITOR_SOCKET)),
            Some(p) if Path::new(&p).is_absolute() && !p.contains('\n') => Some(PathBuf::from(p)),
            Some(p) => {
                return Err(usage(format!(
                    "config/gpu is {p:?}: not the absolute path of the compositor's socket"
                )))
            }
        };
        let vm_bytes = vm_dir.as_os_str().as_encoded_bytes();
        if vm_bytes.contains(&b',') {
            return Err(usage(format!(
                "VM directory {} contains ','",
                vm_dir.display()
            )));
        }
        Ok(VmConfig {
            vm_dir: vm_dir.to_owned(),
            vmm,
            initramfs: config.join("initramfs").is_file(),
            cmdline: text("cmdline"),
            disks,
            gpu,
            memory_mib,
            accel,
        })
    }

    /// The VM directory, whose entries vmdir names.
    pub fn dir(&self) -> crate::vmdir::VmDir {
        crate::vmdir::VmDir::new(&self.vm_dir)
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.vm_dir.join(rel)
    }

    pub fn uses_kvm(&self) -> bool {
        self.vmm == Vmm::CloudHypervisor || self.accel == "kvm"
    }
}
