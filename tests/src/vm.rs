//! Helpers of the vm-init tests: a VM directory with stand-in daemons,
//! real s6 (s6-svscan on a scan dir of the test's), and /proc scans.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sandbox_core::contract::bin::VM_INIT;
use sandbox_core::contract::env;

use crate::new_vm::NewVm;
use crate::StateDir;

/// Names the standin binary answers to (see tests/src/bin/standin.rs).
pub const STANDINS: &[&str] = &[
    "vmm-cooperative",
    "vmm-stubborn",
    "vmm-crash",
    "vmm-refuses",
    "vmm-flood",
    "vmm-chatty",
    "vmm-brief",
    "vmm-deaf",
    "virtiofsd-ok",
    "virtiofsd-crash",
    "virtiofsd-flood",
    "virtiofsd-meddle",
    "virtiofsd-hog",
    "virtiofsd-forkbomb",
    "virtiofsd-forkloop",
    "virtiofsd-churn",
    "virtiofsd-cgroup",
];

impl StateDir {
    /// A VM directory with a config (a kernel file the stand-in never
    /// reads) and an empty fs/.
    pub fn add_standin_vm(&self, name: &str) -> PathBuf {
        NewVm::create(self.0.join(name)).unwrap().into_path()
    }

    /// [`StateDir::add_standin_vm`], with what the probe in virtiofsd's
    /// place expects in fs/ ([`NewVm::storage_for_the_probe`]).
    pub fn add_probe_vm(&self, name: &str) -> PathBuf {
        NewVm::create(self.0.join(name))
            .and_then(NewVm::storage_for_the_probe)
            .unwrap()
            .into_path()
    }

    /// The stand-ins, linked under [`StateDir::bin`] by the names that
    /// choose their behaviour.
    pub fn standins(&self) -> PathBuf {
        let dir = self.bin();
        for name in STANDINS {
            let to = dir.join(name);
            if !to.exists() && std::fs::hard_link(dir.join("standin"), &to).is_err() {
                std::fs::copy(dir.join("standin"), &to).unwrap();
            }
        }
        dir
    }
}

impl StateDir {
    /// vm-init started directly by this test (its parent, so that its
    /// --parent-pid check holds), stderr piped for [`wait_line`].
    pub fn vm_init(&self, name: &str, vmm: &Path, virtiofsd: &Path, extra: &[&str]) -> Child {
        self.vm_init_command(name, vmm, virtiofsd, extra)
            .spawn()
            .unwrap()
    }

    /// [`StateDir::vm_init`] with stdout piped too: the probe's report.
    pub fn vm_init_reporting(
        &self,
        name: &str,
        vmm: &Path,
        virtiofsd: &Path,
        extra: &[&OsStr],
    ) -> Child {
        self.vm_init_command(name, vmm, virtiofsd, extra)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }

    fn vm_init_command(
        &self,
        name: &str,
        vmm: &Path,
        virtiofsd: &Path,
        extra: &[impl AsRef<OsStr>],
    ) -> Command {
        let mut cmd = Command::new(self.bin().join(VM_INIT));
        cmd.args(crate::no_cgroups())
            .args(["--parent-pid", &std::process::id().to_string()])
            .args(["--state-dir", self.0.to_str().unwrap()])
            .arg("--vmm")
            .arg(vmm)
            .arg("--virtiofsd")
            .arg(virtiofsd)
            .args(extra)
            .arg(name)
            .stderr(Stdio::piped());
        cmd
    }
}

/// The `vm.conf` of a VM's service (s6/vm, s6/vm-instance): the VM's
/// name (s6/vm's alone), its state dir, more arguments of vm-init.
pub fn vm_conf(name: Option<&str>, state_dir: &Path, vm_init_args: &str) -> String {
    let name = name.map(|n| format!("{}={n}\n", env::VM_NAME));
    // The cgroup opt-out where the host needs it (see crate::no_cgroups).
    let args: Vec<&str> = std::iter::once(vm_init_args)
        .chain(crate::no_cgroups().iter().copied())
        .filter(|a| !a.is_empty())
        .collect();
    format!(
        "{}{}={}\n{}={}\n",
        name.unwrap_or_default(),
        env::VM_STATE_DIR,
        state_dir.display(),
        env::VM_INIT_ARGS,
        args.join(" ")
    )
}

