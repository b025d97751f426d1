//! A VM directory as vm-init takes it, made for a test, the demo or the
//! bench: the one place that makes one (its entries are named by
//! sandbox-core's contract). Errors name the path.

use std::io;
use std::path::{Path, PathBuf};

use sandbox_core::contract::{config, VmDir};
use sandbox_core::ids::Slot;
use sandbox_core::vmconfig::Vmm;

use crate::{guest, UID_B};

/// What the escape matrix's probe reads of the config of its VM (the
/// harness's, which has no kernel: no VMM runs there).
pub const MARKER: &str = "marker";
/// What the probe in virtiofsd's place expects in fs/: a file of the
/// host's, and a device node the host left there.
pub const FROM_HOST: &str = "from-host.txt";
pub const HOST_DEVICE: &str = "host-device";

fn at(path: &Path) -> impl FnOnce(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn write(path: &Path, text: &str) -> io::Result<()> {
    std::fs::write(path, text).map_err(at(path))
}

fn mkdir(path: &Path) -> io::Result<()> {
    std::fs::create_dir_all(path).map_err(at(path))
}

/// A VM directory being made.
#[derive(Debug)]
pub struct NewVm(VmDir);

impl NewVm {
    /// `DIR/config/` with an empty kernel (a stand-in VMM never reads it)
    /// and an empty `DIR/fs/`.
    pub fn create(dir: impl Into<PathBuf>) -> io::Result<NewVm> {
        let d = VmDir::new(dir);
        mkdir(&d.config())?;
        mkdir(&d.storage())?;
        write(&d.config_file(config::KERNEL), "")?;
        Ok(NewVm(d))
    }

    /// Config input `name` (one of the contract's `config`) says `text`.
    pub fn set(self, name: &str, text: &str) -> io::Result<NewVm> {
        write(&self.0.config_file(name), text)?;
        Ok(self)
    }

    /// An empty disk `config/blk/NAME`.
    pub fn disk(self, name: &str) -> io::Result<NewVm> {
        let blk = self.0.config_file(config::DISKS);
        mkdir(&blk)?;
        write(&blk.join(name), "")?;
        Ok(self)
    }

    /// The test guest of the cache (`cargo xtask guest`): its kernel and
    /// initramfs, hard-linked (copied across file systems), its job
    /// chosen by `mode` (see xtask/guest/init).
    pub fn test_guest(self, mode: &str) -> io::Result<NewVm> {
        for (from, name) in [
            (guest::kernel(), config::KERNEL),
            (guest::initramfs(), config::INITRAMFS),
        ] {
            let to = self.0.config_file(name);
            let _ = std::fs::remove_file(&to);
            if std::fs::hard_link(&from, &to).is_err() {
                std::fs::copy(&from, &to).map_err(at(&from))?;
            }
        }
        guest::set_guest_mode(self.path(), mode)?;
        Ok(self)
    }

    /// QEMU under TCG: /dev/kvm here is PVM, under which stock guest
    /// kernels hang.
    pub fn qemu_tcg(self) -> io::Result<NewVm> {
        self.set(config::VMM, Vmm::Qemu.config_name())?
            .set(config::ACCEL, "tcg")
    }

    /// What the probe in virtiofsd's place expects in fs/: [`FROM_HOST`],
    /// and [`HOST_DEVICE`], a device node (1:3 is /dev/null's).
    pub fn storage_for_the_probe(self) -> io::Result<NewVm> {
        let fs = self.0.storage();
        write(&fs.join(FROM_HOST), "x")?;
        let device = fs.join(HOST_DEVICE);
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &device,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 3),
        )
        .map_err(|e| at(&device)(e.into()))?;
        Ok(self)
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    pub fn into_path(self) -> PathBuf {
        self.0.path().to_owned()
    }
}

/// A VM of the escape matrix's harness: `config/` holding [`MARKER`], and
/// the dirs `out-a`, `out-b` of its two services, owned by the host ids
/// they get in `slot` (service A runs as `a_uid`).
pub fn harness_vm(dir: &Path, slot: Slot, a_uid: u32) -> io::Result<PathBuf> {
    let d = VmDir::new(dir);
    mkdir(&d.config())?;
    write(&d.config_file(MARKER), "config\n")?;
    for (own, uid) in [("out-a", a_uid), ("out-b", UID_B)] {
        let own = dir.join(own);
        mkdir(&own)?;
        let host = slot.host_id(uid);
        std::os::unix::fs::chown(&own, Some(host), Some(host)).map_err(at(&own))?;
    }
    Ok(dir.to_owned())
}
