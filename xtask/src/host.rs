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
/// as a tmpfs /run is on a normal host. Where /run is a plain directory (a
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

/// A state dir as vm-init requires one: root's, traversable by root
/// alone (below it the guest's root and the VMM own what they may chmod).
pub fn state_dir(dir: &std::path::Path) -> Result {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("chmod 0700 {}: {e}", dir.display()))
}

impl Drop for TopMount {
    fn drop(&mut self) {
        if let Some(top) = &self.0 {
            let _ = sandbox_core::mount::detach(top);
            let _ = std::fs::remove_dir(top);
        }
    }
}

/// A render node for the demo's GPU probe on a host without a GPU: a
/// character device of group render, mode 0660, as udev makes one, with
/// /dev/null's numbers (1:3) since there is no GPU behind it. Made only
/// when the host has no render node, said in one line, and removed (with
/// the render group, if made here) when dropped.
#[derive(Debug, Default)]
pub struct StandInRenderNode {
    node: Option<std::path::PathBuf>,
    made_dir: bool,
    made_group: bool,
}

pub fn render_node_as_udev_makes_it() -> Result<StandInRenderNode> {
    let dri = std::path::Path::new("/dev/dri");
    let has_node = std::fs::read_dir(dri).is_ok_and(|d| {
        d.filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().starts_with("renderD"))
    });
    if has_node {
        return Ok(StandInRenderNode::default());
    }
    let etc_group = std::fs::read_to_string("/etc/group").map_err(|e| e.to_string())?;
    let mut guard = StandInRenderNode::default();
    if sandbox_core::ids::host_group_gid(&etc_group, "render").is_none() {
        crate::sh(Command::new("groupadd").args(["--system", "render"]))?;
        guard.made_group = true;
    }
    if !dri.exists() {
        std::fs::create_dir(dri).map_err(|e| format!("mkdir /dev/dri: {e}"))?;
        guard.made_dir = true;
    }
    let node = dri.join("renderD128");
    crate::sh(
        Command::new("mknod")
            .args(["-m", "0660"])
            .arg(&node)
            .args(["c", "1", "3"]),
    )?;
    guard.node = Some(node.clone());
    crate::sh(Command::new("chgrp").arg("render").arg(&node))?;
    println!(
        "   changed: made {} (crw-rw---- root:render, /dev/null's numbers: this host has no \
         GPU) for the GPU daemon's probe; removed at the end",
        node.display()
    );
    Ok(guard)
}

impl Drop for StandInRenderNode {
    fn drop(&mut self) {
        if let Some(node) = &self.node {
            let _ = std::fs::remove_file(node);
        }
        if self.made_dir {
            let _ = std::fs::remove_dir("/dev/dri");
        }
        if self.made_group {
            let _ = Command::new("groupdel").arg("render").status();
        }
    }
}
