//! wrap-gpu with the probe in crosvm's place (`--gpu` of vm-init): started
//! on the VMM's connection to gpu.sock, it opens the render node and the
//! compositor's socket, makes shared buffers, and reaches nothing else: not
//! the other daemons, the VM's storage, /dev/kvm, other host sockets, TCP.

use std::io::{BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use sandbox_core::contract::{config, VmDir};
use tests::host::{RenderNode, TestGroup};
use tests::vm::{assert_report_holds, read_report, wait_at_most, wait_line};
use tests::{privileged, privileged_with, StateDir};

fn socket(path: &std::path::Path, mode: u32) -> UnixListener {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let l = UnixListener::bind(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    l
}

/// A compositor for the probe: accepts the GPU daemon's connection, tells
/// it what to do in one line (`probe`, or `try NAME ARGS`), then holds the
/// connection until the daemon closes it.
fn compositor(l: UnixListener, command: &str) {
    let command = format!("{command}\n");
    std::thread::spawn(move || {
        if let Ok((mut c, _)) = l.accept() {
            let _ = c.write_all(command.as_bytes());
            let mut b = [0u8; 64];
            while c.read(&mut b).is_ok_and(|n| n > 0) {}
        }
    });
}

/// vm-init of VM `g` with the cooperative VMM stand-in (which starts the
/// GPU backend's queue 0 as docs/DESIGN.md, "Measured: crosvm device gpu",
/// gives) and the probe in crosvm's place; its compositor says `command`.
fn gpu_vm(state: &StateDir, command: &str) -> (std::process::Child, Stdout, String) {
    let vm = state.0.join("g");
    let wayland =
        PathBuf::from(std::fs::read_to_string(VmDir::new(&vm).config_file(config::GPU)).unwrap());
    let _ = std::fs::remove_file(&wayland);
    compositor(socket(&wayland, 0o666), command);
    let mut child = start_gpu_vm(state);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let report = read_report(&mut out);
    (child, out, report)
}

type Stdout = BufReader<std::process::ChildStdout>;

/// vm-init of VM `g`, stdout (the probe's report) and stderr piped.
fn start_gpu_vm(state: &StateDir) -> std::process::Child {
    let bin = state.standins();
    let probe = bin.join("probe");
    state.vm_init_reporting(
        "g",
        &bin.join("vmm-cooperative"),
        &bin.join("virtiofsd-ok"),
        &["--gpu".as_ref(), probe.as_os_str()],
    )
}

#[test]
fn the_probe_in_crosvms_place() {
    if !privileged("gpu_probe") {
        return;
    }
    let _node = RenderNode::new();
    let state = StateDir::new("gpu_probe");
    let bait = tests::bait::hold();
    let vm = state.add_standin_vm("g");
    // An open (0666) host socket: only the sandbox keeps it out.
    let _host = socket(&state.top().join("host.sock"), 0o666);
    let wayland = state.top().join("wayland/wayland-0");
    std::fs::write(
        VmDir::new(&vm).config_file(config::GPU),
        wayland.to_str().unwrap(),
    )
    .unwrap();
    let (mut child, _out, report) = gpu_vm(&state, "probe");
    if !report.contains("probe: ") {
        let _ = child.kill();
        let mut err = String::new();
        let _ = child.stderr.as_mut().unwrap().read_to_string(&mut err);
        panic!("no report from the probe; vm-init:\n{err}");
    }
    eprintln!("{report}");
    for line in [
        "ok   Seccomp (filter mode)",
        "ok   vhost-user: the exchange that starts queue 0",
        "ok   vhost-user: map the guest memory (memfd, shared)",
        "ok   connect the compositor's socket",
        "ok   open /dev/dri/renderD231 read-write",
        "ok   clone3 (glibc falls back to clone)",
        "ok   start and join a thread",
    ] {
        assert!(report.contains(line), "{line}:\n{report}");
    }
    assert_report_holds(&report, 30);
    assert!(wait_line(&mut child, ": ready").contains("ready"));
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(
        wait_at_most(&mut child, Duration::from_secs(10))
            .unwrap()
            .code(),
        Some(0)
    );
    bait.assert_nothing_reached_the_host();

    // Every attempt the probe left out because its call is off the
    // allow-list, and what else a compromised daemon would go for: each
    // alone, in a VM of its own, must kill the daemon with SIGSYS, and
    // vm-init must say so and take the VM down.
    let mut off: Vec<String> = report
        .lines()
        .filter_map(|l| Some(l.split_once("off the allow-list: ")?.1.trim().to_owned()))
        .collect();
    assert!(off.len() >= 6, "the probe left out too few:\n{report}");
    for extra in [
        "keyctl 0 0 0 0 0 0",
        "bpf 0 0 0 0 0 0",
        "perf_event_open 0 0 0 0 0 0",
        "io_uring_enter 0 0 0 0 0 0",
        "process_vm_readv 1 0 0 0 0 0",
        "mount 0 0 0 0 0 0",
        // fork: clone without CLONE_THREAD (SIGCHLD).
        "clone 17 0 0 0 0 0",
        // W^X: a writable and executable mapping.
        "mmap 0 4096 7 34 0 0",
        // An executable mapping shared through MAP_SHARED_VALIDATE (the
        // probe tries MAP_SHARED).
        "mmap 0 4096 5 3 4294967295 0",
    ] {
        off.push(extra.to_owned());
    }
    off.sort();
    off.dedup();
    for call in &off {
        let (mut child, mut out, report) = gpu_vm(&state, &format!("try {call}"));
        if !report.contains(&format!("probe: trying {call}")) {
            let _ = child.kill();
            let mut err = String::new();
            let _ = child.stderr.as_mut().unwrap().read_to_string(&mut err);
            panic!("{call}: not tried:\n{report}\nvm-init:\n{err}");
        }
        let log = wait_line(&mut child, "tearing it down");
        assert!(
            log.contains(
                "the GPU daemon killed by SIGSYS: a system call outside its seccomp allow-list \
                 (dmesg or the audit log names it: type=1326 ... syscall=N): the VM cannot go \
                 on, tearing it down"
            ),
            "{call}:\n{log}"
        );
        let mut rest = String::new();
        let _ = out.read_to_string(&mut rest);
        assert!(!rest.contains("returned"), "{call} got through:\n{rest}");
        assert_eq!(
            wait_at_most(&mut child, Duration::from_secs(10))
                .unwrap()
                .code(),
            Some(1),
            "{call}"
        );
    }
}

/// A compositor for a program the probe execs in crosvm's place: the
/// probe's connection gets `exec PROGRAM`; the next, the program's own,
/// gets what a Wayland client's first roundtrips wait for.
fn compositor_for_exec(l: UnixListener, program: &str) {
    let command = format!("exec {program}\n");
    std::thread::spawn(move || {
        let Ok((mut c, _)) = l.accept() else {
            return;
        };
        let _ = c.write_all(command.as_bytes());
        let mut b = [0u8; 64];
        // Until the exec closes it (the probe's socket is close-on-exec).
        while c.read(&mut b).is_ok_and(|n| n > 0) {}
        if let Ok((c, _)) = l.accept() {
            wayland_stand_in(c);
        }
    });
}

/// The compositor's side of a client's start: one global for
/// wl_display.get_registry, wl_callback.done and wl_display.delete_id for
/// each wl_display.sync. Nothing else is answered.
fn wayland_stand_in(mut c: std::os::unix::net::UnixStream) {
    const DISPLAY: u32 = 1;
    const SYNC: u16 = 0;
    const GET_REGISTRY: u16 = 1;
    let event = |object: u32, opcode: u16, args: &[u8]| {
        let size = (8 + args.len()) as u32;
        let mut m = object.to_le_bytes().to_vec();
        m.extend((size << 16 | u32::from(opcode)).to_le_bytes());
        m.extend(args);
        m
    };
    let mut header = [0u8; 8];
    while c.read_exact(&mut header).is_ok() {
        let object = u32::from_le_bytes(header[..4].try_into().unwrap());
        let word = u32::from_le_bytes(header[4..].try_into().unwrap());
        let mut args = vec![0u8; (word >> 16) as usize - 8];
        if c.read_exact(&mut args).is_err() {
            return;
        }
        let new_id = u32::from_le_bytes(args[..4].try_into().unwrap_or([0; 4]));
        let reply = match (object, word as u16) {
            (DISPLAY, GET_REGISTRY) => {
                // wl_registry.global(name 1, interface, version 1)
                let name = b"vm_sandbox_stand_in\0";
                let mut a = 1u32.to_le_bytes().to_vec();
                a.extend((name.len() as u32).to_le_bytes());
                a.extend(name);
                a.resize(a.len().next_multiple_of(4), 0);
                a.extend(1u32.to_le_bytes());
                event(new_id, 0, &a)
            }
            (DISPLAY, SYNC) => {
                let mut m = event(new_id, 0, &0u32.to_le_bytes());
                m.extend(event(DISPLAY, 1, &new_id.to_le_bytes()));
                m
            }
            _ => continue,
        };
        if c.write_all(&reply).is_err() {
            return;
        }
    }
}

/// A program on `PATH`, as `privileged_with` found it.
fn on_path(name: &str) -> PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} is not installed"))
}

