//! PID 1 of the VM: builds the VM's mount namespace, starts the wrappers,
//! and runs one event loop (signalfd, the outer's pidfd, the VMM's
//! streams, a shutdown timer) until the VM ends. It reaps every child,
//! known or not, and never polls on a clock.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use sandbox_core::cgroup::VmCgroup;
use sandbox_core::contract::{bin, daemon, fd, VmDir, SERVICES_MARK};
use sandbox_core::event::{self, Timer, Wait};
use sandbox_core::fds::{self, notify_ready};
use sandbox_core::ids::Slot;
use sandbox_core::parent::ParentWatch;
use sandbox_core::signals::{SignalFd, SIGCHLD};
use sandbox_core::spawn::reap_any;
use sandbox_core::spawn::{spawn, Child, Command, ExitStatus};
use sandbox_core::{mount, ns, prctl, Error};

use crate::args::Args;
use crate::output::OutputRelay;
use crate::serial::SerialRelay;
use crate::services::{self, ServiceEvent, Templates, VmmService};
use crate::vm::{HandedMounts, Listeners, Vm, SIGNALS};
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
    handed: (Listeners, Option<VmCgroup>),
    mounts: HandedMounts,
    watch: ParentWatch,
    notify: Option<OwnedFd>,
) -> u8 {
    match run_vm(args, vm, slot, handed, mounts, &watch, notify) {
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
    /// Its stdout and stderr (the wrapper's, then the daemon's), through us.
    output: OutputRelay,
}

/// Starts `wrapper` for daemon `name` (`tag` in front of its lines, and
/// its cgroup leaf's name) with `fds`, its stdout and stderr through us.
fn daemon(
    vm: &Vm,
    cgroup: Option<&VmCgroup>,
    (name, tag): (&'static str, &str),
    wrapper: &str,
    program: Option<&Path>,
    fds: &[(BorrowedFd<'_>, i32)],
) -> Result<Daemon, Error> {
    let vm_name = vm.dir.path().file_name().unwrap_or_default();
    let (output, out, err) = OutputRelay::new(&vm_name.to_string_lossy(), tag)?;
    let mut fds = fds.to_vec();
    fds.push((out.as_fd(), 1));
    fds.push((err.as_fd(), 2));
    let leaf = match cgroup {
        Some(c) => {
            let leaf = c
                .leaf(tag)
                .ok_or_else(|| Error::Refused(format!("the VM's cgroup has no leaf for {tag}")))?;
            fds.push((leaf.procs.as_fd(), fd::CGROUP));
            true
        }
        None => false,
    };
    let child = spawn(&command(vm, wrapper, program, leaf, &fds)?)?;
    Ok(Daemon {
        name,
        child,
        output,
    })
}

fn command(
    vm: &Vm,
    wrapper: &str,
    program: Option<&Path>,
    cgroup: bool,
    fds: &[(BorrowedFd<'_>, i32)],
) -> Result<Command, Error> {
    let mut cmd = Command::new(&vm.bin_dir.join(wrapper))?;
    if let Some(p) = program {
        cmd.arg("--program")?.arg(p)?;
    }
    if cgroup {
        cmd.arg("--cgroup-fd")?.arg(fd::CGROUP.to_string())?;
    } else {
        cmd.arg("--allow-no-cgroups")?;
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
    (listeners, cgroup): (Listeners, Option<VmCgroup>),
    mounts: HandedMounts,
    watch: &ParentWatch,
    notify: Option<OwnedFd>,
) -> Result<u8, Error> {
    // Into vm-init's leaf of the VM's cgroup, before anything is started:
    // all we start is in the VM's cgroup (each wrapper then moves itself
    // into its daemon's leaf).
    if let Some(c) = &cgroup {
        sandbox_core::cgroup::enter(c.vm_init.as_fd())?;
    }
    let guest_ids = enter_vm(args, mounts)?;
    let sigfd = SignalFd::new(SIGNALS)?;
    let Listeners {
        virtiofsd,
        api,
        gpu,
        serial,
    } = listeners;
    // cloud-hypervisor's event monitor; with --services the VMM's run
    // script moves it into place whatever the VMM (QEMU's wrapper closes it).
    let (monitor_read, monitor) = if vm.kind == Vmm::CloudHypervisor || vm.services.is_some() {
        let (r, w) = fds::pipe()?;
        (Some(r), Some(w))
    } else {
        (None, None)
    };
    let handed = Handed {
        virtiofsd,
        guest_ids,
        api,
        monitor,
        gpu,
    };
    let (daemons, mode) = match &vm.services {
        None => start_daemons(args, vm, cgroup.as_ref(), handed)?,
        Some(templates) => start_services(args, vm, cgroup.as_ref(), templates, handed)?,
    };
    let control = Control::new(vm.kind, vm.dir.api_socket(), monitor_read)?;
    let mut vm_loop = VmLoop {
        args,
        vm,
        slot,
        watch,
        sigfd,
        timer: Timer::new()?,
        output_timer: Timer::new()?,
        serial,
        control,
        daemons,
        mode,
        cgroup,
        ready: false,
        notify,
        stopping: false,
        lost: None,
    };
    // Every way out of the loop returns from run(); the guest's last
    // console lines and the daemons' last words are copied after it,
    // whatever ended the VM: what the pipes hold now, and no more (a
    // daemon still writing must not keep PID 1 from ending the VM).
    let code = vm_loop.run();
    vm_loop.serial.finish()?;
    for d in &mut vm_loop.daemons {
        d.output.finish();
    }
    code
}

/// PID 1 in the VM's own mount namespace, with the storage the outer
/// idmapped, and no process of the VM able to make a user namespace but
/// virtiofsd's: returned.
fn enter_vm(args: &Args, mounts: HandedMounts) -> Result<OwnedFd, Error> {
    // Non-dumpable first: virtiofsd shares our uid (root of the VM's user
    // namespace) and must not ptrace or read us. (Our session keyring is
    // the VM's, host root's and empty: the outer made it for the clone.)
    prctl::not_dumpable()?;
    let vm_dir = mount::build_vm_namespace(&args.state_dir, args.name.as_str(), &mounts.vm_dir)?;
    // The idmapped fs/ the outer made, over the plain one.
    mount::attach(&mounts.storage, &VmDir::new(&vm_dir).storage())?;
    drop(mounts);
    // virtiofsd's own user namespace, mapping the guest's ids alone: made
    // while user namespaces can still be made, through the VM's own /proc.
    let guest_ids = ns::guest_ids_user_namespace()?;
    // No process of this VM may create a user namespace.
    ns::forbid_user_namespaces()?;
    Ok(guest_ids)
}

/// What PID 1 hands the daemons, whichever way they start. Dropped once
/// they have it: our copies would keep the sockets and the events pipe
/// open after the daemons that use them exit.
struct Handed {
    virtiofsd: UnixListener,
    /// virtiofsd's user namespace, mapping the guest's ids alone.
    guest_ids: OwnedFd,
    api: UnixListener,
    /// cloud-hypervisor's event-monitor pipe, its write end.
    monitor: Option<OwnedFd>,
    gpu: Option<UnixListener>,
}

/// How the VM's daemons run, and what PID 1's loop watches for them.
enum Mode {
    /// PID 1 started each wrapper: the VMM's readiness is the VM's and
    /// its exit the VM's end; the GPU daemon starts on the VMM's
    /// connection to gpu.sock.
    Daemons {
        vmm_pid: i32,
        /// gpu.sock, until the VMM connects (once).
        gpu_listener: Option<UnixListener>,
    },
    /// --services: the VM's own s6-svscan runs them, and the VMM's service
    /// says when the VM is ready and when it is down.
    Services {
        scan: PathBuf,
        vmm_service: VmmService,
    },
}

impl Mode {
    /// The fd the loop watches for this mode: gpu.sock until the VMM
    /// connects, or what the VMM's service says.
    fn fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            Mode::Daemons { gpu_listener, .. } => gpu_listener.as_ref().map(|l| l.as_fd()),
            Mode::Services { vmm_service, .. } => Some(vmm_service.fd()),
        }
    }

    fn is_vmm(&self, pid: i32) -> bool {
        matches!(self, Mode::Daemons { vmm_pid, .. } if *vmm_pid == pid)
    }
}

/// PID 1 starts each wrapper: virtiofsd's and the VMM's now, the GPU
/// daemon's once the VMM connects to gpu.sock.
fn start_daemons(
    args: &Args,
    vm: &Vm,
    cgroup: Option<&VmCgroup>,
    handed: Handed,
) -> Result<(Vec<Daemon>, Mode), Error> {
    let fs = daemon(
        vm,
        cgroup,
        (daemon::VIRTIOFSD, daemon::VIRTIOFSD),
        bin::WRAP_VIRTIOFSD,
        args.virtiofsd.as_deref(),
        &[
            (handed.virtiofsd.as_fd(), fd::VIRTIOFSD_LISTENER),
            (handed.guest_ids.as_fd(), fd::VIRTIOFSD_USERNS),
        ],
    )?;
    let mut fds = vec![(handed.api.as_fd(), fd::VMM_API)];
    if let Some(w) = &handed.monitor {
        fds.push((w.as_fd(), fd::VMM_EVENTS));
    }
    let vmm = daemon(
        vm,
        cgroup,
        ("the VMM", daemon::VMM),
        bin::WRAP_VMM,
        args.vmm.as_deref(),
        &fds,
    )?;
    let vmm_pid = vmm.child.pid.as_raw_nonzero().get();
    // The GPU daemon gets the VMM's connection, accepted by the loop.
    if let Some(l) = &handed.gpu {
        l.set_nonblocking(true)
            .map_err(|e| Error::sys("set non-blocking", e))?;
    }
    let mode = Mode::Daemons {
        vmm_pid,
        gpu_listener: handed.gpu,
    };
    Ok((vec![fs, vmm], mode))
}

/// --services: the VM's own s6-svscan, with every fd parked for it; each
/// run script moves its own into place (contract::fd::parked).
fn start_services(
    args: &Args,
    vm: &Vm,
    cgroup: Option<&VmCgroup>,
    templates: &Templates,
    handed: Handed,
) -> Result<(Vec<Daemon>, Mode), Error> {
    let scan = templates.install(&args.state_dir)?;
    let mut fds = vec![
        (handed.virtiofsd.as_fd(), fd::parked::VIRTIOFSD_LISTENER),
        (handed.guest_ids.as_fd(), fd::parked::VIRTIOFSD_USERNS),
        (handed.api.as_fd(), fd::parked::VMM_API),
    ];
    if let Some(w) = &handed.monitor {
        fds.push((w.as_fd(), fd::parked::VMM_EVENTS));
    }
    if let Some(l) = &handed.gpu {
        fds.push((l.as_fd(), fd::parked::GPU_LISTENER));
    }
    if let Some(c) = &vm.gpu {
        fds.push((c.tree.as_fd(), fd::parked::GPU_COMPOSITOR));
    }
    for (leaf, at) in [
        (daemon::VIRTIOFSD, fd::parked::VIRTIOFSD_CGROUP),
        (daemon::VMM, fd::parked::VMM_CGROUP),
        (daemon::GPU, fd::parked::GPU_CGROUP),
    ] {
        if let Some(l) = cgroup.and_then(|c| c.leaf(leaf)) {
            fds.push((l.procs.as_fd(), at));
        }
    }
    // Subscribed before the VMM's service can start.
    let vmm_service = VmmService::subscribe(&scan)?;
    let (output, out, err) = OutputRelay::new(args.name.as_str(), SERVICES_MARK)?;
    let child = templates.start(
        args,
        (&vm.bin_dir, vm.dir.path()),
        &scan,
        &fds,
        (out.as_fd(), err.as_fd()),
    )?;
    let svscan = Daemon {
        name: "the VM's s6-svscan",
        child,
        output,
    };
    Ok((vec![svscan], Mode::Services { scan, vmm_service }))
}

/// What one wait found readable, by name.
#[derive(Debug, Default)]
struct Ready {
    signals: bool,
    outer_gone: bool,
    timer: bool,
    serial: bool,
    /// The mode's own fd ([`Mode::fd`]).
    mode: bool,
    vmm: bool,
    /// A daemon's cgroup leaf changed.
    bounds: bool,
    /// Daemons (indices into `VmLoop::daemons`) with output to relay.
    output: Vec<usize>,
}

/// PID 1's event loop and everything it watches.
struct VmLoop<'a> {
    args: &'a Args,
    vm: &'a Vm,
    slot: Slot,
    watch: &'a ParentWatch,
    sigfd: SignalFd,
    /// The shutdown timeout, or the grace a VMM gets after a backend died.
    timer: Timer,
    /// When a daemon's output relay may read again (it has used its rate).
    output_timer: Timer,
    serial: SerialRelay,
    control: Control,
    daemons: Vec<Daemon>,
    mode: Mode,
    /// The VM's cgroup leaves: what a daemon met at its bounds.
    cgroup: Option<VmCgroup>,
    /// The VM said it is ready (announce_ready).
    ready: bool,
    notify: Option<OwnedFd>,
    stopping: bool,
    /// A daemon other than the VMM that ended while the VM ran, and what
    /// it said last.
    lost: Option<(&'static str, ExitStatus, String)>,
}

impl VmLoop<'_> {
    fn run(&mut self) -> Result<u8, Error> {
        loop {
            for d in &mut self.daemons {
                d.output.refill();
            }
            let ready = self.wait()?;
            for i in ready.output {
                self.daemons[i].output.pump();
            }
            if ready.bounds {
                self.say_bounds()?;
            }
            if ready.serial {
                self.serial.pump()?;
            }
            if ready.outer_gone {
                return Err(Error::Refused("the outer vm-init is gone".into()));
            }
            if ready.timer {
                return Ok(self.on_timer());
            }
            if ready.mode {
                if let Some(code) = self.on_mode_fd()? {
                    return Ok(code);
                }
            }
            if ready.vmm {
                if let Some(code) = self.on_vmm()? {
                    return Ok(code);
                }
            }
            if ready.signals {
                if let Some(code) = self.on_signals()? {
                    return Ok(code);
                }
                if let Some(code) = self.reap()? {
                    return Ok(code);
                }
            }
        }
    }

    /// Polls every fd the loop watches; says which are readable by name.
    fn wait(&self) -> Result<Ready, Error> {
        /// Adds `fd` to those polled; returns its index there.
        fn push_fd<'f>(fd: BorrowedFd<'f>, fds: &mut Vec<(BorrowedFd<'f>, Wait)>) -> usize {
            fds.push((fd, Wait::Readable));
            fds.len() - 1
        }
        let mut fds: Vec<(BorrowedFd<'_>, Wait)> = Vec::new();
        let signals = push_fd(self.sigfd.as_fd(), &mut fds);
        let outer = push_fd(self.watch.fd(), &mut fds);
        let timer = push_fd(self.timer.as_fd(), &mut fds);
        let serial = self.serial.fd().map(|fd| push_fd(fd, &mut fds));
        let mode = self.mode.fd().map(|fd| push_fd(fd, &mut fds));
        let vmm: Vec<usize> = self
            .control
            .fds()
            .into_iter()
            .map(|fd| push_fd(fd, &mut fds))
            .collect();
        let output: Vec<(usize, usize)> = self
            .daemons
            .iter()
            .enumerate()
            .flat_map(|(i, d)| d.output.fds().into_iter().map(move |fd| (i, fd)))
            .map(|(i, fd)| (i, push_fd(fd, &mut fds)))
            .collect();
        // A relay that has used its rate is not polled; the timer says
        // when it may read again.
        match self
            .daemons
            .iter()
            .filter_map(|d| d.output.waits_for())
            .min()
        {
            Some(after) => self.output_timer.arm(after)?,
            None => self.output_timer.disarm()?,
        }
        // (Nothing to do when it fires: the next wait polls the relay.)
        push_fd(self.output_timer.as_fd(), &mut fds);
        // A daemon's leaf says it met a bound (memory.events, pids.events).
        let bounds = fds.len();
        for leaf in self.cgroup.iter().flat_map(|c| &c.leaves) {
            fds.extend(leaf.event_fds().map(|fd| (fd, Wait::Changed)));
        }
        let r = event::wait(&fds)?;
        Ok(Ready {
            signals: r[signals],
            outer_gone: r[outer],
            timer: r[timer],
            serial: serial.is_some_and(|i| r[i]),
            mode: mode.is_some_and(|i| r[i]),
            vmm: vmm.iter().any(|&i| r[i]),
            bounds: r[bounds..].iter().any(|&b| b),
            output: output
                .into_iter()
                .filter(|&(_, at)| r[at])
                .map(|(i, _)| i)
                .collect(),
        })
    }

    /// The shutdown timeout, or the grace after a backend died, ran out.
    fn on_timer(&mut self) -> u8 {
        let name = &self.args.name;
        if let Some((daemon, status, said)) = &self.lost {
            // The VMM did not follow its backend within the grace time.
            sandbox_core::say!(
                "vm-init: {name}: {daemon} {status}{said}: the VM cannot go on, tearing it down"
            );
            return EXIT_VMM_FAILED;
        }
        sandbox_core::say!(
            "vm-init: {name}: the guest did not power off within {} s: stopping the VMM",
            self.args.shutdown_timeout.as_secs()
        );
        let _ = self.control.force_stop();
        EXIT_TIMEOUT
    }

    /// The mode's own fd is readable: the VMM connected to gpu.sock, or
    /// its service said something. Returns an exit code when the VM is
    /// done.
    fn on_mode_fd(&mut self) -> Result<Option<u8>, Error> {
        match self.mode {
            Mode::Daemons { .. } => self.start_gpu_daemon().map(|()| None),
            Mode::Services { .. } => self.on_vmm_service(),
        }
    }

    /// The VMM connected to gpu.sock: the GPU daemon gets that connection
    /// (crosvm's --fd takes a connected socket, see wrap-gpu's policy.rs)
    /// and the compositor's socket the outer resolved.
    fn start_gpu_daemon(&mut self) -> Result<(), Error> {
        let Mode::Daemons { gpu_listener, .. } = &mut self.mode else {
            return Ok(());
        };
        let l = gpu_listener.take().expect("polled, so present");
        match l.accept() {
            Ok((conn, _)) => {
                let compositor = &self.vm.gpu.as_ref().expect("gpu.sock means a GPU").tree;
                self.daemons.push(daemon(
                    self.vm,
                    self.cgroup.as_ref(),
                    ("the GPU daemon", daemon::GPU),
                    bin::WRAP_GPU,
                    self.args.gpu.as_deref(),
                    &[
                        (conn.as_fd(), fd::GPU_CONNECTION),
                        (compositor.as_fd(), fd::GPU_COMPOSITOR),
                    ],
                )?);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Mode::Daemons { gpu_listener, .. } = &mut self.mode {
                    *gpu_listener = Some(l);
                }
            }
            Err(e) => return Err(Error::sys("accept on gpu.sock", e)),
        }
        Ok(())
    }

    /// The VMM's events or API answer. Without --services its readiness
    /// is the VM's; with --services the VMM's service says it (see reap).
    fn on_vmm(&mut self) -> Result<Option<u8>, Error> {
        match self.control.on_readable()? {
            Said::Ready if matches!(self.mode, Mode::Daemons { .. }) => self.announce_ready()?,
            // No guest will power off (cloud-hypervisor created over its
            // API, never booted): nothing to wait the timeout for.
            Said::NotRunning => {
                let name = &self.args.name;
                sandbox_core::say!("vm-init: {name}: the VM is not running: stopping its VMM");
                // (If that fails too, the shutdown timer still runs.)
                if let Err(e) = self.control.force_stop() {
                    sandbox_core::say!("vm-init: {name}: {e}");
                }
            }
            _ => {}
        }
        Ok(None)
    }

    /// s6 readiness, once, and one line.
    fn announce_ready(&mut self) -> Result<(), Error> {
        self.ready = true;
        if let Some(fd) = self.notify.take() {
            notify_ready(fd)?;
        }
        sandbox_core::say!(
            "vm-init: {}: ready (slot {})",
            self.args.name,
            self.slot.index()
        );
        Ok(())
    }

    /// SIGTERM, SIGINT, SIGHUP: a graceful power-off (before readiness:
    /// stop at once). Returns an exit code when the VM is done.
    fn on_signals(&mut self) -> Result<Option<u8>, Error> {
        let name = &self.args.name;
        while let Some(sig) = self.sigfd.read()? {
            if sig == SIGCHLD || self.stopping || self.lost.is_some() {
                continue;
            }
            // Ready as announced: by the VMM's stream, or with --services
            // by its service (cloud-hypervisor created over its API has no
            // event stream).
            if !self.ready {
                sandbox_core::say!(
                    "vm-init: {name}: signal {sig} before the VM was ready: stopping now"
                );
                let _ = self.control.force_stop();
                return Ok(Some(0));
            }
            self.stopping = true;
            if let Mode::Services { scan, .. } = &self.mode {
                // The VMM's supervise must not start it again when the
                // guest powers off.
                services::run_once(scan, daemon::VMM)?;
            }
            sandbox_core::say!("vm-init: {name}: signal {sig}: asking the guest to power off");
            if let Err(e) = self.control.request_powerdown() {
                sandbox_core::say!("vm-init: {name}: {e}");
            }
            self.timer.arm(self.args.shutdown_timeout)?;
        }
        Ok(None)
    }

    /// --services: the VMM's service said something. Ready: so is the VM
    /// (for a service with a notification-fd, its helper said so:
    /// cloud-hypervisor created over its API). Down: its daemon died,
    /// which ends the VM.
    fn on_vmm_service(&mut self) -> Result<Option<u8>, Error> {
        let name = self.args.name.as_str();
        let said = match &mut self.mode {
            Mode::Services { vmm_service, .. } => vmm_service.read()?,
            Mode::Daemons { .. } => return Ok(None),
        };
        match said {
            ServiceEvent::Nothing => Ok(None),
            ServiceEvent::Ready => {
                self.announce_ready()?;
                Ok(None)
            }
            ServiceEvent::Down if self.stopping => {
                sandbox_core::say!("vm-init: {name}: the guest powered off");
                Ok(Some(0))
            }
            ServiceEvent::Down => {
                sandbox_core::say!(
                    "vm-init: {name}: the VMM's service went down: the VM cannot go on"
                );
                Ok(Some(EXIT_VMM_FAILED))
            }
        }
    }

    /// One line per bound a daemon met since the last look: which daemon,
    /// which bound (memory.max, or one above it: the kernel killed its
    /// whole leaf; pids.max: forks were refused). Its death, if it died,
    /// is said as any other.
    fn say_bounds(&mut self) -> Result<(), Error> {
        let name = self.args.name.as_str();
        for leaf in self.cgroup.iter_mut().flat_map(|c| &mut c.leaves) {
            for news in leaf.news()? {
                sandbox_core::say!("vm-init: {name}: {} {news}", leaf.name);
            }
        }
        Ok(())
    }

    /// Reaps everything that exited, ours or orphans reparented to us.
    /// Returns an exit code once the VMM is gone.
    fn reap(&mut self) -> Result<Option<u8>, Error> {
        let name = self.args.name.as_str();
        // A daemon killed at its memory.max: the bound first, then its end.
        self.say_bounds()?;
        while let Some((pid, status)) = reap_any()? {
            let Some(i) = self
                .daemons
                .iter()
                .position(|d| d.child.pid.as_raw_nonzero().get() == pid)
            else {
                continue;
            };
            let mut d = self.daemons.remove(i);
            d.output.finish();
            let said = d.output.said(status);
            if self.mode.is_vmm(pid) {
                if let Some((daemon, status, said)) = self
                    .lost
                    .take()
                    .filter(|(_, s, _)| *s != ExitStatus::Code(0))
                {
                    sandbox_core::say!("vm-init: {name}: {daemon} {status}{said}: the VM cannot go on, tearing it down");
                    return Ok(Some(EXIT_VMM_FAILED));
                }
                return Ok(Some(vmm_exit(name, status, &said, self.stopping)));
            }
            if !self.stopping && self.lost.is_none() {
                // virtiofsd also exits, with 0, when the VMM closes its
                // connection on the way out: give the VMM a moment to be
                // reaped, so its status (a guest poweroff) decides.
                self.lost = Some((d.name, status, said));
                self.timer.arm(BACKEND_GRACE)?;
            }
        }
        Ok(None)
    }
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
