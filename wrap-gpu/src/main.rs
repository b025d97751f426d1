//! wrap-gpu [--program PATH] [--allow-weaker-landlock] VMDIR
//!
//! Started by vm-init's PID 1 with the VMM's connected vhost-user socket as
//! fd 3; finds the host's render nodes and the compositor's socket, applies
//! the GPU daemon's policy (policy.rs) and execs crosvm.

#![forbid(unsafe_code)]

use sandbox_core::contract::bin;
use wrap_gpu::policy;

fn main() {
    sandbox_core::wrapper::main(bin::WRAP_GPU, |args| {
        let host = policy::GpuHost::find(&args.vm_dir)?;
        let program = args.program_or(policy::DEFAULT_PROGRAM);
        let render = sandbox_core::ids::mapped_host_group("render");
        Ok((
            policy::policy(&args.vm_dir, &program, render, &host),
            policy::argv(&program, &host),
        ))
    })
}