/// The real crosvm died under wrap-gpu's filter before its main,
/// in libcap's constructor. Debian programs that start as crosvm does run
/// in its place, exec'd by the probe under the GPU daemon's exact filter,
/// view and ids: capsh (libcap, whose constructor probes the bounding
/// set) and wayland-info (libwayland-client and libffi, connecting the
/// compositor and dispatching its events). Neither may be killed.
#[test]
fn programs_that_start_like_crosvm_run_in_its_place() {
    if !privileged_with("gpu_startup", &["capsh", "wayland-info"]) {
        return;
    }
    let _node = RenderNode::new();
    let state = StateDir::new("gpu_startup");
    let vm = state.add_standin_vm("g");
    let wayland = state.top().join("wayland/wayland-0");
    std::fs::write(
        VmDir::new(&vm).config_file(config::GPU),
        wayland.to_str().unwrap(),
    )
    .unwrap();
    let capsh = format!("{} --supports=cap_chown", on_path("capsh").display());
    let wayland_info = on_path("wayland-info").display().to_string();
    for (program, says) in [
        (capsh.as_str(), ""),
        (wayland_info.as_str(), "interface: 'vm_sandbox_stand_in',"),
    ] {
        let _ = std::fs::remove_file(&wayland);
        compositor_for_exec(socket(&wayland, 0o666), program);
        let mut child = start_gpu_vm(&state);
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let report = read_report(&mut out);
        if !report.contains(&format!("probe: exec {program}\n")) {
            let _ = child.kill();
            let mut err = String::new();
            let _ = child.stderr.as_mut().unwrap().read_to_string(&mut err);
            panic!("{program}: no exec from the probe:\n{report}\nvm-init:\n{err}");
        }
        let log = wait_line(&mut child, "tearing it down");
        assert!(
            log.contains("the GPU daemon exited with status 0: the VM cannot go on"),
            "{program}:\n{log}"
        );
        let mut rest = String::new();
        let _ = out.read_to_string(&mut rest);
        assert!(rest.contains(says), "{program}:\n{rest}");
        assert_eq!(
            wait_at_most(&mut child, Duration::from_secs(10))
                .unwrap()
                .code(),
            Some(1),
            "{program}"
        );
    }
}

