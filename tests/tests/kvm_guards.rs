//! The kvm guards (tests::host) against the orderings that hung them: a
//! test that panics while it holds the pristine state while another
//! waits, a guard whose change or put-back fails, a test run killed
//! while it holds one. The next test proceeds each time and the host is
//! put back as found; each change left behind is put back with one line.
//! On a fresh machine's /dev/kvm, two tests share it usable and the last
//! one out puts it back. The scenarios (src/bin/kvm-guards.rs) run in a
//! mount namespace of their own, with private /etc, /run and /dev/kvm.

use std::process::Command;

use tests::host::kvm_snapshot;
use tests::{bin_dir, privileged_with};

#[test]
fn a_test_that_panics_or_is_killed_with_a_kvm_guard_holds_up_no_other() {
    if !privileged_with("kvm_guards", &["unshare", "groupadd", "mknod"]) {
        return;
    }
    if kvm_snapshot().is_none() {
        // The private /dev/kvm is bound on the host's.
        assert!(
            std::env::var_os("CI").is_none_or(|v| v != "true"),
            "no /dev/kvm under CI=true"
        );
        eprintln!("SKIP kvm_guards: this host has no /dev/kvm");
        return;
    }
    let found = kvm_snapshot();
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private"])
        .arg(bin_dir().join("kvm-guards"))
        .output()
        .expect("run kvm-guards");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(out.status.success(), "kvm-guards: {}", out.status);
    let put_back: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("tests: put /dev/kvm and the kvm group back"))
        .collect();
    assert_eq!(
        put_back.len(),
        3,
        "one line each for the failed put-back and the two killed runs"
    );
    assert_eq!(kvm_snapshot(), found, "the host's own /dev/kvm untouched");
}
