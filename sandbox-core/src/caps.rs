//! Capabilities: the bounding set and the process's sets cut down to a
//! named set. Capabilities held inside the VM's user namespace act only on
//! what that namespace owns.

pub use rustix::thread::CapabilitySet;
use rustix::thread::{clear_ambient_capability_set, set_capabilities, CapabilitySets};
use syscalls::{syscall, Sysno};

use crate::error::{Context, Result};

const PR_CAPBSET_DROP: usize = 24;

/// The highest capability number this kernel knows.
pub fn last_cap() -> Result<u32> {
    let path = "/proc/sys/kernel/cap_last_cap";
    let text = std::fs::read_to_string(path).op_path("read", path)?;
    Ok(text.trim().parse().unwrap_or(40))
}

/// Drops every capability not in `keep` from the bounding set, so no exec
/// (of a root program, of a file with capabilities) can get it back.
/// Needs CAP_SETPCAP: call before giving up capabilities.
pub fn drop_bounding_except(keep: CapabilitySet) -> Result<()> {
    for cap in 0..=last_cap()? {
        if keep.bits() & (1u64 << cap) != 0 {
            continue;
        }
        // SAFETY: PR_CAPBSET_DROP takes a capability number and reads no
        // memory.
        unsafe { syscall!(Sysno::prctl, PR_CAPBSET_DROP, cap as usize) }
            .op("prctl PR_CAPBSET_DROP")?;
    }
    Ok(())
}

/// Sets permitted and effective to exactly `keep`, inheritable and ambient
/// to nothing.
pub fn set_exact(keep: CapabilitySet) -> Result<()> {
    set_capabilities(
        None,
        CapabilitySets {
            effective: keep,
            permitted: keep,
            inheritable: CapabilitySet::empty(),
        },
    )
    .op("capset")?;
    clear_ambient_capability_set().op("prctl PR_CAP_AMBIENT_CLEAR_ALL")
}
