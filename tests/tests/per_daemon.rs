//! Each daemon its own s6 service (vm-init --services): the VM's service
//! in the host's s6 tree (an instance made with s6-instance-create, as
//! Spectrum makes its VMs), and inside the VM's namespaces an s6-svscan of
//! the VM's own with one service per daemon (the project's s6/vm-services)
//! and one of the host's own (a "dbus" that is just a program under a
//! policy of its own). Real s6, the real virtiofsd, QEMU and the test guest.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sandbox_core::contract::bin::VMM_API;
use sandbox_core::contract::{config, daemon, env, fd, VmDir, SCAN_DIR};
use sandbox_core::ids::Slot;
use tests::guest::Tools;
use tests::matrix::{OtherVm, Outcome};
use tests::new_vm::NewVm;
use tests::vm::{children, comm, pidns, ppid, procs_in_pidns, status, supervisor_of, within, S6};
use tests::{privileged_with, StateDir, UID_A, UID_B};

/// Root, Landlock, and s6 with what the services' run scripts use.
fn s6_ready(test: &str) -> bool {
    privileged_with(
        test,
        &[
            "s6-svscan",
            "s6-svc",
            "s6-svwait",
            "s6-ipcserverd",
            "setpriv",
            "s6-instance-maker",
            "s6-instance-create",
            "execlineb",
        ],
    )
}

/// The probe's report on vm-init's stdout. A daemon that dies in the
/// middle (its supervisor, not PID 1, is its parent here) must fail the
/// test, not hang it: after a minute the VM is killed, which ends stdout.
fn report_of(
    child: &mut std::process::Child,
) -> (std::io::BufReader<std::process::ChildStdout>, String) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let done = std::sync::Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (done, pid) = (done.clone(), child.id());
        std::thread::spawn(move || {
            for _ in 0..600 {
                std::thread::sleep(Duration::from_millis(100));
                if done.load(Ordering::SeqCst) {
                    return;
                }
            }
            let _ = std::process::Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status();
        })
    };
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let report = tests::vm::read_report(&mut out);
    done.store(true, Ordering::SeqCst);
    let _ = watchdog.join();
    if !report.contains("probe: ") {
        let _ = child.kill();
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err);
        panic!("no report:\n{report}\nvm-init:\n{err}");
    }
    (out, report)
}

