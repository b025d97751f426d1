//! A service's sandbox as plain data, and the one function that applies it
//! in a fixed order, then execs the daemon.

use std::convert::Infallible;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use crate::caps::{self, CapabilitySet};
use crate::contract::NOFILE_CEILING;
use crate::error::{Error, Result};
use crate::landlock::{self, Access, FsRule, Scope};
use crate::mount::{self, ServiceMount, Visible};
use crate::parent::{self, ExpectedParent};
use crate::rlimits::{self, Limit, Resource};
use crate::seccomp;
use crate::{cgroup, creds, fds, keyring, prctl, reaper};

/// Both scopes; every policy of this project uses exactly these.
pub const ALL_SCOPES: &[Scope] = &[Scope::Signal, Scope::AbstractUnixSocket];

/// RLIMIT_MEMLOCK of a daemon that pins no memory: the kernel's default
/// (8 MiB since Linux 5.16). The outer vm-init raises the VM's hard limit
/// to the VMM's, which pins guest RAM for vhost-user (its policy's).
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

/// A path of the view attached from a detached mount the wrapper holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handed {
    pub path: PathBuf,
    pub fd: RawFd,
}

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
    /// The VM directory: the only host directory a daemon may write below
    /// (besides its private tmpfs and its device nodes).
    pub vm_dir: PathBuf,
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
    /// Sockets of the view that come from an fd the wrapper was handed (a
    /// detached mount the outer vm-init made as host root), not from the
    /// VM's namespace: the compositor's, under a directory the VM's ids
    /// cannot enter. Connected to like `connect`.
    pub handed: Vec<Handed>,
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
    /// The daemon's system calls, when the wrapper filters them: anything
    /// else kills it. None for a daemon that installs its own, stricter,
    /// per-thread filters (virtiofsd, cloud-hypervisor, QEMU's -sandbox).
    pub syscalls: Option<&'static [seccomp::Group]>,
}

impl Policy {
    /// Every fd the policy takes from its caller: those the daemon keeps,
    /// the user namespace it joins, the mounts it is handed.
    pub fn fds(&self) -> Vec<RawFd> {
        let mut fds = self.keep_fds.clone();
        fds.extend(self.join_user_namespace);
        fds.extend(self.handed.iter().map(|h| h.fd));
        fds
    }

    /// The invariants every policy keeps, checked before anything is
    /// applied: every path absolute and named once; nothing granted on `/`;
    /// write access only below the VM directory or on a private tmpfs of
    /// the policy's own; device access only below /dev.
    pub fn check(&self) -> Result<()> {
        let bad = |what: String| Err(Error::Refused(format!("policy: {what}")));
        let mut seen = std::collections::HashSet::new();
        let handed = self.handed.iter().map(|h| &h.path);
        for path in self
            .landlock
            .iter()
            .map(|r| &r.path)
            .chain(&self.connect)
            .chain(handed)
        {
            if !path.is_absolute() {
                return bad(format!("{} is not an absolute path", path.display()));
            }
            if path.components().count() == 1 {
                return bad("a rule on / would grant the whole host".into());
            }
            if !seen.insert(path) {
                return bad(format!("{} is named twice", path.display()));
            }
        }
        let private = |p: &std::path::Path| {
            self.mounts
                .iter()
                .any(|m| matches!(m, ServiceMount::Tmpfs { .. }) && m.target() == p)
        };
        for r in &self.landlock {
            let ok = match r.access {
                Access::ReadWrite | Access::Sockets => {
                    r.path.starts_with(&self.vm_dir) && r.path != self.vm_dir || private(&r.path)
                }
                Access::Device => r.path.starts_with("/dev/"),
                Access::Read | Access::ReadExec => true,
            };
            if !ok {
                return bad(format!(
                    "{:?} on {} is outside the VM directory {}, its private tmpfs and /dev",
                    r.access,
                    r.path.display(),
                    self.vm_dir.display()
                ));
            }
        }
        // tmpfs reads 0 as no bound at all.
        for m in &self.mounts {
            if let ServiceMount::Tmpfs { size, inodes, .. } = m {
                let digits: String = size.chars().take_while(char::is_ascii_digit).collect();
                if *inodes == 0 || digits.parse::<u64>().map_or(true, |n| n == 0) {
                    return bad(format!(
                        "the tmpfs on {} is unbounded (size={size}, nr_inodes={inodes})",
                        m.target().display()
                    ));
                }
            }
        }
        if !self.vm_dir.is_absolute() || !self.cwd.is_absolute() {
            return bad("the VM directory and the cwd must be absolute".into());
        }
        // A wrapper cannot raise a hard limit: more open files than the
        // outer vm-init allows would be cut silently.
        for l in &self.rlimits {
            if l.resource == Resource::Nofile && l.value.is_none_or(|v| v > NOFILE_CEILING) {
                return bad(format!(
                    "RLIMIT_NOFILE {:?} is above the VM's ceiling {NOFILE_CEILING}",
                    l.value
                ));
            }
        }
        Ok(())
    }

