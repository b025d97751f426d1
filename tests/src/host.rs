//! Host state the tests change, and put back as they found it: /dev/kvm's
//! group and mode, and the host's kvm group. A fresh machine of this kind
//! has no udev: /dev/kvm is `crw------- root:root` and there is no kvm
//! group, so the cloud-hypervisor profile (every stand-in VM) needs one
//! made, as udev would; the first-run test needs the fresh state back.
//!
//! The tests that use /dev/kvm meet at one lock file, [`KVM_LOCK`], each
//! guard with a lock of its own on it (`flock`, which the kernel lets go
//! of when the guard is dropped, its test panics or its process dies: no
//! panic or ordering leaves a test waiting for a guard nobody holds):
//! shared while a test uses /dev/kvm usable ([`kvm_usable`]), exclusive
//! while one changes it or needs it pristine ([`kvm_pristine`]). What was
//! found is written in the file before a change and emptied once it is
//! put back, so a change left behind (a process killed, a put-back that
//! failed) is put back by the next guard, which says so in one line.
//! A test holds one kvm guard at a time: a second might wait for the first.

use std::fmt;
use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use rustix::fs::{flock, FlockOperation};
use sandbox_core::host::{kvm_group, KVM_DEVICE};

/// The kvm guards' lock file, shared by every test process of the host
/// (not under [`TESTS_TOP`], which a test may mount and unmount).
pub const KVM_LOCK: &str = "/run/vm-sandbox-tests-kvm";

/// /dev/kvm and the kvm group as found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KvmState {
    uid: u32,
    gid: u32,
    mode: u32,
    /// The kvm group's gid, when the host had one.
    group: Option<u32>,
}

/// Runs a command, failing with its command line and what it said.
fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&out.stderr);
    Err(format!(
        "{cmd} {}: {}: {}",
        args.join(" "),
        out.status,
        said.trim()
    ))
}

fn set_owner_and_mode(uid: u32, gid: u32, mode: u32) -> Result<(), String> {
    std::os::unix::fs::chown(KVM_DEVICE, Some(uid), Some(gid))
        .map_err(|e| format!("chown {uid}:{gid} {KVM_DEVICE}: {e}"))?;
    std::fs::set_permissions(KVM_DEVICE, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("chmod {mode:04o} {KVM_DEVICE}: {e}"))
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

    /// As udev leaves a normal host: root:kvm, mode 0660.
    fn is_usable(&self) -> bool {
        (self.uid, self.mode, self.group) == (0, 0o660, Some(self.gid))
    }

    /// As a fresh machine of this kind has it: root:root, 0600, no group.
    fn is_pristine(&self) -> bool {
        (self.uid, self.gid, self.mode, self.group) == (0, 0, 0o600, None)
    }

    fn make_usable() -> Result<(), String> {
        if kvm_group().is_none() {
            run("groupadd", &["--system", "kvm"])?;
        }
        let gid = kvm_group().ok_or("no kvm group after groupadd")?;
        set_owner_and_mode(0, gid, 0o660)
    }

    fn make_pristine() -> Result<(), String> {
        if kvm_group().is_some() {
            run("groupdel", &["kvm"])?;
        }
        set_owner_and_mode(0, 0, 0o600)
    }

    fn restore(&self) -> Result<(), String> {
        let now = kvm_group();
        if now.is_some() && now != self.group {
            run("groupdel", &["kvm"])?;
        }
        if let Some(g) = self.group.filter(|&g| kvm_group() != Some(g)) {
            run("groupadd", &["--system", "--gid", &g.to_string(), "kvm"])?;
        }
        set_owner_and_mode(self.uid, self.gid, self.mode)
    }

    /// `UID GID MODE GROUP|-`, as written in [`KVM_LOCK`].
    fn parse(line: &str) -> Option<KvmState> {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [uid, gid, mode, group] = f[..] else {
            return None;
        };
        Some(KvmState {
            uid: uid.parse().ok()?,
            gid: gid.parse().ok()?,
            mode: u32::from_str_radix(mode, 8).ok()?,
            group: match group {
                "-" => None,
                g => Some(g.parse().ok()?),
            },
        })
    }
}

impl fmt::Display for KvmState {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "uid {} gid {} mode {:04o}, ",
            self.uid, self.gid, self.mode
        )?;
        match self.group {
            Some(g) => write!(f, "kvm group {g}"),
            None => write!(f, "no kvm group"),
        }
    }
}

/// The lock file, opened for one guard: a lock of its own.
fn open_lock() -> File {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(KVM_LOCK)
        .unwrap_or_else(|e| panic!("open {KVM_LOCK}: {e}"))
}

fn lock(file: &File, op: FlockOperation) {
    loop {
        match flock(file, op) {
            Err(rustix::io::Errno::INTR) => continue,
            r => return r.unwrap_or_else(|e| panic!("flock {KVM_LOCK} {op:?}: {e}")),
        }
    }
}

/// Writes what was found before a change: `PID UID GID MODE GROUP|-`.
fn write_found(file: &File, found: &KvmState) -> Result<(), String> {
    let line = format!(
        "{} {} {} {:o} {}\n",
        std::process::id(),
        found.uid,
        found.gid,
        found.mode,
        found.group.map_or("-".into(), |g| g.to_string())
    );
    file.set_len(0)
        .and_then(|()| file.write_all_at(line.as_bytes(), 0))
        .and_then(|()| file.sync_data())
        .map_err(|e| format!("write {KVM_LOCK}: {e}"))
}

