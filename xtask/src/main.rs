//! cargo xtask: the project's one build tool (plain std, no dependencies).
//!
//!   cargo xtask ci        install what the tests need, then fmt, clippy, build, every test,
//!                         and the kernel matrix
//!   cargo xtask test      every test binary, each under a time limit, and their times
//!                         (privileged tests need root)
//!   cargo xtask lint      fmt --check and clippy -D warnings
//!   cargo xtask demo      boot a real VM fully sandboxed under s6 and show what each daemon reaches
//!   cargo xtask bench     setup cost, memory and scale against bubblewrap (bench.json in
//!                         cargo's target directory)
//!   cargo xtask matrix    run the probe in a sandboxed VM and print the escape table
//!   cargo xtask kernels   the tests on Debian's 6.12 (Landlock ABI 6) and 6.1 kernels, under QEMU
//!   cargo xtask deps      install the Debian packages the tests need
//!   cargo xtask tools     virtiofsd (crates.io) and QEMU (Debian packages) into the cache
//!   cargo xtask guest     the test guest: Debian's cloud kernel, a busybox initramfs
//!   cargo xtask install --destdir D   release binaries and the s6 template under D

#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod bench;
mod demo;
mod host;
mod kernels;
mod matrix;
mod testrun;
mod tools;

/// Debian packages the test suite needs beyond the Rust toolchain.
/// (xz-utils and e2fsprogs: the kernel matrix unpacks compressed modules and
/// makes an ext4 disk. libcap2-bin and wayland-utils: capsh and wayland-info,
/// which start as crosvm does, run in the GPU daemon's place. keyutils: the
/// keyring test adds the launcher's key and looks at its keyring with keyctl.)
const APT_PACKAGES: &[&str] = &[
    "s6",
    "execline",
    "libseccomp-dev",
    "libcap-ng-dev",
    "xz-utils",
    "e2fsprogs",
    "libcap2-bin",
    "wayland-utils",
    "keyutils",
];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("test") => test(),
        Some("lint") => lint(),
        Some("deps") => deps(),
        Some("matrix") => matrix::run(),
        Some("demo") => demo::run(),
        Some("kernels") => kernels::run(args.get(1).map(String::as_str)),
        Some("bench") => bench::run(),
        // Run by the bench in the kernel matrix's 6.12 guest, not by hand.
        Some("bench-cgroups") => bench::cgroups_only(),
        Some("install") => install(&args[1..]),
        Some("tools") => deps().and_then(|()| tools::tools()),
        Some("guest") => deps().and_then(|()| tools::guest()),
        _ => {
            eprintln!(
                "usage: cargo xtask ci|test|lint|deps|tools|guest|demo|bench|matrix|kernels|install --destdir D"
            );
            return ExitCode::from(100);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::from(1)
        }
    }
}

pub type Result<T = ()> = std::result::Result<T, String>;

pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// Where cargo puts what it builds, as cargo decides it: CARGO_TARGET_DIR
/// (relative to where xtask was started, as cargo reads it), else what
/// `cargo metadata` says (a `build.target-dir` of a config), else the
/// workspace's own `target`.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = target_dir_from_env() {
        return dir;
    }
    let metadata = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(root())
        .stderr(std::process::Stdio::null())
        .output();
    metadata
        .ok()
        .and_then(|o| {
            let text = String::from_utf8(o.stdout).ok()?;
            let (_, rest) = text.split_once("\"target_directory\":\"")?;
            let (dir, _) = rest.split_once('"')?;
            Some(PathBuf::from(dir.replace("\\\\", "\\")))
        })
        .unwrap_or_else(|| root().join("target"))
}

/// Runs a command in the workspace root, failing with its command line.
pub fn sh(cmd: &mut Command) -> Result {
    if cmd.get_current_dir().is_none() {
        cmd.current_dir(root());
    }
    eprintln!("xtask: running {cmd:?}");
    let status = cmd.status().map_err(|e| format!("{cmd:?}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?}: {status}"))
    }
}

/// Hard-links `from` to `to` (a copy across file systems), replacing `to`:
/// the demo, the bench and the matrix run binaries from /run, never from
/// the build tree, which may be under /tmp, where every sandboxed service
/// mounts a private tmpfs.
pub fn link(from: &Path, to: &Path) -> Result {
    let _ = std::fs::remove_file(to);
    if std::fs::hard_link(from, to).is_err() {
        std::fs::copy(from, to)
            .map_err(|e| format!("copy {} to {}: {e}", from.display(), to.display()))?;
    }
    Ok(())
}

/// CARGO_TARGET_DIR, made absolute as cargo reads it: relative to where
/// xtask was started.
fn target_dir_from_env() -> Option<PathBuf> {
    let dir = PathBuf::from(std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty())?);
    Some(if dir.is_absolute() {
        dir
    } else {
        std::env::current_dir().unwrap_or_else(|_| root()).join(dir)
    })
}

pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    // xtask runs cargo in the workspace root: a relative CARGO_TARGET_DIR
    // would name another directory there than where xtask looks.
    if let Some(dir) = target_dir_from_env() {
        cmd.env("CARGO_TARGET_DIR", dir);
    }
    cmd
}

