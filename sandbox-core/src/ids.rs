//! The id plan (DESIGN.md, "Namespaces and ids").
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

/// The lines of `/proc/PID/gid_map`: the VM's block, then each host group at
/// `HOST_GROUP_BASE + i`. Returns the map and the inside gid of each group.
pub fn gid_map(slot: Slot, host_groups: &[u32]) -> (String, Vec<u32>) {
    let mut map = format!("0 {} {}\n", slot.host_base(), BLOCK);
    let mut inside = Vec::with_capacity(host_groups.len());
    for (i, &host) in (0u32..).zip(host_groups) {
        let gid = HOST_GROUP_BASE + i;
        writeln!(map, "{gid} {host} 1").expect("write to String");
        inside.push(gid);
    }
    (map, inside)
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
        let (g, inside) = gid_map(Slot::new(1).unwrap(), &[994, 992]);
        assert_eq!(g, "0 1179648 131072\n131072 994 1\n131073 992 1\n");
        assert_eq!(inside, [131072, 131073]);
        assert_eq!(s.host_id(1000), 1048576 + 1000);
    }
}
