//! The escape matrix: two sibling services in one VM's namespaces (each its
//! own uid, Landlock domain and mount namespace) plus a second VM; from
//! inside service A the probe tries what a compromised daemon would, and
//! every attempt must fail with the errno the kernel gives today.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use sandbox_core::ids::Slot;
use tests::matrix::{OtherVm, Outcome};
use tests::{privileged, StateDir, UID_A};

fn run_matrix(test: &str, scenario: &str, profile: &str, weaken: Option<&str>) -> Option<Outcome> {
    if !privileged(test) {
        return None;
    }
    // Slots of their own per test: tests run in parallel.
    let base = match test {
        "user" => 200,
        "root" => 202,
        "gone" => 204,
        "reused" => 206,
        "weak_signal" => 208,
        _ => 210,
    };
    let state = StateDir::new(test);
    let bait = tests::bait::hold();
    let slot = Slot::new(base).unwrap();
    let a_uid = if profile == "root" { 0 } else { UID_A };
    // Names unique per test: the host-side check below must find no
    // other test's VM behind a name.
    let (vm1, vm2_name) = (format!("{test}-vm1"), format!("{test}-vm2"));
    let vm_dir = state.add_vm(&vm1, slot, a_uid);
    let vm2 = OtherVm::hold(&state, &vm2_name, base + 1);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let mut cmd = Command::new(state.bin().join("vm-harness"));
    cmd.args([
        "--state-dir",
        state.0.to_str().unwrap(),
        "--slot",
        &base.to_string(),
    ])
    .args(["--name", &vm1, "--scenario", scenario, "--profile", profile])
    .args(["--other-vm", &vm2_name, "--tcp-port", &port]);
    if let Some(w) = weaken {
        cmd.args(["--weaken", w]);
    }
    let out = cmd.output().expect("run vm-harness");
    vm2.release();
    bait.assert_nothing_reached_the_host();
    let output = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{output}{}", String::from_utf8_lossy(&out.stderr));
    // The positive control seen from the host: the file A wrote is there,
    // owned by A's host id.
    let written = std::fs::metadata(vm_dir.join("out-a/probe-out")).expect("probe-out on the host");
    assert_eq!(written.uid(), slot.host_id(a_uid));
    assert!(!std::path::Path::new("/tmp/probe-marker").exists());
    Some(Outcome::of(out.status.code(), output))
}

#[test]
fn non_root_service_reaches_nothing() {
    if let Some(o) = run_matrix("user", "normal", "user", None) {
        o.assert_all_denied(60);
    }
}

#[test]
fn namespace_root_service_reaches_nothing() {
    if let Some(o) = run_matrix("root", "normal", "root", None) {
        o.assert_all_denied(58);
    }
}

#[test]
fn exited_sibling_changes_nothing() {
    if let Some(o) = run_matrix("gone", "sibling-gone", "user", None) {
        assert!(o.output.contains("of an exited sibling"), "{}", o.output);
        o.assert_all_denied(45);
    }
}

#[test]
fn reused_pid_of_a_sibling_is_still_denied() {
    if let Some(o) = run_matrix("reused", "pid-reused", "user", None) {
        o.assert_all_denied(60);
    }
}

/// The matrix can fail: without the Signal scope, a service that shares
/// its uid with PID 1 (virtiofsd's case) can signal it.
#[test]
fn matrix_catches_a_missing_signal_scope() {
    if let Some(o) = run_matrix("weak_signal", "normal", "root", Some("signal-scope")) {
        assert_eq!(o.code, Some(1));
        assert!(
            o.failed.iter().any(|l| l.contains("kill(1, SIGKILL)")),
            "{}",
            o.output
        );
    }
}

/// ... and without the abstract-socket scope, the sibling's socket answers.
#[test]
fn matrix_catches_a_missing_abstract_scope() {
    if let Some(o) = run_matrix("weak_abstract", "normal", "user", Some("abstract-scope")) {
        assert_eq!(o.code, Some(1));
        assert!(
            o.failed
                .iter()
                .any(|l| l.contains("connect @vm-sandbox-test-weak_abstract-vm1-")),
            "{}",
            o.output
        );
        assert!(
            o.failed.iter().all(|l| l.contains("connect @")),
            "{}",
            o.output
        );
    }
}