/// Puts /dev/kvm and the kvm group back as written in the lock file, if
/// anything is, and empties it. Only with the lock held exclusively:
/// then no test uses the change any longer. Returns the writer's pid
/// and what was put back.
fn put_back(file: &File) -> Result<Option<(String, KvmState)>, String> {
    let text = std::fs::read_to_string(KVM_LOCK).map_err(|e| format!("read {KVM_LOCK}: {e}"))?;
    if text.trim().is_empty() {
        return Ok(None);
    }
    let (pid, rest) = text.trim().split_once(' ').unwrap_or(("?", ""));
    let found = KvmState::parse(rest)
        .ok_or_else(|| format!("{KVM_LOCK} holds {text:?}, not PID UID GID MODE GROUP"))?;
    found.restore().map_err(|e| {
        format!(
            "could not put /dev/kvm and the kvm group back as test process {pid} found them \
             ({found}; kept in {KVM_LOCK} for the next run): {e}"
        )
    })?;
    file.set_len(0)
        .map_err(|e| format!("empty {KVM_LOCK}: {e}"))?;
    Ok(Some((pid.to_owned(), found)))
}

/// The one line said when a guard puts back what another left changed
/// (its process killed, its put-back failed).
fn say_put_back(pid: &str, found: &KvmState) {
    eprintln!(
        "tests: put /dev/kvm and the kvm group back as test process {pid} found them \
         ({found}): it changed them and did not put them back"
    );
}

/// With the lock held exclusively, before a change: what an earlier
/// guard left changed, put back.
fn put_back_left_over(file: &File) {
    match put_back(file) {
        Ok(Some((pid, found))) => say_put_back(&pid, &found),
        Ok(None) => {}
        Err(e) => panic!("{e}"),
    }
}

/// A guard's own change: what was found is written first, so a process
/// killed midway is put back by the next; a change that fails is put
/// back at once.
fn change(file: &File, found: &KvmState, what: &str, make: fn() -> Result<(), String>) {
    let changed = write_found(file, found).and_then(|()| make());
    if let Err(e) = changed {
        let back = put_back(file).err().map(|b| format!("; {b}"));
        panic!("make /dev/kvm {what}: {e}{}", back.unwrap_or_default());
    }
}

/// A guard's put-back as it is dropped: said in one line if the change
/// was another process's; if it failed, its test fails, unless it fails
/// already (a panic while panicking would abort every test).
fn report(put: Result<Option<(String, KvmState)>, String>) {
    match put {
        Ok(Some((pid, found))) if pid != std::process::id().to_string() => {
            say_put_back(&pid, &found)
        }
        Ok(_) => {}
        Err(e) if std::thread::panicking() => eprintln!("tests: {e}"),
        Err(e) => panic!("{e}"),
    }
}

/// /dev/kvm usable by the VMM, as udev sets it up: a kvm group owning it,
/// mode 0660. Put back as found when the last test using it is done.
#[derive(Debug)]
pub struct KvmUsable(File);

pub fn kvm_usable() -> KvmUsable {
    let file = open_lock();
    loop {
        // Shared with the other tests that use it, once it is usable.
        lock(&file, FlockOperation::LockShared);
        if KvmState::record().is_none_or(|s| s.is_usable()) {
            return KvmUsable(file);
        }
        // Changed with every other guard out. (Linux does not promise
        // that a lock changes type at once: another guard may come
        // between, so what it leaves is looked at again.)
        lock(&file, FlockOperation::LockExclusive);
        put_back_left_over(&file);
        if let Some(found) = KvmState::record().filter(|s| !s.is_usable()) {
            change(&file, &found, "usable", KvmState::make_usable);
        }
    }
}

impl Drop for KvmUsable {
    fn drop(&mut self) {
        // The last test out puts back: no other holds a lock then. (Two
        // dropping at once: the second to try gets it.)
        if flock(&self.0, FlockOperation::NonBlockingLockExclusive).is_ok() {
            report(put_back(&self.0));
        }
    }
}

/// /dev/kvm as on a fresh machine of this kind: `crw------- root:root`,
/// and no kvm group. Put back as found when dropped.
#[derive(Debug)]
pub struct KvmPristine(File);

pub fn kvm_pristine() -> KvmPristine {
    let file = open_lock();
    lock(&file, FlockOperation::LockExclusive);
    put_back_left_over(&file);
    match KvmState::record() {
        Some(found) if found.is_pristine() => {
            // Recorded all the same: what its holder changes (the demo
            // gives /dev/kvm a kvm group) is put back on drop.
            write_found(&file, &found).unwrap_or_else(|e| panic!("{e}"));
        }
        Some(found) => change(&file, &found, "pristine", KvmState::make_pristine),
        None => {}
    }
    KvmPristine(file)
}

impl Drop for KvmPristine {
    fn drop(&mut self) {
        report(put_back(&self.0));
    }
}

/// /dev/kvm's mode and owners and the kvm group's gid, to compare.
pub fn kvm_snapshot() -> Option<(u32, u32, u32, Option<u32>)> {
    KvmState::record().map(|s| (s.uid, s.gid, s.mode, s.group))
}

/// [`kvm_snapshot`] with no kvm guard held by any test: a test's "put
/// back as found" is not read while another test has it changed. It
/// waits for every guard to be dropped: never call it holding one.
pub fn kvm_at_rest() -> Option<(u32, u32, u32, Option<u32>)> {
    let file = open_lock();
    lock(&file, FlockOperation::LockExclusive);
    kvm_snapshot()
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
