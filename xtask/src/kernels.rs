//! `cargo xtask kernels`: the project on kernels other than the host's.
//! Each is a Debian cloud kernel booted under QEMU (TCG) with the host's
//! root file system shared read-only over virtio-fs and a tmpfs overlay on
//! top (xtask/guest/runner-init), so the guest runs this build's own
//! binaries and tests as its root:
//!
//! - 6.12 (Landlock ABI 6): the escape matrix and the vm-init lifecycle
//!   tests with stand-in daemons, in full, as on the host, and the cgroup
//!   tests (cgroup v2 with memory, pids and cpu, which the host may lack);
//! - 6.1 (Landlock ABI 2): vm-init and every wrapper refuse in one line
//!   naming the ABI and what it lacks, and create nothing; with
//!   --allow-weaker-landlock a VM runs and says so in one line.
//!
//! The host's own kernel is the third row: `cargo xtask test`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sandbox_core::contract::bin::{VM_INIT, WRAPPERS};
use sandbox_core::contract::{config, VmDir};

use crate::{cargo, sh, target_dir, tools, Result};

const RUNNER_INIT: &str = include_str!("../guest/runner-init");
/// Modules of the runner guests, in load order: each is built into some
/// kernels and a module of others, so none is required here; the guest
/// says which mount failed if one is missing.
const MODULES: &[(&str, bool)] = &[
    ("virtio_ring", false),
    ("virtio", false),
    ("virtio_pci_modern_dev", false),
    ("virtio_pci_legacy_dev", false),
    ("virtio_pci", false),
    ("fuse", false),
    ("virtiofs", false),
    ("overlay", false),
    ("virtio_blk", false),
    ("crc16", false),
    ("mbcache", false),
    ("jbd2", false),
    ("ext4", false),
];
/// What of the host's /usr the guests see: the programs the tests run and
/// their libraries (execline's commands among them), not the data of every
/// package the host has. The escape matrix walks each daemon's whole view
/// through virtio-fs under TCG, /usr in it: with all of a desktop's /usr
/// (136,000 entries) the 6.12 guest took 17 minutes, and grew with every
/// package; this keeps each attempt (every socket in the view is still
/// found) and bounds the walk by the libraries installed.
const GUEST_USR: &[&str] = &[
    "bin",
    "sbin",
    "libexec",
    "lib64",
    "lib/x86_64-linux-gnu",
    "lib/execline",
];
/// Run by `sh -euc` in virtiofsd's own mount namespace: $1 a directory for
/// the guest's /usr, then GUEST_USR, `--` and virtiofsd's command line. A
/// tmpfs with each kept directory bound into it, moved onto /usr at once.
const SLIM_USR: &str = r#"usr=$1; shift
mkdir -p "$usr"
mount -t tmpfs -o mode=755,nosuid,nodev guest-usr "$usr"
while [ "$1" != -- ]; do
    if [ -d "/usr/$1" ]; then mkdir -p "$usr/$1"; mount --rbind "/usr/$1" "$usr/$1"; fi
    shift
done
shift
mount --move "$usr" /usr
exec "$@"
"#;
/// One guest run at most (TCG, 2 vCPUs).
const LIMIT: Duration = Duration::from_secs(20 * 60);
/// How often the host says how far a guest has got.
const PROGRESS_EVERY: Duration = Duration::from_secs(30);

