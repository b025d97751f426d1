//! PID 1 of the VM: builds the VM's mount namespace, starts the wrappers,
//! and runs one event loop (signalfd, the outer's pidfd, the VMM's
//! streams, a shutdown timer) until the VM ends. It reaps every child,
//! known or not, and never polls on a clock.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use sandbox_core::event::{self, notify_ready, reap_any, Timer};
use sandbox_core::ids::Slot;
use sandbox_core::parent::ParentWatch;
use sandbox_core::signals::{SignalFd, SIGCHLD};
use sandbox_core::spawn::{spawn, Child, Command, ExitStatus};
use sandbox_core::vmdir::{fd, VmDir};
use sandbox_core::{mount, ns, prctl, Error};

use crate::args::Args;
use crate::outer::{Listeners, Vm, SIGNALS};
use crate::stderr::StderrRelay;
use crate::vmm::{Control, Said, Vmm};

/// Exit codes of PID 1 (documented in --help).
const EXIT_VMM_FAILED: u8 = 1;
const EXIT_TIMEOUT: u8 = 2;
/// How long the VMM may take to exit after one of its backends ended.
const BACKEND_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

pub fn run(
    args: &Args,
    vm: &Vm,
    slot: Slot,
    listeners: Listeners,
    storage: OwnedFd,
    watch: ParentWatch,
    notify: Option<OwnedFd>,
) -> u8 {
    match run_vm(args, vm, slot, listeners, storage, &watch, notify) {
        Ok(code) => code,
        Err(e) => {
            sandbox_core::say!("vm-init: {}: {e}", args.name);
            e.exit_code()
        }
    }
}

struct Daemon {
    name: &'static str,
    child: Child,
    /// Its stderr (the wrapper's, then the daemon's), through us.
    stderr: StderrRelay,
}

