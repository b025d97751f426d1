//! The real thing: virtiofsd 1.14.0 serving a QEMU (TCG) guest through
//! wrap-virtiofsd and wrap-vmm under vm-init, every file operation checked
//! from the host; the same VM again in another id slot; the probe in
//! virtiofsd's place; path traversal from the guest; and the kernel's audit
//! log, which must show no Landlock denial of the real virtiofsd.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sandbox_core::contract::bin::{WRAP_VIRTIOFSD, WRAP_VMM};
use sandbox_core::contract::VmDir;
use sandbox_core::ids::Slot;
use sandbox_core::locks::SlotFile;
use tests::guest::{enable_kernel_audit, kernel_log, landlock_denials, set_guest_mode, Tools};
use tests::vm::{assert_report_holds, read_report, wait_at_most, wait_line};
use tests::{privileged, StateDir};

const BOOT_LIMIT: Duration = Duration::from_secs(120);

/// Boots the VM once; returns vm-init's stderr and serial.log.
fn boot(state: &StateDir, tools: &Tools, name: &str) -> (String, String) {
    let start = Instant::now();
    let mut child = state.vm_init(name, &tools.qemu, &tools.virtiofsd, &[]);
    let log = wait_line(&mut child, "\u{0}");
    let status = wait_at_most(&mut child, BOOT_LIMIT).expect("the guest did not power off in time");
    let serial = std::fs::read_to_string(
        sandbox_core::contract::VmDir::new(state.0.join(name)).serial_log(),
    )
    .unwrap();
    eprintln!(
        "guest run: {:?} from vm-init start to exit\n{log}",
        start.elapsed()
    );
    assert_eq!(status.code(), Some(0), "vm-init: {log}\nserial:\n{serial}");
    assert!(serial.contains("GUEST-DONE"), "{serial}");
    assert!(!serial.contains("GUEST-FAIL"), "{serial}");
    (log, serial)
}

/// The slot of vm-init's "ready (slot N)" line.
fn slot_of(log: &str) -> u32 {
    log.split("ready (slot ")
        .nth(1)
        .and_then(|r| r.split(')').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no ready line: {log}"))
}

fn owner(path: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.uid(), m.gid())
}

