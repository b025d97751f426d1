//! wrap-vmm [--program PATH] [--allow-weaker-landlock] [--api-only] VMDIR
//!
//! Started by vm-init's PID 1 (or the VM's own s6) with the API listener
//! as fd 3 (and, for cloud-hypervisor, the event-monitor pipe as fd 4);
//! reads VMDIR/config, applies the VMM's policy (policy.rs) and execs the
//! VMM. With --api-only, cloud-hypervisor gets `--api-socket fd=3` and
//! nothing else: the VM comes over its API (vmm-api create, vmm-api boot).

#![forbid(unsafe_code)]

use sandbox_core::contract::bin;
use wrap_vmm::policy;

fn main() {
    sandbox_core::wrapper::main(bin::WRAP_VMM, |args| {
        let config = policy::VmConfig::read(&args.vm_dir)?;
        let program = args.program_or(config.vmm.default_program());
        let kvm = sandbox_core::ids::mapped_host_group("kvm");
        let mut exec = policy::argv(&config, &program);
        let mut policy = policy::policy(&config, &program, kvm);
        if args.api_only {
            if config.vmm != policy::Vmm::CloudHypervisor {
                return Err(sandbox_core::Error::Usage(
                    "--api-only: only cloud-hypervisor is created over its API".into(),
                ));
            }
            exec.args = wrap_vmm::cloud_hypervisor::api_only_args();
            // No event monitor: the API listener is its only fd.
            policy.keep_fds.retain(|&fd| fd == policy::API_FD);
        }
        Ok((policy, exec))
    })
}
