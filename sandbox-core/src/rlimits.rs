//! Resource limits, set per daemon. Soft and hard are the same value, so a
//! daemon cannot raise its own soft limit later.

pub use rustix::process::Resource;
use rustix::process::{setrlimit, Rlimit};

use crate::error::{Context, Result};

/// One limit: `None` is unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limit {
    pub resource: Resource,
    pub value: Option<u64>,
}

/// Sets each limit, soft and hard, to its value or to the current hard
/// limit if that is lower: raising a hard limit takes CAP_SYS_RESOURCE in
/// the host's user namespace, which no wrapper has, and a lower limit is
/// only ever stricter.
pub fn apply(limits: &[Limit]) -> Result<()> {
    for l in limits {
        let hard = rustix::process::getrlimit(l.resource).maximum;
        let value = match (l.value, hard) {
            (Some(v), Some(h)) => Some(v.min(h)),
            (v, None) => v,
            (None, h) => h,
        };
        setrlimit(
            l.resource,
            Rlimit {
                current: value,
                maximum: value,
            },
        )
        .op("setrlimit")?;
    }
    Ok(())
}

/// Raises the hard limit of `resource` to at least `value` (soft stays).
/// Only the host's root with CAP_SYS_RESOURCE can: the outer vm-init tries
/// once for the whole VM, so that each wrapper, inside the VM's user
/// namespace, only lowers limits to its daemon's values. When the host
/// does not allow it (EPERM), the host's limit stays the ceiling.
pub fn raise_hard(resource: Resource, value: Option<u64>) -> Result<()> {
    let current = rustix::process::getrlimit(resource);
    let higher = match (current.maximum, value) {
        (None, _) => return Ok(()),
        (Some(_), None) => None,
        (Some(max), Some(v)) if v <= max => return Ok(()),
        (Some(_), Some(v)) => Some(v),
    };
    match setrlimit(
        resource,
        Rlimit {
            current: current.current,
            maximum: higher,
        },
    ) {
        Ok(()) | Err(rustix::io::Errno::PERM) => Ok(()),
        Err(e) => Err(crate::error::Error::sys("setrlimit (raise hard limit)", e)),
    }
}
