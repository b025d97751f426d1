//! wrap-vmm with the probe in cloud-hypervisor's place: it gets exactly
//! cloud-hypervisor's argv and fds, its API listener answers vm-init's
//! power-button request, and from inside it reaches /dev/kvm, its config,
//! its log and virtiofsd's socket, and nothing else.

use std::io::BufReader;
use std::process::Command;
use std::time::Duration;

use sandbox_core::contract::{config, fd, VmDir};
use tests::new_vm::NewVm;
use tests::vm::{assert_report_holds, read_report, stop, wait_at_most, wait_line};
use tests::{privileged, StateDir};

#[test]
fn the_probe_in_cloud_hypervisors_place() {
    if !privileged("vmm_probe") {
        return;
    }
    // StateDir::new gives /dev/kvm a kvm group as udev would, and puts
    // it back as it found it when the test ends.
    let state = StateDir::new("vmm_probe");
    let bait = tests::bait::hold();
    let vm = NewVm::create(state.0.join("ch"))
        .and_then(|v| v.set(config::INITRAMFS, ""))
        .and_then(|v| v.set(config::CMDLINE, "console=hvc0 quiet\n"))
        .and_then(|v| v.set(config::MEMORY, "128\n"))
        .and_then(|v| v.disk("root.img"))
        .unwrap()
        .into_path();
    let bin = state.standins();
    let mut child =
        state.vm_init_reporting("ch", &bin.join("probe"), &bin.join("virtiofsd-ok"), &[]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let report = read_report(&mut out);
    eprintln!("{report}");
    let d = VmDir::new(&vm);
    let input = |name| d.config_file(name).display().to_string();
    let argv = format!(
        "argv: --api-socket fd={} --event-monitor fd={} --kernel {} \
         --initramfs {} --cmdline console=hvc0 quiet \
         --disk path={}/root.img,readonly=on --fs tag=virtiofs0,socket={} \
         --memory size=128M,shared=on --serial file={} --console off \
         --vsock cid=3,socket={}",
        fd::VMM_API,
        fd::VMM_EVENTS,
        input(config::KERNEL),
        input(config::INITRAMFS),
        input(config::DISKS),
        d.virtiofsd_socket().display(),
        d.serial_fifo().display(),
        d.vsock_socket().display()
    );
    assert!(
        report.lines().any(|l| l == argv),
        "argv differs:\n{report}\nwanted\n{argv}"
    );
    assert_report_holds(&report, 28);
    // The probe opened its FIFO and vsock.d to everyone; no host user
    // reaches either (the state dir above them is root's alone).
    use std::os::unix::fs::MetadataExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
    assert_eq!(
        (mode(&d.serial_fifo()), mode(&d.vsock_dir())),
        (0o666, 0o777)
    );
    let reached = tests::host::nobody_reaches(&vm);
    assert!(reached.is_empty(), "a host user reached: {reached:?}");
    // The probe sent cloud-hypervisor's "booted" event on fd 4.
    assert!(wait_line(&mut child, ": ready").contains("ready (slot"));
    // vm-init's graceful stop reaches the probe over the API listener fd.
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut out, &mut rest);
    let mut err = String::new();
    let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err);
    assert!(
        rest.contains("api: PUT /api/v1/vm.power-button HTTP/1.1"),
        "{rest}\nvm-init:\n{err}"
    );
    let status = wait_at_most(&mut child, Duration::from_secs(10)).expect("vm-init exits");
    assert_eq!(status.code(), Some(0));
    // What the VMM made of its host files does not outlive the VM: its
    // FIFO (04755 by its hand) and vsock.d are gone; serial.log, which
    // PID 1 wrote, was root's all along.
    let log = std::fs::metadata(d.serial_log()).unwrap();
    assert_eq!(
        (log.uid(), log.gid(), log.mode() & 0o7777),
        (0, 0, 0o640),
        "serial.log after the VM"
    );
    assert!(!d.serial_fifo().exists(), "serial.fifo outlived the VM");
    assert!(
        !d.vsock_dir().exists(),
        "{} outlived the VM",
        d.vsock_dir().display()
    );
    // The stand-in's console lines came through PID 1.
    let serial = std::fs::read_to_string(d.serial_log()).unwrap();
    assert!(serial.contains("probe: serial line"), "{serial}");
    bait.assert_nothing_reached_the_host();
}