    /// The service's view: every path of its Landlock table and every
    /// socket it connects to, bound from the VM's mount namespace.
    pub fn view(&self) -> Vec<Visible> {
        let rows = self.landlock.iter().map(|r| Visible {
            path: r.path.clone(),
            writable: matches!(r.access, Access::ReadWrite | Access::Sockets),
            optional: r.optional,
            from: None,
        });
        let sockets = self.connect.iter().map(|p| Visible {
            path: p.clone(),
            writable: false,
            optional: false,
            from: None,
        });
        let handed = self.handed.iter().map(|h| Visible {
            path: h.path.clone(),
            writable: false,
            optional: false,
            from: Some(h.fd),
        });
        rows.chain(sockets).chain(handed).collect()
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
    apply_then_notify(policy, parent, exec, None, None)
}

/// [`apply`], and once everything is in place, right before the exec, s6
/// readiness on `ready` (a service's notification fd, which the daemon
/// does not get): a service started after this one is ready meets a
/// daemon that runs under its whole policy. `cgroup`: the `cgroup.procs`
/// of the daemon's leaf in its VM's cgroup (see cgroup.rs), entered first.
pub fn apply_then_notify(
    policy: &Policy,
    parent: &ExpectedParent,
    exec: &Exec,
    ready: Option<OwnedFd>,
    cgroup: Option<OwnedFd>,
) -> Result<Infallible> {
    // 0. A policy that breaks an invariant is a bug: nothing is applied.
    //    Its syscall filter is compiled now, so that one the kernel or this
    //    architecture cannot take refuses before anything is changed.
    let filter = checked_filter(policy, ready.as_ref())?;
    // 1. The daemon's own process tree: see [`own_process_tree`].
    own_process_tree(parent, cgroup)?;
    let ppid = 1;
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
    let mut keep = policy.keep_fds.clone();
    keep.extend(ready.as_ref().map(|fd| fd.as_raw_fd()));
    fds::close_all_except(&keep)?;
    std::env::set_current_dir(&policy.cwd).map_err(|e| Error::path("chdir", &policy.cwd, e))?;
    // 5. The Landlock paths are opened now, while every one of them is
    //    still visible to us; enforced at step 10.
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
    //    (The same parent, the reaper: PID 1 of our namespace.)
    parent::arm_and_check(&ExpectedParent::Pid(ppid))?;
    // 9. A session keyring of the daemon's own, new and empty: the one it
    //    inherited is the VM's (PID 1's and its supervisors', see the
    //    outer vm-init), which the daemon must neither read nor write for
    //    the VM's other processes to find. After the ids change, so that
    //    the new one is the daemon's uid's; before the filter, which need
    //    not allow keyctl (wrap-gpu's does not).
    keyring::join_new_session_keyring()?;
    // 10. no_new_privs, then Landlock: the last restriction, after which no
    //     mount, capability or id change is possible anyway.
    prctl::no_new_privs()?;
    ruleset.restrict_self()?;
    // 11. The syscall filter, last, then readiness and the daemon.
    exec_filtered(policy, exec, filter.as_ref(), ready)
}

/// Step 0 of [`apply_then_notify`]: the policy checked, the notification
/// fd none of the daemon's, the syscall filter compiled.
fn checked_filter(policy: &Policy, ready: Option<&OwnedFd>) -> Result<Option<seccomp::Compiled>> {
    policy.check()?;
    if let Some(fd) = ready.map(|fd| fd.as_raw_fd()) {
        if policy.fds().contains(&fd) {
            return Err(Error::Usage(format!(
                "the notification fd {fd} is one of the daemon's own fds {:?}",
                policy.fds()
            )));
        }
    }
    policy.syscalls.map(seccomp::compile).transpose()
}

/// Steps 11 and 12 of [`apply_then_notify`]. The syscall filter, last: it
/// needs no_new_privs, and after it the wrapper itself may only do what
/// the daemon may (the command is built before, so that exec is all that
/// is left). Then readiness, and the daemon, with a fixed environment.
fn exec_filtered(
    policy: &Policy,
    exec: &Exec,
    filter: Option<&seccomp::Compiled>,
    ready: Option<OwnedFd>,
) -> Result<Infallible> {
    let mut command = std::process::Command::new(&exec.program);
    command
        .args(&exec.args)
        .env_clear()
        .envs(policy.env.iter().map(|(k, v)| (k, v)));
    if let Some(filter) = filter {
        seccomp::install(filter)?;
    }
    if let Some(fd) = ready {
        fds::notify_ready(fd)?;
    }
    let err = command.exec();
    Err(Error::path("exec", &exec.program, err))
}

/// Step 1 of [`apply_then_notify`]: the process tree the daemon lives in.
fn own_process_tree(parent: &ExpectedParent, cgroup: Option<OwnedFd>) -> Result<()> {
    // Die with the parent, and make sure it is still the one we expect:
    // doing anything for a VM whose PID 1 is gone would be wasted.
    parent::arm_and_check(parent)?;
    // The daemon's cgroup, whose bounds the outer vm-init wrote as host
    // root: entered before the forks below, so that the wrapper, its
    // reaper and the daemon are in it together (and die together at
    // memory.max), with a cgroup namespace rooted there.
    if let Some(procs) = cgroup {
        cgroup::enter_as_root(procs)?;
    }
    // A PID namespace of the daemon's own, whose init (a reaper of the
    // wrapper's) ends it and everything it started as one: nothing the
    // daemon starts outlives it or its supervisor, and no process outside
    // it (PID 1, the VM's s6, a sibling) can even be named by the daemon.
    // From here on we are the daemon-to-be, the reaper's child (our
    // parent is PID 1 of the namespace); /proc (step 2) is the namespace's.
    reaper::into_own_pid_namespace()?;
    // A session of its own and stdin on /dev/null: no controlling terminal
    // to push input into (TIOCSTI) should vm-init have been started from
    // one, nothing to read that was meant for it.
    fds::detach_from_terminal()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mount::ServiceMount;

    fn valid() -> Policy {
        let rule = |path: &str, access| FsRule {
            path: path.into(),
            access,
            optional: false,
        };
        Policy {
            vm_dir: "/run/vm/a".into(),
            uid: 65537,
            gid: 65537,
            groups: vec![],
            join_user_namespace: None,
            caps: CapabilitySet::empty(),
            mounts: vec![ServiceMount::Tmpfs {
                target: "/tmp".into(),
                size: "1m",
                inodes: 64,
            }],
            landlock: vec![
                rule("/usr", Access::ReadExec),
                rule("/run/vm/a/serial.fifo", Access::ReadWrite),
                rule("/tmp", Access::ReadWrite),
                rule("/dev/null", Access::Device),
            ],
            connect: vec!["/run/vm/a/virtiofsd.sock".into()],
            handed: vec![],
            scopes: ALL_SCOPES.to_vec(),
            rlimits: vec![],
            keep_fds: vec![3],
            env: vec![],
            cwd: "/".into(),
            allow_weaker_landlock: false,
            syscalls: None,
        }
    }

    /// (Refused in step 0: were it not, step 1 would refuse the parent
    /// check with another code, 111, before anything changed.)
    #[test]
    fn a_notification_fd_that_is_the_daemons_own_is_refused_first() {
        let fd: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
        let mut p = valid();
        p.keep_fds = vec![fd.as_raw_fd()];
        let exec = Exec {
            program: "/bin/true".into(),
            args: vec![],
        };
        let e = apply_then_notify(&p, &ExpectedParent::Pid(1), &exec, Some(fd), None).unwrap_err();
        assert_eq!(e.exit_code(), 100, "{e}");
        assert!(e.to_string().contains("notification fd"), "{e}");
    }

    #[test]
    fn check_refuses_each_broken_invariant() {
        valid().check().unwrap();
        type Breaks = Box<dyn Fn(&mut Policy)>;
        let broken: Vec<(&str, Breaks)> = vec![
            ("relative", Box::new(|p| p.landlock[0].path = "usr".into())),
            ("/", Box::new(|p| p.landlock[0].path = "/".into())),
            ("twice", Box::new(|p| p.connect.push("/usr".into()))),
            (
                "handed twice",
                Box::new(|p| {
                    p.handed.push(Handed {
                        path: "/run/vm/a/virtiofsd.sock".into(),
                        fd: 4,
                    })
                }),
            ),
            (
                "write outside",
                Box::new(|p| p.landlock[1].path = "/etc/x".into()),
            ),
            (
                "the VM dir itself",
                Box::new(|p| p.landlock[1].path = "/run/vm/a".into()),
            ),
            ("tmpfs not its own", Box::new(|p| p.mounts.clear())),
            (
                "device outside /dev",
                Box::new(|p| p.landlock[3].path = "/run/vm/a/kvm".into()),
            ),
            ("relative cwd", Box::new(|p| p.cwd = "x".into())),
            (
                "more open files than the VM allows",
                Box::new(|p| {
                    p.rlimits.push(Limit {
                        resource: Resource::Nofile,
                        value: Some(NOFILE_CEILING + 1),
                    })
                }),
            ),
            (
                "tmpfs without an inode bound",
                Box::new(|p| {
                    p.mounts[0] = ServiceMount::Tmpfs {
                        target: "/tmp".into(),
                        size: "1m",
                        inodes: 0,
                    }
                }),
            ),
            (
                "tmpfs without a size",
                Box::new(|p| {
                    p.mounts[0] = ServiceMount::Tmpfs {
                        target: "/tmp".into(),
                        size: "0m",
                        inodes: 64,
                    }
                }),
            ),
        ];
        for (what, breaks) in broken {
            let mut p = valid();
            breaks(&mut p);
            let e = p.check().expect_err(what);
            assert!(e.to_string().starts_with("policy: "), "{what}: {e}");
        }
    }
}
