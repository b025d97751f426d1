//! wrap-vmm [--program PATH] [--allow-weaker-landlock] [--api-only] VMDIR
//!
//! Started by vm-init's PID 1 (or the VM's own s6) with the API listener
//! as fd 3 (and, for cloud-hypervisor, the event-monitor pipe as fd 4);
//! reads VMDIR/config, applies the VMM's policy (policy.rs) and execs the
//! VMM. With --api-only, cloud-hypervisor gets `--api-socket fd=3` and
//! nothing else: the VM comes over its API (vmm-api create, vmm-api boot).

#![forbid(unsafe_code)]

use std::ffi::OsString;

use sandbox_core::contract::bin;
use wrap_vmm::policy::{self, Flow, VmConfig};

fn main() {
    // Its own flag, taken out before the flags every wrapper shares.
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let flow = match args.iter().position(|a| a == "--api-only") {
        Some(at) => {
            args.remove(at);
            Flow::Api
        }
        None => Flow::Argv,
    };
    sandbox_core::wrapper::run(bin::WRAP_VMM, " [--api-only]", args, |args| {
        let config = VmConfig::read(&args.vm_dir)?;
        let program = args.program_or(config.vmm.default_program());
        let kvm = sandbox_core::ids::mapped_host_group("kvm");
        policy::build(&config, &program, kvm, flow)
    })
}
