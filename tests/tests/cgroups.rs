//! Each VM in a cgroup v2 of its own, each daemon in a leaf with its
//! bounds, killed as one. These need cgroup v2 with the memory, pids and
//! cpu controllers: they run in the kernel matrix's 6.12 guest, and on a
//! host that has them (`cargo xtask test` says when it leaves them to the
//! guest). The refusal and the opt-out of a host without them are in
//! vm_init.rs.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use sandbox_core::contract::bin::{WRAP_VIRTIOFSD, WRAP_VMM};
use sandbox_core::contract::{config, daemon, VmDir};
use tests::vm::{
    children, comm, daemon_of, pidns, procs_in_pidns, stat_field, status, stop, wait_line, within,
};
use tests::{privileged, StateDir};

/// The default parent's cgroup of VM `name` (`vm-NAME@SLOT`), if any.
fn vm_cgroup(name: &str) -> Option<PathBuf> {
    let parent = Path::new("/sys/fs/cgroup/vm-sandbox");
    std::fs::read_dir(parent).ok()?.find_map(|e| {
        let e = e.ok()?;
        let n = e.file_name().to_string_lossy().into_owned();
        n.strip_prefix(&format!("vm-{name}@"))?;
        Some(e.path())
    })
}

/// Privileged, and cgroup v2 with the controllers: a missing one fails.
fn cgroup_v2(test: &str) -> bool {
    if !privileged(test) {
        return false;
    }
    let found = sandbox_core::cgroup::check_parent(None);
    assert!(
        matches!(found, Ok(Ok(_))),
        "{test}: this host has no cgroup v2 with memory, pids and cpu: {found:?}"
    );
    true
}

/// A stand-in VM `name` of `state`, virtiofsd's `config/limits` holding
/// `limits` (if any), started by vm-init with the cooperative VMM stand-in,
/// the stand-in `virtiofsd` and vm-init's options `extra`.
fn start(
    state: &StateDir,
    name: &str,
    virtiofsd: &str,
    limits: Option<&str>,
    extra: &[&str],
) -> Child {
    let vm = state.add_standin_vm(name);
    if let Some(text) = limits {
        limit(&vm, text);
    }
    let bin = state.standins();
    state.vm_init(
        name,
        &bin.join("vmm-cooperative"),
        &bin.join(virtiofsd),
        extra,
    )
}

/// virtiofsd's `config/limits` file of VM `vm`, holding `text`.
fn limit(vm: &Path, text: &str) {
    let dir = VmDir::new(vm).config_file(config::LIMITS);
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join(daemon::VIRTIOFSD), text).unwrap();
}

/// A process's cgroup as the test (the host's cgroup namespace) sees it.
fn cgroup_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .trim()
        .trim_start_matches("0::")
        .to_owned()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// The wrapper PID 1 (the outer's child) started as `wrapper`.
fn wrapper(outer: u32, wrapper: &str) -> i32 {
    let pid1 = children(outer as i32)[0];
    let mut found = None;
    within(Duration::from_secs(10), || {
        found = children(pid1).into_iter().find(|&p| comm(p) == wrapper);
        found.is_some()
    });
    found.unwrap_or_else(|| panic!("no {wrapper} under PID 1 {pid1}"))
}

