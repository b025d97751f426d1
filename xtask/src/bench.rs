//! `cargo xtask bench`: what the sandbox costs the host, each figure
//! measured in the same run as its reference, median and spread (p10-p90)
//! over repeated runs. Prints a table and writes bench.json in cargo's
//! target directory.
//!
//! 1. service setup: a wrapper's whole policy up to the exec of the daemon
//!    (/bin/true), against bubblewrap doing the equivalent and against
//!    `unshare --pid --mount --fork --mount-proc true`; each minus the
//!    time of /bin/true spawned the same way (the floor of any spawn).
//!    And wrap-gpu's seccomp filter: compile, install and exec under it,
//!    against the same exec without it.
//! 2. VM start (vm-init to readiness) and stop (SIGTERM to exit), stand-in
//!    daemons, the VMM's own exit being immediate.
//! 3. memory: VmRSS (and its anonymous part) of the outer vm-init and PID 1;
//!    the size of each release binary.
//! 4. scale: 1, 10, 50, 100 VMs started at once, time and memory per VM,
//!    nothing left after.
//! 5. virtiofsd serving 1,000 small files to the test guest, with and
//!    without the sandbox, alternating in one run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sandbox_core::contract::bin::{VM, VM_INIT, WRAP_VIRTIOFSD};
use sandbox_core::contract::{config, VmDir};
use tests::new_vm::NewVm;

use crate::{cargo, link, root, sh, target_dir, tools, Result};

const TOP: &str = "/run/vm-sandbox-bench";

#[derive(Default)]
struct Report {
    rows: Vec<(String, String, String)>,
    json: Vec<String>,
}

impl Report {
    fn row(&mut self, what: &str, value: String, note: String) {
        println!("{what:<48} {value:<28} {note}");
        self.rows.push((what.into(), value, note));
    }

    fn json(&mut self, key: &str, value: String) {
        self.json.push(format!("  \"{key}\": {value}"));
    }
}

/// Median, p10 and p90 of a sample.
fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.1), at(0.9))
}

fn ms(s: (f64, f64, f64)) -> String {
    format!("{:.2} ms ({:.2}-{:.2})", s.0, s.1, s.2)
}

fn time_cmd(cmd: &[&str]) -> Result<f64> {
    let start = Instant::now();
    let status = Command::new(cmd[0])
        .args(&cmd[1..])
        .status()
        .map_err(|e| format!("{}: {e}", cmd[0]))?;
    if !status.success() {
        return Err(format!("{cmd:?}: {status}"));
    }
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

fn link_binaries(bin: &Path) -> Result {
    std::fs::create_dir_all(bin).map_err(|e| e.to_string())?;
    let release = target_dir().join("release");
    let debug = target_dir().join("debug");
    let vm = VM.map(|b| (&release, b));
    let test = [
        (&debug, "vm-harness"),
        (&debug, "standin"),
        (&release, "seccomp-exec"),
    ];
    for (dir, b) in vm.into_iter().chain(test) {
        link(&dir.join(b), &bin.join(b))?;
    }
    for s in ["vmm-cooperative", "virtiofsd-ok"] {
        link(&bin.join("standin"), &bin.join(s))?;
    }
    Ok(())
}

fn standin_vm(state: &Path, name: &str) -> Result {
    NewVm::create(state.join(name))
        .map(drop)
        .map_err(|e| e.to_string())
}

fn start_vm(bin: &Path, state: &Path, name: &str) -> Result<Child> {
    start_vm_with(bin, state, name, tests::no_cgroups())
}

/// [`start_vm`] with vm-init's options `extra` (the cgroup opt-out, when
/// the host needs it, is the caller's to give).
fn start_vm_with(
    bin: &Path,
    state: &Path,
    name: &str,
    extra: &[impl AsRef<std::ffi::OsStr>],
) -> Result<Child> {
    Command::new(bin.join(VM_INIT))
        .args(extra)
        .args([
            "--parent-pid",
            &std::process::id().to_string(),
            "--state-dir",
        ])
        .arg(state)
        .arg("--vmm")
        .arg(bin.join("vmm-cooperative"))
        .arg("--virtiofsd")
        .arg(bin.join("virtiofsd-ok"))
        .arg(name)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("vm-init: {e}"))
}

