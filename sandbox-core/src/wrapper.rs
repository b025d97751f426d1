//! What every wrap-* binary shares: its command line
//! (`wrap-NAME [--program PATH] [--allow-weaker-landlock] [--notify-fd FD]
//! VMDIR`, and a wrapper's own flags, which it reads itself), the one line
//! it prints on failure, and the s6 exit codes.

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
                "usage: {prog} [--program PATH] [--allow-weaker-landlock] [--notify-fd FD]{own_usage} VMDIR"
            ))
        };
        let mut it = args.into_iter();
        let (mut program, mut vm_dir, mut weaker) = (None, None, false);
        let mut notify_fd = None;
        while let Some(a) = it.next() {
            match a.to_str() {
                Some("--program") => program = Some(PathBuf::from(it.next().ok_or_else(usage)?)),
                Some("--notify-fd") => {
                    let v = it.next().ok_or_else(usage)?;
                    let fd = v.to_str().and_then(|v| v.parse::<i32>().ok());
                    match fd {
                        Some(fd) if fd > 2 => notify_fd = Some(fd),
                        _ => {
                            return Err(Error::Usage(format!(
                                "--notify-fd {} is not a file descriptor above 2",
                                v.to_string_lossy()
                            )))
                        }
                    }
                }
                Some("--allow-weaker-landlock") => weaker = true,
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
            notify_fd,
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
    let notify = match args.notify_fd.map(|fd| take_fd(fd, "--notify-fd")) {
        Some(Ok(fd)) => Some(fd),
        Some(Err(e)) => fail(prog, Some(&args.vm_dir), &e),
        None => None,
    };
    let err = match build(&args) {
        Ok((mut policy, exec)) => {
            policy.allow_weaker_landlock |= args.allow_weaker_landlock;
            // vm-init's PID 1 starts every wrapper (inside the VM's PID
            // namespace it is PID 1), or, with vm-init --services, the
            // s6-supervise of the VM's own s6-svscan.
            match apply_then_notify(&policy, &ExpectedParent::InsideVm, &exec, notify) {
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
        let a = parse(&["--notify-fd", "5", "/"]).unwrap();
        assert_eq!(a.notify_fd, Some(5));
        for bad in ["2", "-1", "x", ""] {
            let e = parse(&["--notify-fd", bad, "/"]).unwrap_err();
            assert_eq!(e.exit_code(), 100, "{bad:?}: {e}");
        }
        assert_eq!(parse(&["/", "--notify-fd"]).unwrap_err().exit_code(), 100);
    }
}
