//! cargo xtask: the project's one build tool (plain std, no dependencies).
//!
//!   cargo xtask ci        install what the tests need, then fmt, clippy, build, every test,
//!                         and the kernel matrix
//!   cargo xtask test      every test (privileged ones need root)
//!   cargo xtask lint      fmt --check and clippy -D warnings
//!   cargo xtask demo      boot a real VM fully sandboxed under s6 and show what each daemon reaches
//!   cargo xtask bench     setup cost, memory and scale against bubblewrap (target/bench.json)
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
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        return if dir.is_absolute() {
            dir
        } else {
            std::env::current_dir().unwrap_or_else(|_| root()).join(dir)
        };
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

pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
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
    // Build every binary first: the integration tests run them.
    sh(cargo().args(["build", "--workspace", "--bins"]))?;
    // --show-output: the escape table of each matrix test lands in the log.
    sh(cargo().args(["test", "--workspace", "--", "--show-output"]))
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
    let result = stage("deps, tools, guest", &|| {
        deps()?;
        tools::tools()?;
        tools::guest()
    })
    .and_then(|()| stage("lint (fmt, clippy)", &lint))
    .and_then(|()| stage("tests", &test))
    // The same tests on Debian's 6.12 (Landlock ABI 6), and 6.1's refusals.
    .and_then(|()| stage("kernel matrix", &|| kernels::run(None)));
    eprintln!("\nxtask ci: stage times");
    for (name, t) in &took {
        eprintln!("  {name:<24} {:>7.1} s", t.as_secs_f64());
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