/// SIGTERM to a vm-init started by the test, and its exit code.
pub fn stop(child: &mut Child) -> Option<i32> {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill");
    child.wait().expect("wait for vm-init").code()
}

/// Reads a child's stderr up to the line containing `what` (or its end).
pub fn wait_line(child: &mut Child, what: &str) -> String {
    let mut lines = String::new();
    let mut r = BufReader::new(child.stderr.as_mut().unwrap());
    loop {
        let mut l = String::new();
        if r.read_line(&mut l).unwrap() == 0 {
            return lines;
        }
        lines.push_str(&l);
        if l.contains(what) {
            return lines;
        }
    }
}

/// Waits for a child at most `limit`, killing it after that.
pub fn wait_at_most(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    if within(limit, || child.try_wait().is_ok_and(|s| s.is_some())) {
        child.wait().ok()
    } else {
        let _ = child.kill();
        let _ = child.wait();
        None
    }
}

/// The inode of a process's PID namespace.
pub fn pidns(pid: i32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}/ns/pid"))
        .ok()
        .map(|m| m.ino())
}

/// Every live process of the host in PID namespace `ns`, or in one below
/// it (each daemon's own: see [`daemon_of`]), found through its parents.
pub fn procs_in_pidns(ns: u64) -> Vec<i32> {
    let in_ns = |pid: i32| {
        let mut p = pid;
        for _ in 0..64 {
            if pidns(p) == Some(ns) {
                return true;
            }
            match ppid(p) {
                Some(parent) if parent > 0 => p = parent,
                _ => return false,
            }
        }
        false
    };
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| !is_zombie(pid) && in_ns(pid))
        .collect()
}

/// The daemon a wrapper became: a wrapper keeps its daemon in a PID
/// namespace of its own, whose init (the reaper) is the wrapper's child
/// and the daemon's parent (sandbox_core::reaper). A VM can be ready
/// before a wrapper has forked or its daemon-to-be has exec'd (the VMM
/// reaches virtiofsd's listener, which the outer bound, before virtiofsd
/// runs): waits a while for a process under the reaper that is no longer
/// the wrapper, and gives the deepest one found after that.
pub fn daemon_of(wrapper: i32) -> i32 {
    let leaf = || {
        let Some(&reaper) = children(wrapper).first() else {
            return wrapper;
        };
        children(reaper).first().copied().unwrap_or(reaper)
    };
    let wrapper_comm = comm(wrapper);
    within(Duration::from_secs(10), || comm(leaf()) != wrapper_comm);
    leaf()
}

/// The supervisor (s6-supervise, PID 1) of a daemon: its reaper's keeper's
/// parent.
pub fn supervisor_of(daemon: i32) -> Option<i32> {
    ppid(ppid(ppid(daemon)?)?)
}

fn is_zombie(pid: i32) -> bool {
    stat_field(pid, 0).is_some_and(|s| s == "Z")
}

/// Field `n` (0 = state, 16 = nice) of /proc/PID/stat after the comm.
pub fn stat_field(pid: i32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(n).map(str::to_owned)
}

pub fn ppid(pid: i32) -> Option<i32> {
    stat_field(pid, 1)?.parse().ok()
}

pub fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

pub fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

/// A line of /proc/PID/status, after the colon.
pub fn status(pid: i32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default()
}

