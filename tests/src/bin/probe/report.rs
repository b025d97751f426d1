//! One line per attempt, and what every role of the probe shares.

use std::fs;
use std::io::Write;
use std::path::Path;

use rustix::process::Pid;
use sandbox_core::seccomp::{self, Group, Verdict};
use sandbox_core::Errno;
use syscalls::Sysno;

/// What an attempt must give.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Want {
    Ok,
    Err(Errno),
}

impl std::fmt::Display for Want {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Want::Ok => f.write_str("success"),
            Want::Err(e) => f.write_str(&e.name()),
        }
    }
}

pub(crate) struct Probe {
    pub(crate) attempts: usize,
    pub(crate) failed: usize,
    /// The seccomp list the daemon runs under, if the wrapper installs one.
    pub(crate) filter: Option<&'static [Group]>,
}

/// A line of /proc/self/status, after the colon.
pub(crate) fn status_field(name: &str) -> String {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

impl Probe {
    /// A probe under the seccomp list `filter`, if its wrapper installs one.
    pub(crate) fn new(filter: Option<&'static [Group]>) -> Probe {
        Probe {
            attempts: 0,
            failed: 0,
            filter,
        }
    }

    /// Prints the closing line (`probe: N attempts, M failed`), flushed
    /// before the probe serves like its daemon; returns how many failed.
    pub(crate) fn close(&self) -> usize {
        println!("probe: {} attempts, {} failed", self.attempts, self.failed);
        let _ = std::io::stdout().flush();
        self.failed
    }

    /// kill(PID, 0) of every PID of the namespace but ours: none may work.
    pub(crate) fn kill_sweep(&mut self, me: i32) {
        let signalled: Vec<i32> = (1..=512)
            .filter(|&n| n != me)
            .filter(|&n| {
                rustix::process::test_kill_process(Pid::from_raw(n).expect("n > 0")).is_ok()
            })
            .collect();
        self.record(
            "kill(PID, 0) for PID 1..512 but self",
            "none",
            &format!("{signalled:?}"),
            signalled.is_empty(),
        );
    }

    /// The soft limit of a /proc/self/limits row must read `want`.
    pub(crate) fn limit_is(&mut self, row: &str, want: &str) {
        let limits = fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let got = limits
            .lines()
            .find_map(|l| l.strip_prefix(row))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or("?")
            .to_owned();
        self.record(&format!("limit: {row}"), want, &got, got == want);
    }

    /// A /proc/self/status field must read `want` (CapEff, NoNewPrivs, ...).
    pub(crate) fn status_is(&mut self, attempt: &str, field: &str, want: &str) {
        let got = status_field(field);
        self.record(attempt, want, &got, got == want);
    }

    /// Runs `attempt` unless one of its `calls` is off the seccomp list
    /// the probe runs under: that would kill it, so it prints the call
    /// instead (`off the allow-list: NAME ARGS`), which gpu.rs then makes
    /// alone in a VM of its own and sees killed. Not counted as an attempt.
    pub(crate) fn filtered(
        &mut self,
        attempt: &str,
        calls: &[(Sysno, [u64; 6])],
        want: Want,
        f: impl FnOnce() -> Result<(), Errno>,
    ) {
        let off = self.filter.and_then(|list| {
            calls
                .iter()
                .find(|(call, args)| seccomp::allows(list, *call, args) == Verdict::Kill)
        });
        match off {
            Some((call, args)) => {
                let args: Vec<String> = args.iter().map(u64::to_string).collect();
                println!(
                    "kill {attempt:<52} off the allow-list: {} {}",
                    call.name(),
                    args.join(" ")
                );
            }
            None => self.check(attempt, want, f()),
        }
    }

    pub(crate) fn check(&mut self, attempt: &str, want: Want, got: Result<(), Errno>) {
        let got = match got {
            Ok(()) => Want::Ok,
            Err(e) => Want::Err(e),
        };
        self.record(attempt, &want.to_string(), &got.to_string(), want == got);
    }

    pub(crate) fn record(&mut self, attempt: &str, expected: &str, got: &str, ok: bool) {
        self.attempts += 1;
        if !ok {
            self.failed += 1;
        }
        let verdict = if ok { "ok  " } else { "FAIL" };
        println!("{verdict} {attempt:<52} expected {expected:<10} got {got}");
    }
}

pub(crate) fn io(r: std::io::Result<impl Sized>) -> Result<(), Errno> {
    r.map(drop).map_err(Errno::from)
}

pub(crate) fn rx(r: rustix::io::Result<impl Sized>) -> Result<(), Errno> {
    r.map(drop).map_err(Errno::from)
}

pub(crate) fn create(path: &Path) -> Result<(), Errno> {
    io(fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path))
}

pub(crate) fn arg_after<'a>(argv: &'a [String], flag: &str) -> &'a str {
    argv.windows(2)
        .find(|w| w[0] == flag)
        .map_or("", |w| w[1].as_str())
}

/// Other processes of its VM, by PIDs the VM's namespace gives them (in
/// the one-service mode PID 1 starts virtiofsd's wrapper as 3). The probe
/// runs where its daemon would: in a PID namespace of its own, where its
/// wrapper's reaper is PID 1 (see `escapes::pid1`) and the probe PID 2
/// (sandbox_core::reaper), so no process of the VM outside it can be
/// named at all (ESRCH), whatever its uid. (A thread of the probe would
/// be 3: none runs when they are tried.)
pub(crate) fn neighbours() -> Vec<(i32, &'static str)> {
    vec![(3, "the VM's PID 3"), (4, "the VM's PID 4")]
}

pub(crate) const EPERM: Want = Want::Err(Errno::EPERM);
pub(crate) const EACCES: Want = Want::Err(Errno::EACCES);
pub(crate) const ENOENT: Want = Want::Err(Errno::ENOENT);
pub(crate) const ESRCH: Want = Want::Err(Errno::ESRCH);
pub(crate) const EROFS: Want = Want::Err(Errno::EROFS);
pub(crate) const ECONNREFUSED: Want = Want::Err(Errno(111));
pub(crate) const AF_INET: u64 = 2;
pub(crate) const SOCK_STREAM: u64 = 1;
pub(crate) const SOCK_DGRAM: u64 = 2;