/// Starts `wrapper` for daemon `name` with `fds`, its stderr through us.
fn daemon(
    vm: &Vm,
    name: &'static str,
    wrapper: &str,
    program: Option<&Path>,
    fds: &[(BorrowedFd<'_>, i32)],
) -> Result<Daemon, Error> {
    let (stderr, write) = StderrRelay::new()?;
    let mut fds = fds.to_vec();
    fds.push((write.as_fd(), 2));
    let child = spawn(&command(vm, wrapper, program, &fds)?)?;
    Ok(Daemon {
        name,
        child,
        stderr,
    })
}

fn command(
    vm: &Vm,
    wrapper: &str,
    program: Option<&Path>,
    fds: &[(BorrowedFd<'_>, i32)],
) -> Result<Command, Error> {
    let mut cmd = Command::new(&vm.bin_dir.join(wrapper))?;
    if let Some(p) = program {
        cmd.arg("--program")?.arg(p)?;
    }
    if vm.allow_weaker_landlock {
        cmd.arg("--allow-weaker-landlock")?;
    }
    cmd.arg(vm.dir.path())?;
    for (fd, target) in fds {
        cmd.pass_fd(fd.as_raw_fd(), *target);
    }
    Ok(cmd)
}

fn run_vm(
    args: &Args,
    vm: &Vm,
    slot: Slot,
    listeners: Listeners,
    storage: OwnedFd,
    watch: &ParentWatch,
    notify: Option<OwnedFd>,
) -> Result<u8, Error> {
    let name = &args.name;
    // Non-dumpable first: virtiofsd shares our uid (root of the VM's user
    // namespace) and must not ptrace or read us.
    prctl::not_dumpable()?;
    let vm_dir = mount::build_vm_namespace(&args.state_dir, name.as_str())?;
    // The idmapped fs/ the outer made, over the plain one.
    mount::attach(&storage, &VmDir::new(&vm_dir).storage())?;
    drop(storage);
    // virtiofsd's own user namespace, mapping the guest's ids alone: made
    // while user namespaces can still be made, through the VM's own /proc.
    let guest_ids = ns::guest_ids_user_namespace()?;
    // No process of this VM may create a user namespace (and with it, the
    // capabilities to mount and unshare): the limit applies to this user
    // namespace and every one below it.
    std::fs::write("/proc/sys/user/max_user_namespaces", "0")
        .map_err(|e| Error::path("write", "/proc/sys/user/max_user_namespaces", e))?;
    let sigfd = SignalFd::new(SIGNALS)?;

    let Listeners {
        virtiofsd,
        api,
        gpu,
        mut serial,
    } = listeners;
    let fs = daemon(
        vm,
        "virtiofsd",
        "wrap-virtiofsd",
        args.virtiofsd.as_deref(),
        &[
            (virtiofsd.as_fd(), fd::VIRTIOFSD_LISTENER),
            (guest_ids.as_fd(), fd::VIRTIOFSD_USERNS),
        ],
    )?;
    drop((virtiofsd, guest_ids));
    let mut daemons = vec![fs];
    let (events_read, events_write) = match vm.kind {
        Vmm::CloudHypervisor => {
            let (r, w) = event::pipe()?;
            (Some(r), Some(w))
        }
        Vmm::Qemu => (None, None),
    };
    let vmm = {
        let mut fds = vec![(api.as_fd(), fd::VMM_API)];
        if let Some(w) = &events_write {
            fds.push((w.as_fd(), fd::VMM_EVENTS));
        }
        daemon(vm, "the VMM", "wrap-vmm", args.vmm.as_deref(), &fds)?
    };
    // Our copies would keep the pipe open after the VMM exits.
    drop((api, events_write));
    let vmm_pid = vmm.child.pid.as_raw_nonzero().get();
    daemons.push(vmm);
    let mut control = Control::new(vm.kind, vm.dir.api_socket(), events_read)?;
    // The GPU daemon gets the VMM's connection, accepted here: crosvm's
    // --fd takes a connected socket (see wrap-gpu's policy.rs).
    let mut gpu_listener: Option<UnixListener> = gpu;
    if let Some(l) = &gpu_listener {
        l.set_nonblocking(true)
            .map_err(|e| Error::sys("set non-blocking", e))?;
    }
    let timer = Timer::new()?;
    let mut notify = notify;
    let mut stopping = false;
    // A daemon other than the VMM that ended while the VM ran, and what
    // it said last.
    let mut lost: Option<(&'static str, ExitStatus, String)> = None;

    // Every way out of the loop returns from this closure; the guest's
    // last console lines are copied after it, whatever ended the VM.
    let mut event_loop = || -> Result<u8, Error> {
        loop {
            let mut fds: Vec<BorrowedFd<'_>> = vec![sigfd.as_fd(), watch.fd(), timer.as_fd()];
            let serial_at = serial.fd().map(|fd| {
                fds.push(fd);
                fds.len() - 1
            });
            let gpu_at = gpu_listener.as_ref().map(|l| {
                fds.push(l.as_fd());
                fds.len() - 1
            });
            let control_from = fds.len();
            fds.extend(control.fds());
            let stderr_from = fds.len();
            // Those whose pipe is open, by index into `daemons`.
            let with_stderr: Vec<usize> = (0..daemons.len())
                .filter(|&i| daemons[i].stderr.fd().is_some())
                .collect();
            fds.extend(with_stderr.iter().filter_map(|&i| daemons[i].stderr.fd()));
            let ready = event::wait_readable(&fds)?;
            for (k, &i) in with_stderr.iter().enumerate() {
                if ready[stderr_from + k] {
                    daemons[i].stderr.pump();
                }
            }
            if serial_at.is_some_and(|i| ready[i]) {
                serial.pump()?;
            }
            if ready[1] {
                return Err(Error::Refused("the outer vm-init is gone".into()));
            }
            if ready[2] {
                if let Some((daemon, status, said)) = &lost {
                    // The VMM did not follow its backend within the grace time.
                    sandbox_core::say!(
                        "vm-init: {name}: {daemon} {status}{said}: the VM cannot go on, tearing it down"
                    );
                    return Ok(EXIT_VMM_FAILED);
                }
                sandbox_core::say!(
                    "vm-init: {name}: the guest did not power off within {} s: stopping the VMM",
                    args.shutdown_timeout.as_secs()
                );
                let _ = control.force_stop();
                return Ok(EXIT_TIMEOUT);
            }
            if gpu_at.is_some_and(|i| ready[i]) {
                let l = gpu_listener.take().expect("polled, so present");
                match l.accept() {
                    Ok((conn, _)) => {
                        let compositor = &vm.gpu.as_ref().expect("gpu.sock means a GPU").tree;
                        daemons.push(daemon(
                            vm,
                            "the GPU daemon",
                            "wrap-gpu",
                            args.gpu.as_deref(),
                            &[
                                (conn.as_fd(), fd::GPU_CONNECTION),
                                (compositor.as_fd(), fd::GPU_COMPOSITOR),
                            ],
                        )?);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => gpu_listener = Some(l),
                    Err(e) => return Err(Error::sys("accept on gpu.sock", e)),
                }
            }
            if ready[control_from..stderr_from].iter().any(|&r| r) {
                match control.on_readable()? {
                    Said::Ready => {
                        if let Some(fd) = notify.take() {
                            notify_ready(fd)?;
                        }
                        sandbox_core::say!("vm-init: {name}: ready (slot {})", slot.index());
                    }
                    Said::Nothing | Said::Closed => {}
                }
            }
            if ready[0] {
                while let Some(sig) = sigfd.read()? {
                    if sig == SIGCHLD {
                        continue;
                    }
                    if stopping || lost.is_some() {
                        continue;
                    }
                    if !control.is_ready() {
                        sandbox_core::say!(
                            "vm-init: {name}: signal {sig} before the VM was ready: stopping now"
                        );
                        let _ = control.force_stop();
                        return Ok(0);
                    }
                    stopping = true;
                    sandbox_core::say!(
                        "vm-init: {name}: signal {sig}: asking the guest to power off"
                    );
                    if let Err(e) = control.request_powerdown() {
                        sandbox_core::say!("vm-init: {name}: {e}");
                    }
                    timer.arm(args.shutdown_timeout)?;
                }
                // Reap everything that exited, ours or orphans reparented to us.
                while let Some((pid, status)) = reap_any()? {
                    let Some(i) = daemons
                        .iter()
                        .position(|d| d.child.pid.as_raw_nonzero().get() == pid)
                    else {
                        continue;
                    };
                    let mut d = daemons.remove(i);
                    d.stderr.drain();
                    let said = d.stderr.said(status);
                    if pid == vmm_pid {
                        if let Some((daemon, status, said)) =
                            lost.take().filter(|(_, s, _)| *s != ExitStatus::Code(0))
                        {
                            sandbox_core::say!("vm-init: {name}: {daemon} {status}{said}: the VM cannot go on, tearing it down");
                            return Ok(EXIT_VMM_FAILED);
                        }
                        return Ok(vmm_exit(name.as_str(), status, &said, stopping));
                    }
                    if !stopping && lost.is_none() {
                        // virtiofsd also exits, with 0, when the VMM closes its
                        // connection on the way out: give the VMM a moment to
                        // be reaped, so its status (a guest poweroff) decides.
                        lost = Some((d.name, status, said));
                        timer.arm(BACKEND_GRACE)?;
                    }
                }
            }
        }
    };
    let code = event_loop();
    serial.drain()?;
    for d in &mut daemons {
        d.stderr.drain();
    }
    code
}

fn vmm_exit(name: &str, status: ExitStatus, said: &str, stopping: bool) -> u8 {
    match (status, stopping) {
        (ExitStatus::Code(0), true) => {
            sandbox_core::say!("vm-init: {name}: the guest powered off");
            0
        }
        (ExitStatus::Code(0), false) => {
            sandbox_core::say!("vm-init: {name}: the VMM exited by itself (guest powered off)");
            0
        }
        (s, _) => {
            sandbox_core::say!("vm-init: {name}: the VMM {s}{said}");
            EXIT_VMM_FAILED
        }
    }
}
