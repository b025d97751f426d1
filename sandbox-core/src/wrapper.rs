//! What every wrap-* binary shares: its command line
//! (`wrap-NAME [--program PATH] [--allow-weaker-landlock] [--notify-fd FD]
//! [--cgroup-fd FD | --allow-no-cgroups] VMDIR`, and a wrapper's own flags,
//! which it reads itself), the one line it prints on failure, and the s6
//! exit codes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fds::take_fd;
use crate::parent::ExpectedParent;
use crate::policy::{apply_then_notify, Exec, Policy};

/// A wrapper's parsed command line.
#[derive(Clone, Debug)]
pub struct WrapArgs {
    /// The daemon to exec instead of the default (a test's stand-in).
    pub program: Option<PathBuf>,
    /// The VM directory, absolute, e.g. /run/vm/NAME.
    pub vm_dir: PathBuf,
    /// Explicit opt-out of the Landlock ABI 6 requirement.
    pub allow_weaker_landlock: bool,
    /// An s6 notification fd (a service's `notification-fd`): one newline
    /// once the daemon's whole policy is in place, right before its exec.
    /// The daemon never holds it.
    pub notify_fd: Option<i32>,
    /// The `cgroup.procs` of the daemon's leaf in its VM's cgroup, opened
    /// by the outer vm-init (see cgroup.rs). The daemon never holds it.
    pub cgroup_fd: Option<i32>,
    /// Explicit opt-out: without a cgroup fd, run the daemon without
    /// memory, pids and CPU bounds (a host without cgroup v2).
    pub allow_no_cgroups: bool,
}

impl WrapArgs {
    /// `own_usage`: the wrapper's own flags in the usage line
    /// (` [--api-only]`), which it took out of `args` itself.
    pub fn parse(
        prog: &str,
        own_usage: &str,
        args: impl IntoIterator<Item = OsString>,
    ) -> Result<WrapArgs> {
        let usage = || {
            Error::Usage(format!(
                "usage: {prog} [--program PATH] [--allow-weaker-landlock] [--notify-fd FD] \
                 [--cgroup-fd FD | --allow-no-cgroups]{own_usage} VMDIR"
            ))
        };
        let mut it = args.into_iter();
        let (mut program, mut vm_dir, mut weaker) = (None, None, false);
        let (mut notify_fd, mut cgroup_fd, mut no_cgroups) = (None, None, false);
        while let Some(a) = it.next() {
            let mut fd = |flag: &str| {
                let v = it.next().ok_or_else(usage)?;
                match v.to_str().and_then(|v| v.parse::<i32>().ok()) {
                    Some(fd) if fd > 2 => Ok(Some(fd)),
                    _ => Err(Error::Usage(format!(
                        "{flag} {} is not a file descriptor above 2",
                        v.to_string_lossy()
                    ))),
                }
            };
            match a.to_str() {
                Some("--program") => program = Some(PathBuf::from(it.next().ok_or_else(usage)?)),
                Some("--notify-fd") => notify_fd = fd("--notify-fd")?,
                Some("--cgroup-fd") => cgroup_fd = fd("--cgroup-fd")?,
                Some("--allow-no-cgroups") => no_cgroups = true,
                Some("--allow-weaker-landlock") => weaker = true,
                Some(s) if s.starts_with('-') => return Err(usage()),
                _ if vm_dir.is_none() => vm_dir = Some(PathBuf::from(a)),
                _ => return Err(usage()),
            }
        }
        let vm_dir = vm_dir.ok_or_else(usage)?;
        if cgroup_fd.is_some() == no_cgroups {
            return Err(Error::Usage(format!(
                "{prog} needs one of --cgroup-fd FD (its daemon's cgroup, from vm-init) and \
                 --allow-no-cgroups"
            )));
        }
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
            notify_fd,
            cgroup_fd,
            allow_no_cgroups: no_cgroups,
        })
    }

    /// The program to exec: `--program` or the daemon's default path.
    pub fn program_or(&self, default: &str) -> PathBuf {
        self.program
            .clone()
            .unwrap_or_else(|| PathBuf::from(default))
    }
}

/// The whole life of a wrapper: parse, build the daemon's policy and argv,
/// apply, exec. Prints `PROG: VMDIR: what failed: why` and exits 100 or 111
/// on failure; never runs the daemon with a weaker policy.
pub fn main(prog: &str, build: impl FnOnce(&WrapArgs) -> Result<(Policy, Exec)>) -> ! {
    run(prog, "", std::env::args_os().skip(1), build)
}

/// [`main`] for a wrapper with flags of its own: it took them out of
/// `args`, and `own_usage` names them in the usage line.
pub fn run(
    prog: &str,
    own_usage: &str,
    args: impl IntoIterator<Item = OsString>,
    build: impl FnOnce(&WrapArgs) -> Result<(Policy, Exec)>,
) -> ! {
    let args = match WrapArgs::parse(prog, own_usage, args) {
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
    let take = |fd: Option<i32>, flag| match fd.map(|fd| take_fd(fd, flag)) {
        Some(Ok(fd)) => Some(fd),
        Some(Err(e)) => fail(prog, Some(&args.vm_dir), &e),
        None => None,
    };
    let notify = take(args.notify_fd, "--notify-fd");
    // Without one, --allow-no-cgroups was given (parse checked): vm-init
    // passes it when it runs the VM without bounds, and says so itself,
    // once for the VM (a line here would read as the daemon's last words).
    let cgroup = take(args.cgroup_fd, "--cgroup-fd");
    let err = match build(&args) {
        Ok((mut policy, exec)) => {
            policy.allow_weaker_landlock |= args.allow_weaker_landlock;
            // vm-init's PID 1 starts every wrapper (inside the VM's PID
            // namespace it is PID 1), or, with vm-init --services, the
            // s6-supervise of the VM's own s6-svscan.
            match apply_then_notify(&policy, &ExpectedParent::InsideVm, &exec, notify, cgroup) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::bin;

    fn parse(args: &[&str]) -> Result<WrapArgs> {
        WrapArgs::parse(bin::WRAP_VIRTIOFSD, "", args.iter().map(OsString::from))
    }

    #[test]
    fn a_notification_fd_is_a_number_above_stderr() {
        let a = parse(&["--notify-fd", "5", "--cgroup-fd", "6", "/"]).unwrap();
        assert_eq!((a.notify_fd, a.cgroup_fd), (Some(5), Some(6)));
        for bad in ["2", "-1", "x", ""] {
            for flag in ["--notify-fd", "--cgroup-fd"] {
                let e = parse(&[flag, bad, "--allow-no-cgroups", "/"]).unwrap_err();
                assert_eq!(e.exit_code(), 100, "{bad:?}: {e}");
            }
        }
        let e = parse(&["/", "--allow-no-cgroups", "--notify-fd"]).unwrap_err();
        assert_eq!(e.exit_code(), 100);
    }

    #[test]
    fn a_cgroup_or_the_explicit_opt_out() {
        assert!(
            parse(&["--allow-no-cgroups", "/"])
                .unwrap()
                .allow_no_cgroups
        );
        for bad in [&["/"][..], &["--cgroup-fd", "6", "--allow-no-cgroups", "/"]] {
            let e = parse(bad).unwrap_err();
            assert_eq!(e.exit_code(), 100, "{bad:?}: {e}");
            assert!(e.to_string().contains("--allow-no-cgroups"), "{e}");
        }
    }
}
