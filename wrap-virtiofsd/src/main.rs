//! wrap-virtiofsd [--program PATH] [--allow-weaker-landlock] VMDIR
//!
//! Started by vm-init's PID 1 with the vhost-user listener as fd 3 and the
//! guest-ids user namespace as fd 4 (policy.rs, USERNS_FD); applies
//! virtiofsd's policy (policy.rs) and execs virtiofsd serving VMDIR/fs.

#![forbid(unsafe_code)]

use sandbox_core::contract::bin;
use wrap_virtiofsd::policy;

fn main() {
    sandbox_core::wrapper::main(bin::WRAP_VIRTIOFSD, |args| {
        let program = args.program_or(policy::DEFAULT_PROGRAM);
        Ok((
            policy::policy(&args.vm_dir, &program),
            policy::argv(&args.vm_dir, &program),
        ))
    })
}
