//! The id plan (docs/DESIGN.md, "Ids").
//!
//! Each VM owns a block of 2^17 host ids starting at `FIRST_ID + slot * 2^17`.
//! Inside the VM's user namespace, 0..65535 is the guest's file-ownership
//! space (virtiofsd maps guest ids 1:1) and each other service gets its own
//! id above 65535. Single host groups (kvm, render) are mapped one by one
//! above the block, so a daemon can be given exactly one of them.

use std::fmt::Write as _;

/// First host id given to VMs: 2^20, above any id a distribution hands out.
pub const FIRST_ID: u32 = 1 << 20;
/// Host ids per VM.
pub const BLOCK: u32 = 1 << 17;
/// How many VMs can run at once on one host. 256 blocks end at 2^20 + 2^25,
/// far below the 2^32 uid space; raise it if a host ever needs more.
pub const SLOTS: u32 = 256;
/// Inside-ids of the guest's file-ownership space end below this.
pub const GUEST_IDS: u32 = 1 << 16;
/// Inside-ids from here on are service ids.
pub const SERVICE_ID_BASE: u32 = GUEST_IDS;
/// virtiofsd is root of the VM's user namespace: it must own guest files.
pub const VIRTIOFSD_UID: u32 = 0;
/// The VMM's own inside-uid (and gid).
pub const VMM_UID: u32 = SERVICE_ID_BASE + 1;
/// The GPU daemon's own inside-uid (and gid).
pub const GPU_UID: u32 = SERVICE_ID_BASE + 2;
/// Inside-gids from here on are host groups mapped one by one.
pub const HOST_GROUP_BASE: u32 = BLOCK;

/// A VM's id slot, always `< SLOTS`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(u32);

impl Slot {
    pub fn new(n: u32) -> Option<Slot> {
        (n < SLOTS).then_some(Slot(n))
    }

    pub fn index(self) -> u32 {
        self.0
    }

    /// The slot whose block holds host id `id`, if any.
    pub fn of_host_id(id: u32) -> Option<Slot> {
        Slot::new(id.checked_sub(FIRST_ID)? / BLOCK)
    }

    /// The host id that inside-id 0 of this VM maps to.
    pub fn host_base(self) -> u32 {
        FIRST_ID + self.0 * BLOCK
    }

    /// The host id of an inside-id of this VM's block.
    pub fn host_id(self, inside: u32) -> u32 {
        assert!(
            inside < BLOCK,
            "inside id {inside} is outside the VM's block"
        );
        self.host_base() + inside
    }
}

/// The lines of `/proc/PID/uid_map` for a VM.
pub fn uid_map(slot: Slot) -> String {
    format!("0 {} {}\n", slot.host_base(), BLOCK)
}

/// Host groups a daemon may need, each at a fixed inside-gid so that a
/// wrapper knows it without being told: `kvm` (/dev/kvm, the VMM) and
/// `render` (/dev/dri render nodes, the GPU daemon).
pub const HOST_GROUPS: &[(&str, u32)] =
    &[("kvm", HOST_GROUP_BASE), ("render", HOST_GROUP_BASE + 1)];

/// The inside-gid of the compositor socket's group, when the outer maps
/// it (see `host::compositor`): given to the GPU daemon alone.
pub const COMPOSITOR_GID: u32 = HOST_GROUP_BASE + 2;

/// Inside a VM: whether inside-gid `gid` is mapped (/proc/self/gid_map).
pub fn is_mapped(gid: u32) -> bool {
    std::fs::read_to_string("/proc/self/gid_map").is_ok_and(|map| {
        map.lines()
            .any(|l| l.split_whitespace().next() == Some(&gid.to_string()))
    })
}

/// The inside-gid of a host group of [`HOST_GROUPS`].
pub fn host_group_inside_gid(name: &str) -> Option<u32> {
    HOST_GROUPS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, g)| g)
}

/// Inside a VM: the inside-gid of host group `name` if vm-init mapped it
/// (the host has such a group), read from /proc/self/gid_map.
pub fn mapped_host_group(name: &str) -> Option<u32> {
    host_group_inside_gid(name).filter(|&gid| is_mapped(gid))
}

/// The gid of host group `name` in `etc_group` (the text of /etc/group).
pub fn host_group_gid(etc_group: &str, name: &str) -> Option<u32> {
    etc_group.lines().find_map(|line| {
        let mut f = line.split(':');
        (f.next() == Some(name)).then(|| f.nth(1)?.parse().ok())?
    })
}

/// Looks up the host gid of each group of [`HOST_GROUPS`] in `/etc/group`
/// (read directly: no NSS module runs in vm-init). Returns (inside, host)
/// pairs for the groups that exist.
pub fn host_groups(etc_group: &str) -> Vec<(u32, u32)> {
    HOST_GROUPS
        .iter()
        .filter_map(|&(name, inside)| Some((inside, host_group_gid(etc_group, name)?)))
        .collect()
}

/// The lines of `/proc/PID/gid_map`: the VM's block, then each host group
/// (inside, host) mapped alone.
pub fn gid_map(slot: Slot, host_groups: &[(u32, u32)]) -> String {
    let mut map = format!("0 {} {}\n", slot.host_base(), BLOCK);
    for &(inside, host) in host_groups {
        writeln!(map, "{inside} {host} 1").expect("write to String");
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_never_overlap_and_fit_in_u32() {
        let last = Slot::new(SLOTS - 1).unwrap();
        assert!(u64::from(last.host_base()) + u64::from(BLOCK) <= u64::from(u32::MAX));
        assert_eq!(
            Slot::new(1).unwrap().host_base() - Slot::new(0).unwrap().host_base(),
            BLOCK
        );
        assert!(Slot::new(SLOTS).is_none());
    }

    #[test]
    fn maps_match_the_design() {
        let s = Slot::new(0).unwrap();
        assert_eq!(uid_map(s), "0 1048576 131072\n");
        let groups = host_groups("root:x:0:\nkvm:x:994:\nrender:x:992:alice\n");
        assert_eq!(groups, [(131072, 994), (131073, 992)]);
        let g = gid_map(Slot::new(1).unwrap(), &groups);
        assert_eq!(g, "0 1179648 131072\n131072 994 1\n131073 992 1\n");
        assert_eq!(host_groups("root:x:0:\nrender:x:992:\n"), [(131073, 992)]);
        assert_eq!(host_group_inside_gid("kvm"), Some(131072));
        assert_eq!(s.host_id(1000), 1048576 + 1000);
        let last = Slot::new(SLOTS - 1).unwrap();
        assert_eq!(Slot::of_host_id(last.host_id(BLOCK - 1)), Some(last));
        assert_eq!(Slot::of_host_id(s.host_id(VMM_UID)), Some(s));
        assert_eq!(Slot::of_host_id(FIRST_ID - 1), None);
        assert_eq!(Slot::of_host_id(last.host_base() + BLOCK), None);
    }
}
