#![forbid(unsafe_code)]
//! Project rules that plain `cargo test` checks: `unsafe` lives only in
//! sandbox-core, and every other crate forbids it at its roots.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn unsafe_only_in_sandbox_core() {
    let root = workspace();
    for krate in [
        "wrap-virtiofsd",
        "wrap-vmm",
        "wrap-gpu",
        "vm-init",
        "xtask",
        "tests",
    ] {
        let mut files = Vec::new();
        rust_files(&root.join(krate), &mut files);
        assert!(!files.is_empty(), "{krate} has no sources");
        for f in files.into_iter().filter(|f| !f.ends_with("tests/tidy.rs")) {
            let text = std::fs::read_to_string(&f).unwrap();
            let uses_unsafe = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .any(|l| {
                    l.contains("unsafe {") || l.contains("unsafe fn") || l.contains("unsafe impl")
                });
            assert!(!uses_unsafe, "{} uses unsafe", f.display());
            let is_root = f.ends_with("src/main.rs")
                || f.ends_with("src/lib.rs")
                || f.parent().is_some_and(|p| p.ends_with("src/bin"));
            if is_root {
                assert!(
                    text.contains("#![forbid(unsafe_code)]"),
                    "{} does not forbid unsafe",
                    f.display()
                );
            }
        }
    }
}

/// The contract between the processes (sandbox-core's vmdir module) is
/// spelled once: no other source, the tests' and the probe's included,
/// names a VM directory's socket or file, or passes a wrapper an fd by a
/// bare number (unit tests of a crate may spell what they check).
#[test]
fn the_vm_directory_and_the_fds_are_named_only_in_vmdir() {
    let root = workspace();
    let forbidden = [
        "\"virtiofsd.sock\"",
        "\"api.sock\"",
        "\"gpu.sock\"",
        "\"serial.fifo\"",
        "\"serial.log\"",
        "\"vsock.d",
        "as_fd(), 3)",
        "as_fd(), 4)",
        "_FD: i32 = 3",
        "_FD: i32 = 4",
    ];
    for krate in [
        "sandbox-core",
        "wrap-virtiofsd",
        "wrap-vmm",
        "wrap-gpu",
        "vm-init",
        "xtask",
        "tests",
    ] {
        let mut files = Vec::new();
        rust_files(&root.join(krate), &mut files);
        for f in files.into_iter().filter(|f| {
            !f.ends_with("sandbox-core/src/vmdir.rs") && !f.ends_with("tests/tests/tidy.rs")
        }) {
            let text = std::fs::read_to_string(&f).unwrap();
            // Unit tests may spell what they check.
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            for word in forbidden {
                assert!(
                    !code.contains(word),
                    "{} spells {word}: use sandbox_core::vmdir",
                    f.display()
                );
            }
        }
    }
}

/// The per-daemon services' run scripts move the fds vm-init parks
/// (vmdir::fd::parked) to the numbers each wrapper takes (vmdir::fd):
/// execline cannot import the constants, so this checks every `fdmove`.
#[test]
fn the_service_run_scripts_move_the_parked_fds_to_the_contracts_numbers() {
    use sandbox_core::vmdir::fd::{self, parked};
    let dir = workspace().join("s6");
    let want: &[(&str, &[(i32, i32)])] = &[
        // Spectrum's cloud-hypervisor flow: the API listener only.
        ("vm-services-api/vmm", &[(fd::VMM_API, parked::VMM_API)]),
        (
            "vm-services/virtiofsd",
            &[
                (fd::VIRTIOFSD_LISTENER, parked::VIRTIOFSD_LISTENER),
                (fd::VIRTIOFSD_USERNS, parked::VIRTIOFSD_USERNS),
            ],
        ),
        (
            "vm-services/vmm",
            &[
                (fd::VMM_API, parked::VMM_API),
                (fd::VMM_EVENTS, parked::VMM_EVENTS),
            ],
        ),
        (
            "vm-services/gpu",
            &[
                // s6-ipcserverd takes the listener as its stdin; the
                // connection it accepts then moves to GPU_CONNECTION.
                (0, parked::GPU_LISTENER),
                (fd::GPU_COMPOSITOR, parked::GPU_COMPOSITOR),
                (fd::GPU_CONNECTION, 0),
                // The service's stdout, kept at 5 past s6-ipcserverd.
                (1, 5),
            ],
        ),
    ];
    for (service, moves) in want {
        let run = std::fs::read_to_string(dir.join(service).join("run")).unwrap();
        let got: Vec<(i32, i32)> = run
            .lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                match w.as_slice() {
                    ["fdmove", to, from] => Some((to.parse().ok()?, from.parse().ok()?)),
                    _ => None,
                }
            })
            .collect();
        assert_eq!(&got, moves, "{service}/run");
    }
}

