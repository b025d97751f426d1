//! Landlock: the file-system table of a service, its scopes, and TCP.
//!
//! ABI 6 (scopes) is a hard requirement: without it a sibling's signals and
//! abstract sockets are reachable, so a wrapper refuses to start unless its
//! caller explicitly accepted a weaker sandbox. Above ABI 6 we take what the
//! kernel has, up to [`TESTED_ABI`], the newest ABI this code was tested on:
//! handling rights of a newer ABI without rules that grant them could deny
//! what a daemon needs (ABI 9 handles connect() to path sockets).

use std::path::PathBuf;

use landlock::{
    Access as _, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, PathBeneath, PathFd,
    RestrictionStatus, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetStatus, ABI,
};
use syscalls::{syscall, Sysno};

use crate::error::{Error, Result};

/// The minimum the sandbox accepts: scopes arrived in ABI 6.
pub const REQUIRED_ABI: i32 = 6;
/// The newest ABI whose rights this code handles (7: audit log flags).
pub const TESTED_ABI: ABI = ABI::V7;

/// What a service may do beneath one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Read files, list directories.
    Read,
    /// Read and execute (binaries, shared libraries).
    ReadExec,
    /// Everything but execute: create, remove, rename, write, truncate,
    /// make sockets. Only ever for the service's own paths.
    ReadWrite,
    /// Open a device node for reading and writing, and its ioctls.
    Device,
    /// In a directory: list it, create and remove unix sockets there (a
    /// daemon that binds its own socket path, e.g. cloud-hypervisor's vsock).
    Sockets,
}

impl Access {
    pub fn rights(self) -> BitFlags<AccessFs> {
        let read = AccessFs::ReadFile | AccessFs::ReadDir;
        match self {
            Access::Read => read,
            Access::ReadExec => read | AccessFs::Execute,
            Access::ReadWrite => AccessFs::from_all(TESTED_ABI) & !AccessFs::Execute,
            Access::Device => AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::IoctlDev,
            Access::Sockets => AccessFs::ReadDir | AccessFs::MakeSock | AccessFs::RemoveFile,
        }
    }

    pub fn writes(self) -> bool {
        matches!(self, Access::ReadWrite | Access::Device | Access::Sockets)
    }
}

/// One row of a service's Landlock table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsRule {
    pub path: PathBuf,
    pub access: Access,
    /// A missing optional path is skipped (a GPU host without udmabuf); a
    /// missing required one is an error, never a silently narrower table.
    pub optional: bool,
}

/// The Landlock scopes (ABI 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// No signal to a process outside this domain.
    Signal,
    /// No connect to an abstract unix socket bound outside this domain.
    AbstractUnixSocket,
}

/// The Landlock ABI of the running kernel, 0 when Landlock is absent.
pub fn kernel_abi() -> i32 {
    const LANDLOCK_CREATE_RULESET_VERSION: usize = 1;
    // SAFETY: with a null attr, size 0 and the VERSION flag the kernel only
    // returns a number; no memory is read or written.
    let ret = unsafe {
        syscall!(
            Sysno::landlock_create_ruleset,
            0usize,
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    ret.map_or(0, |v| i32::try_from(v).unwrap_or(0))
}

/// What each Landlock ABI adds that the policy needs, in order: the first
/// one a kernel lacks is what a refusal names.
const REQUIRED_PARTS: &[(i32, &str)] = &[
    (1, "Landlock itself (enabled at boot: lsm=...,landlock)"),
    (2, "file reparenting (LANDLOCK_ACCESS_FS_REFER)"),
    (3, "truncation (LANDLOCK_ACCESS_FS_TRUNCATE)"),
    (4, "TCP bind and connect (LANDLOCK_ACCESS_NET_*)"),
    (5, "device ioctls (LANDLOCK_ACCESS_FS_IOCTL_DEV)"),
    (6, "signal and abstract unix socket scopes"),
];

/// How the sandbox uses the Landlock of a kernel: the rule of
/// rust-landlock's sandboxer, a hard requirement for what the policy must
/// have (every file-system right up to ABI 6, TCP, both scopes) and best
/// effort for what is only nice to have (ABI 7: the audit log of the
/// exec'd daemon's denials).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Compat {
    /// The first required part this kernel lacks, if any.
    pub missing: Option<&'static str>,
    /// Denials of the exec'd daemon are logged (ABI 7).
    pub logs_denials: bool,
}

pub fn compat(found: i32) -> Compat {
    Compat {
        missing: REQUIRED_PARTS
            .iter()
            .find(|(abi, _)| found < *abi)
            .map(|&(_, what)| what),
        logs_denials: found >= 7,
    }
}

/// Refuses a kernel that lacks a required part unless the caller opted out
/// explicitly: never a silently weaker sandbox.
pub fn check_abi(found: i32, allow_weaker: bool) -> Result<()> {
    match compat(found).missing {
        Some(missing) if !allow_weaker => Err(Error::LandlockAbi {
            found,
            required: REQUIRED_ABI,
            missing,
        }),
        _ => Ok(()),
    }
}

/// A ruleset built and ready: its paths were opened while the caller could
/// still see them; [`Prepared::restrict_self`] enforces it.
#[derive(Debug)]
pub struct Prepared {
    created: landlock::RulesetCreated,
    found: i32,
    allow_weaker: bool,
}

/// Builds the ruleset for `rules`, `scopes` and no TCP at all.
/// `allow_weaker` is the explicit opt-out for kernels below ABI 6.
pub fn prepare(rules: &[FsRule], scopes: &[Scope], allow_weaker: bool) -> Result<Prepared> {
    let found = kernel_abi();
    check_abi(found, allow_weaker)?;
    if let Some(missing) = compat(found).missing {
        crate::say!(
            "Landlock ABI {found} lacks {missing}: running with a weaker sandbox, \
             as --allow-weaker-landlock asks"
        );
    }
    let ll = |op| move |source| Error::Landlock { op, source };
    let required = if allow_weaker {
        CompatLevel::BestEffort
    } else {
        CompatLevel::HardRequirement
    };
    let mut scope_bits = BitFlags::empty();
    for s in scopes {
        scope_bits |= match s {
            Scope::Signal => landlock::Scope::Signal,
            Scope::AbstractUnixSocket => landlock::Scope::AbstractUnixSocket,
        };
    }
    let ruleset = Ruleset::default()
        .set_compatibility(required)
        .handle_access(AccessFs::from_all(ABI::V6))
        .map_err(ll("handle fs rights"))?
        // Handled with no rule: every TCP bind and connect is denied.
        .handle_access(AccessNet::from_all(ABI::V6))
        .map_err(ll("handle net rights"))?
        .scope(scope_bits)
        .map_err(ll("set scopes"))?
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(TESTED_ABI))
        .map_err(ll("handle fs rights"))?;
    let mut created = ruleset
        .create()
        .map_err(ll("create ruleset"))?
        .set_compatibility(required);
    for rule in rules {
        let fd = match PathFd::new(&rule.path) {
            Ok(fd) => fd,
            Err(_) if rule.optional && !rule.path.exists() => continue,
            Err(e) => {
                let errno = e.source_errno().unwrap_or(crate::error::Errno::ENOENT);
                return Err(Error::path("open for a Landlock rule", &rule.path, errno));
            }
        };
        let mut rights = rule.access.rights();
        if !rule.path.is_dir() {
            // The kernel refuses directory rights on a non-directory.
            rights &= AccessFs::from_file(TESTED_ABI);
        }
        created = created
            .add_rule(PathBeneath::new(fd, rights))
            .map_err(ll("add rule"))?;
    }
    // ABI 7: log denials of the daemon we exec, not only of this wrapper,
    // so a policy that is too tight shows up as an audit line. Only asked
    // of a kernel that has it: asked of an older one, even as best effort,
    // it would leave the ruleset "partially enforced", which restrict_self
    // refuses, and an ABI 6 host would get no VM at all.
    let created = if compat(found).logs_denials {
        created.log_new_exec(true).map_err(ll("log_new_exec"))?
    } else {
        created
    };
    Ok(Prepared {
        created,
        found,
        allow_weaker,
    })
}

