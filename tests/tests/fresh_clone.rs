//! A fresh clone built as cargo's users often build: with CARGO_TARGET_DIR
//! set to a directory outside the tree. `cargo xtask install` builds
//! there and installs what it built there; nothing lands in the tree.
//! (About 1.5 min of 2 cores: a release build from nothing.)

use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory under /var/tmp for this test, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
}

/// What `cargo xtask install` puts under D/usr/bin.
use sandbox_core::contract::bin::INSTALLED;

#[test]
fn install_builds_in_cargo_target_dir_and_installs_what_it_built_there() {
    let scratch = Scratch(PathBuf::from(format!(
        "/var/tmp/vm-sandbox-fresh-clone-{}",
        std::process::id()
    )));
    let (clone, target, dest) = (
        scratch.0.join("clone"),
        scratch.0.join("target"),
        scratch.0.join("dest"),
    );
    std::fs::create_dir_all(&clone).unwrap();
    // The tree as a clone has it: no build output (neither ./target nor
    // this build's target directory, wherever it is) and no .git.
    let this_build = tests::bin_dir();
    for entry in std::fs::read_dir(workspace()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap();
        if name == "target" || name == ".git" || this_build.starts_with(&path) {
            continue;
        }
        let status = Command::new("cp")
            .arg("-a")
            .arg(&path)
            .arg(&clone)
            .status()
            .unwrap();
        assert!(status.success(), "cp -a {}: {status}", path.display());
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .args(["xtask", "install", "--destdir"])
        .arg(&dest)
        .current_dir(&clone)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("CARGO_BUILD_TARGET_DIR")
        .output()
        .expect("run cargo xtask install");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "cargo xtask install: {}\n{stderr}",
        out.status
    );
    assert!(!clone.join("target").exists(), "built into the tree");
    for b in INSTALLED {
        let (installed, built) = (dest.join("usr/bin").join(b), target.join("release").join(b));
        let (installed_bytes, built_bytes) = (std::fs::read(&installed), std::fs::read(&built));
        assert!(
            installed_bytes.is_ok() && installed_bytes.ok() == built_bytes.ok(),
            "{} is not {}, just built",
            installed.display(),
            built.display()
        );
        // It runs: with no argument, its usage in one line, exit 100.
        let out = Command::new(&installed).output().unwrap();
        let said = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(100), "{b}: {said}");
        assert!(said.starts_with(&format!("{b}: usage: ")), "{b}: {said}");
        assert_eq!(said.lines().count(), 1, "{b}: {said}");
    }
    assert!(dest.join("usr/share/vm-sandbox/s6/vm/run").is_file());
}