/// VM `name` as an instance of an instanced VM service, as Spectrum makes
/// its VMs: s6-instance-maker on the project's s6/vm-instance template,
/// then s6-instance-create. Returns the instance's service directory.
fn vm_instance(s6: &S6, state: &StateDir, name: &str, extra: &str) -> PathBuf {
    let template = state.top().join("vm-template");
    std::fs::create_dir_all(&template).unwrap();
    let project = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("s6/vm-instance");
    for f in ["run", "notification-fd", "timeout-kill"] {
        std::fs::copy(project.join(f), template.join(f)).unwrap();
    }
    std::fs::write(
        template.join(env::VM_CONF),
        tests::vm::vm_conf(None, &state.0, extra),
    )
    .unwrap();
    let service = s6.scan.join("vm");
    let run = |cmd: &mut std::process::Command| {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(std::process::Command::new("s6-instance-maker")
        .arg(&template)
        .arg(&service));
    let rescan = || {
        std::process::Command::new("s6-svscanctl")
            .arg("-a")
            .arg(&s6.scan)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(within(Duration::from_secs(5), rescan));
    assert!(S6::svwait(&service, "-u", 10_000), "the instanced service");
    // (Its s6-svscan of instances may not hold its lock yet: retry.)
    let create = || {
        std::process::Command::new("s6-instance-create")
            .args(["-t", "10000"])
            .arg(&service)
            .arg(name)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    assert!(
        within(Duration::from_secs(10), create),
        "s6-instance-create"
    );
    service.join("instance").join(name)
}

/// The "dbus" service's own uid in the VM.
const DBUS_UID: u32 = 65700;

/// The project's service directories, and a "dbus" of the test's own: a
/// program under test-wrap's policy, started like any daemon's wrapper.
fn services(top: &Path) -> PathBuf {
    let dir = top.join("vm-services");
    let project = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("s6/vm-services");
    for service in daemon::ALL {
        std::fs::create_dir_all(dir.join(service)).unwrap();
        for f in ["run", "notification-fd"] {
            let from = project.join(service).join(f);
            if from.exists() {
                std::fs::copy(from, dir.join(service).join(f)).unwrap();
            }
        }
    }
    std::fs::create_dir_all(dir.join("dbus")).unwrap();
    std::fs::write(
        dir.join("dbus/run"),
        format!(
            "#!/usr/bin/execlineb -P\n\
             importas -i vm {}\n\
             test-wrap --profile user --uid {DBUS_UID} --vm-dir $vm --own-dir ${{vm}}/out-dbus \
             -- /usr/bin/sleep 100000\n",
            env::VM_DIR
        ),
    )
    .unwrap();
    std::fs::set_permissions(dir.join("dbus/run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// The processes of PID namespace `ns` whose comm is `name`.
fn named(ns: u64, name: &str) -> Vec<i32> {
    procs_in_pidns(ns)
        .into_iter()
        .filter(|&p| comm(p) == name)
        .collect()
}

/// Waits (at most a minute) for the VMM of the VM of service `svc` to run
/// as QEMU, then asks the VM's own s6 whether virtiofsd's service is ready.
/// Returns QEMU's PID and the answer.
fn vmm_start(state: &StateDir, svc: &Path) -> (i32, bool) {
    let start = std::time::Instant::now();
    let mut outer = None;
    while start.elapsed() < Duration::from_secs(60) {
        outer = outer.or_else(|| S6::pid(svc));
        // PID 1 is the outer's child in a PID namespace of its own. (Until
        // the run script execs vm-init, its child is ifelse's eltest, in
        // the host's: whose QEMUs, a kernel matrix's say, are not this VM's.)
        let found = outer.into_iter().flat_map(children).find_map(|pid1| {
            let ns = pidns(pid1).filter(|&ns| Some(ns) != outer.and_then(pidns))?;
            let qemu = named(ns, "qemu-system-x86").first().copied()?;
            Some((qemu, pid1))
        });
        if let Some((qemu, pid1)) = found {
            let virtiofsd = PathBuf::from(format!("/proc/{pid1}/root"))
                .join(state.0.strip_prefix("/").unwrap())
                .join(SCAN_DIR)
                .join(daemon::VIRTIOFSD);
            return (qemu, S6::svstat(&virtiofsd, "ready") == "true");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("no QEMU within a minute: {}", S6::log(state));
}

#[test]
fn each_daemon_its_own_service_inside_the_vms_namespaces() {
    if !s6_ready("per_daemon") {
        return;
    }
    let Some(tools) = Tools::find("per_daemon") else {
        return;
    };
    let state = StateDir::new("per_daemon");
    let vm = state.add_guest_vm("pd", "wait");
    std::fs::create_dir_all(vm.join("out-dbus")).unwrap();
    let dir = services(&state.top());
    // virtiofsd's service a second slower to get ready than the project's
    // own: the VMM must still start only once it is.
    let run = dir.join("virtiofsd/run");
    let script = std::fs::read_to_string(&run).unwrap();
    let (shebang, rest) = script.split_once('\n').unwrap();
    std::fs::write(&run, format!("{shebang}\nforeground {{ sleep 1 }}\n{rest}")).unwrap();
    let s6 = S6::start(&state);
    let extra = format!(
        "--shutdown-timeout 30 --vmm {} --virtiofsd {} --services {}",
        tools.qemu.display(),
        tools.virtiofsd.display(),
        dir.display()
    );
    let svc = vm_instance(&s6, &state, "pd", &extra);
    let hello = VmDir::new(&vm).storage().join(tests::guest::HELLO);
    for round in 0..2 {
        let _ = std::fs::remove_file(&hello);
        if round == 1 {
            S6::svc(&svc, "-u");
        }
        // Readiness is ordered: when QEMU runs, virtiofsd's service is
        // ready (its wrapper said so once virtiofsd's policy was in place).
        let (qemu, virtiofsd_ready) = vmm_start(&state, &svc);
        assert!(
            virtiofsd_ready,
            "round {round}: QEMU ({qemu}) started before virtiofsd was ready"
        );
        assert!(
            S6::svwait(&svc, "-U", 60_000),
            "round {round}: not ready: {}",
            S6::log(&state)
        );
        let outer = S6::pid(&svc).unwrap();
        let pid1 = children(outer)[0];
        let ns = pidns(pid1).unwrap();
        // The guest writes through virtio-fs, served by the virtiofsd of
        // the VM's own s6.
        assert!(
            within(Duration::from_secs(60), || hello.exists()),
            "round {round}: {}",
            S6::log(&state)
        );
        let qemu = named(ns, "qemu-system-x86");
        let virtiofsd = named(ns, "virtiofsd");
        let dbus = named(ns, "sleep");
        assert_eq!(
            (qemu.len(), virtiofsd.len(), dbus.len()),
            (1, 1, 1),
            "round {round}: {:?}",
            procs_in_pidns(ns)
                .into_iter()
                .map(|p| (p, comm(p)))
                .collect::<Vec<_>>()
        );
        // Each daemon is in a PID namespace of its own below the VM's,
        // kept by its wrapper, which is its s6-supervise's child, inside
        // the VM's PID namespace, under the VM's own s6-svscan, under
        // PID 1.
        for d in [qemu[0], virtiofsd[0], dbus[0]] {
            assert_ne!(pidns(d), Some(ns), "{} in the VM's PID namespace", comm(d));
            let supervise = supervisor_of(d).unwrap();
            assert_eq!(comm(supervise), "s6-supervise", "parent of {}", comm(d));
            assert_eq!(pidns(supervise), Some(ns));
            let svscan = ppid(supervise).unwrap();
            assert_eq!(comm(svscan), "s6-svscan");
            assert_eq!(ppid(svscan), Some(pid1));
        }
        // The host's own service, with a policy of its own: its uid, no
        // capability, no_new_privs, in the VM's namespaces.
        let uid = status(dbus[0], "Uid");
        let base: u32 = std::fs::read_to_string(format!("/proc/{pid1}/uid_map"))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            uid.starts_with(&format!("{}\t", base + DBUS_UID)),
            "dbus uid {uid}"
        );
        assert_eq!(status(dbus[0], "CapEff"), "0000000000000000");
        assert_eq!(status(dbus[0], "NoNewPrivs"), "1");
        let ns_of = |p: i32, kind: &str| std::fs::read_link(format!("/proc/{p}/ns/{kind}")).ok();
        for kind in ["user", "net", "ipc", "uts"] {
            assert!(ns_of(dbus[0], kind).is_some());
            assert_eq!(ns_of(dbus[0], kind), ns_of(pid1, kind), "{kind}: the VM's");
        }
        let me = std::process::id() as i32;
        assert_ne!(
            ns_of(dbus[0], "mnt"),
            ns_of(me, "mnt"),
            "mnt: not the host's"
        );
        // A VM without a GPU: its GPU service went down by itself.
        assert!(named(ns, "s6-ipcserverd").is_empty());

        // s6-svc -d on the VM: the guest powers off, every daemon service
        // goes with the VM, nothing is left.
        // The guest listens for the power button once it says so.
        let serial = sandbox_core::contract::VmDir::new(&vm).serial_log();
        assert!(within(Duration::from_secs(30), || {
            std::fs::read_to_string(&serial).is_ok_and(|s| s.contains("GUEST-WAITING"))
        }));
        S6::svc(&svc, "-d");
        assert!(S6::svwait(&svc, "-D", 40_000), "{}", S6::log(&state));
        let serial = std::fs::read_to_string(&serial).unwrap();
        assert!(
            serial.contains("GUEST-POWER-BUTTON"),
            "round {round}: no power button:\n{serial}\ns6 log:\n{}",
            S6::log(&state)
        );
        assert_eq!(S6::svstat(&svc, "exitcode"), "0", "{}", S6::log(&state));
        assert!(
            within(Duration::from_secs(2), || procs_in_pidns(ns).is_empty()),
            "round {round}: left {:?}",
            procs_in_pidns(ns)
        );
        assert!(!S6::log(&state).contains("did not power off"));
    }
}

/// The probe in each daemon's place, each daemon a service of the VM's own
/// s6 (stand-ins in the others'): every attempt holds as in the
/// one-service mode, and from there the s6 processes of its VM can be
/// neither signalled nor seen (the probes' kill sweep and hidepid /proc).
#[test]
fn the_probes_in_each_daemons_place_as_services() {
    if !s6_ready("per_daemon_probes") {
        return;
    }
    let _node = tests::host::RenderNode::new();
    let state = StateDir::new("per_daemon_probes");
    let bait = tests::bait::hold();
    let dir = services(&state.top());
    let bin = state.standins();
    let probe = bin.join("probe");
    let (vmm_standin, fs_standin) = (bin.join("vmm-cooperative"), bin.join("virtiofsd-ok"));
    // The GPU's compositor: an open socket the probe connects to once
    // queue 0 starts, which tells it to run its attempts.
    let wayland = state.top().join("wayland/wayland-0");
    std::fs::create_dir_all(wayland.parent().unwrap()).unwrap();
    let compositor = std::os::unix::net::UnixListener::bind(&wayland).unwrap();
    std::fs::set_permissions(&wayland, std::fs::Permissions::from_mode(0o666)).unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for c in compositor.incoming().flatten() {
            let mut c = c;
            let _ = c.write_all(b"probe\n");
            std::thread::spawn(move || {
                let mut b = [0u8; 64];
                while c.read(&mut b).is_ok_and(|n| n > 0) {}
            });
        }
    });
    for (name, vmm, fs, gpu, min) in [
        ("as-virtiofsd", &vmm_standin, &probe, None, 30),
        ("as-vmm", &probe, &fs_standin, None, 28),
        ("as-gpu", &vmm_standin, &fs_standin, Some(&probe), 30),
    ] {
        let vm = state.add_probe_vm(name);
        std::fs::create_dir_all(vm.join("out-dbus")).unwrap();
        let mut extra = vec!["--services".as_ref(), dir.as_os_str()];
        if let Some(g) = gpu {
            std::fs::write(
                VmDir::new(&vm).config_file(config::GPU),
                wayland.to_str().unwrap(),
            )
            .unwrap();
            extra.extend(["--gpu".as_ref(), g.as_os_str()]);
        }
        let mut child = state.vm_init_reporting(name, vmm, fs, &extra);
        let (_out, report) = report_of(&mut child);
        eprintln!("-- {name}:\n{report}");
        tests::vm::assert_report_holds(&report, min);
        let log = tests::vm::wait_line(&mut child, ": ready");
        assert!(log.contains(": ready"), "{name}: {log}");
        // What the probe opened to everyone (fs/, its setuid copy, the
        // FIFO, vsock.d) no host user reaches.
        let reached = tests::host::nobody_reaches(&vm);
        assert!(
            reached.is_empty(),
            "{name}: a host user reached: {reached:?}"
        );
        if gpu.is_some() {
            gpu_server_dies_with_its_supervisor(child.id() as i32);
        }
        assert_eq!(tests::vm::stop(&mut child), Some(0), "{name}");
    }
    bait.assert_nothing_reached_the_host();
}

/// kill -9 of the GPU service's s6-supervise: its s6-ipcserverd (which
/// holds gpu.sock's listener) and the GPU daemon it started go with it,
/// nothing keeps serving unsupervised, and the VM's s6-svscan starts the
/// service again.
fn gpu_server_dies_with_its_supervisor(vm_init: i32) {
    let pid1 = children(vm_init)[0];
    let ns = pidns(pid1).unwrap();
    let server = named(ns, "s6-ipcserverd");
    assert_eq!(server.len(), 1, "{:?}", procs_in_pidns(ns));
    // The GPU daemon (the probe) serves the VMM's connection until then.
    let daemons = children(server[0]);
    assert_eq!(daemons.len(), 1, "the GPU daemon: {:?}", procs_in_pidns(ns));
    let supervise = ppid(server[0]).unwrap();
    assert_eq!(comm(supervise), "s6-supervise");
    std::process::Command::new("kill")
        .args(["-9", &supervise.to_string()])
        .status()
        .unwrap();
    let gone = |p: &i32| !procs_in_pidns(ns).contains(p);
    assert!(
        within(Duration::from_secs(2), || gone(&server[0])
            && daemons.iter().all(gone)),
        "s6-ipcserverd or its GPU daemon outlived their supervisor: {:?}",
        procs_in_pidns(ns)
            .into_iter()
            .map(|p| (p, comm(p), ppid(p)))
            .collect::<Vec<_>>()
    );
    assert!(
        within(Duration::from_secs(5), || named(ns, "s6-ipcserverd")
            .first()
            .is_some_and(|&p| p != server[0])),
        "the GPU service was not started again"
    );
}

/// Sibling B of the escape matrix (the target) and sibling A (the probe),
/// as two more services of the VM's own s6, each chain-loading test-wrap
/// as a daemon's run script chain-loads its wrapper. A has a `down` file:
/// the test starts it once the VM is up and its directory is A's. Its
/// targets are every process of the VM it must not reach: PID 1, the VM's
/// s6-svscan, its own s6-supervise and sibling B.
fn matrix_services(dir: &Path, state: &StateDir, vm: &str, profile: &str, vm2: &str, port: u16) {
    let uid = if profile == "root" { 0 } else { UID_A };
    let bin = state.bin();
    for (service, run) in [
        (
            "b",
            format!(
                "#!/usr/bin/execlineb -P\n\
                 # target says it is ready on stdout: the notification fd.\n\
                 fdmove 1 {notify}\n\
                 importas -i vm {vm_dir}\n\
                 test-wrap --profile user --uid {UID_B} --vm-dir $vm --own-dir ${{vm}}/out-b \
                 -- {target} {name}\n",
                target = bin.join("target").display(),
                name = tests::abstract_name(vm, UID_B),
                notify = fd::service::NOTIFY,
                vm_dir = env::VM_DIR,
            ),
        ),
        (
            "a",
            format!(
                "#!/bin/sh\n\
                 s6-svwait -U ../b || exit 111\n\
                 b=$(s6-svstat -o pid ../b)\n\
                 scan=$(cut -d' ' -f4 /proc/$PPID/stat)\n\
                 exec test-wrap --profile {profile} --uid {uid} --vm-dir \"${vm_dir}\" \
                 --own-dir \"${vm_dir}/out-a\" -- {probe} --profile {profile} \
                 --state-dir {state} --vm {vm} --own-dir \"${vm_dir}/out-a\" \
                 --pid 1 --pid \"$scan\" --pid $PPID --pid \"$b\" --abstract {name} \
                 --tcp-port {port} --other-vm {vm2}\n",
                probe = bin.join("probe").display(),
                state = state.0.display(),
                vm_dir = env::VM_DIR,
                name = tests::abstract_name(vm, UID_B),
            ),
        ),
    ] {
        let d = dir.join(service);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("run"), run).unwrap();
        std::fs::set_permissions(d.join("run"), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::write(
        dir.join("b/notification-fd"),
        format!("{}\n", fd::service::NOTIFY),
    )
    .unwrap();
    std::fs::write(dir.join("a/down"), "").unwrap();
}

/// The escape matrix in the per-daemon mode: the same probe under the same
/// test policy, but the VM is vm-init's (its PID 1 runs the VM's s6, with
/// the daemons' services beside the siblings), and the processes the probe
/// must not signal, trace or see include the VM's s6.
#[test]
fn the_escape_matrix_with_the_siblings_as_services() {
    if !s6_ready("per_daemon_matrix") {
        return;
    }
    let state = StateDir::new("per_daemon_matrix");
    let bait = tests::bait::hold();
    let bin = state.standins();
    for (i, (profile, min)) in [("user", 60), ("root", 58)].into_iter().enumerate() {
        let (vm1, vm2) = (format!("pdm-{profile}-vm1"), format!("pdm-{profile}-vm2"));
        let other = OtherVm::hold(&state, &vm2, 212 + i as u32);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let top = state.top().join(profile);
        let dir = services(&top);
        matrix_services(&dir, &state, &vm1, profile, &vm2, port);
        let vm = NewVm::create(state.0.join(&vm1))
            .and_then(|v| v.set(tests::new_vm::MARKER, "config\n"))
            .unwrap()
            .into_path();
        for d in ["out-a", "out-b", "out-dbus"] {
            std::fs::create_dir_all(vm.join(d)).unwrap();
        }
        let mut child = state.vm_init_reporting(
            &vm1,
            &bin.join("vmm-cooperative"),
            &bin.join("virtiofsd-ok"),
            &["--services".as_ref(), dir.as_os_str()],
        );
        let log = tests::vm::wait_line(&mut child, ": ready");
        let slot: u32 = log
            .rsplit_once("(slot ")
            .and_then(|(_, n)| n.trim().trim_end_matches(')').parse().ok())
            .unwrap_or_else(|| panic!("{profile}: not ready: {log}"));
        let slot = Slot::new(slot).unwrap();
        // A's and B's own directories, owned by the host ids they run as
        // in this VM's slot (as the matrix's harness makes them).
        let a_uid = if profile == "root" { 0 } else { UID_A };
        for (d, uid) in [("out-a", a_uid), ("out-b", UID_B)] {
            let host = slot.host_id(uid);
            std::os::unix::fs::chown(vm.join(d), Some(host), Some(host)).unwrap();
        }
        let pid1 = children(child.id() as i32)[0];
        let a = PathBuf::from(format!("/proc/{pid1}/root"))
            .join(state.0.strip_prefix("/").unwrap())
            .join(SCAN_DIR)
            .join("a");
        assert!(
            S6::svc_within(&a, "-o", Duration::from_secs(5)),
            "{profile}: s6-svc -o a"
        );
        let (_out, report) = report_of(&mut child);
        eprintln!("-- {profile}:\n{report}");
        // Its targets were the VM's s6-svscan and s6-supervise (PIDs as
        // the VM sees them, the last of NSpid).
        let ns = pidns(pid1).unwrap();
        for s6 in ["s6-svscan", "s6-supervise"] {
            assert!(
                named(ns, s6).iter().any(|&p| {
                    let inner = status(p, "NSpid");
                    let inner = inner.split_whitespace().last().unwrap_or("");
                    report.contains(&format!("ptrace(PTRACE_ATTACH, {inner})"))
                }),
                "{profile}: no {s6} among the targets:\n{report}"
            );
        }
        let code = report
            .lines()
            .find_map(|l| l.strip_prefix("probe: "))
            .map(|l| i32::from(!l.ends_with(" 0 failed")));
        assert_eq!(tests::vm::stop(&mut child), Some(0), "{profile}");
        other.release();
        // The positive control seen from the host: the file A wrote.
        let written = std::fs::metadata(vm.join("out-a/probe-out")).expect("probe-out on the host");
        assert_eq!(
            std::os::unix::fs::MetadataExt::uid(&written),
            slot.host_id(a_uid)
        );
        drop(listener);
        let o = Outcome::of(code, report);
        // Every process of the VM named was a target: its s6 included.
        assert_eq!(
            o.output.matches("ptrace(PTRACE_ATTACH, ").count(),
            4,
            "{}",
            o.output
        );
        o.assert_all_denied(min);
    }
    bait.assert_nothing_reached_the_host();
}

/// kill -9 of the VM's supervisor, of the outer vm-init or of PID 1: the
/// whole VM, its s6 and every daemon service, is gone within a second.
/// kill -9 of a daemon's supervisor (virtiofsd's, the VMM's; the GPU's in
/// the probes' test): that daemon dies with it (no orphan keeps running
/// unsupervised), and the VM's s6-svscan starts both again.
#[test]
fn kill_9_anywhere_in_the_tree_leaves_nothing_unsupervised() {
    if !s6_ready("per_daemon_kill") {
        return;
    }
    let state = StateDir::new("per_daemon_kill");
    let dir = services(&state.top());
    let bin = state.standins();
    let s6 = S6::start(&state);
    let extra = format!(
        "--vmm {} --virtiofsd {} --services {}",
        bin.join("vmm-cooperative").display(),
        bin.join("virtiofsd-ok").display(),
        dir.display()
    );
    // (what, the daemon watched, whether its service starts it again, the
    // PID to kill from the outer's, PID 1's and the daemon's)
    type Victim = fn(i32, i32, i32) -> i32;
    let victims: [(&str, &str, bool, Victim); 5] = [
        (
            "the VM's s6-supervise",
            "virtiofsd-ok",
            false,
            |outer, _, _| ppid(outer).unwrap(),
        ),
        ("the outer vm-init", "virtiofsd-ok", false, |outer, _, _| {
            outer
        }),
        ("PID 1", "virtiofsd-ok", false, |_, pid1, _| pid1),
        (
            "virtiofsd's s6-supervise",
            "virtiofsd-ok",
            true,
            |_, _, d| supervisor_of(d).unwrap(),
        ),
        (
            "the VMM's s6-supervise",
            "vmm-cooperative",
            true,
            |_, _, d| supervisor_of(d).unwrap(),
        ),
    ];
    for (i, (what, daemon, restarts, victim)) in victims.into_iter().enumerate() {
        let name = format!("k{i}");
        let vm = state.add_standin_vm(&name);
        std::fs::create_dir_all(vm.join("out-dbus")).unwrap();
        let svc = s6.add_vm(&state, &name, &extra);
        assert!(S6::svwait(&svc, "-U", 60_000), "{}", S6::log(&state));
        let outer = S6::pid(&svc).unwrap();
        let pid1 = children(outer)[0];
        let ns = pidns(pid1).unwrap();
        let found = |ns| named(ns, daemon);
        assert!(within(Duration::from_secs(5), || found(ns).len() == 1));
        let old = found(ns)[0];
        let supervise = supervisor_of(old).unwrap();
        let pid = victim(outer, pid1, old);
        std::process::Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .unwrap();
        if restarts {
            assert!(
                within(Duration::from_secs(2), || !procs_in_pidns(ns)
                    .contains(&old)),
                "{what}: {daemon} outlived its supervisor"
            );
            assert!(
                within(Duration::from_secs(5), || found(ns).first().is_some_and(
                    |&p| p != old && supervisor_of(p) != Some(supervise)
                )),
                "{what}: not started again: {:?}",
                procs_in_pidns(ns)
            );
        } else {
            assert!(
                within(Duration::from_secs(1), || procs_in_pidns(ns).is_empty()),
                "{what}: the VM survived: {:?}",
                procs_in_pidns(ns)
                    .into_iter()
                    .map(|p| (p, comm(p)))
                    .collect::<Vec<_>>()
            );
        }
        // (A killed supervisor is started again by the host's s6-svscan
        // first: until then its control FIFO has no reader.)
        assert!(
            S6::svc_within(&svc, "-d", Duration::from_secs(10)),
            "{what}"
        );
        assert!(
            S6::svwait(&svc, "-D", 40_000),
            "{what}: {}",
            S6::log(&state)
        );
        if restarts {
            // The VM went on with the daemon started again, and powered
            // off as ever (the VMM started again opened the serial FIFO:
            // PID 1 still reads it).
            assert_eq!(
                S6::svstat(&svc, "exitcode"),
                "0",
                "{what}: {}",
                S6::log(&state)
            );
        }
    }
}

/// cloud-hypervisor the Spectrum way (s6/vm-services-api/vmm): started
/// with exactly `--api-socket fd=3`; vmm-api, in the background of the run
/// script, sends vm.create with the VM built from the VM's config
/// directory and makes the service (and so the VM) ready; `vmm-api boot`
/// is the separate command. The probe in cloud-hypervisor's place checks
/// the JSON and makes, with the paths it names, the argv flow's attempts
/// under the same policy (wrap-vmm changes only the argv).
#[test]
fn cloud_hypervisor_created_over_its_api_the_spectrum_way() {
    if !s6_ready("per_daemon_api") {
        return;
    }
    let state = StateDir::new("per_daemon_api");
    let dir = services(&state.top());
    let api = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("s6/vm-services-api/vmm");
    for f in ["run", "notification-fd"] {
        std::fs::copy(api.join(f), dir.join(daemon::VMM).join(f)).unwrap();
    }
    let bin = state.standins();
    let vm = state.add_standin_vm("ch");
    std::fs::create_dir_all(vm.join("out-dbus")).unwrap();
    let mut child = state.vm_init_reporting(
        "ch",
        &bin.join("probe"),
        &bin.join("virtiofsd-ok"),
        &["--services".as_ref(), dir.as_os_str()],
    );
    let (mut out, report) = report_of(&mut child);
    eprintln!("{report}");
    assert!(
        report
            .lines()
            .any(|l| l == format!("argv: --api-socket fd={}", fd::VMM_API)),
        "{report}"
    );
    assert!(report.contains("api: PUT /api/v1/vm.create HTTP/1.1"));
    let d = VmDir::new(&vm);
    for field in [
        format!("\"kernel\":\"{}\"", d.config_file(config::KERNEL).display()),
        format!("\"socket\":\"{}\"", d.virtiofsd_socket().display()),
        format!("\"file\":\"{}\"", d.serial_fifo().display()),
        format!(
            "\"vsock\":{{\"cid\":3,\"socket\":\"{}\"}}",
            d.vsock_socket().display()
        ),
        "\"memory\":{\"size\":536870912,\"shared\":true}".to_owned(),
    ] {
        assert!(
            report.contains(&field),
            "{field} not in vm.create:\n{report}"
        );
    }
    tests::vm::assert_report_holds(&report, 30);
    // Ready once created: the helper said so on the service's
    // notification fd.
    let log = tests::vm::wait_line(&mut child, ": ready");
    assert!(log.contains(": ready"), "{log}");
    // The separate command boots it.
    let boot = std::process::Command::new(state.bin().join(VMM_API))
        .arg("boot")
        .arg(&vm)
        .output()
        .unwrap();
    assert!(
        boot.status.success(),
        "{}",
        String::from_utf8_lossy(&boot.stderr)
    );
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    let unmarked = sandbox_core::contract::unmarked;
    assert_eq!(unmarked(line.trim()), "api: PUT /api/v1/vm.boot HTTP/1.1");
    assert_eq!(tests::vm::stop(&mut child), Some(0));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(
        unmarked(rest.trim()),
        "api: PUT /api/v1/vm.power-button HTTP/1.1"
    );

    // A VM created and never booted (Spectrum boots a VM once its network
    // providers are up): cloud-hypervisor refuses the power button, no
    // guest will power off, and vm-init sends vmm.shutdown at once instead
    // of waiting out the shutdown timeout (which ends in exit 2).
    let vm = state.add_standin_vm("ch-idle");
    std::fs::create_dir_all(vm.join("out-dbus")).unwrap();
    let mut child = state.vm_init_reporting(
        "ch-idle",
        &bin.join("probe"),
        &bin.join("virtiofsd-ok"),
        &["--services".as_ref(), dir.as_os_str()],
    );
    let (mut out, report) = report_of(&mut child);
    tests::vm::assert_report_holds(&report, 30);
    let log = tests::vm::wait_line(&mut child, ": ready");
    assert!(log.contains(": ready"), "{log}");
    assert_eq!(tests::vm::stop(&mut child), Some(0));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert_eq!(
        rest.lines().map(unmarked).collect::<Vec<_>>(),
        [
            "api: PUT /api/v1/vm.power-button HTTP/1.1",
            "api: PUT /api/v1/vmm.shutdown HTTP/1.1"
        ]
    );
}

/// The soft limit on open files of `pid`.
fn nofile(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .unwrap_or_default()
}

/// A daemon in virtiofsd's place (whose host uid is PID 1's and the VM's
/// s6 processes') lowers the limits and priority of every process it can
/// name and leaves a grandchild in a session of its own holding its
/// listener. It can name none of them: their limits and priority stay;
/// and when its supervisor is killed, the grandchild goes with the
/// daemon, nothing is left holding the listener beside the service
/// started again.
#[test]
fn a_daemon_reaches_no_process_of_its_vm_and_leaves_nothing_behind() {
    if !s6_ready("meddle") {
        return;
    }
    let state = StateDir::new("per_daemon_meddle");
    let bin = state.standins();
    let dir = services(&state.top());
    let vm = state.add_standin_vm("m");
    std::fs::create_dir_all(vm.join("out-dbus")).unwrap();
    let mut child = state.vm_init(
        "m",
        &bin.join("vmm-cooperative"),
        &bin.join("virtiofsd-meddle"),
        &["--services", dir.to_str().unwrap()],
    );
    let log = tests::vm::wait_line(&mut child, ": ready");
    assert!(log.contains(": ready"), "{log}");
    let pid1 = children(child.id() as i32)[0];
    let ns = pidns(pid1).unwrap();
    assert!(
        within(Duration::from_secs(5), || named(ns, "tail").len() == 1),
        "no grandchild: {:?}",
        procs_in_pidns(ns)
            .into_iter()
            .map(|p| (p, comm(p)))
            .collect::<Vec<_>>()
    );
    let tail = named(ns, "tail")[0];
    let daemon = named(ns, "virtiofsd-meddl")[0];
    let mut vm_processes = vec![pid1];
    vm_processes.extend(named(ns, "s6-svscan"));
    vm_processes.extend(named(ns, "s6-supervise"));
    assert!(vm_processes.len() >= 4, "{vm_processes:?}");
    for p in vm_processes {
        assert_ne!(
            nofile(p),
            "64",
            "virtiofsd lowered the limits of {}",
            comm(p)
        );
        assert_eq!(
            tests::vm::stat_field(p, 16).as_deref(),
            Some("0"),
            "virtiofsd reniced {}",
            comm(p)
        );
    }
    let supervise = supervisor_of(daemon).unwrap();
    assert_eq!(comm(supervise), "s6-supervise");
    std::process::Command::new("kill")
        .args(["-9", &supervise.to_string()])
        .status()
        .unwrap();
    let gone = |p: i32| !procs_in_pidns(ns).contains(&p);
    assert!(
        within(Duration::from_secs(2), || gone(daemon) && gone(tail)),
        "the daemon's grandchild outlived its supervisor: {:?}",
        procs_in_pidns(ns)
            .into_iter()
            .map(|p| (p, comm(p), ppid(p)))
            .collect::<Vec<_>>()
    );
    assert_eq!(tests::vm::stop(&mut child), Some(0));
}
