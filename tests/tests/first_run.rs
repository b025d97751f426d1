//! A fresh machine, as a new user meets it: /dev/kvm `crw------- root:root`
//! and no kvm group (no udev). The README's first command, `cargo xtask
//! demo`, passes there and says in one line what it changed; vm-init
//! refuses a VM that needs KVM on such a host in one line, before it
//! creates anything. Both put the host back as they found it.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use sandbox_core::contract::bin::VM_INIT;
use sandbox_core::contract::VmDir;
use tests::host::{kvm_at_rest, kvm_pristine, kvm_snapshot};
use tests::{privileged, privileged_with, StateDir};

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

#[test]
fn the_demo_passes_on_a_pristine_host_and_says_what_it_changed() {
    if !privileged_with(
        "first_run_demo",
        &["s6-svscan", "s6-svc", "s6-svwait", "execlineb"],
    ) {
        return;
    }
    if tests::guest::Tools::find("first_run_demo").is_none() {
        return;
    }
    let found = kvm_at_rest();
    let pristine = kvm_pristine();
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["xtask", "demo"])
        .current_dir(workspace())
        .output()
        .expect("run cargo xtask demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let after_demo = std::fs::metadata("/dev/kvm").ok();
    drop(pristine);
    assert!(
        out.status.success(),
        "cargo xtask demo: {}\n{stdout}\n{stderr}",
        out.status
    );
    let dri_after = std::fs::read_dir("/dev/dri").is_ok_and(|d| d.count() > 0);
    // The stand-in render node for the GPU probe, on a host without one,
    // is said on a line of its own and removed at the end.
    let (render, changed): (Vec<&str>, Vec<&str>) = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with("changed:"))
        .partition(|l| l.contains("/dev/dri/renderD"));
    assert!(render.len() <= 1, "{stdout}");
    if !render.is_empty() {
        assert!(!dri_after, "the stand-in render node is gone");
    }
    eprintln!("{}", changed.join("\n"));
    if found.is_some() {
        assert_eq!(changed.len(), 1, "one changed line:\n{stdout}");
        assert!(
            changed[0].contains("/dev/kvm was crw------- root:root, is now crw-rw---- root:kvm"),
            "{}",
            changed[0]
        );
        let meta = after_demo.expect("/dev/kvm");
        assert_eq!(meta.mode() & 0o777, 0o660, "the demo did what it said");
    }
    assert!(
        stdout.contains("virtiofsd's policy held, the VMM's held, the GPU daemon's held"),
        "{stdout}"
    );
    assert_eq!(kvm_at_rest(), found, "/dev/kvm and the kvm group put back");
}

#[test]
fn a_vm_that_needs_kvm_is_refused_in_one_line_when_the_vmm_could_not_open_it() {
    if !privileged("kvm_refused") {
        return;
    }
    if kvm_snapshot().is_none() {
        // Nothing to prove without the device: vm-init's line then says it
        // does not exist, which the unit tests of sandbox-core::host cover.
        assert!(
            std::env::var_os("CI").is_none_or(|v| v != "true"),
            "no /dev/kvm under CI=true"
        );
        eprintln!("SKIP kvm_refused: this host has no /dev/kvm");
        return;
    }
    let found = kvm_at_rest();
    let pristine = kvm_pristine();
    let state = StateDir::bare("kvm_refused");
    let vm = state.add_standin_vm("ch");
    let refused = || {
        let out = Command::new(state.bin().join(VM_INIT))
            .args(tests::no_cgroups())
            .args(["--parent-pid", &std::process::id().to_string()])
            .arg("--state-dir")
            .arg(&state.0)
            .arg("ch")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(100), "{err}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        err
    };
    // No kvm group at all (a fresh machine of this kind).
    let err = refused();
    eprintln!("{err}");
    for part in [
        "/dev/kvm is crw------- root:root",
        "no kvm group",
        "mode 0660",
    ] {
        assert!(err.contains(part), "{part:?} missing: {err}");
    }
    // A kvm group, but /dev/kvm still root's alone.
    assert!(Command::new("groupadd")
        .args(["--system", "kvm"])
        .status()
        .unwrap()
        .success());
    let err = refused();
    assert!(err.contains("/dev/kvm is crw------- root:root and the host's kvm group is"));
    // Nothing created: no socket, no log, no slot file, no slot taken.
    let mut left: Vec<_> = std::fs::read_dir(&vm)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    left.sort();
    let d = VmDir::new(&vm);
    assert_eq!(left, [d.config(), d.storage()], "created something");
    assert_eq!(
        std::fs::read_dir(&state.0).unwrap().count(),
        1,
        "created something in the state dir"
    );
    drop(pristine);
    assert_eq!(kvm_at_rest(), found, "/dev/kvm and the kvm group put back");
}