/// Spectrum's case: the compositor's socket under a directory only root
/// may enter (like /run/user/0, 0700), the socket 0660 root:GROUP. The VM's
/// ids cannot even stat it; the outer resolves it as host root, the GPU
/// daemon gets it in its view and GROUP as its own, and connects.
#[test]
fn the_compositor_socket_under_a_root_only_directory_with_its_group() {
    if !privileged("gpu_group") {
        return;
    }
    let _node = RenderNode::new();
    let wayland_group = TestGroup::new("vm-sandbox-wl");
    let state = StateDir::new("gpu_group");
    let vm = state.add_standin_vm("g");
    let _host = socket(&state.top().join("host.sock"), 0o666);
    let runtime = state.top().join("user0");
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).unwrap();
    let wayland = runtime.join("wayland-1");
    let listener = socket(&wayland, 0o660);
    assert!(Command::new("chgrp")
        .arg(wayland_group.name)
        .arg(&wayland)
        .status()
        .unwrap()
        .success());
    std::fs::write(
        VmDir::new(&vm).config_file(config::GPU),
        wayland.to_str().unwrap(),
    )
    .unwrap();
    compositor(listener, "probe");
    let mut child = start_gpu_vm(&state);
    let report = read_report(&mut BufReader::new(child.stdout.take().unwrap()));
    eprintln!("{report}");
    assert!(
        report.contains("ok   connect the compositor's socket"),
        "{report}"
    );
    assert_report_holds(&report, 30);
    assert!(wait_line(&mut child, ": ready").contains("ready"));
    assert_eq!(tests::vm::stop(&mut child), Some(0));
}