/// The newest `linux-image-6.12.N+deb12-cloud-amd64-unsigned` apt knows.
fn newest_6_12() -> Result<String> {
    let search = || -> Vec<String> {
        let out = Command::new("apt-cache")
            .args([
                "search",
                "--names-only",
                r"^linux-image-6\.12\..*-cloud-amd64-unsigned$",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        out.lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
            .collect()
    };
    let mut found = search();
    if found.is_empty() {
        sh(Command::new("apt-get").args(["update", "-qq"]))?;
        found = search();
    }
    // linux-image-6.12.N+deb12-...: the highest N.
    let patch = |p: &String| -> u32 {
        p.trim_start_matches("linux-image-6.12.")
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0)
    };
    found.into_iter().max_by_key(patch).ok_or_else(|| {
        "apt knows no linux-image-6.12.*-cloud-amd64-unsigned (bookworm-security)".into()
    })
}

/// The executables of integration tests `names` of the tests crate
/// (tests/tests/NAME.rs), in that order.
fn test_executables(names: &[&str]) -> Result<Vec<PathBuf>> {
    let mut args = vec!["--package", "tests"];
    for n in names {
        args.extend(["--test", n]);
    }
    let built = crate::testrun::test_executables(&args)?;
    names
        .iter()
        .map(|n| {
            let src = format!("tests/tests/{n}.rs");
            built
                .iter()
                .find(|t| t.src == src)
                .map(|t| t.exe.clone())
                .ok_or_else(|| format!("cargo test --no-run built no {src}"))
        })
        .collect()
}

/// virtiofsd sharing the host's root with the guest (its /usr as
/// GUEST_USR) on a socket only for this run (not under /tmp or the build
/// tree), its stderr kept in `work/TAG.virtiofsd`; once the socket is there.
fn start_virtiofsd(tag: &str, work: &Path) -> Result<(std::process::Child, PathBuf)> {
    let sock_dir = PathBuf::from("/run/vm-sandbox-kernels");
    std::fs::create_dir_all(&sock_dir).map_err(|e| e.to_string())?;
    let sock = sock_dir.join(format!("{tag}.sock"));
    let _ = std::fs::remove_file(&sock);
    let log_path = work.join(format!("{tag}.virtiofsd"));
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    // virtiofsd in a mount namespace of its own whose /usr is the guest's
    // (GUEST_USR): the host's mounts are left as they are.
    let mut virtiofsd = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-euc"])
        .arg(SLIM_USR)
        .arg("sh")
        .arg(sock_dir.join(format!("{tag}.usr")))
        .args(GUEST_USR)
        .arg("--")
        .arg(tools::virtiofsd())
        .arg("--socket-path")
        .arg(&sock)
        .args(["--shared-dir", "/", "--readonly", "--sandbox", "none"])
        // The host's mounts below / (/dev, /proc, ...) as plain
        // directories: the guest mounts its own on them.
        .arg("--no-announce-submounts")
        .args(["--inode-file-handles=never", "--cache", "auto"])
        .stderr(log)
        .spawn()
        .map_err(|e| format!("virtiofsd: {e}"))?;
    let start = Instant::now();
    while !sock.exists() && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !sock.exists() {
        let _ = virtiofsd.kill();
        let _ = virtiofsd.wait();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        return Err(format!(
            "{tag}: virtiofsd made no socket within 10 s:\n{log}"
        ));
    }
    Ok((virtiofsd, sock))
}

/// Boots `kernel` with the runner initramfs and `script`; returns the
/// guest's console.
fn boot(tag: &str, kernel: &str, script: &str, disk: Option<&Path>) -> Result<String> {
    // The 6.1 guest tests the Landlock floor without cgroup v2: under TCG,
    // with a `cargo build --release` beside it, its first memory cgroup
    // once left both vCPUs stuck in kmalloc for 20 minutes (soft lockups
    // in cgroup_mkdir and a path walk); the 6.12 guest, which tests the
    // cgroups, mounts cgroup2 with its controllers.
    let cgroups = u8::from(tag != "6.1");
    let dir = tools::cache().join("kernels").join(tag);
    tools::build_guest(&dir, kernel, RUNNER_INIT, MODULES)?;
    let work = target_dir().join("kernels");
    std::fs::create_dir_all(&work).map_err(|e| e.to_string())?;
    let script_path = work.join(format!("{tag}.sh"));
    std::fs::write(&script_path, script).map_err(|e| e.to_string())?;
    let (mut virtiofsd, sock) = start_virtiofsd(tag, &work)?;
    let console = work.join(format!("{tag}.console"));
    let mut qemu = tools::qemu_command();
    qemu.arg("-no-reboot")
        .args(["-machine", "q35,accel=tcg,memory-backend=mem", "-smp", "2"])
        .args([
            "-object",
            "memory-backend-memfd,id=mem,size=2G,share=on",
            "-m",
            "2G",
        ])
        .arg("-kernel")
        .arg(tests::guest::kernel_in(&dir))
        .arg("-initrd")
        .arg(tests::guest::initramfs_in(&dir))
        .arg("-append")
        .arg(format!(
            // No lsm=: Debian's CONFIG_LSM lists landlock (6.1 and 6.12),
            // and the matrix boots each kernel as its users do.
            "console=ttyS0 panic=-1 vmsandbox.cgroups={cgroups} vmsandbox.run={}",
            script_path.display()
        ))
        .arg("-chardev")
        .arg(format!("socket,id=vfs,path={}", sock.display()))
        .args(["-device", "vhost-user-fs-pci,chardev=vfs,tag=hostroot"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .stdout(Stdio::null());
    if let Some(d) = disk {
        qemu.arg("-drive")
            .arg(format!("file={},if=virtio,format=raw", d.display()));
    }
    eprintln!("xtask: booting {kernel} (TCG): {}", console.display());
    let mut child = qemu.spawn().map_err(|e| format!("qemu: {e}"))?;
    let start = Instant::now();
    let status = wait_for_guest(&mut child, &console, tag, start)?;
    let _ = virtiofsd.kill();
    let _ = virtiofsd.wait();
    let _ = std::fs::remove_file(&sock);
    let text = std::fs::read_to_string(&console).unwrap_or_default();
    eprintln!(
        "xtask: {kernel}: guest ran {:.0} s",
        start.elapsed().as_secs_f64()
    );
    match status {
        None => Err(format!("{kernel}: no poweroff within {LIMIT:?}:\n{text}")),
        Some(_) if !text.contains("KERNEL-DONE") => {
            Err(format!("{kernel}: the guest did not finish:\n{text}"))
        }
        Some(_) => Ok(text),
    }
}

/// Waits for the guest's QEMU at most [`LIMIT`] from `start`, saying
/// every 30 s how far the guest is; None when it ran out (QEMU killed).
fn wait_for_guest(
    child: &mut std::process::Child,
    console: &Path,
    tag: &str,
    start: Instant,
) -> Result<Option<std::process::ExitStatus>> {
    let mut said = Instant::now();
    loop {
        if let Some(s) = child.try_wait().map_err(|e| e.to_string())? {
            return Ok(Some(s));
        }
        if start.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        // A line every 30 s: a slow stage is seen, not guessed.
        if said.elapsed() >= PROGRESS_EVERY {
            said = Instant::now();
            let text = std::fs::read_to_string(console).unwrap_or_default();
            let last = text
                .lines()
                .rev()
                .find_map(|l| l.strip_prefix("KERNEL-PROGRESS "))
                .unwrap_or("booting");
            eprintln!(
                "xtask: {tag}: {:.0} s in the guest; {last}",
                start.elapsed().as_secs_f64()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The value after `KEY ` on the console's line starting with `KEY`.
fn line<'a>(console: &'a str, key: &str) -> Option<&'a str> {
    console
        .lines()
        .find_map(|l| l.trim_end().strip_prefix(key)?.strip_prefix(' '))
}

/// Every row, or only the kernel named (`6.12`, `6.1`).
pub fn run(only: Option<&str>) -> Result {
    let wanted = |tag: &str| only.is_none_or(|o| o == tag);
    crate::deps()?;
    tools::tools()?;
    sh(cargo().args(["build", "--workspace", "--bins"]))?;
    let tests = test_executables(&["escape_matrix", "vm_init", "cgroups"])?;
    let bin = target_dir().join("debug");
    let mut rows: Vec<(String, String, String, bool)> = Vec::new();

    // Debian 12's 6.12: every daemon fully sandboxed, the same errnos.
    if wanted("6.12") {
        let k612 = newest_6_12()?;
        // Every 30 s the last test started, for the host's progress line.
        let mut script = format!(
            "echo \"KERNEL-ABI $({} --landlock-abi)\"\n\
         (while :; do sleep 30; echo \"KERNEL-PROGRESS $(cat /tmp/*.out 2>/dev/null | grep -E '^test ' | tail -1)\"; done) &\n",
            bin.join("probe").display()
        );
        for (exe, name) in tests.iter().zip(["escape-matrix", VM_INIT, "cgroups"]) {
            script.push_str(&format!(
                "{} --test-threads 2 --show-output > /tmp/{name}.out 2>&1; rc=$?\n\
             grep -E '^(test |FAIL|test result)' /tmp/{name}.out\n\
             grep -A3 panicked /tmp/{name}.out | head -40\n\
             echo \"KERNEL-RESULT {name} rc=$rc\"\n",
                exe.display()
            ));
        }
        let console = boot("6.12", &k612, &script, None)?;
        let abi = line(&console, "KERNEL-ABI").unwrap_or("?").to_owned();
        for name in ["escape-matrix", VM_INIT, "cgroups"] {
            let ok = line(&console, &format!("KERNEL-RESULT {name}")) == Some("rc=0")
                && console.contains("test result: ok");
            if !ok {
                eprintln!("{console}");
            }
            rows.push((k612.clone(), abi.clone(), format!("{name} tests"), ok));
        }
    }

    // Debian 12's 6.1: refused in one line, nothing created; the opt-out.
    if wanted("6.1") {
        let k61 = tools::cloud_kernel_package()?;
        let disk = target_dir().join("kernels/ext4.img");
        let _ = std::fs::remove_file(&disk);
        sh(Command::new("truncate").args(["-s", "32M"]).arg(&disk))?;
        sh(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&disk))?;
        let script = weak_kernel_script(&bin);
        let console = boot("6.1", &k61, &script, Some(&disk))?;
        let abi = line(&console, "KERNEL-ABI").unwrap_or("?").to_owned();
        for check in [
            "vm-init-refuses",
            "wrappers-refuse",
            "nothing-created",
            "opt-out-runs",
        ] {
            let ok = line(&console, &format!("KERNEL-CHECK {check}")) == Some("ok");
            if !ok {
                eprintln!("{console}");
            }
            rows.push((k61.clone(), abi.clone(), check.to_owned(), ok));
        }
    }

    println!("\n{:<48} {:<6} {:<20} result", "kernel", "ABI", "what");
    for (k, abi, what, ok) in &rows {
        println!(
            "{k:<48} {abi:<6} {what:<20} {}",
            if *ok { "ok" } else { "FAILED" }
        );
    }
    if !rows.is_empty() && rows.iter().all(|r| r.3) {
        Ok(())
    } else {
        Err("the kernel matrix failed (see above)".into())
    }
}

/// The bench's section 6 (a VM start with its cgroups against one
/// without) in the 6.12 guest, for a host without cgroup v2: its
/// `BENCH-CGROUPS` line, after the key.
pub fn bench_cgroups_in_guest() -> Result<String> {
    let k612 = newest_6_12()?;
    let script = format!(
        "CARGO_TARGET_DIR={} {} bench-cgroups\n",
        target_dir().display(),
        target_dir().join("debug/xtask").display()
    );
    let console = boot("6.12", &k612, &script, None)?;
    line(&console, "BENCH-CGROUPS")
        .map(str::to_owned)
        .ok_or_else(|| format!("no BENCH-CGROUPS line from the 6.12 guest:\n{console}"))
}

/// The 6.1 guest's checks, each one `KERNEL-CHECK NAME ok|failed` line.
fn weak_kernel_script(bin: &Path) -> String {
    let b = bin.display();
    // The VM directory w, made as tests::new_vm::NewVm makes a stand-in's.
    let w = VmDir::new("w");
    let name = |p: PathBuf| {
        p.file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned()
    };
    let (config, fs) = (name(w.config()), name(w.storage()));
    let kernel = w.config_file(config::KERNEL);
    let kernel = kernel.display();
    let vm_init = VM_INIT;
    let wrappers = WRAPPERS.join(" ");
    format!(
        r#"probe={b}/probe
echo "KERNEL-ABI $($probe --landlock-abi)"
check() {{ if [ "$2" = 1 ]; then echo "KERNEL-CHECK $1 ok"; else echo "KERNEL-CHECK $1 failed: $3"; fi; }}
state=/run/ext4/state
bin=/run/vm-sandbox-bin
mkdir -p $state/w/{config} $state/w/{fs} $bin
chmod 700 $state
: > $state/{kernel}
for b in {vm_init} {wrappers}; do cp {b}/$b $bin/; done
cp {b}/standin $bin/vmm-cooperative
cp {b}/standin $bin/virtiofsd-ok
groupadd -r kvm 2>/dev/null; chgrp kvm /dev/kvm; chmod 660 /dev/kvm
vm="$bin/{vm_init} --parent-pid $$ --state-dir $state --vmm $bin/vmm-cooperative --virtiofsd $bin/virtiofsd-ok"
# Refused, one line naming the ABI and what it lacks, exit 111.
$vm w > /tmp/refused.out 2>&1; rc=$?
out=$(cat /tmp/refused.out)
echo "{vm_init}: rc=$rc: $out"
n=$(printf '%s\n' "$out" | wc -l)
case "$out" in *"Landlock ABI "*" on this kernel, 6 required: it lacks "*) ok=1 ;; *) ok=0 ;; esac
[ $rc = 111 ] && [ $n = 1 ] || ok=0
check vm-init-refuses $ok "$out"
ok=1
for w in {wrappers}; do
    out=$($bin/$w --allow-no-cgroups $state/w 2>&1); rc=$?
    echo "$w: rc=$rc: $out"
    case "$out" in *"Landlock ABI "*" on this kernel, 6 required: it lacks "*) ;; *) ok=0 ;; esac
    [ $rc = 111 ] || ok=0
done
check wrappers-refuse $ok
left=$(ls $state/w)
[ "$left" = "$(printf '{config}\n{fs}')" ] && ok=1 || ok=0
check nothing-created $ok "$left"
# The explicit opt-out: a VM runs, each program says so in one line.
$vm --allow-weaker-landlock --allow-no-cgroups w > /tmp/weak.out 2>&1 &
pid=$!
i=0; while [ $i -lt 100 ] && ! grep -q ": ready" /tmp/weak.out; do sleep 0.1; i=$((i+1)); done
kill -TERM $pid; wait $pid; rc=$?
cat /tmp/weak.out
weak=$(grep -c "running .*with a weaker sandbox" /tmp/weak.out)
grep -q ": ready" /tmp/weak.out && [ $rc = 0 ] && [ "$weak" -ge 3 ] && ok=1 || ok=0
check opt-out-runs $ok "rc=$rc weak-lines=$weak"
"#
    )
}
