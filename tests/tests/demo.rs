//! The demo's flow as a test: a real guest under real s6, QEMU (TCG) and
//! virtiofsd, all sandboxed. s6-svwait -U returns once the VM runs; the
//! guest's file arrives on the host; s6-svc -d presses the ACPI power
//! button and the guest powers itself off (its own line in serial.log,
//! not the timeout path); nothing of the VM is left.

use std::time::{Duration, Instant};

use sandbox_core::contract::VmDir;
use tests::guest::Tools;
use tests::vm::{children, pidns, procs_in_pidns, within, S6};
use tests::{privileged_with, StateDir};

#[test]
fn s6_up_guest_writes_s6_down_powers_off() {
    if !privileged_with(
        "demo_flow",
        &["s6-svscan", "s6-svc", "s6-svwait", "execlineb"],
    ) {
        return;
    }
    let Some(tools) = Tools::find("demo_flow") else {
        return;
    };
    let state = StateDir::new("demo_flow");
    let vm = state.add_guest_vm("demo", "wait");
    let s6 = S6::start(&state);
    let extra = format!(
        "--shutdown-timeout 30 --vmm {} --virtiofsd {}",
        tools.qemu.display(),
        tools.virtiofsd.display()
    );
    let svc = s6.add_vm(&state, "demo", &extra);
    assert!(
        S6::svwait(&svc, "-U", 60_000),
        "not ready: {}",
        S6::log(&state)
    );
    let outer = S6::pid(&svc).unwrap();
    let ns = pidns(children(outer)[0]).unwrap();
    let hello = VmDir::new(&vm).storage().join(tests::guest::HELLO);
    assert!(
        within(Duration::from_secs(60), || hello.exists()),
        "{}",
        S6::log(&state)
    );
    let serial = sandbox_core::contract::VmDir::new(&vm).serial_log();
    assert!(within(Duration::from_secs(30), || {
        std::fs::read_to_string(&serial).is_ok_and(|s| s.contains("GUEST-WAITING"))
    }));
    assert!(std::fs::read_to_string(&hello)
        .unwrap()
        .starts_with("hello from the guest"));

    let start = Instant::now();
    S6::svc(&svc, "-d");
    assert!(S6::svwait(&svc, "-D", 40_000));
    let took = start.elapsed();
    eprintln!("s6-svc -d to down, real guest: {took:?}");
    let serial = std::fs::read_to_string(&serial).unwrap();
    assert!(
        serial.contains("GUEST-POWER-BUTTON"),
        "no power button in the guest:\n{serial}"
    );
    assert!(serial.contains("reboot: Power down"), "{serial}");
    assert!(
        took < Duration::from_secs(20),
        "took {took:?}: the timeout path?"
    );
    assert_eq!(S6::svstat(&svc, "exitcode"), "0");
    assert!(!S6::log(&state).contains("did not power off"));
    assert!(within(Duration::from_secs(1), || procs_in_pidns(ns).is_empty()));
}
