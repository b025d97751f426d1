//! vm-init's command line.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use sandbox_core::contract::DEFAULT_STATE_DIR;
use sandbox_core::parent::ExpectedParent;
use sandbox_core::{Error, VmName};

pub const USAGE: &str = "usage: vm-init [--state-dir DIR] [--parent-pid PID] [--notify-fd FD] \
[--shutdown-timeout SECS] [--virtiofsd PATH] [--vmm PATH] [--gpu PATH] \
[--services DIR] [--cgroup-parent DIR] [--allow-no-cgroups] [--allow-weaker-landlock] NAME";

pub const HELP: &str = "\
vm-init: run one VM, sandboxed, under s6.

  --state-dir DIR         the VM directories live in DIR/NAME (default /run/vm)
  --parent-pid PID        refuse to run unless our parent is PID (s6-supervise);
                          without it the parent's comm must be s6-supervise
  --notify-fd FD          write a newline to FD once the VM runs (s6 readiness)
  --shutdown-timeout SECS on SIGTERM, wait this long for the guest to power off
                          (default 30), then stop the VMM and exit
  --virtiofsd/--vmm/--gpu PATH
                          the program each wrapper execs instead of its default
  --services DIR          each daemon an s6 service of its own: PID 1 runs an
                          s6-svscan inside the VM's namespaces on a copy of
                          DIR's service directories (s6/vm-services: virtiofsd,
                          vmm, gpu, and any of your own), whose run scripts
                          chain-load the wrappers with the fds vm-init parked
  --cgroup-parent DIR     the VM's cgroup is DIR/vm-NAME@SLOT, with a child per
                          daemon holding its bounds (memory, pids, CPU) and
                          one for vm-init; DIR must be a cgroup v2 directory
                          with the memory, pids and cpu controllers (default:
                          vm-sandbox at the cgroup2 root, made if missing;
                          Spectrum: /sys/fs/cgroup/vm-services.slice)
  --allow-no-cgroups      on a host without cgroup v2 or those controllers,
                          run the VM without bounds (said in one line)
                          instead of refusing; never the default
  --allow-weaker-landlock on a kernel below Landlock ABI 6, run every daemon
                          with what the kernel has (said in one line) instead
                          of refusing; never the default

exit codes: 0 the VMM exited 0 (guest powered off, or shut down on request);
1 the VMM exited non-zero, or virtiofsd or the GPU daemon died;
2 the guest did not power off within the shutdown timeout;
100 usage (bad name, unknown VM, missing config, path too long);
111 a system call failed, or the parent check, a lock or a slot was refused,
    or the kernel's Landlock is below ABI 6 (without --allow-weaker-landlock),
    or the host has no cgroup v2 with those controllers (without
    --allow-no-cgroups).
";

#[derive(Debug)]
pub struct Args {
    pub state_dir: PathBuf,
    pub parent: ExpectedParent,
    pub notify_fd: Option<i32>,
    pub shutdown_timeout: Duration,
    pub virtiofsd: Option<PathBuf>,
    pub vmm: Option<PathBuf>,
    pub gpu: Option<PathBuf>,
    pub services: Option<PathBuf>,
    pub allow_weaker_landlock: bool,
    pub cgroup_parent: Option<PathBuf>,
    pub allow_no_cgroups: bool,
    pub name: VmName,
}