/// Waits until `cond` holds, checking every 10 ms, at most `limit`.
pub fn within(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// s6-svscan on a scan dir of the test's, with vm-init on its PATH.
#[derive(Debug)]
pub struct S6 {
    pub scan: PathBuf,
    svscan: Child,
}

impl S6 {
    pub fn start(state: &StateDir) -> S6 {
        let scan = state.top().join("scan");
        std::fs::create_dir_all(&scan).unwrap();
        let path = format!(
            "{}:/usr/lib/execline/bin:/usr/bin:/bin:/usr/sbin:/sbin",
            state.bin().display()
        );
        let log = std::fs::File::create(state.top().join("s6.log")).unwrap();
        let svscan = Command::new("s6-svscan")
            .arg(&scan)
            .env_clear()
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start s6-svscan (apt-get install s6 execline)");
        S6 { scan, svscan }
    }

    /// Adds service `vm-NAME` from the project's template, then tells
    /// s6-svscan to pick it up.
    pub fn add_vm(&self, state: &StateDir, name: &str, extra: &str) -> PathBuf {
        let template = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .join("s6/vm/run");
        let run = std::fs::read_to_string(template).unwrap();
        self.add_vm_with_run(state, name, extra, &run)
    }

    /// [`S6::add_vm`] with a run script of the test's own.
    pub fn add_vm_with_run(&self, state: &StateDir, name: &str, extra: &str, run: &str) -> PathBuf {
        let dir = self.scan.join(format!("vm-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let template = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .join("s6/vm");
        for f in ["notification-fd", "timeout-kill"] {
            std::fs::copy(template.join(f), dir.join(f)).unwrap();
        }
        std::fs::write(dir.join("run"), run).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.join("run"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.join(env::VM_CONF), vm_conf(Some(name), &state.0, extra)).unwrap();
        // s6-svscan may not listen on its control fifo yet: retry a while.
        let rescan = || {
            Command::new("s6-svscanctl")
                .arg("-a")
                .arg(&self.scan)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        assert!(
            within(Duration::from_secs(5), rescan),
            "s6-svscan does not listen"
        );
        dir
    }

    /// The PID s6 reports for a service (the outer vm-init), if up.
    pub fn pid(service: &Path) -> Option<i32> {
        let out = Command::new("s6-svstat")
            .args(["-o", "pid"])
            .arg(service)
            .output()
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .ok()
            .filter(|&p| p > 0)
    }

    pub fn svstat(service: &Path, fields: &str) -> String {
        let out = Command::new("s6-svstat")
            .args(["-o", fields])
            .arg(service)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// `s6-svwait FLAG service` until it succeeds, at most `ms`: it fails
    /// at once (111) while a restarted s6-supervise has not written its
    /// status file yet, so a failure is retried, each wait at most 1 s.
    pub fn svwait(service: &Path, flag: &str, ms: u64) -> bool {
        within(Duration::from_millis(ms), || {
            Command::new("s6-svwait")
                .args([flag, "-t", "1000"])
                .arg(service)
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success()
        })
    }

    /// `s6-svc FLAG service` until it succeeds, at most `limit`: it fails
    /// while the service's s6-supervise does not listen on its control
    /// FIFO yet (just started, or started again after it was killed).
    pub fn svc_within(service: &Path, flag: &str, limit: Duration) -> bool {
        within(limit, || {
            Command::new("s6-svc")
                .arg(flag)
                .arg(service)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
    }

    pub fn svc(service: &Path, flag: &str) {
        assert!(Command::new("s6-svc")
            .arg(flag)
            .arg(service)
            .status()
            .unwrap()
            .success());
    }

    pub fn log(state: &StateDir) -> String {
        std::fs::read_to_string(state.top().join("s6.log")).unwrap_or_default()
    }
}

impl Drop for S6 {
    fn drop(&mut self) {
        // SIGTERM is s6-svscanctl -t: s6-svscan stops its supervisors (each
        // brings its service down) and exits. A test never hangs on it.
        let pid = self.svscan.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let exited = within(Duration::from_secs(10), || {
            self.svscan.try_wait().is_ok_and(|s| s.is_some())
        });
        if !exited {
            let _ = self.svscan.kill();
            let _ = self.svscan.wait();
        }
    }
}

/// The probe's report, read from `out` up to its closing line
/// (`probe: N attempts, M failed`), or to the end of the stream.
/// Each line comes through vm-init with its daemon's mark, taken off here.
pub fn read_report(out: &mut impl BufRead) -> String {
    let mut report = String::new();
    while !report.contains("probe: ") {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        report.push_str(sandbox_core::contract::unmarked(&line));
    }
    report
}

/// Every attempt of a probe report held, and at least `min` ran.
pub fn assert_report_holds(report: &str, min: usize) {
    assert!(report.contains("probe: "), "no closing line: {report}");
    let failed: Vec<&str> = report.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(
        failed.is_empty(),
        "attempts that got through:\n{}",
        failed.join("\n")
    );
    let held = report.lines().filter(|l| l.starts_with("ok ")).count();
    assert!(held >= min, "only {held} attempts ran:\n{report}");
}
