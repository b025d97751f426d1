//! The policy of wrap-vmm as a library: the binary (main.rs) applies it, and
//! the tests and xtask import the same tables instead of copies.

#![forbid(unsafe_code)]

pub mod cloud_hypervisor;
pub mod policy;
pub mod qemu;