#[test]
fn each_daemon_is_bounded_in_a_leaf_of_its_vms_cgroup_and_sees_only_that() {
    if !cgroup_v2("cg_leaves") {
        return;
    }
    let state = StateDir::new("cg_leaves");
    let mut child = start(&state, "leaves", "virtiofsd-cgroup", None, &[]);
    let vm = state.0.join("leaves");
    let mut log = wait_line(&mut child, ": ready");
    let cg = vm_cgroup("leaves").expect("the VM's cgroup");
    let cg_name = cg.file_name().unwrap().to_string_lossy().into_owned();
    let vm_config = sandbox_core::vmconfig::VmConfig::read(&vm).unwrap();
    // The policies' bounds, written by the outer as host root: no
    // process of the VM (host uids of its slot) may write one.
    for (leaf, limits) in [
        (daemon::VIRTIOFSD, wrap_virtiofsd::policy::LIMITS),
        (daemon::VMM, wrap_vmm::policy::limits(&vm_config)),
    ] {
        let dir = cg.join(leaf);
        assert_eq!(read(&dir.join("memory.max")), limits.memory_max.to_string());
        assert_eq!(read(&dir.join("memory.swap.max")), "0");
        assert_eq!(read(&dir.join("pids.max")), limits.pids_max.to_string());
        assert_eq!(read(&dir.join("cpu.weight")), limits.cpu_weight.to_string());
        assert_eq!(read(&dir.join("memory.oom.group")), "1");
        for f in ["memory.max", "pids.max", "cgroup.procs", "cgroup.kill"] {
            let meta = std::fs::metadata(dir.join(f)).unwrap();
            assert_eq!((meta.uid(), meta.mode() & 0o022), (0, 0), "{leaf}/{f}");
        }
    }
    // PID 1 in vm-init's leaf; each wrapper, its reaper and its daemon in
    // the daemon's.
    let pid1 = children(child.id() as i32)[0];
    assert_eq!(cgroup_of(pid1), format!("/vm-sandbox/{cg_name}/vm-init"));
    for (name, leaf) in [(WRAP_VIRTIOFSD, daemon::VIRTIOFSD), (WRAP_VMM, daemon::VMM)] {
        let keeper = wrapper(child.id(), name);
        let daemon = daemon_of(keeper);
        let reaper = children(keeper)[0];
        for pid in [keeper, reaper, daemon] {
            assert_eq!(
                cgroup_of(pid),
                format!("/vm-sandbox/{cg_name}/{leaf}"),
                "{name}"
            );
        }
    }
    // The daemon's own view: its leaf is its root, no cgroup file system
    // in its view, and none it may mount.
    if !log.contains("cgroup mount") {
        log.push_str(&wait_line(&mut child, "cgroup mount"));
    }
    assert!(log.contains(r#"standin: cgroup self "0::/""#), "{log}");
    assert!(log.contains("standin: cgroup open-sysfs ENOENT"), "{log}");
    // (Refused before Landlock's own EPERM: ENOENT on this kernel.)
    assert!(
        log.contains("standin: cgroup mount E") && !log.contains("standin: cgroup mount ok"),
        "{log}"
    );
    assert_eq!(stop(&mut child), Some(0));
    assert!(!cg.exists(), "{} is left", cg.display());
}

#[test]
fn a_daemon_past_its_memory_max_dies_in_its_cgroup_and_another_vm_goes_on() {
    if !cgroup_v2("cg_memory") {
        return;
    }
    let state = StateDir::new("cg_memory");
    let mut calm = start(&state, "calm", "virtiofsd-ok", None, &[]);
    wait_line(&mut calm, ": ready");
    let calm_virtiofsd = daemon_of(wrapper(calm.id(), WRAP_VIRTIOFSD));

    let mut child = start(
        &state,
        "hog",
        "virtiofsd-hog",
        Some("memory.max 32M\n"),
        &[],
    );
    let log = wait_line(&mut child, "tearing it down");
    assert_eq!(child.wait().unwrap().code(), Some(1), "{log}");
    assert!(
        log.contains("vm-init: hog: virtiofsd met its memory.max"),
        "{log}"
    );
    assert!(log.contains("virtiofsd killed by signal 9"), "{log}");
    assert!(!log.contains("not killed"), "{log}");
    assert_eq!(vm_cgroup("hog"), None);
    // The other VM, and the host's processes (this test among them), go on.
    assert!(calm.try_wait().unwrap().is_none());
    assert_eq!(comm(calm_virtiofsd), "virtiofsd-ok");
    assert_eq!(stop(&mut calm), Some(0));
    assert_eq!(vm_cgroup("calm"), None);
}

#[test]
fn a_fork_bomb_stops_at_pids_max_and_the_vm_goes_on() {
    if !cgroup_v2("cg_pids") {
        return;
    }
    let state = StateDir::new("cg_pids");
    let mut child = start(
        &state,
        "bomb",
        "virtiofsd-forkbomb",
        Some("pids.max 12\n"),
        &[],
    );
    let mut log = wait_line(&mut child, "standin: forked");
    if !log.contains("met its pids.max") {
        log.push_str(&wait_line(&mut child, "met its pids.max"));
    }
    let forked: usize = log
        .split("standin: forked ")
        .nth(1)
        .and_then(|r| r.split(',').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{log}"));
    // The wrapper, its reaper and the daemon are three of the twelve.
    assert_eq!(forked, 12 - 3, "{log}");
    assert!(
        log.contains("vm-init: bomb: virtiofsd met its pids.max"),
        "{log}"
    );
    let leaf = vm_cgroup("bomb").unwrap().join(daemon::VIRTIOFSD);
    assert_eq!(read(&leaf.join("pids.current")), "12");
    let ns = pidns(daemon_of(wrapper(child.id(), WRAP_VIRTIOFSD))).unwrap();
    // Bounded, not ended: the VM still runs, and stops as any other.
    assert!(child.try_wait().unwrap().is_none());
    assert_eq!(stop(&mut child), Some(0));
    assert!(within(Duration::from_secs(2), || procs_in_pidns(ns).is_empty()));
    assert_eq!(vm_cgroup("bomb"), None);
}

#[test]
fn nothing_in_a_vms_cgroup_outlives_it() {
    if !cgroup_v2("cg_end") {
        return;
    }
    let state = StateDir::new("cg_end");
    // virtiofsd-meddle leaves a grandchild in a session of its own.
    let mut child = start(&state, "end", "virtiofsd-meddle", None, &[]);
    wait_line(&mut child, ": ready");
    let leaf = vm_cgroup("end").unwrap().join(daemon::VIRTIOFSD);
    let procs = || -> Vec<i32> {
        read(&leaf.join("cgroup.procs"))
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    };
    let mut grandchild = None;
    within(Duration::from_secs(10), || {
        grandchild = procs().into_iter().find(|&p| comm(p) == "tail");
        grandchild.is_some()
    });
    let grandchild = grandchild.expect("virtiofsd-meddle's grandchild");
    // A process of the VM's cgroup that its PID namespaces do not hold
    // (as one that escaped them would be): a host process moved in.
    let mut outsider = Command::new("sleep").arg("600").spawn().unwrap();
    std::fs::write(leaf.join("cgroup.procs"), outsider.id().to_string()).unwrap();
    assert_eq!(stop(&mut child), Some(0));
    // cgroup.kill: the outsider is killed with the VM, the grandchild too.
    let status = outsider.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    assert!(!Path::new(&format!("/proc/{grandchild}")).exists());
    assert_eq!(vm_cgroup("end"), None);
}

/// A daemon that keeps pushing at its pids.max (each refused fork tried
/// again, for 3 s) does not make PID 1 say a line per refusal: the kernel
/// says pids.events changed up to 100 times a second for as long as the
/// daemon likes, and PID 1's own lines pass no relay's rate. Its lines
/// grow with the log of the refusals.
#[test]
fn a_daemon_pushing_at_its_pids_max_cannot_flood_vm_inits_lines() {
    if !cgroup_v2("cg_pids_loop") {
        return;
    }
    let state = StateDir::new("cg_pids_loop");
    let mut child = start(
        &state,
        "loop",
        "virtiofsd-forkloop",
        Some("pids.max 12\n"),
        &[],
    );
    let mut log = wait_line(&mut child, "standin: forkloop");
    let events = read(&vm_cgroup("loop").unwrap().join("virtiofsd/pids.events"));
    let refused: u64 = events
        .lines()
        .find_map(|l| l.strip_prefix("max ")?.parse().ok())
        .unwrap_or_else(|| panic!("{events}"));
    assert!(refused >= 64, "{refused} forks refused in 3 s: {log}");
    assert_eq!(stop(&mut child), Some(0));
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    let said = log
        .matches("vm-init: loop: virtiofsd met its pids.max")
        .count();
    assert!(
        (1..=2 + refused.ilog2() as usize).contains(&said),
        "{said} lines for {refused} refused forks: {log}"
    );
    assert_eq!(vm_cgroup("loop"), None);
}

/// A daemon killed for memory by a bound that is not its own (the VM
/// cgroup's parent's memory.max here; the host's, out of memory) is not
/// said to have met its memory.max: its leaf's memory.events counts that
/// kill (`oom_kill`) but no out-of-memory of its own (`oom`). (A VM
/// filling a parent it shares with others would otherwise have another
/// VM's log blame that VM's daemon.)
#[test]
fn a_kill_at_a_bound_above_the_daemons_is_not_said_as_its_memory_max() {
    if !cgroup_v2("cg_parent_oom") {
        return;
    }
    let parent = Path::new("/sys/fs/cgroup/vm-sandbox-test-oom");
    std::fs::create_dir_all(parent).unwrap();
    std::fs::write(parent.join("memory.max"), (64u64 << 20).to_string()).unwrap();
    let state = StateDir::new("cg_parent_oom");
    // virtiofsd's own memory.max (256 MiB) is far above its parent's.
    let extra = ["--cgroup-parent", parent.to_str().unwrap()];
    let mut child = start(&state, "under", "virtiofsd-hog", None, &extra);
    let log = wait_line(&mut child, "tearing it down");
    assert_eq!(child.wait().unwrap().code(), Some(1), "{log}");
    assert!(log.contains("virtiofsd killed by signal 9"), "{log}");
    assert!(!log.contains("met its memory.max"), "{log}");
    assert!(
        log.contains("vm-init: under: virtiofsd was killed for memory by a bound above its own"),
        "{log}"
    );
    let left: Vec<_> = std::fs::read_dir(parent)
        .unwrap()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "{left:?} left in {}", parent.display());
    std::fs::remove_dir(parent).unwrap();
}

/// A daemon held at its memory.max (its page cache reclaimed at the
/// bound, as virtiofsd's is on a busy share) makes its memory.events
/// change without end. PID 1 wakes for that at the kernel's pace (a
/// cgroup file notifies at most 100 times a second), says nothing, and
/// never spins on the file.
#[test]
fn a_daemon_churning_at_its_memory_max_does_not_keep_pid_1_busy() {
    if !cgroup_v2("cg_churn") {
        return;
    }
    let state = StateDir::new("cg_churn");
    let mut child = start(
        &state,
        "churn",
        "virtiofsd-churn",
        Some("memory.max 32M\n"),
        &[],
    );
    let mut log = wait_line(&mut child, ": ready");
    let pid1 = children(child.id() as i32)[0];
    let events = vm_cgroup("churn").unwrap().join("virtiofsd/memory.events");
    let max_events = || -> u64 {
        read(&events)
            .lines()
            .find_map(|l| l.strip_prefix("max ")?.parse().ok())
            .unwrap_or(0)
    };
    // PID 1's CPU time (utime, stime: clock ticks) and its sleeps.
    let pid1_now = || -> (u64, u64) {
        let ticks = [11, 12]
            .iter()
            .filter_map(|&n| stat_field(pid1, n)?.parse::<u64>().ok())
            .sum();
        let slept = status(pid1, "voluntary_ctxt_switches").parse().unwrap();
        (ticks, slept)
    };
    let (start, (ticks0, slept0), max0) = (Instant::now(), pid1_now(), max_events());
    log.push_str(&wait_line(&mut child, "standin: churned"));
    let (secs, (ticks1, slept1), max1) = (start.elapsed().as_secs_f64(), pid1_now(), max_events());
    assert!(
        max1 - max0 >= 100,
        "the stand-in met its memory.max {} times: {log}",
        max1 - max0
    );
    // (100 ticks a second on Debian's kernels.)
    let busy = (ticks1 - ticks0) as f64 / 100.0 / secs;
    let wakeups = (slept1 - slept0) as f64 / secs;
    assert!(
        busy < 0.5 && wakeups < 400.0,
        "PID 1 busy {:.0} % and woken {wakeups:.0} times a second over {secs:.1} s \
         ({} memory.max events): {log}",
        busy * 100.0,
        max1 - max0
    );
    assert!(!log.contains("met its"), "{log}");
    assert_eq!(stop(&mut child), Some(0));
    assert_eq!(vm_cgroup("churn"), None);
}
