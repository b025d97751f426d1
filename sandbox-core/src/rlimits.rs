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

pub fn apply(limits: &[Limit]) -> Result<()> {
    for l in limits {
        setrlimit(
            l.resource,
            Rlimit {
                current: l.value,
                maximum: l.value,
            },
        )
        .op("setrlimit")?;
    }
    Ok(())
}
