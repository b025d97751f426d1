//! vm-init --services DIR: each daemon an s6 service of its own.
//!
//! PID 1 runs an s6-svscan inside the VM's namespaces, on a copy of DIR's
//! service directories (the project's s6/vm-services: virtiofsd, vmm, gpu;
//! a host adds its own, a dbus or a portal). Each s6-supervise and each
//! run script is then already a process of the VM: its user, PID, mount,
//! network, IPC and UTS namespaces, killed with it. A run script moves the
//! fds vm-init parked for it into place (`contract::fd::parked`) and
//! chain-loads its wrapper, which applies exactly the policy it applies
//! when PID 1 starts it.
//!
//! Why this way, and not wrappers in the host's s6 tree that join the VM's
//! namespaces (docs/DESIGN.md, "Why the services live inside the VM"):
//! nothing has to find the VM's PID 1 from outside and race its death or a
//! recycled PID; the sockets vm-init bound as host root reach the run
//! scripts by plain fd inheritance through s6-svscan and s6-supervise,
//! with no writable path in the host-root-owned VM directory and no fd
//! holder; and when the VM goes down its services go with it (its PID
//! namespace), so none restarts against a VM that is gone, and the next
//! start brings them back.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};

use sandbox_core::contract::fd;
use sandbox_core::contract::{daemon, env, SCAN_DIR};
use sandbox_core::spawn::{self, spawn, Command};
use sandbox_core::{mount, Error};

use crate::args::Args;

/// At most this many entries and bytes are copied from DIR: service
/// directories, not a file tree.
const MAX_ENTRIES: usize = 256;
const MAX_BYTES: usize = 1 << 20;

#[derive(Debug)]
enum Entry {
    Dir,
    File { bytes: Vec<u8>, mode: u32 },
}

/// DIR's service directories, read by the outer vm-init as host root, so
/// that PID 1 needs no right to DIR's path.
#[derive(Debug)]
pub struct Templates {
    entries: Vec<(PathBuf, Entry)>,
    svscan: PathBuf,
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_else(|| vec!["/usr/bin".into(), "/bin".into()])
        .into_iter()
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Reads DIR (regular files and directories only, no symlink followed).
pub fn read(dir: &Path) -> Result<Templates, Error> {
    let svscan = find_in_path("s6-svscan")
        .ok_or_else(|| Error::Usage("--services needs s6-svscan, which is not in PATH".into()))?;
    let mut entries = Vec::new();
    let mut bytes = 0;
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let here = dir.join(&rel);
        let listing = std::fs::read_dir(&here).map_err(|e| Error::path("read", &here, e))?;
        for e in listing {
            let e = e.map_err(|e| Error::path("read", &here, e))?;
            let rel = rel.join(e.file_name());
            let path = dir.join(&rel);
            let meta =
                std::fs::symlink_metadata(&path).map_err(|e| Error::path("stat", &path, e))?;
            if meta.is_dir() {
                entries.push((rel.clone(), Entry::Dir));
                todo.push(rel);
            } else if meta.is_file() {
                use std::os::unix::fs::PermissionsExt;
                let data = std::fs::read(&path).map_err(|e| Error::path("read", &path, e))?;
                bytes += data.len();
                entries.push((
                    rel,
                    Entry::File {
                        bytes: data,
                        mode: meta.permissions().mode() & 0o755,
                    },
                ));
            } else {
                return Err(Error::Usage(format!(
                    "--services: {} is neither a file nor a directory",
                    path.display()
                )));
            }
            if entries.len() > MAX_ENTRIES || bytes > MAX_BYTES {
                return Err(Error::Usage(format!(
                    "--services {}: more than {MAX_ENTRIES} entries or {} KiB",
                    dir.display(),
                    MAX_BYTES >> 10
                )));
            }
        }
    }
    // Parents before children.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(Templates { entries, svscan })
}