/// Parses argv; Ok(None) for --help.
pub fn parse(argv: impl IntoIterator<Item = OsString>) -> Result<Option<Args>, Error> {
    let usage = || Error::Usage(USAGE.into());
    let mut it = argv.into_iter();
    let (mut state_dir, mut parent, mut notify_fd, mut timeout) =
        (PathBuf::from(DEFAULT_STATE_DIR), None, None, 30u64);
    let (mut virtiofsd, mut vmm, mut gpu, mut name) = (None, None, None, None);
    let (mut allow_weaker_landlock, mut allow_no_cgroups) = (false, false);
    let mut cgroup_parent = None;
    let mut services = None;
    while let Some(a) = it.next() {
        let flag = a.to_str().unwrap_or("");
        let mut value = || it.next().ok_or_else(usage);
        let number = |v: OsString, what: &str| -> Result<u64, Error> {
            v.to_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Error::Usage(format!("{what} {v:?} is not a number")))
        };
        match flag {
            "-h" | "--help" => return Ok(None),
            "--state-dir" => state_dir = PathBuf::from(value()?),
            "--parent-pid" => {
                let pid = number(value()?, "--parent-pid")?;
                parent = Some(ExpectedParent::Pid(
                    i32::try_from(pid)
                        .ok()
                        .filter(|&p| p > 0)
                        .ok_or_else(usage)?,
                ));
            }
            "--notify-fd" => {
                notify_fd =
                    Some(i32::try_from(number(value()?, "--notify-fd")?).map_err(|_| usage())?)
            }
            "--shutdown-timeout" => timeout = number(value()?, "--shutdown-timeout")?,
            "--virtiofsd" => virtiofsd = Some(program(value()?)?),
            "--vmm" => vmm = Some(program(value()?)?),
            "--gpu" => gpu = Some(program(value()?)?),
            "--services" => {
                let dir = PathBuf::from(value()?);
                if !dir.is_absolute() || !dir.is_dir() {
                    return Err(Error::Usage(format!(
                        "--services {} is not an absolute path to a directory",
                        dir.display()
                    )));
                }
                services = Some(dir);
            }
            "--allow-weaker-landlock" => allow_weaker_landlock = true,
            "--allow-no-cgroups" => allow_no_cgroups = true,
            "--cgroup-parent" => cgroup_parent = Some(PathBuf::from(value()?)),
            f if f.starts_with('-') => {
                return Err(Error::Usage(format!("unknown option {f:?}; {USAGE}")))
            }
            _ if name.is_none() => name = Some(VmName::parse(&a)?),
            _ => return Err(usage()),
        }
    }
    if !state_dir.is_absolute() {
        return Err(Error::Usage(format!(
            "--state-dir {} is not absolute",
            state_dir.display()
        )));
    }
    Ok(Some(Args {
        state_dir,
        parent: parent.unwrap_or(ExpectedParent::Comm("s6-supervise")),
        notify_fd,
        shutdown_timeout: Duration::from_secs(timeout),
        virtiofsd,
        vmm,
        gpu,
        services,
        allow_weaker_landlock,
        cgroup_parent,
        allow_no_cgroups,
        name: name.ok_or_else(usage)?,
    }))
}

fn program(p: OsString) -> Result<PathBuf, Error> {
    let p = PathBuf::from(p);
    if p.is_absolute() && p.is_file() {
        Ok(p)
    } else {
        Err(Error::Usage(format!(
            "program {} is not an absolute path to a file",
            p.display()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(a: &[&str]) -> Result<Option<Args>, Error> {
        parse(a.iter().map(OsString::from))
    }

    #[test]
    fn defaults() {
        let a = parse_strs(&["work"]).unwrap().unwrap();
        assert_eq!(a.state_dir, PathBuf::from("/run/vm"));
        assert_eq!(a.parent, ExpectedParent::Comm("s6-supervise"));
        assert_eq!(a.shutdown_timeout, Duration::from_secs(30));
        assert_eq!(a.name.as_str(), "work");
    }

    #[test]
    fn usage_errors_are_exit_100() {
        for bad in [
            &[][..],
            &["a", "b"],
            &["--parent-pid", "x", "a"],
            &["--parent-pid", "0", "a"],
            &["--state-dir", "rel", "a"],
            &["--bogus", "a"],
            &["../etc"],
            &["--vmm", "relative/path", "a"],
        ] {
            let e = parse_strs(bad).unwrap_err();
            assert_eq!(e.exit_code(), 100, "{bad:?}: {e}");
        }
    }
}