/// The escape matrix's row for a VMM whose argv uses no GPU: a VM with one
/// (config/gpu: PID 1 listens on gpu.sock) under QEMU, which has no GPU
/// device. The probe in QEMU's place connects to virtiofsd's socket, and
/// finds no gpu.sock in its view.
#[test]
fn qemu_without_a_gpu_sees_no_gpu_sock() {
    if !privileged("vmm_qemu") {
        return;
    }
    let state = StateDir::new("vmm_qemu");
    let wayland = state.top().join("wayland/wayland-0");
    std::fs::create_dir_all(wayland.parent().unwrap()).unwrap();
    let _compositor = std::os::unix::net::UnixListener::bind(&wayland).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wayland, std::fs::Permissions::from_mode(0o666)).unwrap();
    let vm = NewVm::create(state.0.join("q"))
        .and_then(NewVm::qemu_tcg)
        .and_then(|v| v.set(config::GPU, wayland.to_str().unwrap()))
        .unwrap()
        .into_path();
    let bin = state.standins();
    let mut child =
        state.vm_init_reporting("q", &bin.join("probe"), &bin.join("virtiofsd-ok"), &[]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let report = read_report(&mut out);
    eprintln!("{report}");
    if !report.contains("probe: ") {
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err);
        panic!("no report; vm-init:\n{err}");
    }
    assert!(
        VmDir::new(&vm).gpu_socket().exists(),
        "the VM has no gpu.sock to hide"
    );
    assert!(
        report
            .lines()
            .any(|l| l.starts_with("ok   connect VMDIR/gpu.sock (QEMU has no GPU)")),
        "{report}"
    );
    assert_report_holds(&report, 6);
    assert!(wait_line(&mut child, ": ready").contains("ready (slot"));
    assert_eq!(stop(&mut child), Some(0));
}

/// Mounted on the host at this path, per /proc/self/mountinfo.
fn mounted(path: &std::path::Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = path.to_str().unwrap();
    info.lines()
        .any(|l| l.split_whitespace().nth(4) == Some(path))
}

/// Detaches a mount of the test's when dropped.
struct Detach(std::path::PathBuf);

impl Drop for Detach {
    fn drop(&mut self) {
        let _ = sandbox_core::mount::detach(&self.0);
    }
}

/// The VMM binds sockets in vsock.d, and makes files in its /tmp and
/// /dev/shm, until each says ENOSPC: at the bound of the VM's own tmpfs,
/// while the state dir's file system (here one of 128 inodes, as the
/// host's /run would be once full) keeps its inodes for the host. The
/// vsock.d tmpfs goes with the VM, and after a kill -9 with the next start.
#[test]
fn the_vmm_fills_its_own_bounded_file_systems_not_the_state_dirs() {
    use sandbox_core::mount::{mount_tmpfs, Tmpfs};
    if !privileged("vmm_fill") {
        return;
    }
    let state = StateDir::new("vmm_fill");
    mount_tmpfs(
        &state.0,
        &Tmpfs {
            // Only root may search a state dir (vm-init refuses another).
            mode: 0o700,
            owner: None,
            size: "4m",
            inodes: 128,
        },
    )
    .unwrap();
    let _mount = Detach(state.0.clone());
    let vm = state.add_standin_vm("f");
    let d = VmDir::new(&vm);
    let bin = state.standins();
    let mut child =
        state.vm_init_reporting("f", &bin.join("probe"), &bin.join("virtiofsd-ok"), &[]);
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let report = read_report(&mut out);
    eprintln!("{report}");
    // vsock.d full, the state dir's file system is not.
    let host_file = state.0.join("host-file");
    if let Err(e) = std::fs::write(&host_file, "a host process's") {
        panic!("a host process cannot create a file in the state dir: {e}");
    }
    std::fs::remove_file(&host_file).unwrap();
    assert_report_holds(&report, 28);
    for what in [
        "its vsock directory with sockets",
        "/tmp with files",
        "/dev/shm with files",
    ] {
        assert!(
            report.contains(&format!("ok   fill {what} until it fails")),
            "{what}: {report}"
        );
    }
    assert!(
        mounted(&d.vsock_dir()),
        "the vsock directory is no mount of its own"
    );
    assert_eq!(stop(&mut child), Some(0));
    drop(out);
    assert!(
        !mounted(&d.vsock_dir()),
        "the vsock directory's tmpfs outlived the VM"
    );
    assert!(
        !d.vsock_dir().exists(),
        "the vsock directory outlived the VM"
    );
    // Killed with -9, the outer leaves its tmpfs; the next start takes it
    // away, and the VM after it ends with nothing left.
    let standin = bin.join("vmm-cooperative");
    let mut child = state.vm_init("f", &standin, &bin.join("virtiofsd-ok"), &[]);
    assert!(wait_line(&mut child, ": ready").contains("ready"));
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(mounted(&d.vsock_dir()), "no stale tmpfs to take away");
    let mut child = state.vm_init("f", &standin, &bin.join("virtiofsd-ok"), &[]);
    let log = wait_line(&mut child, ": ready");
    assert!(log.contains("ready"), "{log}");
    assert_eq!(stop(&mut child), Some(0));
    assert!(
        !mounted(&d.vsock_dir()),
        "a tmpfs stayed on the vsock directory"
    );
    assert!(!d.vsock_dir().exists());
}
