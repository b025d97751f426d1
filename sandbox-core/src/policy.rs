//! A service's sandbox as plain data, and the one function that applies it
//! in a fixed order, then execs the daemon.

use std::convert::Infallible;
use std::ffi::OsString;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use crate::caps::{self, CapabilitySet};
use crate::error::{Error, Result};
use crate::landlock::{self, Access, FsRule, Scope};
use crate::mount::{self, ServiceMount, Visible};
use crate::parent::{self, ExpectedParent};
use crate::rlimits::{self, Limit};
use crate::{creds, fds, prctl};

/// Both scopes; every policy of this project uses exactly these.
pub const ALL_SCOPES: &[Scope] = &[Scope::Signal, Scope::AbstractUnixSocket];

/// RLIMIT_MEMLOCK of a daemon that pins no memory: the kernel's default
/// (8 MiB since Linux 5.16). The outer vm-init raises the VM's hard limit
/// for the VMM alone, which pins guest RAM for vhost-user.
pub const DEFAULT_MEMLOCK: u64 = 8 << 20;

/// Read-and-execute rows every dynamically linked daemon needs: the
/// binary and library dirs and the loader's cache. /lib64 is absent on
/// some hosts; everything else must exist.
pub const SYSTEM_LIBRARIES: &[(&str, Access, bool)] = &[
    ("/usr", Access::ReadExec, false),
    ("/lib", Access::ReadExec, false),
    ("/lib64", Access::ReadExec, true),
    ("/etc/ld.so.cache", Access::Read, false),
];

/// Turns a wrapper's static table into Landlock rules.
pub fn rules(table: &[(&str, Access, bool)]) -> Vec<FsRule> {
    table
        .iter()
        .map(|&(path, access, optional)| FsRule {
            path: PathBuf::from(path),
            access,
            optional,
        })
        .collect()
}

/// Everything a wrapper does to itself before it becomes the daemon.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Inside-uid and gid in the VM's user namespace.
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups: only host groups this daemon needs (kvm).
    pub groups: Vec<u32>,
    /// A user namespace to join (an fd the caller passed) once the mounts
    /// are made, whose maps bound what the daemon's ids and set-id
    /// capabilities reach: virtiofsd's maps only the guest's ids.
    pub join_user_namespace: Option<RawFd>,
    /// Capabilities kept (bounding, permitted, effective); all others gone.
    pub caps: CapabilitySet,
    /// Made fresh in the service's root: /proc, private /tmp and /dev/shm.
    pub mounts: Vec<ServiceMount>,
    /// Every path the daemon may open, and how. The service's root holds
    /// these paths (and `connect`) and nothing else: see [`Policy::view`].
    pub landlock: Vec<FsRule>,
    /// Path sockets the daemon connects to. No Landlock right below ABI 9
    /// covers connect(2): being in the view is what allows it.
    pub connect: Vec<PathBuf>,
    pub scopes: Vec<Scope>,
    pub rlimits: Vec<Limit>,
    /// Fds passed on to the daemon besides 0, 1, 2.
    pub keep_fds: Vec<RawFd>,
    /// The daemon's whole environment.
    pub env: Vec<(String, OsString)>,
    /// The daemon's working directory: a path of its table, never one the
    /// parent happened to be in.
    pub cwd: PathBuf,
    /// The opt-out for kernels below Landlock ABI 6. Never set by default.
    pub allow_weaker_landlock: bool,
}

impl Policy {
    /// The service's view: every path of its Landlock table and every
    /// socket it connects to, bound from the VM's mount namespace.
    pub fn view(&self) -> Vec<Visible> {
        let rows = self.landlock.iter().map(|r| Visible {
            path: r.path.clone(),
            writable: matches!(r.access, Access::ReadWrite | Access::Sockets),
            optional: r.optional,
        });
        let sockets = self.connect.iter().map(|p| Visible {
            path: p.clone(),
            writable: false,
            optional: false,
        });
        rows.chain(sockets).collect()
    }
}

/// The daemon to exec once the policy is in force.
#[derive(Clone, Debug)]
pub struct Exec {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

/// Applies `policy` to the calling (single-threaded) process and execs
/// `exec`. Returns only on failure; nothing weaker than the policy runs.
pub fn apply(policy: &Policy, parent: &ExpectedParent, exec: &Exec) -> Result<Infallible> {
    // 1. Die with the parent, and make sure it is still the one we expect:
    //    doing anything for a VM whose PID 1 is gone would be wasted.
    parent::arm_and_check(parent)?;
    //    A session of its own and stdin on /dev/null: no controlling
    //    terminal to push input into (TIOCSTI) should vm-init have been
    //    started from one, nothing to read that was meant for it.
    fds::detach_from_terminal()?;
    // 2. Mounts need CAP_SYS_ADMIN and cannot happen inside a Landlock
    //    domain: they come first. The service's root holds its view and
    //    nothing else of the host.
    mount::build_service_namespace(&policy.mounts, &policy.view())?;
    //    Then the user namespace the daemon lives in, if it has its own:
    //    the mounts needed CAP_SYS_ADMIN over the VM's mount namespace,
    //    which a namespace below the VM's does not give.
    if let Some(fd) = policy.join_user_namespace {
        creds::join_user_namespace(fd)?;
    }
    // 3. Limits, lowered to the daemon's values (never above the hard
    //    limit the outer vm-init could give the VM: raising one takes
    //    CAP_SYS_RESOURCE in the host's user namespace).
    rlimits::apply(&policy.rlimits)?;
    // 4. Nothing of the parent's leaks but what the policy passes: no fd,
    //    and no working directory (a daemon opens its cwd: virtiofsd probes
    //    openat2 on "." and falls back to weaker path resolution if that
    //    fails, so its cwd must be a directory its table lets it read).
    fds::close_all_except(&policy.keep_fds)?;
    std::env::set_current_dir(&policy.cwd).map_err(|e| Error::path("chdir", &policy.cwd, e))?;
    // 5. The Landlock paths are opened now, while every one of them is
    //    still visible to us; enforced at step 9.
    let ruleset = landlock::prepare(
        &policy.landlock,
        &policy.scopes,
        policy.allow_weaker_landlock,
    )?;
    // 6. The bounding set needs CAP_SETPCAP: cut it before the ids change.
    caps::drop_bounding_except(policy.caps)?;
    // 7. Ids: groups, gid, uid. A uid change clears PDEATHSIG and, for a
    //    non-zero uid, every capability.
    creds::switch_ids(policy.uid, policy.gid, &policy.groups)?;
    // 8. Exactly the named capabilities, none inheritable or ambient; then
    //    PDEATHSIG again, since step 7 cleared it.
    caps::set_exact(policy.caps)?;
    parent::arm_and_check(parent)?;
    // 9. no_new_privs, then Landlock: the last restriction, after which no
    //    mount, capability or id change is possible anyway.
    prctl::no_new_privs()?;
    ruleset.restrict_self()?;
    // 10. The daemon, with a fixed environment.
    let err = std::process::Command::new(&exec.program)
        .args(&exec.args)
        .env_clear()
        .envs(policy.env.iter().map(|(k, v)| (k, v)))
        .exec();
    Err(Error::path("exec", &exec.program, err))
}
