//! Shared pieces of the integration tests: the sandbox profiles the escape
//! matrix runs under, and helpers to find the test binaries.

#![forbid(unsafe_code)]

pub mod bait;
pub mod guest;
pub mod host;
pub mod matrix;
pub mod new_vm;
pub mod vhost_user;
pub mod vm;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use sandbox_core::caps::CapabilitySet;
use sandbox_core::contract::VmDir;
use sandbox_core::landlock::{Access, FsRule, Scope};
use sandbox_core::mount::ServiceMount;
use sandbox_core::policy::{Policy, ALL_SCOPES};
use sandbox_core::rlimits::{Limit, Resource};

/// Inside-uid of the service under test ("A") and of its siblings.
pub const UID_A: u32 = 65600;
pub const UID_B: u32 = 65601;
pub const UID_B2: u32 = 65602;
/// The abstract socket a sibling binds: `\0vm-sandbox-test-<vm>-<uid>`.
pub fn abstract_name(vm: &str, uid: u32) -> String {
    format!("vm-sandbox-test-{vm}-{uid}")
}

/// What the probe in virtiofsd's place leaves in fs/: a setuid-root copy
/// of itself, which, run with `--euid`, says whose program it runs as.
pub const SETUID_COPY: &str = "probe-setuid";

/// One HTTP request off `conn` (cloud-hypervisor's API, as its stand-ins
/// serve it): its first line and its body, read until the whole message
/// is there or the client stops sending.
pub fn read_http_request(conn: &mut std::os::unix::net::UnixStream) -> (String, String) {
    use std::io::Read as _;
    let mut req = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(message) = wrap_vmm::cloud_hypervisor::http_message(&req) {
            return message;
        }
        match conn.read(&mut chunk) {
            Ok(n) if n > 0 => req.extend_from_slice(&chunk[..n]),
            _ => {
                let text = String::from_utf8_lossy(&req).into_owned();
                return (text.lines().next().unwrap_or("").to_owned(), String::new());
            }
        }
    }
}

/// virtiofsd's serving capabilities, from its policy: the "root"
/// profile of the escape matrix holds them.
pub const ROOT_PROFILE_CAPS: CapabilitySet = wrap_virtiofsd::policy::SERVING_CAPS;

/// What wrap-virtiofsd execs virtiofsd with (its policy's CAPS): the
/// probe, in virtiofsd's place, must hold exactly these.
pub const VIRTIOFSD_EXEC_CAPS: CapabilitySet = wrap_virtiofsd::policy::CAPS;

/// What a test sandbox looks like: a non-root service (like the VMM) or a
/// service that is root of the VM's user namespace (like virtiofsd).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Privilege {
    User,
    Root,
}

impl Privilege {
    pub fn parse(s: &str) -> Option<Privilege> {
        match s {
            "user" => Some(Privilege::User),
            "root" => Some(Privilege::Root),
            _ => None,
        }
    }

    pub fn caps(self) -> CapabilitySet {
        match self {
            Privilege::User => CapabilitySet::empty(),
            Privilege::Root => ROOT_PROFILE_CAPS,
        }
    }
}

/// A weakening of the test policy, to show that the matrix catches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weaken {
    None,
    NoSignalScope,
    NoAbstractScope,
}

/// The policy of a test service with its own writable dir `own_dir`.
pub fn test_policy(
    profile: Privilege,
    uid: u32,
    vm_dir: &Path,
    own_dir: &Path,
    weaken: Weaken,
    keep_fds: Vec<i32>,
) -> Policy {
    let rule = |path: &str, access, optional| FsRule {
        path: PathBuf::from(path),
        access,
        optional,
    };
    let scopes: Vec<Scope> = ALL_SCOPES
        .iter()
        .copied()
        .filter(|s| {
            !matches!(
                (weaken, s),
                (Weaken::NoSignalScope, Scope::Signal)
                    | (Weaken::NoAbstractScope, Scope::AbstractUnixSocket)
            )
        })
        .collect();
    Policy {
        vm_dir: vm_dir.to_owned(),
        uid: if profile == Privilege::Root { 0 } else { uid },
        gid: if profile == Privilege::Root { 0 } else { uid },
        groups: vec![],
        caps: profile.caps(),
        mounts: vec![
            ServiceMount::Tmpfs {
                target: "/tmp".into(),
                size: "16m",
                inodes: 256,
            },
            ServiceMount::Tmpfs {
                target: "/dev/shm".into(),
                size: "16m",
                inodes: 256,
            },
            ServiceMount::ProcHidden,
        ],
        connect: vec![],
        handed: vec![],
        landlock: vec![
            rule("/usr", Access::ReadExec, false),
            rule("/lib", Access::ReadExec, false),
            rule("/lib64", Access::ReadExec, true),
            rule("/etc/ld.so.cache", Access::Read, false),
            rule("/proc", Access::Read, false),
            rule("/dev/null", Access::Device, false),
            rule("/tmp", Access::ReadWrite, false),
            rule("/dev/shm", Access::ReadWrite, false),
            FsRule {
                path: VmDir::new(vm_dir).config(),
                access: Access::Read,
                optional: false,
            },
            FsRule {
                path: own_dir.to_owned(),
                access: Access::ReadWrite,
                optional: false,
            },
            // The test binaries live in the build tree.
            FsRule {
                path: bin_dir(),
                access: Access::ReadExec,
                optional: false,
            },
        ],
        scopes,
        rlimits: vec![
            Limit {
                resource: Resource::Nofile,
                value: Some(256),
            },
            Limit {
                resource: Resource::Core,
                value: Some(0),
            },
        ],
        keep_fds,
        env: vec![("PATH".into(), OsString::from("/usr/bin:/bin"))],
        cwd: "/".into(),
        join_user_namespace: None,
        allow_weaker_landlock: false,
        syscalls: None,
    }
}