impl Prepared {
    /// Restricts the calling thread and everything it execs. Also sets
    /// no_new_privs, which an unprivileged restrict_self requires.
    pub fn restrict_self(self) -> Result<RestrictionStatus> {
        let status = self
            .created
            .restrict_self()
            .map_err(|source| Error::Landlock {
                op: "restrict_self",
                source,
            })?;
        if status.ruleset != RulesetStatus::FullyEnforced && !self.allow_weaker {
            return Err(Error::Refused(format!(
                "Landlock ruleset only {:?} on this kernel (ABI {})",
                status.ruleset, self.found
            )));
        }
        Ok(status)
    }
}

trait SourceErrno {
    fn source_errno(&self) -> Option<crate::error::Errno>;
}

impl SourceErrno for landlock::PathFdError {
    fn source_errno(&self) -> Option<crate::error::Errno> {
        let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(self);
        while let Some(e) = src {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                return io.raw_os_error().map(crate::error::Errno);
            }
            src = e.source();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_kernel_is_refused_with_its_abi_and_first_missing_part_named() {
        let first_missing = [
            (0, "Landlock itself"),
            (1, "file reparenting"),
            (2, "truncation"),
            (3, "TCP bind and connect"),
            (4, "device ioctls"),
            (5, "signal and abstract unix socket scopes"),
        ];
        for (found, missing) in first_missing {
            let e = check_abi(found, false).unwrap_err();
            let line = e.to_string();
            assert!(
                line.starts_with(&format!(
                    "Landlock ABI {found} on this kernel, 6 required: it lacks {missing}"
                )),
                "{line}"
            );
            assert!(
                line.ends_with("refusing to run with a weaker sandbox"),
                "{line}"
            );
            assert_eq!(e.exit_code(), 111);
            assert!(check_abi(found, true).is_ok(), "the explicit opt-out");
        }
    }

    #[test]
    fn abi_6_is_required_and_enough_abi_7_logging_is_best_effort() {
        for found in 1..=7 {
            let c = compat(found);
            assert_eq!(c.missing.is_none(), found >= 6, "ABI {found}: {c:?}");
            assert_eq!(c.logs_denials, found >= 7, "ABI {found}: {c:?}");
        }
        assert!(check_abi(6, false).is_ok() && check_abi(7, false).is_ok());
        // A newer kernel than tested: everything required is there; its
        // new rights are not handled (see TESTED_ABI).
        assert_eq!(
            compat(9),
            Compat {
                missing: None,
                logs_denials: true
            }
        );
    }

    #[test]
    fn read_write_never_includes_execute() {
        assert!(!Access::ReadWrite.rights().contains(AccessFs::Execute));
        assert!(Access::ReadWrite.rights().contains(AccessFs::MakeSock));
        assert!(!Access::Read.rights().contains(AccessFs::WriteFile));
        assert!(!Access::Device.rights().contains(AccessFs::MakeReg));
    }
}
