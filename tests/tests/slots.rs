//! The host's id slots (one slot file, whatever the state dir): taken and
//! given back across many VM lifetimes, and a host where every slot is in
//! use refuses a new VM before creating anything. These tests look at the
//! whole slot file, so they run one at a time and in a test binary of
//! their own (cargo runs test binaries one after another).

use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use sandbox_core::contract::bin::VM_INIT;
use sandbox_core::ids::{Slot, BLOCK, SLOTS, VMM_UID};
use sandbox_core::locks::{lock_vm_dir, SlotFile};
use tests::vm::{children, comm, pidns, procs_in_pidns, status, stop, wait_line, within};
use tests::{privileged_with, StateDir};

fn alone() -> MutexGuard<'static, ()> {
    static ALONE: Mutex<()> = Mutex::new(());
    ALONE.lock().unwrap_or_else(|e| e.into_inner())
}

fn gone(ns: u64, limit: Duration) -> bool {
    within(limit, || procs_in_pidns(ns).is_empty())
}

fn direct(state: &StateDir, name: &str) -> std::process::Child {
    let bin = state.standins();
    state.vm_init(
        name,
        &bin.join("vmm-cooperative"),
        &bin.join("virtiofsd-ok"),
        &[],
    )
}

fn mounts() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .count()
}

#[test]
fn fifty_cycles_leave_nothing_behind() {
    if !privileged_with("cycles", &[]) {
        return;
    }
    let _alone = alone();
    let state = StateDir::new("cycles");
    let vm = state.add_standin_vm("z");
    let before = mounts();
    for i in 0..50 {
        let mut child = direct(&state, "z");
        let log = wait_line(&mut child, ": ready");
        assert!(log.contains("ready"), "cycle {i}: {log}");
        let ns = pidns(children(child.id() as i32)[0]).unwrap();
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert_eq!(child.wait().unwrap().code(), Some(0), "cycle {i}");
        assert!(gone(ns, Duration::from_secs(1)), "cycle {i}");
    }
    assert_eq!(mounts(), before, "mounts leaked into the host");
    let left: Vec<_> = std::fs::read_dir(&vm)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sock"))
        .collect();
    assert!(left.is_empty(), "sockets left: {left:?}");
    assert!(lock_vm_dir(&vm).is_ok(), "the VM's lock is still held");
    // Every slot is free again (no other test of this binary runs a VM).
    let slots = SlotFile::open().unwrap();
    for n in 0..SLOTS {
        assert!(
            slots.try_lock(Slot::new(n).unwrap()).unwrap(),
            "slot {n} still held"
        );
    }
}

#[test]
fn every_slot_taken_refuses_a_new_vm_and_creates_nothing() {
    if !privileged_with("slots_full", &[]) {
        return;
    }
    let _alone = alone();
    let state = StateDir::new("slots_full");
    let vm = state.add_standin_vm("full");
    let slots = SlotFile::open().unwrap();
    for n in 0..SLOTS {
        assert!(slots.try_lock(Slot::new(n).unwrap()).unwrap());
    }
    let bin = state.standins();
    let out = Command::new(state.bin().join(VM_INIT))
        .args(tests::no_cgroups())
        .args(["--parent-pid", &std::process::id().to_string()])
        .arg("--state-dir")
        .arg(&state.0)
        .arg("--vmm")
        .arg(bin.join("vmm-cooperative"))
        .arg("full")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert_eq!(
        (out.status.code(), err.contains("no free id slot")),
        (Some(111), true),
        "{err}"
    );
    assert!(!sandbox_core::contract::VmDir::new(&vm)
        .api_socket()
        .exists());
    drop(slots);
    // Given back, the same VM runs.
    let mut child = direct(&state, "full");
    assert!(wait_line(&mut child, ": ready").contains("ready (slot 0)"));
    assert_eq!(stop(&mut child), Some(0));
}

/// Kills a process of the test's when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// After SIGKILL of a VM's outer, a new VM started at once never shares
/// its ids with a live process of the old one. The old VM's PID 1 exits
/// (its slot's lock goes with its files) before the kernel has killed the
/// rest of its PID namespace; here a process of the old VM's block that
/// the test keeps alive stands for a daemon still dying. Every process of
/// the host with an id of the new VM's block is the new VM's.
#[test]
fn a_new_vm_never_shares_its_ids_with_a_live_process_of_an_old_one() {
    if !privileged_with("slot_reuse", &["setpriv", "sleep"]) {
        return;
    }
    let _alone = alone();
    let state = StateDir::new("slot_reuse");
    state.add_standin_vm("old");
    state.add_standin_vm("new");
    let slot_of = |log: &str| -> u32 {
        log.split("ready (slot ")
            .nth(1)
            .and_then(|r| r.split(')').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no ready line: {log}"))
    };
    let mut old = direct(&state, "old");
    let old_slot = Slot::new(slot_of(&wait_line(&mut old, ": ready"))).unwrap();
    let old_ns = pidns(children(old.id() as i32)[0]).unwrap();
    let id = old_slot.host_id(VMM_UID).to_string();
    let _straggler = Killed(
        Command::new("setpriv")
            .args([
                "--reuid",
                &id,
                "--regid",
                &id,
                "--clear-groups",
                "sleep",
                "60",
            ])
            .spawn()
            .unwrap(),
    );
    old.kill().unwrap();
    old.wait().unwrap();
    assert!(gone(old_ns, Duration::from_secs(5)), "the old VM lives on");
    let mut new = direct(&state, "new");
    let new_slot = Slot::new(slot_of(&wait_line(&mut new, ": ready"))).unwrap();
    let new_ns = pidns(children(new.id() as i32)[0]).unwrap();
    let block = new_slot.host_base()..new_slot.host_base() + BLOCK;
    // (Its daemons each in a PID namespace of their own below the VM's.)
    let new_vm = tests::vm::procs_in_pidns(new_ns);
    let strangers: Vec<(i32, String, String)> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| !status(pid, "State").starts_with('Z') && !new_vm.contains(&pid))
        .filter_map(|pid| {
            let uids = status(pid, "Uid");
            let ours = uids
                .split_whitespace()
                .filter_map(|u| u.parse::<u32>().ok())
                .any(|u| block.contains(&u));
            ours.then(|| (pid, comm(pid), uids))
        })
        .collect();
    assert_eq!(stop(&mut new), Some(0));
    assert!(
        strangers.is_empty(),
        "processes of slot {}'s ids outside the new VM: {strangers:?}",
        new_slot.index()
    );
    assert_ne!(
        new_slot, old_slot,
        "the new VM took the slot of a live process"
    );
}
