//! The VM's cgroup, as the outer checks it before anything is created:
//! where it goes (`--cgroup-parent`), and each daemon's bounds, its
//! policy's (beside the rest of its policy in its wrapper's policy.rs)
//! with the VM's `config/limits/DAEMON` over them. sandbox-core's
//! cgroup.rs makes it.

use sandbox_core::cgroup::{self, Limits, Parent};
use sandbox_core::contract::{config as input, daemon, VmDir};
use sandbox_core::vmconfig::VmConfig;
use sandbox_core::Error;

use crate::args::Args;

/// Where the VM's cgroup goes and each of its daemons' bounds.
#[derive(Debug)]
pub struct Plan {
    pub parent: Parent,
    pub daemons: Vec<(&'static str, Limits)>,
}

/// The plan, or on a host without cgroup v2 (or its controllers) with the
/// explicit opt-out, what it lacks (the outer says it in one line when it
/// starts the VM, see [`say_unbounded`]). The limits are checked either
/// way: a bad override is bad input.
pub fn check(args: &Args, config: &VmConfig, dir: &VmDir) -> Result<Result<Plan, String>, Error> {
    let daemons = limits(config, dir)?;
    match cgroup::check_parent(args.cgroup_parent.as_deref())? {
        Ok(parent) => Ok(Ok(Plan { parent, daemons })),
        Err(missing) if args.allow_no_cgroups => Ok(Err(missing)),
        Err(missing) => Err(Error::Refused(format!(
            "{missing}: vm-init bounds each VM's memory, processes and CPU in cgroup v2 \
             (--allow-no-cgroups runs it without bounds)"
        ))),
    }
}

/// Each daemon of this VM and its bounds.
fn limits(config: &VmConfig, dir: &VmDir) -> Result<Vec<(&'static str, Limits)>, Error> {
    let mut daemons = vec![
        (daemon::VIRTIOFSD, wrap_virtiofsd::policy::LIMITS),
        (daemon::VMM, wrap_vmm::policy::limits(config)),
    ];
    if config.gpu.is_some() {
        daemons.push((daemon::GPU, wrap_gpu::policy::LIMITS));
    }
    let overrides = dir.config_file(input::LIMITS);
    let Ok(entries) = std::fs::read_dir(&overrides) else {
        return Ok(daemons);
    };
    for entry in entries {
        let entry = entry.map_err(|e| Error::path("read", &overrides, e))?;
        let name = entry.file_name();
        let Some((daemon, limits)) = daemons.iter_mut().find(|(d, _)| name == *d) else {
            return Err(Error::Usage(format!(
                "{}: not a daemon of this VM ({})",
                cgroup::limits_file(&name.to_string_lossy()),
                daemons.iter().map(|d| d.0).collect::<Vec<_>>().join(", ")
            )));
        };
        let text = std::fs::read_to_string(entry.path())
            .map_err(|e| Error::path("read", entry.path(), e))?;
        *limits = limits.with_overrides(daemon, &text)?;
    }
    Ok(daemons)
}

/// The opt-out's one line, said when the VM starts without its cgroup.
pub fn say_unbounded(args: &Args, missing: &str) {
    sandbox_core::say!(
        "vm-init: {}: {missing}: running the VM without memory, pids or CPU bounds, \
         as --allow-no-cgroups asks",
        args.name
    );
}