#[test]
fn guest_file_operations_land_on_the_host_with_their_owners() {
    if !privileged("virtiofs_ops") {
        return;
    }
    let Some(tools) = Tools::find("virtiofs_ops") else {
        return;
    };
    // That denials are logged at all is shown by the probe test below.
    let _audit = enable_kernel_audit().expect("turn the kernel's audit on");
    let state = StateDir::new("virtiofs_ops");
    let vm = state.add_guest_vm("guest", "ops");
    let fs = VmDir::new(&vm).storage();
    let secret = format!("from the host {}", std::process::id());
    std::fs::write(fs.join("from-host.txt"), &secret).unwrap();

    let (log, serial) = boot(&state, &tools, "guest");
    for op in [
        "write", "mkdir", "rename", "hardlink", "symlink", "chmod", "chown", "truncate", "remove",
    ] {
        let line = format!("GUEST-OK {op}");
        assert!(
            serial.lines().any(|l| l.trim_end() == line),
            "{op}: {serial}"
        );
    }
    assert!(serial.contains(&format!("GUEST-READ {secret}")), "{serial}");
    let first = slot_of(&log);
    // Seen from the host: contents, modes, links, and uid 1000 on disk.
    let renamed = fs.join("dir/renamed.txt");
    assert_eq!(std::fs::read_to_string(&renamed).unwrap(), "hello\n");
    let meta = std::fs::metadata(&renamed).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o640);
    assert_eq!(owner(&renamed), (1000, 1000));
    assert_eq!(meta.nlink(), 2);
    assert_eq!(
        std::fs::metadata(fs.join("hardlink.txt")).unwrap().ino(),
        meta.ino()
    );
    assert_eq!(
        std::fs::read_link(fs.join("symlink")).unwrap(),
        Path::new("dir/renamed.txt")
    );
    assert_eq!(std::fs::metadata(fs.join("trunc.txt")).unwrap().len(), 4);
    assert!(!fs.join("removed.txt").exists() && !fs.join("new.txt").exists());
    // Created by the guest's root: root on disk, whatever the slot.
    assert_eq!(owner(&fs.join("dir")), (0, 0));

    // Again, with the slot it had held by this test: other host ids, the
    // same files. (Other tests take and give back slots meanwhile: wait
    // until ours is free to take.)
    let slots = SlotFile::open().unwrap();
    let held = Slot::new(first).unwrap();
    assert!(
        tests::vm::within(Duration::from_secs(30), || slots.try_lock(held).unwrap()),
        "slot {first} stayed taken"
    );
    set_guest_mode(&vm, "check").unwrap();
    let (log, serial) = boot(&state, &tools, "guest");
    assert_ne!(slot_of(&log), first, "{log}");
    assert!(serial.contains("GUEST-OWNER 1000:1000"), "{serial}");
    assert!(serial.contains("GUEST-CONTENT hello"), "{serial}");
    assert!(serial.contains("GUEST-OK write-again"), "{serial}");
    assert_eq!(owner(&fs.join("second.txt")), (1000, 1000));
    drop(slots);

    // Neither the real virtiofsd nor QEMU hit its Landlock table (the
    // kernel logs every denial of a domain made with log_new_exec).
    let log = kernel_log();
    for wrapper in [WRAP_VIRTIOFSD, WRAP_VMM] {
        let denials = landlock_denials(&log, &state.bin().join(wrapper));
        assert!(
            denials.is_empty(),
            "Landlock denied {wrapper}'s daemon:\n{}",
            denials.join("\n")
        );
    }
}

#[test]
fn the_guest_cannot_walk_out_of_its_storage() {
    if !privileged("virtiofs_escape") {
        return;
    }
    let Some(tools) = Tools::find("virtiofs_escape") else {
        return;
    };
    let state = StateDir::new("virtiofs_escape");
    let vm = state.add_guest_vm("guest", "escape");
    let secret = format!("host secret {}", std::process::id());
    std::fs::write(vm.join("secret"), &secret).unwrap();
    std::fs::write(state.0.join("secret"), &secret).unwrap();
    let hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let (_, serial) = boot(&state, &tools, "guest");
    assert!(serial.contains("GUEST-OK listing"), "{serial}");
    assert!(
        !serial.contains(&secret),
        "the guest read a host file:\n{serial}"
    );
    let hostname = hostname.trim();
    if !hostname.is_empty() {
        let leaked = serial
            .lines()
            .any(|l| l.starts_with("GUEST-ESCAPE symlink") && l.contains(hostname));
        assert!(
            !leaked,
            "the guest read the host's /etc/hostname:\n{serial}"
        );
    }
    // The guest's symlink is a symlink in its storage, nothing more.
    assert_eq!(
        std::fs::read_link(VmDir::new(&vm).storage().join("etc-link")).unwrap(),
        Path::new("/etc")
    );
}

#[test]
fn the_probe_in_virtiofsds_place_reaches_nothing_but_fs() {
    if !privileged("virtiofs_probe") {
        return;
    }
    let _audit = enable_kernel_audit().expect("turn the kernel's audit on");
    let state = StateDir::new("virtiofs_probe");
    let bait = tests::bait::hold();
    let vm = state.add_probe_vm("p");
    state.add_standin_vm("other");
    let bin = state.standins();
    // The VMM stand-in boots, the probe runs; stop the VM once it has.
    let mut child =
        state.vm_init_reporting("p", &bin.join("vmm-cooperative"), &bin.join("probe"), &[]);
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let report = read_report(&mut stdout);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = wait_at_most(&mut child, Duration::from_secs(10));
    eprintln!("{report}");
    assert_report_holds(&report, 25);
    bait.assert_nothing_reached_the_host();
    assert!(VmDir::new(&vm).storage().join("probe-out").exists());
    // The positive control of the audit check of the real virtiofsd: the
    // same wrapper's domain logs each denied attempt of the probe.
    let denials = landlock_denials(&kernel_log(), &state.bin().join(WRAP_VIRTIOFSD));
    assert!(
        denials.iter().any(|d| d.contains("probe-exec")),
        "no Landlock audit records: {denials:?}"
    );
}