/// The directory of the running executable, or its parent for the
/// integration tests under target/debug/deps: where cargo put the
/// binaries, or where a test linked them (see [`StateDir::bin`]).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("exe has a dir").to_owned();
    if dir.ends_with("deps") {
        dir.parent().expect("deps has a parent").to_owned()
    } else {
        dir
    }
}

/// The tests' own binaries; they run the project's too
/// (sandbox_core::contract::bin::INSTALLED).
pub const TEST_BINARIES: &[&str] = &[
    "probe",
    "target",
    "test-wrap",
    "vm-harness",
    "standin",
    "seccomp-exec",
];

/// Hard-links (or copies) the binaries the tests run from `from` into `to`.
pub fn link_binaries(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create bin dir");
    for b in sandbox_core::contract::bin::INSTALLED
        .iter()
        .chain(TEST_BINARIES)
    {
        let (src, dst) = (from.join(b), to.join(b));
        if std::fs::hard_link(&src, &dst).is_err() {
            std::fs::copy(&src, &dst).unwrap_or_else(|e| panic!("copy {}: {e}", src.display()));
        }
    }
}

/// Privileged tests call this first. Returns false (and says why) when the
/// machine cannot run them; under CI=true a missing precondition is a
/// failure, never a skip.
pub fn privileged(test: &str) -> bool {
    privileged_with(test, &[])
}

/// [`privileged`], plus programs that must be installed (s6, execline).
pub fn privileged_with(test: &str, programs: &[&str]) -> bool {
    let mut missing = Vec::new();
    for p in programs {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
            .chain([PathBuf::from("/usr/lib/execline/bin")])
            .any(|d| d.join(p).is_file());
        if !found {
            missing.push(format!("{p} is not installed"));
        }
    }
    if !rustix::process::geteuid().is_root() {
        missing.push("not running as root".to_owned());
    }
    let abi = sandbox_core::landlock::kernel_abi();
    if abi < sandbox_core::landlock::REQUIRED_ABI {
        missing.push(format!(
            "Landlock ABI {abi} < {}",
            sandbox_core::landlock::REQUIRED_ABI
        ));
    }
    if missing.is_empty() {
        return true;
    }
    let why = missing.join(", ");
    if std::env::var_os("CI").is_some_and(|v| v == "true") {
        panic!("{test}: precondition missing under CI=true: {why}");
    }
    eprintln!("SKIP {test}: {why}");
    false
}

/// A state dir of the test's own, `/run/vm-sandbox-tests/TEST-PID/state`, mode 0700
/// (not under /tmp: every service gets a private /tmp that would cover it),
/// removed with its parent when dropped. The parent holds what must stay
/// visible inside a VM, where the state dir holds only the VM's own
/// directory: the stand-in binaries, s6's scan dir. While it lives,
/// /dev/kvm is usable by a VMM (see [`host::kvm_usable`]): stand-in VMs
/// run the cloud-hypervisor profile, which needs it.
#[derive(Debug)]
pub struct StateDir(pub PathBuf, Option<host::KvmUsable>, host::StateMount);

impl StateDir {
    pub fn new(test: &str) -> StateDir {
        let kvm = host::kvm_usable();
        let mut state = StateDir::bare(test);
        state.1 = Some(kvm);
        state
    }

    /// A state dir that leaves /dev/kvm as it is.
    pub fn bare(test: &str) -> StateDir {
        let mount = host::state_mount();
        let top = PathBuf::from(format!("{}/{test}-{}", host::TESTS_TOP, std::process::id()));
        let _ = std::fs::remove_dir_all(&top);
        let dir = top.join("state");
        std::fs::create_dir_all(&dir).expect("create state dir");
        // Root's alone, as vm-init requires (host::check_closed).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))
            .expect("chmod 0700 state dir");
        link_binaries(&bin_dir(), &top.join("bin"));
        StateDir(dir, None, mount)
    }

    /// The project's binaries, linked next to the state dir: never run
    /// from the build tree, which may sit under /tmp, where every service
    /// has a private tmpfs (and under the state dir, which a VM replaces).
    pub fn bin(&self) -> PathBuf {
        self.top().join("bin")
    }

    /// The directory around the state dir.
    pub fn top(&self) -> PathBuf {
        self.0.parent().expect("state dir has a parent").to_owned()
    }

    /// A VM of the escape matrix's harness (see [`new_vm::harness_vm`]).
    pub fn add_vm(&self, name: &str, slot: sandbox_core::ids::Slot, a_uid: u32) -> PathBuf {
        new_vm::harness_vm(&self.0.join(name), slot, a_uid).unwrap()
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        // What a VM killed with -9 left mounted on the host (its vsock.d,
        // which its next start would have removed) goes first: a mount
        // point cannot be removed.
        let top = self.top();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut below: Vec<std::path::PathBuf> = mounts
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(std::path::PathBuf::from))
            .filter(|m| m.starts_with(&top) && *m != top)
            .collect();
        below.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
        for m in below {
            let _ = sandbox_core::mount::detach(&m);
        }
        let _ = std::fs::remove_dir_all(top);
    }
}

/// vm-init's opt-out where the host has no cgroup v2 with the memory, pids
/// and cpu controllers (this CI host's cgroups are v1): the tests' VMs then
/// run without bounds, as vm-init says in one line. Nothing where the host
/// has them (the kernel matrix's 6.12 guest): the tests' VMs then run in
/// their cgroups, as a user's do.
pub fn no_cgroups() -> &'static [&'static str] {
    match sandbox_core::cgroup::check_parent(None) {
        Ok(Ok(_)) => &[],
        _ => &["--allow-no-cgroups"],
    }
}
