//! wrap-vmm [--program PATH] [--allow-weaker-landlock] VMDIR
//!
//! Started by vm-init's PID 1 with the API listener as fd 3 (and, for
//! cloud-hypervisor, the event-monitor pipe as fd 4); reads VMDIR/config,
//! applies the VMM profile's policy (policy.rs) and execs the VMM.

#![forbid(unsafe_code)]

use wrap_vmm::policy;

fn main() {
    sandbox_core::wrapper::main("wrap-vmm", |args| {
        let config = policy::VmConfig::read(&args.vm_dir)?;
        let program = args.program_or(config.vmm.default_program());
        let kvm = sandbox_core::ids::mapped_host_group("kvm");
        Ok((
            policy::policy(&config, &program, kvm),
            policy::argv(&config, &program),
        ))
    })
}