/// A tmpfs that honours setuid bits, over `dir`, unmounted when dropped.
struct SetuidTmpfs(std::path::PathBuf);

impl SetuidTmpfs {
    fn over(dir: &Path) -> SetuidTmpfs {
        rustix::mount::mount(
            "tmpfs",
            dir,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            c"mode=700",
        )
        .unwrap();
        SetuidTmpfs(dir.to_owned())
    }
}

impl Drop for SetuidTmpfs {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

/// The guest's root owns fs/ through the idmap: in virtiofsd's place, the
/// probe opens fs/ to everyone and leaves a setuid-root copy of itself
/// there, on a file system that honours setuid bits. No host user may
/// reach it, whatever fs/'s mode: vm-init refuses a state dir host users
/// may search, and with one only root may, the copy is out of their
/// reach. (Before, the VM ran with the state dir 0755, and nobody ran the
/// copy as euid 0; PID 1 could not even start under a 0700 one.)
#[test]
fn a_setuid_program_the_guests_root_leaves_reaches_no_host_user() {
    use std::os::unix::fs::PermissionsExt;
    if !privileged("virtiofs_setuid") {
        return;
    }
    let chmod = |p: &Path, m| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    let state = StateDir::new("virtiofs_setuid");
    let _suid = SetuidTmpfs::over(&state.0);
    let vm = state.add_probe_vm("p");
    let copy = VmDir::new(&vm).storage().join(tests::SETUID_COPY);
    let bin = state.standins();
    let vm_init = |state_dir_mode| {
        chmod(&state.0, state_dir_mode).unwrap();
        state.vm_init_reporting("p", &bin.join("vmm-cooperative"), &bin.join("probe"), &[])
    };
    // fs/ 0700, as the refusal advised before: the guest's root owns it.
    chmod(&VmDir::new(&vm).storage(), 0o700).unwrap();
    // Searchable by host users: refused before anything runs.
    let out = vm_init(0o755).wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(100), "{err}");
    assert!(
        err.contains(&format!("chmod 0700 {}", state.0.display())),
        "{err}"
    );
    assert!(!copy.exists());
    // Root's alone: the VM runs, the probe does its worst.
    let mut child = vm_init(0o700);
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let report = read_report(&mut stdout);
    eprintln!("{report}");
    assert_report_holds(&report, 25);
    let meta = std::fs::metadata(&copy).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o7777), (0, 0o4755));
    assert_eq!(
        std::fs::metadata(VmDir::new(&vm).storage()).unwrap().mode() & 0o777,
        0o755
    );
    // A host user, while the VM runs and after it: out of reach.
    let reached = tests::host::nobody_reaches(&vm);
    assert!(reached.is_empty(), "a host user reached: {reached:?}");
    let nobody = || tests::host::as_nobody(copy.to_str().unwrap(), &["--euid".as_ref()]);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let _ = wait_at_most(&mut child, Duration::from_secs(10));
    assert!(!nobody().status.success());
    // The control: were the state dir searchable, any host user would
    // run the guest's program as root.
    chmod(&state.0, 0o755).unwrap();
    assert_eq!(tests::host::nobody_reaches(&vm).len(), 1);
    let ran = nobody();
    assert_eq!(String::from_utf8_lossy(&ran.stdout), "euid 0\n", "{ran:?}");
    std::fs::remove_file(&copy).unwrap();
}