/// A compositor socket the GPU daemon could not use is one line from the
/// outer vm-init before anything of the VM exists.
#[test]
fn a_compositor_socket_it_cannot_use_is_refused_before_anything_starts() {
    if !privileged("gpu_refused") {
        return;
    }
    // (The compositor's socket is checked first: no render node needed.)
    let state = StateDir::new("gpu_refused");
    let vm = state.add_standin_vm("g");
    let top = state.top();
    let not_socket = top.join("not-a-socket");
    std::fs::write(&not_socket, "").unwrap();
    let owner_only = top.join("owner-only/wayland-0");
    let _l = socket(&owner_only, 0o600);
    let missing = top.join("no-compositor/wayland-0");
    // The socket of a group the GPU daemon would get, reached through a
    // directory of another user's (nobody's), who could make it lead to
    // any socket of a group that user likes.
    let group = TestGroup::new("vm-sandbox-wl");
    let grouped = top.join("compositor/wayland-0");
    let _g = socket(&grouped, 0o660);
    assert!(Command::new("chgrp")
        .arg(group.name)
        .arg(&grouped)
        .status()
        .unwrap()
        .success());
    let theirs = top.join("nobodys");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::symlink(&grouped, theirs.join("wayland-0")).unwrap();
    std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
    let through_theirs = theirs.join("wayland-0");
    let bin = state.standins();
    for (path, says, code) in [
        (
            &missing,
            "No such file or directory (ENOENT)".to_owned(),
            111,
        ),
        (
            &not_socket,
            "Socket operation on non-socket (ENOTSOCK)".to_owned(),
            111,
        ),
        (
            &owner_only,
            "is srw------- group 0: only its owner may connect".to_owned(),
            100,
        ),
        (
            &through_theirs,
            format!("{} is drwxr-xr-x nobody:", theirs.display()),
            100,
        ),
    ] {
        std::fs::write(
            VmDir::new(&vm).config_file(config::GPU),
            path.to_str().unwrap(),
        )
        .unwrap();
        let mut child = state.vm_init(
            "g",
            &bin.join("vmm-cooperative"),
            &bin.join("virtiofsd-ok"),
            &["--gpu", bin.join("probe").to_str().unwrap()],
        );
        let status = wait_at_most(&mut child, Duration::from_secs(10)).unwrap();
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.starts_with(&format!("vm-init: g: compositor socket {}", path.display()))
                && err.contains(&says),
            "{err}"
        );
        assert_eq!(status.code(), Some(code), "{err}");
        let mut left: Vec<_> = std::fs::read_dir(&vm)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        left.sort();
        let d = VmDir::new(&vm);
        assert_eq!(left, [d.config(), d.storage()], "nothing created");
    }
}
