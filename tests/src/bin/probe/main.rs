//! The probe: runs inside a sandbox in place of a daemon and tries what a
//! compromised daemon would try. One line per attempt:
//!
//!     ok   kill(1, SIGKILL)                  expected EPERM    got EPERM
//!
//! and a last line `probe: N attempts, M failed`; exits 1 if any failed.
//! Every expectation is the errno the kernel gives today for that layer
//! (Landlock: EACCES for files and TCP, EPERM for scopes; hidepid: ENOENT).
//!
//! probe --profile user|root --state-dir DIR --vm NAME --own-dir DIR
//!       [--pid N]... [--gone-pid N]... [--abstract NAME]... [--other-vm NAME]
//!       [--tcp-port P]

#![forbid(unsafe_code)]

mod escapes;
mod gpu;
mod matrix;
mod qemu;
mod report;
mod virtiofsd;
mod vmm;

use std::path::Path;

fn main() {
    // Started by wrap-virtiofsd in virtiofsd's place, with its argv.
    let argv: Vec<String> = std::env::args().collect();
    // For the kernel matrix: which Landlock this kernel has.
    if argv.get(1).is_some_and(|a| a == "--landlock-abi") {
        println!("{}", sandbox_core::landlock::kernel_abi());
        std::process::exit(0);
    }
    // Run by a host user from a copy the probe left in fs/, mode 04755:
    // whose program it runs as.
    if argv.get(1).is_some_and(|a| a == "--euid") {
        println!("euid {}", rustix::process::geteuid().as_raw());
        std::process::exit(0);
    }
    if let Some(shared) = argv
        .windows(2)
        .find(|w| w[0] == "--shared-dir")
        .map(|w| w[1].clone())
    {
        virtiofsd::as_virtiofsd(Path::new(&shared));
    }
    // Started by wrap-gpu in crosvm's place (`device gpu`), with its argv.
    if argv.windows(2).any(|w| w == ["device", "gpu"]) {
        gpu::as_gpu(&argv);
    }
    // Started by wrap-vmm in cloud-hypervisor's place, with its argv.
    if argv.iter().any(|a| a == "--api-socket") {
        vmm::as_vmm(&argv);
    }
    // ... or in QEMU's, with its argv (QMP on a chardev of the fd).
    if argv.iter().any(|a| a.starts_with("socket,id=qmp,fd=")) {
        qemu::as_qemu(&argv);
    }
    matrix::run()
}
