//! sandbox-core: the only crate of vm-sandbox that talks to the kernel.
//!
//! One module per mechanism; [`policy::apply`] runs a service's policy in a
//! fixed order. Every `unsafe` block of the project lives here.

#[cfg(feature = "probe")]
pub mod attempts;
pub mod caps;
pub mod cgroup;
pub mod contract;
pub mod creds;
pub mod error;
pub mod event;
pub mod fds;
pub mod host;
pub mod ids;
pub mod keyring;
pub mod landlock;
pub mod locks;
pub mod mount;
pub mod name;
pub mod ns;
pub mod parent;
pub mod policy;
pub mod prctl;
pub mod reaper;
pub mod rlimits;
pub mod seccomp;
pub mod signals;
pub mod spawn;
pub mod vmconfig;
pub mod wrapper;

pub use error::{Errno, Error, Result, EXIT_SYSCALL, EXIT_USAGE};
pub use name::VmName;

/// Writes one line to stderr in a single write(2): several processes of a
/// VM share s6's log pipe, and eprintln! writes a line in pieces that
/// interleave with theirs.
pub fn say(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut text = line.to_string();
    text.push('\n');
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
}

/// eprintln!, one write per line (see [`say()`]).
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::say(format_args!($($arg)*))
    };
}
