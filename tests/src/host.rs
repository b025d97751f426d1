//! Host state the tests change, and put back as they found it: /dev/kvm's
//! group and mode, and the host's kvm group. A fresh machine of this kind
//! has no udev: /dev/kvm is `crw------- root:root` and there is no kvm
//! group, so the cloud-hypervisor profile (every stand-in VM) needs one
//! made, as udev would; the first-run test needs the fresh state back.
//!
//! Every test of a process that needs /dev/kvm usable shares one change
//! ([`kvm_usable`]); the last one out restores it. A test that needs the
//! pristine state ([`kvm_pristine`]) waits until no other test of its
//! process uses /dev/kvm, and holds off the others until it is done.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Condvar, Mutex};

use sandbox_core::host::{kvm_group, KVM_DEVICE};

/// /dev/kvm and the kvm group as found.
#[derive(Debug)]
struct KvmState {
    uid: u32,
    gid: u32,
    mode: u32,
    /// The kvm group's gid, when the host had one.
    group: Option<u32>,
}

fn run(cmd: &str, args: &[&str]) {
    let status = Command::new(cmd)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    assert!(status.success(), "{cmd} {args:?}: {status}");
}

fn set_owner_and_mode(uid: u32, gid: u32, mode: u32) {
    std::os::unix::fs::chown(KVM_DEVICE, Some(uid), Some(gid)).expect("chown /dev/kvm");
    std::fs::set_permissions(KVM_DEVICE, std::fs::Permissions::from_mode(mode))
        .expect("chmod /dev/kvm");
}

impl KvmState {
    /// None when the host has no /dev/kvm: nothing to change or restore.
    fn record() -> Option<KvmState> {
        let meta = std::fs::metadata(KVM_DEVICE).ok()?;
        Some(KvmState {
            uid: meta.uid(),
            gid: meta.gid(),
            mode: meta.mode() & 0o7777,
            group: kvm_group(),
        })
    }

    fn restore(&self) {
        let now = kvm_group();
        if now.is_some() && now != self.group {
            run("groupdel", &["kvm"]);
        }
        if let Some(g) = self.group.filter(|&g| kvm_group() != Some(g)) {
            run("groupadd", &["--system", "--gid", &g.to_string(), "kvm"]);
        }
        set_owner_and_mode(self.uid, self.gid, self.mode);
    }
}

#[derive(Debug)]
struct Users {
    usable: usize,
    pristine: bool,
    found: Option<KvmState>,
}

static USERS: Mutex<Users> = Mutex::new(Users {
    usable: 0,
    pristine: false,
    found: None,
});
static CHANGED: Condvar = Condvar::new();

fn users() -> std::sync::MutexGuard<'static, Users> {
    // A test that panicked while holding the lock left consistent data.
    USERS.lock().unwrap_or_else(|e| e.into_inner())
}

/// /dev/kvm usable by the VMM, as udev sets it up: a kvm group owning it,
/// mode 0660. Put back as found when the last holder drops.
#[derive(Debug)]
pub struct KvmUsable(());

pub fn kvm_usable() -> KvmUsable {
    let mut u = users();
    while u.pristine {
        u = CHANGED.wait(u).unwrap_or_else(|e| e.into_inner());
    }
    if u.usable == 0 {
        u.found = KvmState::record();
        if u.found.is_some() {
            if kvm_group().is_none() {
                run("groupadd", &["--system", "kvm"]);
            }
            let gid = kvm_group().expect("the kvm group was just made");
            set_owner_and_mode(0, gid, 0o660);
        }
    }
    u.usable += 1;
    KvmUsable(())
}

impl Drop for KvmUsable {
    fn drop(&mut self) {
        let mut u = users();
        u.usable -= 1;
        if u.usable == 0 {
            if let Some(found) = u.found.take() {
                found.restore();
            }
            CHANGED.notify_all();
        }
    }
}

/// /dev/kvm as on a fresh machine of this kind: `crw------- root:root`,
/// and no kvm group. Put back as found when dropped.
#[derive(Debug)]
pub struct KvmPristine(Option<KvmState>);

pub fn kvm_pristine() -> KvmPristine {
    let mut u = users();
    while u.pristine || u.usable > 0 {
        u = CHANGED.wait(u).unwrap_or_else(|e| e.into_inner());
    }
    u.pristine = true;
    let found = KvmState::record();
    if found.is_some() {
        if kvm_group().is_some() {
            run("groupdel", &["kvm"]);
        }
        set_owner_and_mode(0, 0, 0o600);
    }
    KvmPristine(found)
}

impl Drop for KvmPristine {
    fn drop(&mut self) {
        let mut u = users();
        if let Some(found) = self.0.take() {
            found.restore();
        }
        u.pristine = false;
        CHANGED.notify_all();
    }
}

/// /dev/kvm's mode and owners and the kvm group's gid, to compare.
pub fn kvm_snapshot() -> Option<(u32, u32, u32, Option<u32>)> {
    KvmState::record().map(|s| (s.uid, s.gid, s.mode, s.group))
}

/// Where every test's state dir lives.
pub const TESTS_TOP: &str = "/run/vm-sandbox-tests";

static STATE_MOUNT: Mutex<(usize, bool)> = Mutex::new((0, false));

