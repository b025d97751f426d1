//! One error type for every kernel operation: it names the operation, the
//! path (when there is one) and keeps the errno, so the top of each binary can
//! print `PROGRAM: VM: what failed: why` and exit with skarnet's code.

use std::fmt;
use std::path::{Path, PathBuf};

/// s6 convention: the caller asked for something that cannot be.
pub const EXIT_USAGE: u8 = 100;
/// s6 convention: a system call failed.
pub const EXIT_SYSCALL: u8 = 111;

/// An errno as the kernel gave it, printed as `Operation not permitted (EPERM)`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    pub const EPERM: Errno = Errno(1);
    pub const ENOENT: Errno = Errno(2);
    pub const ESRCH: Errno = Errno(3);
    pub const EACCES: Errno = Errno(13);
    pub const EEXIST: Errno = Errno(17);
    pub const EINVAL: Errno = Errno(22);
    pub const ENOSPC: Errno = Errno(28);
    pub const EROFS: Errno = Errno(30);
    pub const ENOSYS: Errno = Errno(38);
    pub const ENOKEY: Errno = Errno(126);
    pub const EWOULDBLOCK: Errno = Errno(11);

    /// The symbolic name, `EPERM`, or the number when the kernel invented a new one.
    pub fn name(self) -> String {
        syscalls::Errno::new(self.0)
            .name()
            .map_or_else(|| self.0.to_string(), str::to_owned)
    }

    pub fn last() -> Errno {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

impl From<rustix::io::Errno> for Errno {
    fn from(e: rustix::io::Errno) -> Self {
        Errno(e.raw_os_error())
    }
}

impl From<syscalls::Errno> for Errno {
    fn from(e: syscalls::Errno) -> Self {
        Errno(e.into_raw())
    }
}

impl From<std::io::Error> for Errno {
    fn from(e: std::io::Error) -> Self {
        Errno(e.raw_os_error().unwrap_or(0))
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match syscalls::Errno::new(self.0).name_and_description() {
            Some((name, description)) => write!(f, "{description} ({name})"),
            None => write!(f, "errno {}", self.0),
        }
    }
}

impl fmt::Debug for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl std::error::Error for Errno {}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call on a path failed.
    #[error("{op} {}: {errno}", path.display())]
    Path {
        op: &'static str,
        path: PathBuf,
        #[source]
        errno: Errno,
    },
    /// A system call with no path failed.
    #[error("{op}: {errno}")]
    Sys {
        op: &'static str,
        #[source]
        errno: Errno,
    },
    /// The landlock crate refused a ruleset.
    #[error("landlock {op}: {source}")]
    Landlock {
        op: &'static str,
        #[source]
        source: landlock::RulesetError,
    },
    /// The kernel's Landlock is older than a policy allows.
    #[error(
        "Landlock ABI {found} on this kernel, {required} required: it lacks {missing}; \
         refusing to run with a weaker sandbox"
    )]
    LandlockAbi {
        found: i32,
        required: i32,
        missing: &'static str,
    },
    /// Something the caller asked for is not possible (bad name, bad argument).
    #[error("{0}")]
    Usage(String),
    /// The process tree is not what the sandbox relies on (parent gone, ...).
    #[error("{0}")]
    Refused(String),
}

impl Error {
    pub fn path(op: &'static str, path: impl AsRef<Path>, errno: impl Into<Errno>) -> Error {
        Error::Path {
            op,
            path: path.as_ref().to_owned(),
            errno: errno.into(),
        }
    }

    pub fn sys(op: &'static str, errno: impl Into<Errno>) -> Error {
        Error::Sys {
            op,
            errno: errno.into(),
        }
    }

    /// The exit code s6 (and a human) should see for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            _ => EXIT_SYSCALL,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Shorthand for mapping a path-less syscall result into an [`Error`].
pub(crate) trait Context<T> {
    fn op(self, op: &'static str) -> Result<T>;
    fn op_path(self, op: &'static str, path: impl AsRef<Path>) -> Result<T>;
}

impl<T, E: Into<Errno>> Context<T> for std::result::Result<T, E> {
    fn op(self, op: &'static str) -> Result<T> {
        self.map_err(|e| Error::sys(op, e))
    }
    fn op_path(self, op: &'static str, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| Error::path(op, path, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_operation_path_and_errno() {
        let e = Error::path("mount tmpfs on", "/tmp", Errno::EPERM);
        assert_eq!(
            e.to_string(),
            "mount tmpfs on /tmp: Operation not permitted (EPERM)"
        );
        assert_eq!(e.exit_code(), EXIT_SYSCALL);
        assert_eq!(Error::Usage("x".into()).exit_code(), EXIT_USAGE);
    }
}
