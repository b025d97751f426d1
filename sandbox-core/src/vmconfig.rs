//! A VM's configuration, `VMDIR/config`, read and checked once: by the
//! outer vm-init before it creates anything (bad input is a one-line error
//! and nothing started), and by wrap-vmm, which builds the VMM's argv and
//! table from it. Plain data: nothing here talks to the kernel.

use std::path::{Path, PathBuf};

use crate::contract::{config as input, VmDir};
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
    /// Its name in `config/vmm`.
    pub fn config_name(self) -> &'static str {
        match self {
            Vmm::CloudHypervisor => "cloud-hypervisor",
            Vmm::Qemu => "qemu",
        }
    }

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

/// `config/blk/*.img`, sorted.
fn disks(dir: &VmDir) -> Result<Vec<PathBuf>, Error> {
    let mut disks = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir.config_file(input::DISKS)) {
        for entry in entries.flatten() {
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
    Ok(disks)
}

/// The compositor's socket, when `config/gpu` (saying `text`) exists.
fn gpu(dir: &VmDir, text: Option<String>) -> Result<Option<PathBuf>, Error> {
    Ok(match text {
        None if !dir.config_file(input::GPU).exists() => None,
        None => Some(PathBuf::from(DEFAULT_COMPOSITOR_SOCKET)),
        Some(p) if p.is_empty() => Some(PathBuf::from(DEFAULT_COMPOSITOR_SOCKET)),
        Some(p) if Path::new(&p).is_absolute() && !p.contains('\n') => Some(PathBuf::from(p)),
        Some(p) => {
            return Err(usage(format!(
                "{} is {p:?}: not the absolute path of the compositor's socket",
                dir.config_file(input::GPU).display()
            )))
        }
    })
}

impl VmConfig {
    /// Reads and checks the VM's config: a one-line error for anything that
    /// cannot be passed safely to the VMM, before anything is started.
    pub fn read(vm_dir: &Path) -> Result<VmConfig, Error> {
        let dir = VmDir::new(vm_dir);
        let text = |name: &str| -> Option<String> {
            std::fs::read_to_string(dir.config_file(name))
                .ok()
                .map(|s| s.trim().to_owned())
        };
        let vmm = match text(input::VMM) {
            None => Vmm::CloudHypervisor,
            Some(name) => [Vmm::CloudHypervisor, Vmm::Qemu]
                .into_iter()
                .find(|v| v.config_name() == name)
                .ok_or_else(|| {
                    usage(format!(
                        "{} is {name:?}: not cloud-hypervisor or qemu",
                        dir.config_file(input::VMM).display()
                    ))
                })?,
        };
        let kernel = dir.config_file(input::KERNEL);
        if !kernel.is_file() {
            return Err(usage(format!("missing kernel {}", kernel.display())));
        }
        let disks = disks(&dir)?;
        let memory_mib = match text(input::MEMORY) {
            None => DEFAULT_MEMORY_MIB,
            Some(m) => m
                .parse()
                .ok()
                .filter(|&m| (64..=1 << 20).contains(&m))
                .ok_or_else(|| {
                    usage(format!(
                        "{} is {m:?}: not a size in MiB from 64",
                        dir.config_file(input::MEMORY).display()
                    ))
                })?,
        };
        let accel = text(input::ACCEL).unwrap_or_else(|| "kvm".into());
        if !matches!(accel.as_str(), "kvm" | "tcg") {
            return Err(usage(format!(
                "{} is {accel:?}: not kvm or tcg",
                dir.config_file(input::ACCEL).display()
            )));
        }
        let gpu = gpu(&dir, text(input::GPU))?;
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
            initramfs: dir.config_file(input::INITRAMFS).is_file(),
            cmdline: text(input::CMDLINE),
            disks,
            gpu,
            memory_mib,
            accel,
        })
    }

    /// The VM directory, whose entries the contract names.
    pub fn dir(&self) -> VmDir {
        VmDir::new(&self.vm_dir)
    }

    pub fn uses_kvm(&self) -> bool {
        self.vmm == Vmm::CloudHypervisor || self.accel == "kvm"
    }
}