/// A service's readiness goes where s6 listens: the `--notify-fd` its run
/// script gives (a wrapper's or vmm-api's) is its `notification-fd`, and a
/// service with a notification-fd says it is ready somewhere.
#[test]
fn the_service_run_scripts_notify_on_their_notification_fd() {
    let dir = workspace().join("s6");
    for service in [
        "vm-services/virtiofsd",
        "vm-services/vmm",
        "vm-services/gpu",
        "vm-services-api/vmm",
    ] {
        let run = std::fs::read_to_string(dir.join(service).join("run")).unwrap();
        let given: Vec<&str> = run
            .lines()
            .filter(|l| !l.starts_with('#'))
            .flat_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.windows(2)
                    .filter(|p| p[0] == "--notify-fd")
                    .map(|p| p[1].trim_end_matches('}'))
                    .collect::<Vec<_>>()
            })
            .collect();
        let file = std::fs::read_to_string(dir.join(service).join("notification-fd")).ok();
        match file {
            Some(fd) => assert_eq!(given, [fd.trim()], "{service}"),
            None => assert!(given.is_empty(), "{service}: no notification-fd"),
        }
    }
}

/// Every fd vm-init parks for its s6-svscan (vmdir::fd::parked).
fn all_parked() -> Vec<i32> {
    use sandbox_core::vmdir::fd::parked::*;
    vec![
        VIRTIOFSD_LISTENER,
        VIRTIOFSD_USERNS,
        VMM_API,
        VMM_EVENTS,
        GPU_LISTENER,
        GPU_COMPOSITOR,
        VIRTIOFSD_CGROUP,
        VMM_CGROUP,
        GPU_CGROUP,
    ]
}

/// A helper a run script starts beside its wrapper (`background { ... }`:
/// vmm-api) is no wrapper and closes no fd by itself: it must close every
/// parked fd the script has not moved or closed before it, the cgroup
/// leaves' `cgroup.procs` (opened by host root: a holder can move any
/// process of the VM into a leaf) as much as the listeners.
#[test]
fn a_run_scripts_helper_closes_every_parked_fd() {
    let dir = workspace().join("s6");
    for service in [
        "vm-services/virtiofsd",
        "vm-services/vmm",
        "vm-services/gpu",
        "vm-services-api/vmm",
    ] {
        let run = std::fs::read_to_string(dir.join(service).join("run")).unwrap();
        let mut open = all_parked();
        for line in run.lines().filter(|l| !l.trim_start().starts_with('#')) {
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.first() == Some(&"background") {
                let closed: Vec<i32> = w
                    .windows(2)
                    .filter(|p| p[0] == "fdclose")
                    .filter_map(|p| p[1].parse().ok())
                    .collect();
                let kept: Vec<i32> = open
                    .iter()
                    .copied()
                    .filter(|fd| !closed.contains(fd))
                    .collect();
                assert!(
                    kept.is_empty(),
                    "{service}/run: its helper keeps parked fds {kept:?}"
                );
                continue;
            }
            match w.as_slice() {
                ["fdmove", _, from] | ["fdclose", from] => {
                    open.retain(|fd| Some(*fd) != from.parse().ok());
                }
                _ => {}
            }
        }
    }
}

/// The run scripts of a host's own that chain-load no wrapper close the
/// parked fds themselves, as the README and DESIGN.md say: both name the
/// whole range.
#[test]
fn the_docs_name_every_parked_fd_a_run_script_of_ones_own_closes() {
    let (low, high) = {
        let all = all_parked();
        (*all.iter().min().unwrap(), *all.iter().max().unwrap())
    };
    let range = format!("(`fdclose {low}` ... `fdclose {high}`)");
    for doc in ["README.md", "docs/DESIGN.md"] {
        let text = std::fs::read_to_string(workspace().join(doc)).unwrap();
        assert!(text.contains(&range), "{doc} does not say {range}");
    }
}
