//! vm-init under a real s6 (Debian's s6 and execline): readiness, the
//! process tree, graceful and forced shutdown, every way of killing the
//! tree, crashes, the parent check, id slots, bad input, and leaks.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use sandbox_core::cgroup;
use sandbox_core::contract::bin::{VMM_API, VM_INIT};
use sandbox_core::contract::{config, daemon, VmDir, SERVICES_MARK};
use sandbox_core::ids::{BLOCK, FIRST_ID, VMM_UID};
use sandbox_core::locks::lock_vm_dir;
use tests::new_vm::NewVm;
use tests::vm::{
    children, comm, daemon_of, pidns, ppid, procs_in_pidns, status, stop, wait_line, within, S6,
};
use tests::{privileged_with, StateDir};

const S6_TOOLS: &[&str] = &[
    "s6-svscan",
    "s6-svc",
    "s6-svwait",
    "s6-svstat",
    "execlineb",
    "getpid",
];

fn s6_ready(test: &str) -> bool {
    privileged_with(test, S6_TOOLS)
}

/// The VM of an s6 service: the outer vm-init, PID 1, its PID namespace.
struct Vm {
    outer: i32,
    pid1: i32,
    ns: u64,
}

fn vm_of(service: &Path) -> Vm {
    let outer = S6::pid(service).expect("service is up");
    let pid1 = children(outer)[0];
    Vm {
        outer,
        pid1,
        ns: pidns(pid1).unwrap(),
    }
}

fn up(service: &Path) -> Vm {
    let log = service
        .parent()
        .and_then(Path::parent)
        .map(|top| top.join("s6.log"))
        .unwrap();
    let started = Instant::now();
    // Generous: a stand-in VM is ready in milliseconds on the host, but the
    // kernel matrix runs this under TCG, beside whatever the machine does.
    let ok = S6::svwait(service, "-U", 60_000);
    assert!(
        ok,
        "the VM did not become ready after {:?} ({}); s6 log:\n{}",
        started.elapsed(),
        S6::svstat(service, "up,ready,pid,exitcode,signal"),
        std::fs::read_to_string(log).unwrap_or_default()
    );
    vm_of(service)
}

fn gone(ns: u64, limit: Duration) -> bool {
    within(limit, || procs_in_pidns(ns).is_empty())
}

fn args_for(state: &StateDir, vmm: &str, fs: &str) -> String {
    let bin = state.standins();
    format!(
        "--vmm {}/{vmm} --virtiofsd {}/{fs}",
        bin.display(),
        bin.display()
    )
}

#[test]
fn ready_under_s6_in_its_own_pid_namespace_and_graceful_down() {
    if !s6_ready("graceful") {
        return;
    }
    let state = StateDir::new("graceful");
    state.add_standin_vm("g");
    let s6 = S6::start(&state);
    let svc = s6.add_vm(
        &state,
        "g",
        &args_for(&state, "vmm-cooperative", "virtiofsd-ok"),
    );
    let vm = up(&svc);
    // The outer's parent is s6-supervise; PID 1 is PID 1 of a new PID
    // namespace, and every daemon of the VM is in it.
    assert_eq!(comm(ppid(vm.outer).unwrap()), "s6-supervise");
    assert_ne!(Some(vm.ns), pidns(vm.outer));
    assert_eq!(
        status(vm.pid1, "NSpid").split_whitespace().last(),
        Some("1")
    );
    // Each daemon's wrapper is PID 1's child; the daemon is PID 2 of a
    // PID namespace of its own below the VM's, whose PID 1 is the
    // wrapper's reaper.
    let keepers = children(vm.pid1);
    assert_eq!(keepers.len(), 2, "virtiofsd's and the VMM's: {keepers:?}");
    let mut want = vec![vm.pid1];
    for &k in &keepers {
        assert_eq!(pidns(k), Some(vm.ns));
        let reaper = children(k)[0];
        let d = daemon_of(k);
        assert_ne!(
            pidns(d),
            Some(vm.ns),
            "{} in the VM's PID namespace",
            comm(d)
        );
        assert_eq!(pidns(d), pidns(reaper));
        assert_eq!(status(reaper, "NSpid").split_whitespace().last(), Some("1"));
        assert_eq!(status(d, "NSpid").split_whitespace().last(), Some("2"));
        want.extend([k, reaper, d]);
    }
    assert_ne!(pidns(daemon_of(keepers[0])), pidns(daemon_of(keepers[1])));
    let mut in_ns = procs_in_pidns(vm.ns);
    in_ns.sort();
    want.sort();
    assert_eq!(in_ns, want);

    let start = Instant::now();
    S6::svc(&svc, "-d");
    assert!(S6::svwait(&svc, "-D", 30_000));
    let took = start.elapsed();
    eprintln!("s6-svc -d to down: {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}, the timeout is 30 s"
    );
    assert_eq!(S6::svstat(&svc, "exitcode"), "0");
    let serial = std::fs::read_to_string(VmDir::new(state.0.join("g")).serial_log()).unwrap();
    assert!(
        serial.contains("request PUT /api/v1/vm.power-button"),
        "{serial}"
    );
    assert!(serial.contains("guest powered off"), "{serial}");
    assert!(
        gone(vm.ns, Duration::from_secs(1)),
        "{:?}",
        procs_in_pidns(vm.ns)
    );
    assert!(!VmDir::new(state.0.join("g")).api_socket().exists());
}

#[test]
fn stubborn_vmm_is_stopped_after_the_timeout() {
    if !s6_ready("stubborn") {
        return;
    }
    let state = StateDir::new("stubborn");
    state.add_standin_vm("s");
    let s6 = S6::start(&state);
    let extra = format!(
        "--shutdown-timeout 1 {}",
        args_for(&state, "vmm-stubborn", "virtiofsd-ok")
    );
    let svc = s6.add_vm(&state, "s", &extra);
    let vm = up(&svc);
    let start = Instant::now();
    S6::svc(&svc, "-d");
    assert!(S6::svwait(&svc, "-D", 10_000));
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(5),
        "{took:?}"
    );
    assert_eq!(S6::svstat(&svc, "exitcode"), "2");
    // (A wait for an event, not a measure: 1 s was once too short in the
    // kernel matrix's guest under TCG.)
    assert!(gone(vm.ns, Duration::from_secs(5)));
    assert!(S6::log(&state).contains("did not power off within 1 s"));
}