/// The tests' VM directories on a nosuid,nodev file system, as a tmpfs
/// /run is on a normal host.
/// On a host whose /run is a plain directory of the root file system (a
/// fresh machine of this kind), a tmpfs is mounted on [`TESTS_TOP`] for
/// as long as a test of this process needs it.
#[derive(Debug)]
pub struct StateMount(());

pub fn state_mount() -> StateMount {
    let mut m = STATE_MOUNT.lock().unwrap_or_else(|e| e.into_inner());
    if m.0 == 0 {
        let top = std::path::Path::new(TESTS_TOP);
        std::fs::create_dir_all(top).expect("mkdir tests top");
        m.1 = !sandbox_core::mount::is_nosuid_nodev(top);
        if m.1 {
            sandbox_core::mount::mount_state_tmpfs(top).expect("mount the tests' tmpfs");
        }
    }
    m.0 += 1;
    StateMount(())
}

impl Drop for StateMount {
    fn drop(&mut self) {
        let mut m = STATE_MOUNT.lock().unwrap_or_else(|e| e.into_inner());
        m.0 -= 1;
        if m.0 == 0 && m.1 {
            let _ = sandbox_core::mount::detach(std::path::Path::new(TESTS_TOP));
            let _ = std::fs::remove_dir(TESTS_TOP);
        }
    }
}

/// A host group for a test, made if the host lacks it and removed again
/// on drop (only if the test made it).
#[derive(Debug)]
pub struct TestGroup {
    pub name: &'static str,
    made: bool,
}

impl TestGroup {
    pub fn new(name: &'static str) -> TestGroup {
        let has = std::fs::read_to_string("/etc/group")
            .unwrap()
            .lines()
            .any(|l| l.starts_with(&format!("{name}:")));
        if !has {
            assert!(Command::new("groupadd")
                .args(["--system", name])
                .status()
                .unwrap()
                .success());
        }
        TestGroup { name, made: !has }
    }
}

impl Drop for TestGroup {
    fn drop(&mut self) {
        if self.made {
            let _ = Command::new("groupdel").arg(self.name).status();
        }
    }
}

/// The tests of a test binary share one render node: one at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A render node for the test, as udev would make one: a character device
/// of group render, mode 0660. There is no GPU here, so it is the null
/// device's (1:3): it opens, like a real one would.
#[derive(Debug)]
pub struct RenderNode {
    node: PathBuf,
    /// /dev/dri did not exist: removed again with the node.
    made_dir: bool,
    _group: TestGroup,
    _one: std::sync::MutexGuard<'static, ()>,
}

impl RenderNode {
    // Not Default: making one changes the host.
    #[allow(clippy::new_without_default)]
    pub fn new() -> RenderNode {
        let one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let group = TestGroup::new("render");
        let made_dir = !std::path::Path::new("/dev/dri").exists();
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
        RenderNode {
            node,
            made_dir,
            _group: group,
            _one: one,
        }
    }
}

impl Drop for RenderNode {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.node);
        if self.made_dir {
            let _ = std::fs::remove_dir("/dev/dri");
        }
    }
}

/// Runs `program` with `args` as a host user with no privilege and no
/// group (nobody, 65534): what any host user could do. Through a shell:
/// setpriv keeps its capabilities across the uid change until its own
/// exec (PR_SET_KEEPCAPS), so a path it execs directly is walked with
/// CAP_DAC_OVERRIDE; the shell's has none left.
pub fn as_nobody(program: &str, args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["sh", "-c", "exec \"$0\" \"$@\"", program])
        .args(args)
        .output()
        .expect("run setpriv")
}

/// What a host user (nobody) reached of what the daemons of the VM at
/// `vm` could have opened to everyone: the probe's setuid copy in fs/, the
/// VMM's FIFO, vsock.d. Each attempt must fail with EACCES; returns the
/// ones that did not, with what was said.
pub fn nobody_reaches(vm: &std::path::Path) -> Vec<String> {
    let d = sandbox_core::contract::VmDir::new(vm);
    let copy = d.storage().join(crate::SETUID_COPY);
    let mut attempts: Vec<(&str, Vec<std::ffi::OsString>)> = Vec::new();
    if copy.exists() {
        attempts.push(("run", vec![copy.into(), "--euid".into()]));
    }
    for (what, script, path) in [
        ("write", "echo attack >> \"$1\"", d.serial_fifo()),
        ("create in", ": > \"$1\"/attack", d.vsock_dir()),
    ] {
        if path.exists() {
            let argv = ["sh", "-c", script, "sh"].map(Into::into);
            let mut argv = argv.to_vec();
            argv.push(path.into());
            attempts.push((what, argv));
        }
    }
    let mut reached = Vec::new();
    for (what, argv) in attempts {
        let rest: Vec<&std::ffi::OsStr> = argv[1..].iter().map(|a| a.as_os_str()).collect();
        let out = as_nobody(argv[0].to_str().unwrap(), &rest);
        let said = String::from_utf8_lossy(&out.stderr);
        if out.status.success() || !said.contains("Permission denied") {
            reached.push(format!(
                "{what} {:?}: {}{said}",
                argv.last().unwrap(),
                String::from_utf8_lossy(&out.stdout)
            ));
        }
    }
    reached
}