pub fn deps() -> Result {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    sh(Command::new("apt-get").arg("update").arg("-qq"))?;
    sh(Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn lint() -> Result {
    sh(cargo().args(["fmt", "--all", "--check"]))?;
    sh(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}

fn test() -> Result {
    test_timed(&mut Vec::new())
}

/// Every test binary of the workspace (and the doc tests), each under
/// [`testrun::LIMIT`], all of them run even when one fails; `timings`
/// gets each one's time and result, also printed at the end.
fn test_timed(timings: &mut Vec<testrun::Timing>) -> Result {
    // Build every binary first: the integration tests run them.
    sh(cargo().args(["build", "--workspace", "--bins"]))?;
    let mut failed = Vec::new();
    // The cgroup tests need cgroup v2 with memory, pids and cpu: on a host
    // without them (this CI machine kind) the kernel matrix's 6.12 guest
    // runs them, and the table says so.
    let no_cgroup_v2 = !tests::no_cgroups().is_empty();
    for t in testrun::test_executables(&["--workspace"])? {
        if no_cgroup_v2 && t.src.ends_with("tests/cgroups.rs") {
            timings.push(testrun::Timing {
                what: t.src.clone(),
                took: std::time::Duration::ZERO,
                result: "in the kernel matrix (no cgroup v2 here)".into(),
            });
            continue;
        }
        let (timing, result) = testrun::run(&t);
        timings.push(timing);
        failed.extend(result.err());
    }
    // No crate has a doc test today; run so that one added is run.
    let mut doc = cargo();
    doc.args(["test", "--workspace", "--doc"])
        .current_dir(root());
    let (timing, result) = testrun::run_limited("doc tests", doc, &[], testrun::LIMIT);
    timings.push(timing);
    failed.extend(result.err());
    eprintln!(
        "\nxtask test: each test binary's time (limit {} s each)",
        testrun::LIMIT.as_secs()
    );
    testrun::print_table(timings, "  ");
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{} of {} test binaries failed:\n{}",
            failed.len(),
            timings.len(),
            failed.join("\n")
        ))
    }
}

fn ci() -> Result {
    // Each stage's time, said at the end (also when one failed): a slow
    // stage is seen, not guessed. (The kernel matrix says each guest's.)
    let mut took: Vec<(&str, std::time::Duration)> = Vec::new();
    let mut stage = |name, f: &dyn Fn() -> Result| {
        let start = std::time::Instant::now();
        let r = f();
        took.push((name, start.elapsed()));
        r
    };
    let tests = std::cell::RefCell::new(Vec::new());
    let result = stage("deps, tools, guest", &|| {
        deps()?;
        tools::tools()?;
        tools::guest()
    })
    .and_then(|()| stage("lint (fmt, clippy)", &lint))
    .and_then(|()| stage("tests", &|| test_timed(&mut tests.borrow_mut())))
    // The same tests on Debian's 6.12 (Landlock ABI 6), and 6.1's refusals.
    .and_then(|()| stage("kernel matrix", &|| kernels::run(None)));
    eprintln!("\nxtask ci: stage times");
    for (name, t) in &took {
        eprintln!("  {name:<24} {:>7.1} s", t.as_secs_f64());
        if *name == "tests" {
            testrun::print_table(&tests.borrow(), "    ");
        }
    }
    result
}

/// The binaries a host needs, all from the release profile.
const BINARIES: [&str; 5] = sandbox_core::contract::bin::INSTALLED;

/// Installs the binaries to D/usr/bin (vm-init finds the wrappers beside
/// itself), the s6 service template to D/usr/share/vm-sandbox/s6/vm and
/// the per-daemon services (vm-init --services) to .../s6/vm-services.
fn install(args: &[String]) -> Result {
    let dest = match args {
        [flag, d] if flag == "--destdir" => PathBuf::from(d),
        _ => return Err("usage: cargo xtask install --destdir D".into()),
    };
    let mut build = cargo();
    build.args(["build", "--release"]);
    for b in BINARIES {
        build.args(["--bin", b]);
    }
    sh(&mut build)?;
    let bin = dest.join("usr/bin");
    let template = dest.join("usr/share/vm-sandbox/s6/vm");
    for d in [&bin, &template] {
        std::fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }
    let copy = |from: PathBuf, to: PathBuf, mode: u32| -> Result {
        std::fs::copy(&from, &to)
            .map_err(|e| format!("copy {} to {}: {e}", from.display(), to.display()))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("chmod {}: {e}", to.display()))
    };
    for b in BINARIES {
        copy(target_dir().join("release").join(b), bin.join(b), 0o755)?;
    }
    for (f, mode) in [
        ("run", 0o755),
        ("notification-fd", 0o644),
        ("timeout-kill", 0o644),
        ("vm.conf.example", 0o644),
    ] {
        copy(root().join("s6/vm").join(f), template.join(f), mode)?;
    }
    // The per-daemon services (vm-init --services), Spectrum's
    // cloud-hypervisor flow in place of vm-services/vmm, and one VM as an
    // s6 instance (s6-instance-maker on s6/vm-instance).
    for (dir, file, mode) in [
        ("vm-services/virtiofsd", "run", 0o755),
        ("vm-services/virtiofsd", "notification-fd", 0o644),
        ("vm-services/vmm", "run", 0o755),
        ("vm-services/vmm", "notification-fd", 0o644),
        ("vm-services/gpu", "run", 0o755),
        ("vm-services-api/vmm", "run", 0o755),
        ("vm-services-api/vmm", "notification-fd", 0o644),
        ("vm-instance", "run", 0o755),
        ("vm-instance", "notification-fd", 0o644),
        ("vm-instance", "timeout-kill", 0o644),
    ] {
        let d = dest.join("usr/share/vm-sandbox/s6").join(dir);
        std::fs::create_dir_all(&d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
        copy(root().join("s6").join(dir).join(file), d.join(file), mode)?;
    }
    eprintln!(
        "xtask: installed {} and the s6 templates under {}",
        BINARIES.join(", "),
        dest.display()
    );
    Ok(())
}
