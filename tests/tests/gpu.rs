//! wrap-gpu with the probe in crosvm's place (`--gpu` of vm-init): started
//! on the VMM's connection to gpu.sock, it opens the render node and the
//! compositor's socket, makes shared buffers, and reaches nothing else: not
//! the other daemons, the VM's storage, /dev/kvm, other host sockets, TCP.

use std::io::BufReader;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use tests::vm::{assert_report_holds, read_report, wait_at_most, wait_line};
use tests::{privileged, StateDir};

/// A render node for the test, as udev would make one: a character device
/// of group render, mode 0660. There is no GPU here, so it is the null
/// device's (1:3): it opens, like a real one would.
struct RenderNode(PathBuf);

impl RenderNode {
    fn new() -> RenderNode {
        let has_group = std::fs::read_to_string("/etc/group")
            .unwrap()
            .lines()
            .any(|l| l.starts_with("render:"));
        if !has_group {
            assert!(Command::new("groupadd")
                .args(["--system", "render"])
                .status()
                .unwrap()
                .success());
        }
        std::fs::create_dir_all("/dev/dri").unwrap();
        let node = PathBuf::from("/dev/dri/renderD231");
        let _ = std::fs::remove_file(&node);
        assert!(Command::new("mknod")
            .args(["-m", "0660"])
            .arg(&node)
            .args(["c", "1", "3"])
            .status()
            .unwrap()
            .success());
        assert!(Command::new("chgrp")
            .arg("render")
            .arg(&node)
            .status()
            .unwrap()
            .success());
        RenderNode(node)
    }
}

impl Drop for RenderNode {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn socket(path: &std::path::Path) -> UnixListener {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let l = UnixListener::bind(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666)).unwrap();
    l
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
    // Both open to anyone by DAC (0666): only the sandbox keeps the second out.
    let wayland = state.top().join("wayland/wayland-0");
    let _compositor = socket(&wayland);
    let _host = socket(&state.top().join("host.sock"));
    std::fs::write(vm.join("config/gpu"), wayland.to_str().unwrap()).unwrap();
    let bin = state.standins();
    let mut child = Command::new(state.bin().join("vm-init"))
        .args([
            "--parent-pid",
            &std::process::id().to_string(),
            "--state-dir",
            state.0.to_str().unwrap(),
        ])
        .arg("--vmm")
        .arg(bin.join("vmm-cooperative"))
        .arg("--virtiofsd")
        .arg(bin.join("virtiofsd-ok"))
        .arg("--gpu")
        .arg(bin.join("probe"))
        .arg("g")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let report = read_report(&mut out);
    if !report.contains("probe: ") {
        let _ = child.kill();
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err);
        panic!("no report from the probe; vm-init:\n{err}");
    }
    eprintln!("{report}");
    assert!(
        report.contains("ok   open /dev/dri/renderD231 read-write"),
        "{report}"
    );
    assert_report_holds(&report, 28);
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
}

#[test]
fn a_gpu_vm_without_a_compositor_socket_goes_down_saying_why() {
    if !privileged("gpu_missing") {
        return;
    }
    // (The compositor's socket is checked first: no render node needed.)
    let state = StateDir::new("gpu_missing");
    let vm = state.add_standin_vm("g");
    let missing = state.top().join("no-compositor/wayland-0");
    std::fs::write(vm.join("config/gpu"), missing.to_str().unwrap()).unwrap();
    let bin = state.standins();
    let mut child = state.vm_init(
        "g",
        &bin.join("vmm-cooperative"),
        &bin.join("virtiofsd-ok"),
        &["--gpu", bin.join("probe").to_str().unwrap()],
    );
    let log = wait_line(&mut child, "tearing it down");
    assert!(
        log.contains(&format!(
            "wrap-gpu: {}: compositor socket {}: No such file or directory (ENOENT)",
            vm.display(),
            missing.display()
        )),
        "{log}"
    );
    assert!(
        log.contains("the GPU daemon exited with status 111"),
        "{log}"
    );
    assert_eq!(
        wait_at_most(&mut child, Duration::from_secs(10))
            .unwrap()
            .code(),
        Some(1)
    );
}