/// Kills one process of the tree with SIGKILL; the whole VM must be gone
/// within a second, and the copy s6 starts next must be a new VM.
fn kill_and_check_restart(test: &str, victim: impl Fn(&Vm) -> i32) {
    if !s6_ready(test) {
        return;
    }
    let state = StateDir::new(test);
    state.add_standin_vm("k");
    let s6 = S6::start(&state);
    let svc = s6.add_vm(
        &state,
        "k",
        &args_for(&state, "vmm-cooperative", "virtiofsd-ok"),
    );
    let first = up(&svc);
    let pid = victim(&first);
    Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap();
    assert!(
        gone(first.ns, Duration::from_secs(1)),
        "VM survived: {:?}",
        procs_in_pidns(first.ns)
    );
    // s6 (or s6-svscan's new supervisor) starts the service again.
    let second = within(Duration::from_secs(10), || {
        S6::pid(&svc).is_some_and(|p| p != first.outer && !children(p).is_empty())
    });
    assert!(second, "no new VM");
    let second = up(&svc);
    // (PID namespace inode numbers are reused once freed: compare processes.)
    assert_ne!((second.outer, second.pid1), (first.outer, first.pid1));
    assert_eq!(comm(ppid(second.outer).unwrap()), "s6-supervise");
    // (That the old VM's slot is given back is slots.rs's: other tests of
    // this binary take slots meanwhile.)
    assert_eq!(children(second.pid1).len(), 2);
}

#[test]
fn kill_9_of_s6_supervise_takes_the_vm_down() {
    kill_and_check_restart("kill_supervise", |vm| ppid(vm.outer).unwrap());
}

#[test]
fn kill_9_of_the_outer_vm_init_takes_the_vm_down() {
    kill_and_check_restart("kill_outer", |vm| vm.outer);
}

#[test]
fn kill_9_of_pid_1_takes_the_vm_down() {
    kill_and_check_restart("kill_pid1", |vm| vm.pid1);
}

/// vm-init started directly by this test with stand-in daemons.
fn direct(state: &StateDir, name: &str, vmm: &str, fs: &str, extra: &[&str]) -> Child {
    let bin = state.standins();
    state.vm_init(name, &bin.join(vmm), &bin.join(fs), extra)
}

#[test]
fn a_crashing_daemon_takes_the_vm_down_and_says_which() {
    if !privileged_with("crash", &[]) {
        return;
    }
    let state = StateDir::new("crash");
    state.add_standin_vm("c");
    let mut child = direct(&state, "c", "vmm-cooperative", "virtiofsd-crash", &[]);
    let log = wait_line(&mut child, "tearing it down");
    let status = child.wait().unwrap();
    assert!(
        log.contains("virtiofsd exited with status 3: the VM cannot go on"),
        "{log}"
    );
    assert_eq!(status.code(), Some(1));
    let mut child = direct(&state, "c", "vmm-crash", "virtiofsd-ok", &[]);
    let log = wait_line(&mut child, "the VMM");
    assert_eq!(child.wait().unwrap().code(), Some(1));
    assert!(log.contains("the VMM exited with status 7"), "{log}");
    // A VMM that refuses its argv before the VM is ready: vm-init's line
    // carries the VMM's own error line.
    let mut child = direct(&state, "c", "vmm-refuses", "virtiofsd-ok", &[]);
    let log = wait_line(&mut child, "vm-init: c: the VMM");
    assert_eq!(child.wait().unwrap().code(), Some(1));
    assert!(
        log.contains(
            "vm-init: c: the VMM exited with status 2 (\"error: unexpected argument '--gpu' found\")"
        ),
        "{log}"
    );
}

