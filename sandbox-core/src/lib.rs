//! sandbox-core: the only crate of vm-sandbox that talks to the kernel.
//!
//! One module per mechanism; [`policy::apply`] runs a service's policy in a
//! fixed order. Every `unsafe` block of the project lives here.

#[cfg(feature = "probe")]
pub mod attempts;
pub mod caps;
pub mod creds;
pub mod error;
pub mod event;
pub mod fds;
pub mod ids;
pub mod landlock;
pub mod locks;
pub mod mount;
pub mod name;
pub mod ns;
pub mod parent;
pub mod policy;
pub mod prctl;
pub mod rlimits;
pub mod signals;
pub mod spawn;
pub mod vmconfig;
pub mod wrapper;

pub use error::{Errno, Error, Result, EXIT_SYSCALL, EXIT_USAGE};
pub use name::VmName;