impl Templates {
    /// PID 1: a fresh tmpfs below the state dir's tmpfs of the VM's mount
    /// namespace (which holds only this VM's directory otherwise), holding
    /// the copy.
    pub fn install(&self, state_dir: &Path) -> Result<PathBuf, Error> {
        let scan = state_dir.join(SCAN_DIR);
        std::fs::create_dir(&scan).map_err(|e| Error::path("mkdir", &scan, e))?;
        // nosuid, nodev; executable: the run scripts run from it.
        mount::mount_state_tmpfs(&scan)?;
        for (rel, entry) in &self.entries {
            let path = scan.join(rel);
            match entry {
                Entry::Dir => {
                    std::fs::create_dir(&path).map_err(|e| Error::path("mkdir", &path, e))?
                }
                Entry::File { bytes, mode } => {
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::write(&path, bytes).map_err(|e| Error::path("write", &path, e))?;
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(*mode))
                        .map_err(|e| Error::path("chmod", &path, e))?;
                }
            }
        }
        // The VMM service's event fifodir, made before its supervisor
        // runs, so that PID 1 can wait on the service from the start.
        let event = scan.join(daemon::VMM).join("event");
        if scan.join(daemon::VMM).is_dir() && !event.exists() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::create_dir(&event).map_err(|e| Error::path("mkdir", &event, e))?;
            std::fs::set_permissions(&event, std::fs::Permissions::from_mode(0o1733))
                .map_err(|e| Error::path("chmod", &event, e))?;
        }
        Ok(scan)
    }

    /// PID 1: s6-svscan on `scan`, with `fds` parked at their numbers,
    /// vm-init's directory `bin_dir` on its PATH and the environment the
    /// run scripts read: VM_DIR, and for each wrapper the arguments vm-init
    /// was given for it (--program, the Landlock opt-out).
    pub fn start(
        &self,
        args: &Args,
        (bin_dir, vm_dir): (&Path, &Path),
        scan: &Path,
        fds: &[(BorrowedFd<'_>, i32)],
        (stdout, stderr): (BorrowedFd<'_>, BorrowedFd<'_>),
    ) -> Result<spawn::Child, Error> {
        let mut cmd = Command::new(&self.svscan)?;
        cmd.arg(scan)?;
        let path = std::env::join_paths([
            bin_dir.to_owned(),
            "/usr/lib/execline/bin".into(),
            "/usr/bin".into(),
            "/bin".into(),
        ])
        .map_err(|_| Error::Usage("vm-init's directory contains ':'".into()))?;
        cmd.env("PATH", path)?;
        cmd.env(env::VM_DIR, vm_dir)?;
        // A VM in a cgroup has its leaves' fds parked: each wrapper takes
        // its own (one missing, its wrapper refuses), or none, and every
        // wrapper runs without (vm-init said so).
        let leaves = [
            fd::parked::VIRTIOFSD_CGROUP,
            fd::parked::VMM_CGROUP,
            fd::parked::GPU_CGROUP,
        ];
        let bounded = fds.iter().any(|(_, at)| leaves.contains(at));
        for ((var, program), cgroup_fd) in [
            (env::VIRTIOFSD_ARGS, &args.virtiofsd),
            (env::VMM_ARGS, &args.vmm),
            (env::GPU_ARGS, &args.gpu),
        ]
        .into_iter()
        .zip(leaves)
        {
            let mut words = Vec::new();
            if let Some(p) = program {
                words.push(format!("--program {}", p.display()));
            }
            words.push(if bounded {
                format!("--cgroup-fd {cgroup_fd}")
            } else {
                "--allow-no-cgroups".into()
            });
            if args.allow_weaker_landlock {
                words.push("--allow-weaker-landlock".into());
            }
            cmd.env(var, words.join(" "))?;
        }
        for (fd, target) in fds {
            cmd.pass_fd(fd.as_raw_fd(), *target);
        }
        cmd.pass_fd(stdout.as_raw_fd(), 1);
        cmd.pass_fd(stderr.as_raw_fd(), 2);
        spawn(&cmd)
    }
}

/// PID 1's subscription to the VMM service's events: a FIFO in the
/// service's fifodir (`event/`), named as s6's own listeners name theirs
/// (`ftrig1:@` TAI64N `:` six characters), to which s6-supervise writes
/// one letter per event: `u` started, `U` ready (said on its
/// notification-fd), `d` its daemon died. Made before s6-svscan starts,
/// so no event can be missed.
#[derive(Debug)]
pub struct VmmService {
    fifo: std::fs::File,
    /// A service with a notification-fd is ready on `U`, one without on `u`.
    ready_on: u8,
    ready: bool,
}

/// What the VMM's service said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServiceEvent {
    Nothing,
    /// Ready: cloud-hypervisor created over its API by the helper, or the
    /// VMM started (a service without a notification-fd).
    Ready,
    /// Its daemon died after it was ready.
    Down,
}

impl VmmService {
    pub fn subscribe(scan: &Path) -> Result<VmmService, Error> {
        let service = scan.join(daemon::VMM);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let name = format!(
            "ftrig1:@{:016x}{:08x}:vminit",
            0x4000_0000_0000_000a_u64 + now.as_secs(),
            now.subsec_nanos()
        );
        let path = service.join("event").join(name);
        sandbox_core::fds::make_fifo(&path, 0o600)?;
        // Read and write: the FIFO never reads end-of-file between two of
        // s6-supervise's writes.
        let fifo = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| Error::path("open", &path, e))?;
        sandbox_core::fds::set_nonblocking(&fifo)?;
        let ready_on = if service.join("notification-fd").exists() {
            b'U'
        } else {
            b'u'
        };
        Ok(VmmService {
            fifo,
            ready_on,
            ready: false,
        })
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        use std::os::fd::AsFd;
        self.fifo.as_fd()
    }

    /// Reads what s6-supervise wrote: readiness once, then the daemon's
    /// death.
    pub fn read(&mut self) -> Result<ServiceEvent, Error> {
        use std::io::Read;
        let mut buf = [0u8; 64];
        let mut said = ServiceEvent::Nothing;
        loop {
            let n = match self.fifo.read(&mut buf) {
                Ok(0) => return Ok(said),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(said),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::sys("read the VMM service's events", e)),
            };
            for &event in &buf[..n] {
                if !self.ready && event == self.ready_on {
                    self.ready = true;
                    said = ServiceEvent::Ready;
                } else if self.ready && event == b'd' {
                    return Ok(ServiceEvent::Down);
                }
            }
        }
    }
}

/// Keeps `service` of the VM's s6-svscan from being restarted when its
/// daemon exits (`s6-svc -O`): the VMM, before the guest is asked to power
/// off.
pub fn run_once(scan: &Path, service: &str) -> Result<(), Error> {
    let dir = scan.join(service);
    if !dir.is_dir() {
        return Ok(());
    }
    let svc = find_in_path("s6-svc").unwrap_or_else(|| "/usr/bin/s6-svc".into());
    let mut cmd = Command::new(&svc)?;
    cmd.arg("-O")?.arg(&dir)?;
    let child = spawn(&cmd)?;
    match spawn::wait(child.pid)? {
        spawn::ExitStatus::Code(0) => Ok(()),
        s => Err(Error::Refused(format!("s6-svc -O {}: {s}", dir.display()))),
    }
}