/// Names the entries of a VM directory, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn without_cgroup_v2_and_its_controllers_vm_init_refuses_in_one_line_unless_told() {
    if !privileged_with("no_cgroups", &[]) {
        return;
    }
    let state = StateDir::new("no_cgroups");
    let vm = state.add_standin_vm("bare");
    let bin = state.standins();
    // A host with cgroup v2 (the kernel matrix's 6.12 guest): a parent
    // whose own parent gives it no controller stands in for a host
    // without them.
    let has_v2 = tests::no_cgroups().is_empty();
    let bare = Path::new("/sys/fs/cgroup/vm-sandbox-test-bare");
    let mut parent_args: Vec<String> = Vec::new();
    if has_v2 {
        std::fs::create_dir_all(bare.join("parent")).unwrap();
        parent_args = vec![
            "--cgroup-parent".into(),
            bare.join("parent").display().to_string(),
        ];
    }
    let run = |extra: &[&str]| {
        Command::new(state.bin().join(VM_INIT))
            .args(["--parent-pid", &std::process::id().to_string()])
            .arg("--state-dir")
            .arg(&state.0)
            .arg("--vmm")
            .arg(bin.join("vmm-brief"))
            .arg("--virtiofsd")
            .arg(bin.join("virtiofsd-ok"))
            .args(&parent_args)
            .args(extra)
            .arg("bare")
            .output()
            .unwrap()
    };
    // A bad override of a daemon's limits: bad input, before anything.
    let limits = VmDir::new(&vm).config_file(config::LIMITS);
    std::fs::create_dir(&limits).unwrap();
    let says = |d: &str, what: &str| format!("{}: {what}", cgroup::limits_file(d));
    for (file, text, says) in [
        (
            daemon::VIRTIOFSD,
            "memory.max lots\n",
            says(daemon::VIRTIOFSD, "\"memory.max lots\""),
        ),
        (
            daemon::GPU,
            "pids.max 64\n",
            says(daemon::GPU, "not a daemon of this VM"),
        ),
        (
            daemon::VMM,
            "pids.max 2\n",
            "pids.max 2 is not from 4".into(),
        ),
    ] {
        std::fs::write(limits.join(file), text).unwrap();
        let out = run(&["--allow-no-cgroups"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(100), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(&says), "{err}");
        std::fs::remove_file(limits.join(file)).unwrap();
    }
    std::fs::remove_dir(&limits).unwrap();
    let untouched = entries(&vm);
    // Refused: one line naming what is missing and the opt-out, exit 111,
    // nothing created.
    let out = run(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(111), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    // (A cgroup v1 host has no cgroup2 mount; a hybrid one, like this CI
    // machine kind, one with no controller but hugetlb.)
    let missing = if has_v2 {
        err.contains("lacks the memory, pids, cpu controllers (it has: )")
    } else {
        err.contains("no cgroup v2 file system is mounted") || err.contains("lacks the")
    };
    assert!(missing && err.contains("--allow-no-cgroups"), "{err}");
    assert_eq!(entries(&vm), untouched);
    // The explicit opt-out: the VM runs (vmm-brief powers off by itself)
    // and vm-init says in one line that it has no bounds.
    let out = run(&["--allow-no-cgroups"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(
        err.matches(
            "running the VM without memory, pids or CPU bounds, as --allow-no-cgroups asks"
        )
        .count(),
        1,
        "{err}"
    );
    assert!(err.contains("vm-init: bare: ready"), "{err}");
    if has_v2 {
        std::fs::remove_dir(bare.join("parent")).unwrap();
        std::fs::remove_dir(bare).unwrap();
    }
}

#[test]
fn wrong_parent_starts_nothing() {
    if !privileged_with("parent", &[]) {
        return;
    }
    let state = StateDir::new("parent");
    let vm = state.add_standin_vm("p");
    let bin = state.standins();
    let vmm = bin.join("vmm-cooperative");
    // A wrong --parent-pid.
    let out = Command::new(state.bin().join(VM_INIT))
        .args(tests::no_cgroups())
        .args([
            "--parent-pid",
            "1",
            "--state-dir",
            state.0.to_str().unwrap(),
            "--vmm",
            vmm.to_str().unwrap(),
            "p",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(111));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not 1: the supervisor is gone"));
    // A parent that is gone before vm-init checks: the shell exits at once;
    // 200 ms later its background subshell runs vm-init with the dead
    // shell's PID, as s6-supervise's child would see after a reparent.
    let code = state.top().join("code");
    let script = format!(
        "(sleep 0.2; {} {} --parent-pid $$ --state-dir {} --vmm {} p 2>{}; echo $? > {}) & exit 0",
        state.bin().join(VM_INIT).display(),
        tests::no_cgroups().join(" "),
        state.0.display(),
        vmm.display(),
        state.top().join("err").display(),
        code.display()
    );
    assert!(Command::new("sh")
        .args(["-c", &script])
        .status()
        .unwrap()
        .success());
    assert!(within(Duration::from_secs(5), || std::fs::read_to_string(
        &code
    )
    .is_ok_and(|c| c.ends_with('\n'))));
    assert_eq!(std::fs::read_to_string(&code).unwrap().trim(), "111");
    assert!(std::fs::read_to_string(state.top().join("err"))
        .unwrap()
        .contains("the supervisor is gone"));
    // Nothing was created or locked.
    let d = VmDir::new(&vm);
    for f in [d.api_socket(), d.virtiofsd_socket(), d.serial_log()] {
        assert!(!f.exists(), "{} was created", f.display());
    }
    assert!(lock_vm_dir(&vm).is_ok(), "the VM's lock is held");
}

#[test]
fn two_vms_get_different_slots_and_ids() {
    if !s6_ready("two") {
        return;
    }
    let state = StateDir::new("two");
    state.add_standin_vm("one");
    state.add_standin_vm("two");
    let s6 = S6::start(&state);
    let args = args_for(&state, "vmm-cooperative", "virtiofsd-ok");
    let (a, b) = (
        s6.add_vm(&state, "one", &args),
        s6.add_vm(&state, "two", &args),
    );
    let (a, b) = (up(&a), up(&b));
    let base = |vm: &Vm| -> u32 {
        let map = std::fs::read_to_string(format!("/proc/{}/uid_map", vm.pid1)).unwrap();
        map.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let (ba, bb) = (base(&a), base(&b));
    assert_ne!(ba, bb);
    assert!(ba.abs_diff(bb) >= BLOCK && ba >= FIRST_ID && bb >= FIRST_ID);
    let host_uids = |vm: &Vm| -> Vec<u32> {
        children(vm.pid1)
            .into_iter()
            .map(daemon_of)
            .map(|p| {
                status(p, "Uid")
                    .split_whitespace()
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect()
    };
    let (ua, ub) = (host_uids(&a), host_uids(&b));
    assert!(
        ua.contains(&(ba + VMM_UID)) && ub.contains(&(bb + VMM_UID)),
        "{ua:?} {ub:?}"
    );
    assert!(
        ua.iter().all(|u| !ub.contains(u)),
        "shared ids: {ua:?} {ub:?}"
    );
}

fn refused(state: &StateDir, name: &str, extra: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(state.bin().join(VM_INIT))
        .args(tests::no_cgroups())
        .args([
            "--parent-pid",
            &std::process::id().to_string(),
            "--state-dir",
            state.0.to_str().unwrap(),
        ])
        .args(extra)
        .arg(name)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    (out.status.code(), err)
}

#[test]
fn bad_input_is_one_line_and_leaves_nothing() {
    if !privileged_with("errors", &[]) {
        return;
    }
    let state = StateDir::new("errors");
    let (code, err) = refused(&state, "nope", &[]);
    assert_eq!(
        (code, err.contains("unknown VM")),
        (Some(100), true),
        "{err}"
    );
    std::fs::create_dir_all(state.0.join("noconf")).unwrap();
    let (code, err) = refused(&state, "noconf", &[]);
    assert_eq!(
        (code, err.contains("missing config")),
        (Some(100), true),
        "{err}"
    );
    for bad in ["..", "a/b", "a:b", "a,b", ".x", &"x".repeat(65)] {
        let (code, err) = refused(&state, bad, &[]);
        assert_eq!(code, Some(100), "{bad}: {err}");
    }
    // A state dir deep enough that DIR/NAME/vsock.d/vsock overflows sun_path.
    let deep = state.top().join("d".repeat(90));
    NewVm::create(deep.join("long")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&deep, std::fs::Permissions::from_mode(0o700)).unwrap();
    let out = Command::new(state.bin().join(VM_INIT))
        .args(tests::no_cgroups())
        .args([
            "--parent-pid",
            &std::process::id().to_string(),
            "--state-dir",
            deep.to_str().unwrap(),
            "long",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        (out.status.code(), err.contains("longer than sun_path")),
        (Some(100), true),
        "{err}"
    );
    assert!(!VmDir::new(deep.join("long")).api_socket().exists());
    // Bad VM configs: refused before anything is created.
    let bad = state.add_standin_vm("badconf");
    let input = |name| VmDir::new(&bad).config_file(name);
    std::fs::remove_file(input(config::KERNEL)).unwrap();
    let (code, err) = refused(&state, "badconf", &[]);
    assert_eq!(
        (code, err.contains("missing kernel")),
        (Some(100), true),
        "{err}"
    );
    let with_disk = NewVm::create(&bad).and_then(|v| v.disk("a,b.img")).unwrap();
    let (code, err) = refused(&state, "badconf", &[]);
    assert_eq!(
        (code, err.contains("contains ','")),
        (Some(100), true),
        "{err}"
    );
    std::fs::remove_file(input(config::DISKS).join("a,b.img")).unwrap();
    with_disk.set(config::VMM, "firecracker\n").unwrap();
    let (code, err) = refused(&state, "badconf", &[]);
    assert_eq!(
        (code, err.contains("not cloud-hypervisor or qemu")),
        (Some(100), true),
        "{err}"
    );
    let left: Vec<_> = std::fs::read_dir(&bad)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "created something: {left:?}");

    let bin = state.standins();
    let vmm = bin.join("vmm-cooperative");
    let vm = state.add_standin_vm("full");
    // A second vm-init for a running VM: refused by the VM's own lock; the
    // first VM's sockets are untouched.
    let mut first = direct(&state, "full", "vmm-cooperative", "virtiofsd-ok", &[]);
    wait_line(&mut first, ": ready");
    let (code, err) = refused(&state, "full", &["--vmm", vmm.to_str().unwrap()]);
    assert_eq!(
        (code, err.contains("already running")),
        (Some(111), true),
        "{err}"
    );
    assert!(VmDir::new(&vm).api_socket().exists());
    assert_eq!(stop(&mut first), Some(0));
}

/// Runs vm-init on `state_dir`/`name` and asserts exit 100, one line that
/// names `path`, and nothing created in the VM directory or the state dir.
fn refused_by_host_setup(bin: &Path, state_dir: &Path, name: &str, path: &Path) -> String {
    let vm = state_dir.join(name);
    let before = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let (vm_before, state_before) = (before(&vm), before(state_dir));
    let out = Command::new(bin.join(VM_INIT))
        .args(tests::no_cgroups())
        .args(["--parent-pid", &std::process::id().to_string()])
        .arg("--state-dir")
        .arg(state_dir)
        .arg(name)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(100), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(
        err.contains(&path.display().to_string()),
        "does not name {}: {err}",
        path.display()
    );
    assert_eq!(before(&vm), vm_before, "created something in the VM dir");
    assert_eq!(before(state_dir), state_before, "created a slot file");
    err
}

#[test]
fn bad_host_setups_are_one_line_and_create_nothing() {
    if !privileged_with("host_setup", &[]) {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let mode =
        |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
    let state = StateDir::new("host_setup");
    let bin = state.bin();
    // A state dir under /tmp: every daemon has a private /tmp, so the VM
    // directory would not exist for any of them.
    let tmp = Path::new("/tmp").join(format!("vm-sandbox-host-setup-{}", std::process::id()));
    let tmp_state = tmp.join("state");
    NewVm::create(tmp_state.join("t")).unwrap();
    let err = refused_by_host_setup(&bin, &tmp_state, "t", &tmp_state);
    assert!(err.contains("private tmpfs"), "{err}");
    std::fs::remove_dir_all(&tmp).unwrap();

    // The state dir writable by others than root.
    let vm = state.add_standin_vm("w");
    mode(&state.0, 0o777);
    let err = refused_by_host_setup(&bin, &state.0, "w", &state.0);
    assert!(err.contains("drwxrwxrwx"), "{err}");
    mode(&state.0, 0o1777);
    refused_by_host_setup(&bin, &state.0, "w", &state.0);
    // Searchable by host users: what the guest's root and the VMM make
    // below it, whatever its mode, would be theirs to reach.
    for (m, gid) in [(0o755, 0), (0o711, 0), (0o750, 100)] {
        std::os::unix::fs::chown(&state.0, None, Some(gid)).unwrap();
        mode(&state.0, m);
        let err = refused_by_host_setup(&bin, &state.0, "w", &state.0);
        assert!(
            err.contains(&format!("chmod 0700 {}", state.0.display())),
            "{err}"
        );
    }
    std::os::unix::fs::chown(&state.0, None, Some(0)).unwrap();
    mode(&state.0, 0o700);
    // ... or a directory above it.
    let top = state.top();
    mode(&top, 0o757);
    let err = refused_by_host_setup(&bin, &state.0, "w", &state.0);
    assert!(err.contains(&format!("through {}", top.display())), "{err}");
    mode(&top, 0o755);
    // The VM directory group-writable for a group other than root's, or
    // owned by a user.
    std::os::unix::fs::chown(&vm, None, Some(100)).unwrap();
    mode(&vm, 0o775);
    refused_by_host_setup(&bin, &state.0, "w", &vm);
    std::os::unix::fs::chown(&vm, Some(1000), Some(0)).unwrap();
    mode(&vm, 0o755);
    let err = refused_by_host_setup(&bin, &state.0, "w", &vm);
    assert!(err.contains("VM directory"), "{err}");

    // Outside the state dir, on a file system that honours setuid bits (a
    // plain tmpfs here): what leads there from the state dir is refused.
    let out = std::path::PathBuf::from(format!("/run/vm-sandbox-suid-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    rustix::mount::mount(
        "tmpfs",
        &out,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        c"mode=755",
    )
    .unwrap();
    // Taken away again whatever happens below (a failed assertion too).
    struct Gone(std::path::PathBuf);
    impl Drop for Gone {
        fn drop(&mut self) {
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            let here = self.0.display().to_string();
            for _ in mounts.lines().filter(|l| l.contains(&here)) {
                let _ = sandbox_core::mount::detach(&self.0);
            }
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _gone = Gone(out.clone());
    // The VM directory a symlink out of the state dir.
    let elsewhere = out.join("vm");
    NewVm::create(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, state.0.join("l")).unwrap();
    let err = refused_by_host_setup(&bin, &state.0, "l", &state.0.join("l"));
    assert!(err.contains("a symlink"), "{err}");
    std::fs::remove_file(state.0.join("l")).unwrap();
    // The VM directory also bound elsewhere, past the state dir.
    std::os::unix::fs::chown(&vm, Some(0), Some(0)).unwrap();
    let bound = out.join("bound");
    std::fs::create_dir(&bound).unwrap();
    rustix::mount::mount_bind(&vm, &bound).unwrap();
    let err = refused_by_host_setup(&bin, &state.0, "w", &vm);
    assert!(
        err.contains(&format!("mounted at {}", bound.display())),
        "{err}"
    );
    rustix::mount::unmount(&bound, rustix::mount::UnmountFlags::DETACH).unwrap();
    // Storage a symlink there: a guest's root could leave a setuid-root
    // program where host users reach it.
    let storage = VmDir::new(state.add_standin_vm("s")).storage();
    let s = storage.as_path();
    let store = out.join("store");
    std::fs::create_dir_all(&store).unwrap();
    std::fs::remove_dir(s).unwrap();
    std::os::unix::fs::symlink(&store, s).unwrap();
    let err = refused_by_host_setup(&bin, &state.0, "s", s);
    assert!(
        err.contains("a symlink") && err.contains("nosuid,nodev"),
        "{err}"
    );
    // ... or a bind mount of it.
    std::fs::remove_file(s).unwrap();
    std::fs::create_dir(s).unwrap();
    rustix::mount::mount_bind(&store, s).unwrap();
    let err = refused_by_host_setup(&bin, &state.0, "s", s);
    assert!(err.contains("a mount point"), "{err}");
    // Mounted nosuid,nodev there, but not where else it shows.
    let nosuid_nodev = |at: &Path| {
        rustix::mount::mount_remount(
            at,
            rustix::mount::MountFlags::BIND
                | rustix::mount::MountFlags::NOSUID
                | rustix::mount::MountFlags::NODEV,
            c"",
        )
        .unwrap()
    };
    nosuid_nodev(s);
    let err = refused_by_host_setup(&bin, &state.0, "s", s);
    assert!(
        err.contains(&format!("mounted at {} without", out.display())),
        "{err}"
    );
    // Nosuid,nodev wherever it shows, the same storage is fine.
    nosuid_nodev(&out);
    let mut child = direct(&state, "s", "vmm-cooperative", "virtiofsd-ok", &[]);
    assert!(wait_line(&mut child, ": ready").contains("ready"));
    assert_eq!(stop(&mut child), Some(0));
    rustix::mount::unmount(s, rustix::mount::UnmountFlags::DETACH).unwrap();
    drop(_gone);
    assert!(!out.exists(), "{} is left", out.display());

    // Put right, the same VM runs.
    std::os::unix::fs::chown(&vm, Some(0), Some(0)).unwrap();
    let mut child = direct(&state, "w", "vmm-cooperative", "virtiofsd-ok", &[]);
    assert!(wait_line(&mut child, ": ready").contains("ready"));
    assert_eq!(stop(&mut child), Some(0));
}

#[test]
fn two_vms_in_two_state_dirs_get_different_ids_and_see_nothing_of_each_other() {
    if !privileged_with("two_dirs", &[]) {
        return;
    }
    let (a, b) = (StateDir::new("two_dirs_a"), StateDir::new("two_dirs_b"));
    a.add_standin_vm("same");
    b.add_standin_vm("same");
    let mut va = direct(&a, "same", "vmm-cooperative", "virtiofsd-ok", &[]);
    let mut vb = direct(&b, "same", "vmm-cooperative", "virtiofsd-ok", &[]);
    let (la, lb) = (wait_line(&mut va, ": ready"), wait_line(&mut vb, ": ready"));
    assert!(la.contains("ready") && lb.contains("ready"), "{la}{lb}");
    let pid1 = |c: &Child| children(c.id() as i32)[0];
    let base = |pid: i32| -> u32 {
        let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
        map.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let (pa, pb) = (pid1(&va), pid1(&vb));
    assert!(
        base(pa).abs_diff(base(pb)) >= BLOCK,
        "one id block for two VMs: {} {}",
        base(pa),
        base(pb)
    );
    // From the host, through each daemon's root: its own VM's entries
    // exist, the other state dir does not.
    for (pid, own, other) in [(pa, &a, &b), (pb, &b, &a)] {
        let daemons = children(pid);
        assert_eq!(daemons.len(), 2);
        for d in daemons.into_iter().map(daemon_of) {
            let root = std::path::PathBuf::from(format!("/proc/{d}/root"));
            let inside = |p: &Path| root.join(p.strip_prefix("/").unwrap());
            assert!(
                !inside(&other.0).exists(),
                "{} sees {}",
                comm(d),
                other.0.display()
            );
            assert!(!inside(&other.top()).exists());
            let own_entries: Vec<String> = std::fs::read_dir(inside(&own.0))
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(own_entries, ["same"], "{}", comm(d));
        }
    }
    for mut c in [va, vb] {
        assert_eq!(stop(&mut c), Some(0));
    }
}

/// s6-supervise dies while its run script has not yet asked for its PID:
/// the script gets its reaper's PID, which getppid() matches. vm-init must
/// still refuse: the supervisor's lock on supervise/lock is gone (or held
/// by the new supervisor s6-svscan starts), and only the new supervisor's
/// VM runs.
#[test]
fn a_run_script_whose_supervisor_died_first_starts_no_vm() {
    if !s6_ready("reaped") {
        return;
    }
    let state = StateDir::new("reaped");
    state.add_standin_vm("r");
    let s6 = S6::start(&state);
    let args = args_for(&state, "vmm-cooperative", "virtiofsd-ok");
    // The template, with a window before `getpid -P` (only the first run
    // waits: the marker is gone after).
    let marker = state.top().join("slow-once");
    std::fs::write(&marker, "").unwrap();
    let template =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../s6/vm/run"))
            .unwrap();
    let slow = template.replacen(
        "envfile vm.conf",
        &format!(
            "foreground {{ if {{ test -e {m} }} foreground {{ rm {m} }} sleep 1 }}\nenvfile vm.conf",
            m = marker.display()
        ),
        1,
    );
    let svc = s6.add_vm_with_run(&state, "r", &args, &slow);
    // The run script is in its window: kill its supervisor.
    assert!(within(Duration::from_secs(5), || !marker.exists()));
    let script = within(Duration::from_secs(5), || S6::pid(&svc).is_some());
    assert!(script, "the run script did not start");
    let supervisor = ppid(S6::pid(&svc).unwrap()).unwrap();
    assert_eq!(comm(supervisor), "s6-supervise");
    Command::new("kill")
        .args(["-9", &supervisor.to_string()])
        .status()
        .unwrap();
    // The orphan refuses; the new supervisor's copy runs the VM.
    assert!(
        within(Duration::from_secs(10), || S6::log(&state)
            .contains("the supervisor that started us is gone")),
        "{}",
        S6::log(&state)
    );
    let vm = up(&svc);
    assert_ne!(ppid(vm.outer), Some(supervisor));
    assert_eq!(comm(ppid(vm.outer).unwrap()), "s6-supervise");
    let outers: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&p: &i32| {
            comm(p) == VM_INIT
                && std::fs::read_link(format!("/proc/{p}/cwd")).is_ok_and(|c| c == svc)
        })
        .collect();
    assert_eq!(outers, [vm.outer], "more than one VM for one service");
}

/// A VMM that writes without end to its event pipe before it says it
/// booted: PID 1 keeps a bounded window of it, not all of it.
#[test]
fn a_flooding_vmm_costs_pid_1_no_memory() {
    if !privileged_with("flood", &[]) {
        return;
    }
    let state = StateDir::new("flood");
    state.add_standin_vm("f");
    let mut child = direct(&state, "f", "vmm-flood", "virtiofsd-ok", &[]);
    assert!(wait_line(&mut child, ": ready").contains("ready"));
    let pid1 = children(child.id() as i32)[0];
    let hwm: u64 = status(pid1, "VmHWM")
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    // The stand-in wrote 64 MiB before "booted".
    assert!(hwm < 8 * 1024, "PID 1's peak RSS is {hwm} KiB");
    assert_eq!(stop(&mut child), Some(0));
}

/// A guest that prints without end fills neither the host's disk nor
/// PID 1: serial.log stops at 16 MiB with a line saying so, and the VM
/// runs on.
#[test]
fn a_guest_printing_without_end_gets_a_bounded_serial_log() {
    if !privileged_with("chatty", &[]) {
        return;
    }
    let state = StateDir::new("chatty");
    let vm = state.add_standin_vm("c");
    let mut child = direct(&state, "c", "vmm-chatty", "virtiofsd-ok", &[]);
    assert!(wait_line(&mut child, ": ready").contains("ready"));
    assert_eq!(stop(&mut child), Some(0));
    let log = std::fs::read(VmDir::new(&vm).serial_log()).unwrap();
    let text = String::from_utf8_lossy(&log[log.len().saturating_sub(200)..]).into_owned();
    assert!(
        log.len() <= (16 << 20) + 100 && log.len() >= 16 << 20,
        "serial.log is {} bytes",
        log.len()
    );
    assert!(text.contains("serial.log stops at 16 MiB"), "{text}");
}

/// vm-init's stderr and stdout, read to their end in threads (a test that
/// stopped reading would hold up vm-init's own writes). stderr is read
/// as a log that takes a moment per write would (s6-log, a journal): at
/// most 4 KiB a millisecond. `ready` is set once vm-init said the VM is.
fn drain_outputs(
    child: &mut Child,
    ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> impl FnOnce() -> (String, String) {
    use std::io::Read;
    let mut err = child.stderr.take().unwrap();
    let mut out = child.stdout.take();
    let e = std::thread::spawn(move || {
        let mut s = Vec::new();
        let mut chunk = [0u8; 4096];
        while let Ok(n) = err.read(&mut chunk) {
            if n == 0 {
                break;
            }
            s.extend_from_slice(&chunk[..n]);
            if !ready.load(std::sync::atomic::Ordering::SeqCst)
                && String::from_utf8_lossy(&s).contains(": ready (slot ")
            {
                ready.store(true, std::sync::atomic::Ordering::SeqCst);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        String::from_utf8_lossy(&s).into_owned()
    });
    let o = std::thread::spawn(move || {
        let mut s = Vec::new();
        if let Some(out) = out.as_mut() {
            let _ = out.read_to_end(&mut s);
        }
        String::from_utf8_lossy(&s).into_owned()
    });
    move || (e.join().unwrap(), o.join().unwrap())
}

/// The bytes of a daemon's marked lines in `text`.
fn marked_bytes(text: &str, mark: &str) -> usize {
    text.lines()
        .filter(|l| l.starts_with(mark))
        .map(|l| l.len() + 1)
        .sum()
}

/// What a flooding daemon got into vm-init's streams: every line of its
/// marked, at most the bound of each daemon, and one line saying how much
/// was dropped; nothing of it reads as vm-init's own.
fn assert_flood_bounded(vm: &str, daemon: &str, err: &str, out: &str) {
    let mark = sandbox_core::contract::output_mark(vm, daemon);
    let mark = mark.as_str();
    let passed = marked_bytes(err, mark) + marked_bytes(out, mark);
    assert!(passed > 0, "nothing of {daemon} came through:\n{err}");
    assert!(
        passed <= 256 << 10,
        "{passed} bytes of {daemon}'s output came through"
    );
    assert!(
        err.contains(&format!("vm-init: {vm}: {daemon}: "))
            && err.contains(" bytes of its output were dropped"),
        "no line says what was dropped:\n{}",
        err.lines()
            .filter(|l| !l.starts_with(mark))
            .collect::<Vec<_>>()
            .join("\n")
    );
    for text in [err, out] {
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("vm-init: some-other-vm")),
            "a daemon's line reads as vm-init's own"
        );
    }
    assert!(
        out.contains(&format!("{mark}vm-init: some-other-vm: ready (slot 9)")),
        "the daemon's stdout is not marked"
    );
}

/// The VM's host files are gone once vm-init has ended.
fn assert_files_removed(vm: &Path) {
    let dir = VmDir::new(vm);
    for p in [
        dir.virtiofsd_socket(),
        dir.api_socket(),
        dir.serial_fifo(),
        dir.vsock_dir(),
    ] {
        assert!(
            std::fs::symlink_metadata(&p).is_err(),
            "{} is left",
            p.display()
        );
    }
}

/// A virtiofsd that writes to its stdout and stderr without end neither
/// keeps PID 1 from ending the VM (after SIGTERM, or when the VMM powers
/// off by itself) nor gets more than its bound into vm-init's streams. In
/// both modes: each daemon under PID 1, and each an s6 service.
#[test]
fn a_daemon_flooding_its_output_neither_holds_up_nor_floods_vm_init() {
    if !privileged_with("flood-output", &["s6-svscan", "execlineb", "setpriv"]) {
        return;
    }
    let state = StateDir::new("flood-output");
    let services = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("s6/vm-services");
    let timeout = Duration::from_secs(5);
    // (mode, the VMM, how long the flood runs before the end)
    for (mode, vmm, flood) in [
        ("one", "vmm-cooperative", Duration::from_secs(10)),
        ("one", "vmm-brief", Duration::ZERO),
        ("services", "vmm-cooperative", Duration::from_secs(2)),
        ("services", "vmm-brief", Duration::ZERO),
    ] {
        let name = format!("{mode}-{}", vmm.trim_start_matches("vmm-"));
        let vm = state.add_standin_vm(&name);
        let bin = state.standins();
        let mut extra: Vec<&OsStr> = vec!["--shutdown-timeout".as_ref(), "5".as_ref()];
        if mode == "services" {
            extra.extend(["--services".as_ref(), services.as_os_str()]);
        }
        let mut child =
            state.vm_init_reporting(&name, &bin.join(vmm), &bin.join("virtiofsd-flood"), &extra);
        let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let outputs = drain_outputs(&mut child, ready.clone());
        // (Under TCG, in the kernel matrix, a VM takes a while to be ready.)
        let became_ready = within(Duration::from_secs(60), || {
            ready.load(std::sync::atomic::Ordering::SeqCst)
        });
        assert!(
            became_ready || vmm == "vmm-brief",
            "{name}: not ready within a minute"
        );
        std::thread::sleep(flood);
        let ended = if vmm == "vmm-brief" {
            // No signal: the guest powers off a second after booting.
            Instant::now()
        } else {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            Instant::now()
        };
        // The timeout and a margin (for a guest under TCG, too): what
        // matters is that it ends, where it used to spin for ever.
        let limit = timeout + Duration::from_secs(10);
        let status = tests::vm::wait_at_most(&mut child, limit);
        let took = ended.elapsed();
        let (err, out) = outputs();
        assert!(
            status.is_some(),
            "{name}: vm-init still ran {took:?} after the end; its lines:\n{}",
            err.lines()
                .filter(|l| l.starts_with(VM_INIT))
                .collect::<Vec<_>>()
                .join("\n")
        );
        // With --services every service's output is the VM's s6-svscan's.
        let daemon = if mode == "services" {
            SERVICES_MARK
        } else {
            daemon::VIRTIOFSD
        };
        assert_flood_bounded(&name, daemon, &err, &out);
        if flood >= Duration::from_secs(10) {
            // The relay went on reading at its rate after its first burst:
            // 256 KiB, then 64 KiB/s, of which 256 KiB (marks included) are
            // passed on. Without reading past the burst, what it would drop
            // is under the burst and the last words (2 x 64 KiB).
            let said = format!("vm-init: {name}: {daemon}: ");
            let dropped: u64 = err
                .lines()
                .find_map(|l| {
                    let rest = l.strip_prefix(&said)?;
                    rest.split_once(" bytes of its output were dropped")
                        .map(|(n, _)| n)
                })
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            assert!(
                dropped > 512 << 10,
                "{name}: the relay stopped reading after its burst: {dropped} bytes dropped"
            );
        }
        assert_files_removed(&vm);
    }
}

/// A VMM that listens and never accepts (its backlog cut to one) cannot
/// keep vm-init from ending the VM: the power button finds the backlog
/// taken, and at the shutdown timeout vm-init ends the VM anyway.
#[test]
fn a_vmm_that_never_accepts_cannot_hold_up_the_shutdown() {
    if !privileged_with("deaf", &[]) {
        return;
    }
    let state = StateDir::new("deaf");
    let vm = state.add_standin_vm("d");
    let mut child = direct(
        &state,
        "d",
        "vmm-deaf",
        "virtiofsd-ok",
        &["--shutdown-timeout", "2"],
    );
    assert!(wait_line(&mut child, ": ready").contains("ready"));
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let sent = Instant::now();
    let status = tests::vm::wait_at_most(&mut child, Duration::from_secs(8));
    let took = sent.elapsed();
    assert!(status.is_some(), "vm-init still ran {took:?} after SIGTERM");
    assert_eq!(
        status.unwrap().code(),
        Some(2),
        "the shutdown timeout's code"
    );
    assert_files_removed(&vm);
}

/// vmm-api against an API socket that accepts and never answers: one
/// line and exit 111 within its time limit.
#[test]
fn vmm_api_gives_up_on_a_vmm_that_never_answers() {
    let dir = std::env::temp_dir().join(format!("vmm-api-silent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(VmDir::new(&dir).api_socket()).unwrap();
    let started = Instant::now();
    let mut child = Command::new(tests::bin_dir().join(VMM_API))
        .arg("boot")
        .arg(&dir)
        .args(["--timeout", "1"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = tests::vm::wait_at_most(&mut child, Duration::from_secs(5));
    let took = started.elapsed();
    drop(listener);
    let _ = std::fs::remove_dir_all(&dir);
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.is_some(), "vmm-api still waited after {took:?}");
    assert_eq!(status.unwrap().code(), Some(111), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("no answer to /api/v1/vm.boot within 1 s"),
        "{err}"
    );
}

/// Started under a session keyring that holds a secret (as a login's,
/// made by pam_keyinit), two VMs: the probe in virtiofsd's place of one
/// and in the VMM's place of the other neither find nor read the secret
/// nor each other's keys, hand no keyring to their parent, and add keys
/// that are their own; the launcher's keyring holds nothing of theirs,
/// during the VMs or after, and after both VMs their keys are gone.
#[test]
fn the_launchers_keyring_is_out_of_reach_and_a_vms_keys_die_with_it() {
    use sandbox_core::attempts::key_read;
    use sandbox_core::Errno;
    use std::io::BufReader;
    use tests::vm::{assert_report_holds, read_report};
    if !privileged_with("keyrings", &["keyctl"]) {
        return;
    }
    let state = StateDir::new("keyrings");
    // The launcher: this test's thread (a session keyring is a thread's
    // credential, inherited by what it starts), with a keyring of its own.
    sandbox_core::keyring::join_new_session_keyring().unwrap();
    let keyctl = |args: &[&str]| -> String {
        let out = Command::new("keyctl").args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "keyctl {args:?}: {err}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let secret = keyctl(&["add", "user", "vm-sandbox-secret", "the launcher's", "@s"]);
    let added = |report: &str| -> Vec<String> {
        let line = report
            .lines()
            .find_map(|l| l.strip_prefix("key: vm-sandbox-keys="))
            .unwrap_or_else(|| panic!("no key line:\n{report}"));
        line.split(',').map(str::to_owned).collect()
    };
    let bin = state.standins();
    let a = state.add_probe_vm("a");
    let b = state.add_standin_vm("b");
    // Each probe is told the serials to try: the launcher's key, and the
    // keys the other VM's probe added.
    std::fs::write(
        VmDir::new(&a).storage().join("vm-sandbox-keys"),
        format!("vm-sandbox-keys={secret}\n"),
    )
    .unwrap();
    let mut vm_a =
        state.vm_init_reporting("a", &bin.join("vmm-cooperative"), &bin.join("probe"), &[]);
    let mut out_a = BufReader::new(vm_a.stdout.take().unwrap());
    let report_a = read_report(&mut out_a);
    eprintln!("{report_a}");
    let keys_a = added(&report_a);
    std::fs::write(
        VmDir::new(&b).config_file(config::CMDLINE),
        format!("vm-sandbox-keys={secret},{}\n", keys_a.join(",")),
    )
    .unwrap();
    let mut vm_b = state.vm_init_reporting("b", &bin.join("probe"), &bin.join("virtiofsd-ok"), &[]);
    let mut out_b = BufReader::new(vm_b.stdout.take().unwrap());
    let report_b = read_report(&mut out_b);
    eprintln!("{report_b}");
    let keys_b = added(&report_b);
    assert_report_holds(&report_a, 25);
    assert_report_holds(&report_b, 25);
    // Both VMs run: the launcher's keyring is as it was, their keys exist
    // (the host's root may not read them either: they are not root's).
    assert_eq!(keyctl(&["rlist", "@s"]), secret, "the launcher's keyring");
    let ids: Vec<i32> = keys_a
        .iter()
        .chain(&keys_b)
        .map(|k| k.parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "{keys_a:?} {keys_b:?}");
    for &id in &ids {
        assert_eq!(
            key_read(id).map(drop),
            Err(Errno::EACCES),
            "key {id} of a running VM"
        );
    }
    assert_eq!(stop(&mut vm_b), Some(0));
    assert_eq!(stop(&mut vm_a), Some(0));
    drop((out_a, out_b));
    assert_eq!(
        keyctl(&["rlist", "@s"]),
        secret,
        "the launcher's keyring after the VMs"
    );
    for role in [daemon::VIRTIOFSD, daemon::VMM] {
        let description = format!("vm-sandbox-from-{role}");
        let found = Command::new("keyctl")
            .args(["search", "@u", "user", &description])
            .output()
            .unwrap();
        assert!(
            !found.status.success(),
            "{description} on the launcher's user keyring"
        );
    }
    for id in ids {
        assert!(
            within(Duration::from_secs(10), || key_read(id).map(drop)
                == Err(Errno::ENOKEY)),
            "key {id} outlived its VM: {:?}",
            key_read(id).map(drop)
        );
    }
}
