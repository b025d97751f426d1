//! `cargo xtask matrix`: the escape table for a human. Builds the test
//! binaries, makes two VMs under a scratch state dir, runs the probe as a
//! non-root service and as the namespace-root service (virtiofsd's case),
//! and prints what it tried and what the kernel answered.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use tests::UID_A;

use crate::{cargo, link, sh, target_dir, Result};

pub fn run() -> Result {
    require_root()?;
    sh(cargo().args(["build", "--package", "tests", "--bins"]))?;
    // Run from /run, not from the build tree: it may be under /tmp, which
    // every sandboxed service covers with a private tmpfs.
    let top = std::path::PathBuf::from(format!("/run/vm-sandbox-matrix-{}", std::process::id()));
    let (bin, state) = (top.join("bin"), top.join("state"));
    let result = link_test_binaries(&bin)
        .and_then(|()| crate::host::state_dir(&state))
        .and_then(|()| tables(&bin, &state));
    let _ = std::fs::remove_dir_all(&top);
    result
}

fn link_test_binaries(bin: &std::path::Path) -> Result {
    std::fs::create_dir_all(bin).map_err(|e| format!("mkdir {}: {e}", bin.display()))?;
    for b in ["vm-harness", "test-wrap", "probe", "target"] {
        link(&target_dir().join("debug").join(b), &bin.join(b))?;
    }
    Ok(())
}

fn require_root() -> Result {
    let uid = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("id -u: {e}"))?;
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        return Err("the escape matrix builds namespaces and mounts: run it as root".into());
    }
    Ok(())
}

fn add_vm(state: &std::path::Path, name: &str, slot: u32, a_uid: u32) -> Result {
    let slot =
        sandbox_core::ids::Slot::new(slot).ok_or_else(|| format!("slot {slot} out of range"))?;
    tests::new_vm::harness_vm(&state.join(name), slot, a_uid)
        .map(drop)
        .map_err(|e| format!("prepare a VM: {e}"))
}

fn tables(bin: &std::path::Path, state: &std::path::Path) -> Result {
    let harness = bin.join("vm-harness");
    let state_s = state.to_str().ok_or("state dir is not UTF-8")?;
    add_vm(state, "other", 251, UID_A)?;
    let mut other = Command::new(&harness)
        .args([
            "--state-dir",
            state_s,
            "--slot",
            "251",
            "--name",
            "other",
            "--scenario",
            "hold",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start the second VM: {e}"))?;
    let mut line = String::new();
    let _ = BufReader::new(other.stdout.as_mut().expect("piped")).read_line(&mut line);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let port = listener
        .local_addr()
        .map_err(|e| e.to_string())?
        .port()
        .to_string();
    let mut failed = false;
    for (profile, a_uid, what) in [
        (
            "user",
            UID_A,
            "a service with its own uid (the VMM, the GPU daemon)",
        ),
        ("root", 0, "root of the VM's user namespace (virtiofsd)"),
    ] {
        add_vm(state, "demo", 250, a_uid)?;
        println!("\n== escape matrix: {what}\n");
        let status = Command::new(&harness)
            .args([
                "--state-dir",
                state_s,
                "--slot",
                "250",
                "--name",
                "demo",
                "--scenario",
                "normal",
            ])
            .args([
                "--profile",
                profile,
                "--other-vm",
                "other",
                "--tcp-port",
                &port,
            ])
            .status()
            .map_err(|e| format!("run vm-harness: {e}"))?;
        failed |= !status.success();
    }
    let _ = other.kill();
    let _ = other.wait();
    if failed {
        Err("some attempts got through (lines marked FAIL)".into())
    } else {
        Ok(())
    }
}
