//! The one host change the demo and the bench make, and say they make.
//!
//! The cloud-hypervisor profile's VMM runs as a uid of its VM's own and
//! reaches /dev/kvm only through the host's kvm group, which vm-init maps
//! for it alone. udev sets that up on a normal host (a kvm group, /dev/kvm
//! 0660 root:kvm); a fresh machine of this kind has no udev, and /dev/kvm
//! is 0600 root:root, so vm-init refuses such a VM. The demo and the bench
//! then do what udev would, and print one line saying so.

use std::process::Command;

use sandbox_core::host::{check_kvm, describe, kvm_group, KVM_DEVICE};

use crate::Result;

/// Gives /dev/kvm a kvm group and mode 0660 unless vm-init's own check
/// says the VMM can open it already (or there is no /dev/kvm: then
/// vm-init says so itself, and nothing here could help).
pub fn kvm_as_udev_makes_it() -> Result {
    let Ok(meta) = std::fs::metadata(KVM_DEVICE) else {
        return Ok(());
    };
    if check_kvm(kvm_group()).is_ok() {
        return Ok(());
    }
    let made = if kvm_group().is_none() {
        crate::sh(Command::new("groupadd").args(["--system", "kvm"]))?;
        " (new group kvm)"
    } else {
        ""
    };
    let gid = kvm_group().ok_or("no kvm group after groupadd")?;
    std::os::unix::fs::chown(KVM_DEVICE, None, Some(gid))
        .map_err(|e| format!("chgrp kvm {KVM_DEVICE}: {e}"))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(KVM_DEVICE, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| format!("chmod 0660 {KVM_DEVICE}: {e}"))?;
    let now = std::fs::metadata(KVM_DEVICE).map_err(|e| format!("{KVM_DEVICE}: {e}"))?;
    println!(
        "   changed: {KVM_DEVICE} was {}, is now {}{made}, as udev makes it on a normal host: \
         the VMM reaches it through the kvm group vm-init maps for it alone",
        describe(&meta),
        describe(&now)
    );
    Ok(())
}

/// The demo's or the bench's top directory on a nosuid,nodev file system,
/// as a tmpfs /run is on a normal host: vm-init refuses VM storage that
/// host users could reach elsewhere. Where /run is a plain directory (a
/// fresh machine of this kind) a tmpfs is mounted on it for the run, and
/// let go of when this is dropped.
#[derive(Debug)]
pub struct TopMount(Option<std::path::PathBuf>);

pub fn top_mount(top: &std::path::Path) -> Result<TopMount> {
    std::fs::create_dir_all(top).map_err(|e| format!("mkdir {}: {e}", top.display()))?;
    if sandbox_core::mount::is_nosuid_nodev(top) {
        return Ok(TopMount(None));
    }
    sandbox_core::mount::mount_state_tmpfs(top).map_err(|e| e.to_string())?;
    Ok(TopMount(Some(top.to_owned())))
}

impl Drop for TopMount {
    fn drop(&mut self) {
        if let Some(top) = &self.0 {
            let _ = sandbox_core::mount::detach(top);
            let _ = std::fs::remove_dir(top);
        }
    }
}
