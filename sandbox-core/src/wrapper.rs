//! What every wrap-* binary shares: its command line
//! (`wrap-NAME [--program PATH] [--allow-weaker-landlock] VMDIR`), the one
//! line it prints on failure, and the s6 exit codes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::parent::ExpectedParent;
use crate::policy::{apply, Exec, Policy};

/// A wrapper's parsed command line.
#[derive(Clone, Debug)]
pub struct WrapArgs {
    /// The daemon to exec instead of the default (a test's stand-in).
    pub program: Option<PathBuf>,
    /// The VM directory, absolute, e.g. /run/vm/NAME.
    pub vm_dir: PathBuf,
    /// Explicit opt-out of the Landlock ABI 6 requirement.
    pub allow_weaker_landlock: bool,
    /// wrap-vmm: cloud-hypervisor with its API listener only, the VM sent
    /// over the API (Spectrum's flow). The policy does not change.
    pub api_only: bool,
}

impl WrapArgs {
    pub fn parse(prog: &str, args: impl IntoIterator<Item = OsString>) -> Result<WrapArgs> {
        let usage = || {
            Error::Usage(format!(
                "usage: {prog} [--program PATH] [--allow-weaker-landlock] [--api-only] VMDIR"
            ))
        };
        let mut it = args.into_iter();
        let (mut program, mut vm_dir, mut weaker, mut api_only) = (None, None, false, false);
        while let Some(a) = it.next() {
            match a.to_str() {
                Some("--program") => program = Some(PathBuf::from(it.next().ok_or_else(usage)?)),
                Some("--allow-weaker-landlock") => weaker = true,
                Some("--api-only") if prog == "wrap-vmm" => api_only = true,
                Some(s) if s.starts_with('-') => return Err(usage()),
                _ if vm_dir.is_none() => vm_dir = Some(PathBuf::from(a)),
                _ => return Err(usage()),
            }
        }
        let vm_dir = vm_dir.ok_or_else(usage)?;
        if !vm_dir.is_absolute() || !vm_dir.is_dir() {
            return Err(Error::Usage(format!(
                "VM directory {} is not an absolute path to a directory",
                vm_dir.display()
            )));
        }
        if let Some(p) = &program {
            if !p.is_absolute() || !p.is_file() {
                return Err(Error::Usage(format!(
                    "program {} is not an absolute path to a file",
                    p.display()
                )));
            }
        }
        Ok(WrapArgs {
            program,
            vm_dir,
            allow_weaker_landlock: weaker,
            api_only,
        })
    }

    /// The program to exec: `--program` or the daemon's default path.
    pub fn program_or(&self, default: &str) -> PathBuf {
        self.program
            .clone()
            .unwrap_or_else(|| PathBuf::from(default))
    }

    pub fn vm_path(&self, rel: &str) -> PathBuf {
        self.vm_dir.join(rel)
    }
}

/// The whole life of a wrapper: parse, build the daemon's policy and argv,
/// apply, exec. Prints `PROG: VMDIR: what failed: why` and exits 100 or 111
/// on failure; never runs the daemon with a weaker policy.
pub fn main(prog: &str, build: impl FnOnce(&WrapArgs) -> Result<(Policy, Exec)>) -> ! {
    let args = match WrapArgs::parse(prog, std::env::args_os().skip(1)) {
        Ok(a) => a,
        Err(e) => fail(prog, None, &e),
    };
    // Refused first, whatever else is wrong: the kernel cannot give this
    // daemon the sandbox its policy says.
    if let Err(e) =
        crate::landlock::check_abi(crate::landlock::kernel_abi(), args.allow_weaker_landlock)
    {
        fail(prog, Some(&args.vm_dir), &e);
    }
    let err = match build(&args) {
        Ok((mut policy, exec)) => {
            policy.allow_weaker_landlock |= args.allow_weaker_landlock;
            // vm-init's PID 1 starts every wrapper (inside the VM's PID
            // namespace it is PID 1), or, with vm-init --services, the
            // s6-supervise of the VM's own s6-svscan.
            match apply(&policy, &ExpectedParent::InsideVm, &exec) {
                Ok(never) => match never {},
                Err(e) => e,
            }
        }
        Err(e) => e,
    };
    fail(prog, Some(&args.vm_dir), &err)
}

fn fail(prog: &str, vm_dir: Option<&Path>, e: &Error) -> ! {
    match vm_dir {
        Some(d) => crate::say(format_args!("{prog}: {}: {e}", d.display())),
        None => crate::say(format_args!("{prog}: {e}")),
    }
    std::process::exit(e.exit_code().into())
}