fn wait_ready(child: &mut Child) -> Result {
    let mut r = BufReader::new(child.stderr.as_mut().ok_or("no stderr")?);
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).map_err(|e| e.to_string())? == 0 {
            return Err("vm-init ended before it was ready".into());
        }
        if l.contains(": ready") {
            return Ok(());
        }
    }
}

fn stop_vm(mut child: Child) -> Result<f64> {
    let start = Instant::now();
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .map_err(|e| e.to_string())?;
    let status = child.wait().map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("vm-init: {status}"));
    }
    Ok(start.elapsed().as_secs_f64() * 1000.0)
}

fn status_kib(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Proportional set size: shared pages (libc, the binary) divided among
/// the processes that map them; what a VM really adds to the host.
fn pss_kib(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn pid1_of(outer: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{outer}/task/{outer}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn host_mounts() -> usize {
    std::fs::read_to_string("/proc/self/mountinfo").map_or(0, |m| m.lines().count())
}

pub fn run() -> Result {
    let total = Instant::now();
    if !Command::new("sh")
        .args(["-c", "command -v bwrap"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        sh(Command::new("apt-get")
            .args(["install", "-y", "-qq", "bubblewrap"])
            .env("DEBIAN_FRONTEND", "noninteractive"))?;
    }
    crate::deps()?;
    tools::tools()?;
    tools::guest()?;
    let mut release = cargo();
    release.args(["build", "--release"]);
    for b in VM {
        release.args(["--package", b]);
    }
    sh(&mut release)?;
    sh(cargo().args(["build", "--package", "tests", "--bins"]))?;
    sh(cargo().args([
        "build",
        "--release",
        "--package",
        "tests",
        "--bin",
        "seccomp-exec",
    ]))?;
    // The stand-in VMs run the cloud-hypervisor profile.
    crate::host::kvm_as_udev_makes_it()?;
    let report = in_top(measure)?;
    let json = format!("{{\n{}\n}}\n", report.json.join(",\n"));
    let out = target_dir().join("bench.json");
    std::fs::write(&out, json).map_err(|e| e.to_string())?;
    println!(
        "\nwrote {} ({:.0} s in all)",
        out.display(),
        total.elapsed().as_secs_f64()
    );
    Ok(())
}

fn measure(bin: &Path, state: &Path) -> Result<Report> {
    let mut r = Report::default();
    println!(
        "\n{:<48} {:<28} reference / target",
        "measure", "median (p10-p90)"
    );

    setup_costs(&mut r, bin, state)?;
    seccomp_cost(&mut r, bin)?;
    let memory = vm_cycle(&mut r, bin, state)?;
    memory_and_sizes(&mut r, bin, memory)?;
    scale(&mut r, bin, state)?;
    cgroup_cost(&mut r, bin, state)?;
    services_mode(&mut r, bin, state)?;
    guest_files(&mut r, bin, state)?;
    Ok(r)
}

/// What wrap-virtiofsd does, as bubblewrap says it: the VM's namespaces
/// (user, PID, network, IPC, UTS; bwrap makes them for its one process)
/// and a root holding only virtiofsd's view of `fs`.
fn bwrap_argv(fs: &str) -> Vec<&str> {
    vec![
        "bwrap",
        "--unshare-user",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--die-with-parent",
        "--new-session",
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
        "--symlink",
        "usr/bin",
        "/bin",
        "--ro-bind",
        "/etc/ld.so.cache",
        "/etc/ld.so.cache",
        "--proc",
        "/proc",
        "--dev-bind",
        "/dev/null",
        "/dev/null",
        "--bind",
        fs,
        fs,
        "/bin/true",
    ]
}

/// unshare's floor: a PID and mount namespace, and a /proc.
const UNSHARE: [&str; 6] = [
    "unshare",
    "--pid",
    "--mount",
    "--fork",
    "--mount-proc",
    "true",
];
/// What the VM's three namespaces beyond user, PID and mount cost.
const VM_BASE: [&str; 6] = ["unshare", "--user", "--pid", "--mount", "--fork", "true"];
const VM_ALL: [&str; 9] = [
    "unshare", "--user", "--pid", "--mount", "--net", "--ipc", "--uts", "--fork", "true",
];

/// Section 1: a wrapper's setup against bubblewrap and unshare, and the
/// GPU daemon's seccomp filter at exec.
fn setup_costs(r: &mut Report, bin: &Path, state: &Path) -> Result {
    // 1. Service setup, five interleaved rounds of each.
    standin_vm(state, "setup")?;
    let fs = state.join("setup/fs");
    let fs_s = fs.to_str().ok_or("non-UTF-8 path")?;
    let bwrap = bwrap_argv(fs_s);
    let (mut ours, mut ours_floor, mut bw, mut un, mut floor) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut base, mut all) = (vec![], vec![]);
    for _ in 0..5 {
        let (wrap, truth) = harness_round(bin, state)?;
        ours.extend(wrap);
        ours_floor.extend(truth);
        for _ in 0..20 {
            bw.push(time_cmd(&bwrap)?);
            un.push(time_cmd(&UNSHARE)?);
            floor.push(time_cmd(&["/bin/true"])?);
            base.push(time_cmd(&VM_BASE)?);
            all.push(time_cmd(&VM_ALL)?);
        }
    }
    let (ours_s, ours_floor_s, bw_s, un_s, floor_s) = (
        stats(ours),
        stats(ours_floor),
        stats(bw),
        stats(un),
        stats(floor),
    );
    let net = |s: (f64, f64, f64), f: (f64, f64, f64)| (s.0 - f.0).max(0.001);
    let (ours_net, bw_net, un_net) = (
        net(ours_s, ours_floor_s),
        net(bw_s, floor_s),
        net(un_s, floor_s),
    );
    r.row(
        "1. wrap-virtiofsd, policy to exec of the daemon",
        ms(ours_s),
        format!(
            "{ours_net:.2} ms above spawning /bin/true ({:.2})",
            ours_floor_s.0
        ),
    );
    r.row(
        "   bubblewrap, the equivalent",
        ms(bw_s),
        format!("{bw_net:.2} ms above /bin/true ({:.2})", floor_s.0),
    );
    r.row(
        "   unshare --pid --mount --fork --mount-proc",
        ms(un_s),
        format!("{un_net:.2} ms above /bin/true"),
    );
    r.row(
        "   ratio to bubblewrap",
        format!("{:.2}", ours_net / bw_net),
        "target <= 0.5".into(),
    );
    r.row(
        "   ratio to the unshare floor",
        format!("{:.2}", ours_net / un_net),
        "target <= 1.5".into(),
    );
    r.json("setup_ms", format!("{{\"wrapper\": {:.3}, \"bwrap\": {:.3}, \"unshare\": {:.3}, \"true_harness\": {:.3}, \"true_host\": {:.3}}}", ours_s.0, bw_s.0, un_s.0, ours_floor_s.0, floor_s.0));
    report_vm_namespaces(r, stats(base), stats(all));
    r.json("setup_ratio_bwrap", format!("{:.3}", ours_net / bw_net));
    r.json("setup_ratio_unshare", format!("{:.3}", ours_net / un_net));
    Ok(())
}

/// One round of vm-harness's bench from the VM's PID 1: wrap-virtiofsd's
/// whole policy to the exec of /bin/true, and /bin/true alone, each 20
/// times, in ms.
fn harness_round(bin: &Path, state: &Path) -> Result<(Vec<f64>, Vec<f64>)> {
    let out = Command::new(bin.join("vm-harness"))
        .args([
            "--state-dir",
            state.to_str().unwrap(),
            "--slot",
            "255",
            "--name",
            "setup",
            "--scenario",
            "bench",
        ])
        .arg("--bench-wrapper")
        .arg(bin.join(WRAP_VIRTIOFSD))
        .args(["--iterations", "20"])
        .output()
        .map_err(|e| e.to_string())?;
    let (mut wrap, mut truth) = (vec![], vec![]);
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        let nums = line
            .split_whitespace()
            .skip(1)
            .filter_map(|n| n.parse::<f64>().ok())
            .map(|us| us / 1000.0);
        if line.starts_with("bench-wrap-us") {
            wrap.extend(nums);
        } else if line.starts_with("bench-true-us") {
            truth.extend(nums);
        }
    }
    if wrap.is_empty() {
        return Err(format!(
            "vm-harness bench: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok((wrap, truth))
}

/// What the VM's namespaces beyond user, PID and mount cost.
fn report_vm_namespaces(r: &mut Report, base_s: (f64, f64, f64), all_s: (f64, f64, f64)) {
    r.row(
        "   unshare --user --pid --mount",
        ms(base_s),
        "the namespaces of the seed".into(),
    );
    r.row(
        "   ... and --net --ipc --uts",
        ms(all_s),
        format!(
            "{:.2} ms for the VM's network, IPC and UTS namespaces",
            all_s.0 - base_s.0
        ),
    );
    r.json(
        "vm_namespaces_ms",
        format!(
            "{{\"user_pid_mount\": {:.3}, \"and_net_ipc_uts\": {:.3}}}",
            base_s.0, all_s.0
        ),
    );
}

/// Section 1, last row: wrap-gpu's seccomp filter at exec.
fn seccomp_cost(r: &mut Report, bin: &Path) -> Result {
    // The GPU daemon's seccomp filter at exec: compiled and installed as
    // policy::apply does, then /bin/true runs under it; against the same
    // program without the filter, interleaved.
    let (mut filtered, mut unfiltered) = (vec![], vec![]);
    let exec = bin.join("seccomp-exec");
    let exec = exec.to_str().ok_or("non-UTF-8 path")?;
    for _ in 0..100 {
        filtered.push(time_cmd(&[exec, "--filter", "/bin/true"])?);
        unfiltered.push(time_cmd(&[exec, "--none", "/bin/true"])?);
    }
    let (filtered_s, unfiltered_s) = (stats(filtered), stats(unfiltered));
    r.row(
        "   wrap-gpu's seccomp filter, at exec",
        ms(filtered_s),
        format!(
            "{:.3} ms above the same exec without it ({:.2})",
            filtered_s.0 - unfiltered_s.0,
            unfiltered_s.0
        ),
    );
    r.json(
        "seccomp_filter_ms",
        format!("{:.4}", filtered_s.0 - unfiltered_s.0),
    );
    Ok(())
}

/// What the first VM of section 2 uses, for section 3.
#[derive(Debug, Default, Clone, Copy)]
struct Memory {
    outer_rss: u64,
    pid1_rss: u64,
    outer_anon: u64,
    pid1_anon: u64,
    pss: u64,
}

/// Section 2: VM start and stop with stand-ins.
fn vm_cycle(r: &mut Report, bin: &Path, state: &Path) -> Result<Memory> {
    // 2. VM start and stop.
    standin_vm(state, "cycle")?;
    let mut m = Memory::default();
    let (starts, stops) = cycles(
        20,
        || start_vm(bin, state, "cycle"),
        |child| {
            let pid1 = pid1_of(child.id()).ok_or("no PID 1")?;
            m = Memory {
                outer_rss: status_kib(child.id(), "VmRSS"),
                pid1_rss: status_kib(pid1, "VmRSS"),
                outer_anon: status_kib(child.id(), "RssAnon"),
                pid1_anon: status_kib(pid1, "RssAnon"),
                pss: pss_kib(child.id()) + pss_kib(pid1),
            };
            Ok(())
        },
    )?;
    r.row(
        "2. VM start: vm-init to ready (stand-ins)",
        ms(stats(starts.clone())),
        "target <= 20 ms".into(),
    );
    r.row(
        "   VM stop: SIGTERM to exit (VMM exits at once)",
        ms(stats(stops.clone())),
        "target <= 10 ms".into(),
    );
    r.json("vm_start_ms", format!("{:.3}", stats(starts).0));
    r.json("vm_stop_ms", format!("{:.3}", stats(stops).0));
    Ok(m)
}

/// `n` VM cycles, each VM started by `start`, timed to ready and from
/// SIGTERM to its exit (ms); `first` looks at the first VM while it runs.
fn cycles(
    n: usize,
    start: impl Fn() -> Result<Child>,
    mut first: impl FnMut(&Child) -> Result,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut starts, mut stops) = (vec![], vec![]);
    for i in 0..n {
        let t = Instant::now();
        let mut child = start()?;
        wait_ready(&mut child)?;
        starts.push(t.elapsed().as_secs_f64() * 1000.0);
        if i == 0 {
            first(&child)?;
        }
        stops.push(stop_vm(child)?);
    }
    Ok((starts, stops))
}

/// Section 3: vm-init's memory and the binaries' sizes.
fn memory_and_sizes(r: &mut Report, bin: &Path, m: Memory) -> Result {
    // 3. Memory and sizes.
    let Memory {
        outer_rss,
        pid1_rss,
        outer_anon,
        pid1_anon,
        pss,
    } = m;
    r.row(
        "3. VmRSS outer + PID 1",
        format!("{} + {} KiB", outer_rss, pid1_rss),
        "target <= 1024 KiB together".into(),
    );
    r.row(
        "   of which anonymous (RssAnon)",
        format!("{outer_anon} + {pid1_anon} KiB"),
        "the rest is libc and the binary, shared".into(),
    );
    r.row(
        "   Pss outer + PID 1",
        format!("{pss} KiB"),
        "shared pages divided among their users".into(),
    );
    r.json("rss_kib", format!("{{\"outer\": {outer_rss}, \"pid1\": {pid1_rss}, \"outer_anon\": {outer_anon}, \"pid1_anon\": {pid1_anon}, \"pss_both\": {pss}}}"));
    let mut sizes = vec![];
    for b in VM {
        let size = std::fs::metadata(bin.join(b))
            .map_err(|e| e.to_string())?
            .len();
        r.row(
            &format!("   {b} (release, stripped)"),
            format!("{} KiB", size / 1024),
            "target <= 1024 KiB".into(),
        );
        sizes.push(format!("\"{b}\": {size}"));
    }
    r.json("binary_bytes", format!("{{{}}}", sizes.join(", ")));
    Ok(())
}

/// Section 4: many VMs at once, and nothing left after.
fn scale(r: &mut Report, bin: &Path, state: &Path) -> Result {
    // 4. Scale.
    let mounts_before = host_mounts();
    let mut per_vm = vec![];
    for n in [1usize, 10, 50, 100] {
        for i in 0..n {
            standin_vm(state, &format!("s{i}"))?;
        }
        let start = Instant::now();
        let mut children = Vec::with_capacity(n);
        for i in 0..n {
            children.push(start_vm(bin, state, &format!("s{i}"))?);
        }
        for c in &mut children {
            wait_ready(c)?;
        }
        let up = start.elapsed().as_secs_f64() * 1000.0;
        let mut kib = 0;
        for c in &children {
            kib += status_kib(c.id(), "RssAnon")
                + pid1_of(c.id()).map_or(0, |p| status_kib(p, "RssAnon"));
        }
        let start = Instant::now();
        for c in &children {
            Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status()
                .map_err(|e| e.to_string())?;
        }
        for mut c in children {
            let s = c.wait().map_err(|e| e.to_string())?;
            if !s.success() {
                return Err(format!("a VM of {n} ended with {s}"));
            }
        }
        let down = start.elapsed().as_secs_f64() * 1000.0;
        per_vm.push((n, up / n as f64));
        r.row(
            &format!("4. {n:>3} VMs at once: all ready / all stopped"),
            format!("{up:.0} ms / {down:.0} ms"),
            format!(
                "{:.2} ms and {} KiB anonymous (vm-init) per VM",
                up / n as f64,
                kib / n as u64
            ),
        );
        r.json(
            &format!("scale_{n}"),
            format!(
                "{{\"ready_ms\": {up:.1}, \"stopped_ms\": {down:.1}, \"anon_kib_per_vm\": {}}}",
                kib / n as u64
            ),
        );
    }
    let flat = per_vm.last().map_or(0.0, |l| l.1) / per_vm.first().map_or(1.0, |f| f.1);
    r.row(
        "   per-VM start cost at 100 / at 1",
        format!("{flat:.2}"),
        "flat is 1.0".into(),
    );
    r.json("scale_ratio_100_to_1", format!("{flat:.3}"));
    report_leftovers(r, state, mounts_before)
}

/// What the VMs left: sockets in their directories, processes, mounts.
fn report_leftovers(r: &mut Report, state: &Path, mounts_before: usize) -> Result {
    let leftovers: Vec<String> = std::fs::read_dir(state)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok())
        .flat_map(|e| {
            std::fs::read_dir(e.path())
                .into_iter()
                .flatten()
                .filter_map(|f| f.ok())
        })
        .map(|f| f.path().display().to_string())
        .filter(|p| p.ends_with(".sock"))
        .collect();
    let stray = Command::new("pgrep")
        .args(["-f", TOP])
        .output()
        .map_err(|e| e.to_string())?;
    let stray = String::from_utf8_lossy(&stray.stdout).lines().count();
    r.row(
        "   left after: sockets, processes, mounts",
        format!(
            "{} / {} / {:+}",
            leftovers.len(),
            stray,
            host_mounts() as i64 - mounts_before as i64
        ),
        "all 0".into(),
    );
    Ok(())
}

/// Section 6: what the VM's cgroup costs a start, side by side with the
/// same start without one (a parent without controllers and the opt-out).
/// Needs cgroup v2 with memory, pids and cpu: a host without says so.
fn cgroup_cost(r: &mut Report, bin: &Path, state: &Path) -> Result {
    if !tests::no_cgroups().is_empty() {
        // Measured where cgroup v2 is: the kernel matrix's 6.12 guest
        // (TCG: slower starts, the ratio is what counts).
        let said = crate::kernels::bench_cgroups_in_guest()?;
        let ratio = said.rsplit(' ').next().unwrap_or("?").to_owned();
        r.row(
            "6. VM start with its cgroups / without",
            said.rsplit_once(" ratio ")
                .map_or(said.clone(), |s| s.0.to_owned()),
            format!("ratio {ratio}, in the 6.12 guest (no cgroup v2 here)"),
        );
        r.json("cgroup_start_ratio", ratio);
        return Ok(());
    }
    // A parent whose own parent turns no controller on for it.
    let bare = Path::new("/sys/fs/cgroup/vm-sandbox-bench-bare");
    std::fs::create_dir_all(bare.join("parent")).map_err(|e| e.to_string())?;
    let without = [
        "--allow-no-cgroups".to_string(),
        "--cgroup-parent".to_string(),
        bare.join("parent").display().to_string(),
    ];
    standin_vm(state, "cg")?;
    // Alternating, one start each way at a time: the machine's load
    // weighs on both alike.
    let (mut with, mut none) = (vec![], vec![]);
    let once = |extra: &[String]| cycles(1, || start_vm_with(bin, state, "cg", extra), |_| Ok(()));
    for _ in 0..20 {
        with.extend(once(&[])?.0);
        none.extend(once(&without)?.0);
    }
    let _ = std::fs::remove_dir(bare.join("parent"));
    let _ = std::fs::remove_dir(bare);
    let (w, n) = (stats(with), stats(none));
    r.row(
        "6. VM start with its cgroups / without",
        format!("{:.2} ms / {:.2} ms", w.0, n.0),
        format!("ratio {:.2}", w.0 / n.0),
    );
    // For the kernel matrix's guest (cgroups_only): one line to grep.
    println!(
        "BENCH-CGROUPS {:.2} ms / {:.2} ms ratio {:.2}",
        w.0,
        n.0,
        w.0 / n.0
    );
    r.json("cgroup_start_ratio", format!("{:.3}", w.0 / n.0));
    Ok(())
}

/// `xtask bench-cgroups`, run by [`cgroup_cost`] in the kernel matrix's
/// 6.12 guest on a host without cgroup v2: section 6 alone, with the
/// binaries the host's bench built.
pub fn cgroups_only() -> Result {
    crate::host::kvm_as_udev_makes_it()?;
    in_top(|bin, state| cgroup_cost(&mut Report::default(), bin, state))
}

/// `f` with the bench's binaries and state dir in a tmpfs of its own at
/// TOP, removed after.
fn in_top<T>(f: impl FnOnce(&Path, &Path) -> Result<T>) -> Result<T> {
    let top = PathBuf::from(TOP);
    let _ = std::fs::remove_dir_all(&top);
    let _mount = crate::host::top_mount(&top)?;
    let (bin, state) = (top.join("bin"), top.join("state"));
    link_binaries(&bin)?;
    crate::host::state_dir(&state)?;
    let result = f(&bin, &state);
    let _ = std::fs::remove_dir_all(&top);
    result
}

/// The sum of Pss over vm-init's processes and the VM's s6 processes
/// (s6-svscan, s6-supervise, s6-ipcserverd, ...) below `outer`: what a VM
/// of the `--services` mode adds, its daemons (stand-ins) left out.
fn sandbox_pss_kib(outer: u32) -> u64 {
    let mut total = 0;
    let mut todo = vec![outer];
    while let Some(pid) = todo.pop() {
        let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if comm.starts_with(VM_INIT) || comm.starts_with("s6-") {
            total += pss_kib(pid);
        }
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        todo.extend(
            children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    total
}

/// Section 7: `--services` (each daemon an s6 service of the VM's own
/// s6-svscan) measured as the one-service mode is: start to ready, stop,
/// memory per VM, 100 VMs at once.
fn services_mode(r: &mut Report, bin: &Path, state: &Path) -> Result {
    let dir = state.parent().ok_or("state dir at /")?.join("vm-services");
    for service in sandbox_core::contract::daemon::ALL {
        std::fs::create_dir_all(dir.join(service)).map_err(|e| e.to_string())?;
        for f in ["run", "notification-fd"] {
            let from = root().join("s6/vm-services").join(service).join(f);
            if from.exists() {
                std::fs::copy(&from, dir.join(service).join(f)).map_err(|e| e.to_string())?;
            }
        }
    }
    let mut extra: Vec<std::ffi::OsString> = vec!["--services".into(), dir.into_os_string()];
    extra.extend(tests::no_cgroups().iter().map(Into::into));
    standin_vm(state, "svc")?;
    let mut pss = 0;
    let (starts, stops) = cycles(
        10,
        || start_vm_with(bin, state, "svc", &extra),
        |child| {
            pss = sandbox_pss_kib(child.id());
            Ok(())
        },
    )?;
    r.row(
        "7. --services: VM start, vm-init to ready",
        ms(stats(starts.clone())),
        "each daemon a service of the VM's s6".into(),
    );
    r.row(
        "   --services: VM stop, SIGTERM to exit",
        ms(stats(stops.clone())),
        String::new(),
    );
    r.row(
        "   --services: Pss of vm-init and the VM's s6",
        format!("{pss} KiB"),
        "per VM, its daemons left out".into(),
    );
    let n = 100;
    for i in 0..n {
        standin_vm(state, &format!("v{i}"))?;
    }
    let start = Instant::now();
    let mut children = Vec::with_capacity(n);
    for i in 0..n {
        children.push(start_vm_with(bin, state, &format!("v{i}"), &extra)?);
    }
    for c in &mut children {
        wait_ready(c)?;
    }
    let up = start.elapsed().as_secs_f64() * 1000.0;
    let start = Instant::now();
    for c in children {
        stop_vm(c)?;
    }
    let down = start.elapsed().as_secs_f64() * 1000.0;
    r.row(
        "   --services: 100 VMs at once: ready / stopped",
        format!("{up:.0} ms / {down:.0} ms"),
        format!("{:.2} ms per VM", up / n as f64),
    );
    r.json(
        "services",
        format!(
            "{{\"start_ms\": {:.3}, \"stop_ms\": {:.3}, \"pss_kib\": {pss}, \"ready_100_ms\": {up:.1}, \"stopped_100_ms\": {down:.1}}}",
            stats(starts).0,
            stats(stops).0
        ),
    );
    Ok(())
}

/// Section 5: virtiofsd with and without the sandbox, the same guest.
fn guest_files(r: &mut Report, bin: &Path, state: &Path) -> Result {
    // 5. virtiofsd with and without the sandbox, the same guest, alternating.
    let (mut with, mut without) = (vec![], vec![]);
    for _ in 0..3 {
        with.push(guest_bench(bin, state, true)?);
        without.push(guest_bench(bin, state, false)?);
    }
    let (w, wo) = (stats(with), stats(without));
    r.row(
        "5. guest: 1,000 small files created + read",
        format!("{:.2} s sandboxed", w.0),
        format!("{:.2} s without the sandbox", wo.0),
    );
    r.row(
        "   throughput ratio (sandboxed / not)",
        format!("{:.2}", wo.0 / w.0),
        "target >= 0.97".into(),
    );
    r.json(
        "guest_files_s",
        format!("{{\"sandboxed\": {:.3}, \"direct\": {:.3}}}", w.0, wo.0),
    );
    r.json("guest_ratio", format!("{:.3}", wo.0 / w.0));
    Ok(())
}

/// One boot of the bench guest of `d` without the sandbox: virtiofsd
/// and QEMU started by hand, as a host without vm-init would.
fn guest_direct(state: &Path, d: &VmDir, cmdline: &str) -> Result {
    let serial = d.serial_log();
    let sock = state.join("direct.sock");
    let _ = std::fs::remove_file(&sock);
    let mut vfsd = Command::new(tools::virtiofsd())
        .arg("--socket-path")
        .arg(&sock)
        .arg("--shared-dir")
        .arg(d.storage())
        .args(["--sandbox", "none", "--inode-file-handles=never"])
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    let start = Instant::now();
    while !sock.exists() && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let status = tools::qemu_command()
        .args(["-machine", "q35,accel=tcg,memory-backend=mem"])
        .args([
            "-object",
            "memory-backend-memfd,id=mem,size=256M,share=on",
            "-m",
            "256M",
            "-kernel",
        ])
        .arg(d.config_file(config::KERNEL))
        .arg("-initrd")
        .arg(d.config_file(config::INITRAMFS))
        .args(["-append", cmdline, "-chardev"])
        .arg(format!("socket,id=vfs,path={}", sock.display()))
        .args([
            "-device",
            "vhost-user-fs-pci,chardev=vfs,tag=virtiofs0",
            "-serial",
        ])
        .arg(format!("file:{}", serial.display()))
        .stdout(Stdio::null())
        .status()
        .map_err(|e| e.to_string())?;
    let _ = vfsd.kill();
    let _ = vfsd.wait();
    if !status.success() {
        return Err(format!("direct guest: qemu {status}"));
    }
    Ok(())
}

/// One boot of the test guest in bench mode; returns the guest's own
/// time for creating and reading 1,000 files, in seconds.
fn guest_bench(bin: &Path, state: &Path, sandboxed: bool) -> Result<f64> {
    let vm = state.join("guest");
    let _ = std::fs::remove_dir_all(&vm);
    tests::guest::guest_vm(&vm, "bench").map_err(|e| e.to_string())?;
    let d = VmDir::new(&vm);
    let cmdline =
        std::fs::read_to_string(d.config_file(config::CMDLINE)).map_err(|e| e.to_string())?;
    let serial = d.serial_log();
    if sandboxed {
        let status = Command::new(bin.join(VM_INIT))
            .args(tests::no_cgroups())
            .args([
                "--parent-pid",
                &std::process::id().to_string(),
                "--state-dir",
            ])
            .arg(state)
            .arg("--vmm")
            .arg(tools::qemu())
            .arg("--virtiofsd")
            .arg(tools::virtiofsd())
            .arg("guest")
            .stderr(Stdio::null())
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err(format!("sandboxed guest: vm-init {status}"));
        }
    } else {
        guest_direct(state, &d, &cmdline)?;
    }
    let text = std::fs::read_to_string(&serial).map_err(|e| e.to_string())?;
    let line = text
        .lines()
        .find(|l| l.starts_with("GUEST-BENCH"))
        .ok_or_else(|| format!("no GUEST-BENCH line:\n{text}"))?;
    let cs = |key: &str| -> f64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(key))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    Ok((cs("create_cs=") + cs("read_cs=")) / 100.0)
}
