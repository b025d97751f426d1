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

/// Refuses a kernel below [`REQUIRED_ABI`] unless the caller opted out
/// explicitly: never a silently weaker sandbox.
pub fn check_abi(found: i32, allow_weaker: bool) -> Result<()> {
    if found < REQUIRED_ABI && !allow_weaker {
        return Err(Error::LandlockAbi {
            found,
            required: REQUIRED_ABI,
        });
    }
    Ok(())
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
    // so a policy that is too tight shows up as an audit line.
    let created = created
        .set_compatibility(CompatLevel::BestEffort)
        .log_new_exec(true)
        .map_err(ll("log_new_exec"))?;
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
    fn an_old_kernel_is_refused_with_its_abi_named() {
        for found in [0, 1, 4, 5] {
            let e = check_abi(found, false).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("Landlock ABI {found} on this kernel, 6 required (scopes); refusing to run with a weaker sandbox")
            );
            assert_eq!(e.exit_code(), 111);
            assert!(check_abi(found, true).is_ok(), "the explicit opt-out");
        }
        assert!(check_abi(6, false).is_ok() && check_abi(7, false).is_ok());
    }

    #[test]
    fn read_write_never_includes_execute() {
        assert!(!Access::ReadWrite.rights().contains(AccessFs::Execute));
        assert!(Access::ReadWrite.rights().contains(AccessFs::MakeSock));
        assert!(!Access::Read.rights().contains(AccessFs::WriteFile));
        assert!(!Access::Device.rights().contains(AccessFs::MakeReg));
    }
}
