//! Each VM in a cgroup v2 of its own, each daemon in a leaf with its
//! bounds, killed as one. These need cgroup v2 with the memory, pids and
//! cpu controllers: they run in the kernel matrix's 6.12 guest, and on a
//! host that has them (`cargo xtask test` says when it leaves them to the
//! guest). The refusal and the opt-out of a host without them are in
//! vm_init.rs.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sandbox_core::contract::bin::{WRAP_VIRTIOFSD, WRAP_VMM};
use sandbox_core::contract::{config, daemon, VmDir};
use tests::vm::{children, comm, daemon_of, pidns, procs_in_pidns, stop, wait_line, within};
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
    let vm = state.add_standin_vm("leaves");
    let bin = state.standins();
    let mut child = state.vm_init(
        "leaves",
        &bin.join("vmm-cooperative"),
        &bin.join("virtiofsd-cgroup"),
        &[],
    );
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
    let bin = state.standins();
    state.add_standin_vm("calm");
    let hog = state.add_standin_vm("hog");
    limit(&hog, "memory.max 32M\n");
    let ok = bin.join("virtiofsd-ok");
    let vmm = bin.join("vmm-cooperative");
    let mut calm = state.vm_init("calm", &vmm, &ok, &[]);
    wait_line(&mut calm, ": ready");
    let calm_virtiofsd = daemon_of(wrapper(calm.id(), WRAP_VIRTIOFSD));

    let mut child = state.vm_init("hog", &vmm, &bin.join("virtiofsd-hog"), &[]);
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
    let bin = state.standins();
    let vm = state.add_standin_vm("bomb");
    limit(&vm, "pids.max 12\n");
    let mut child = state.vm_init(
        "bomb",
        &bin.join("vmm-cooperative"),
        &bin.join("virtiofsd-forkbomb"),
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
    let bin = state.standins();
    state.add_standin_vm("end");
    // virtiofsd-meddle leaves a grandchild in a session of its own.
    let mut child = state.vm_init(
        "end",
        &bin.join("vmm-cooperative"),
        &bin.join("virtiofsd-meddle"),
        &[],
    );
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
