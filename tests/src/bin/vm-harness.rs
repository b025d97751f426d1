//! A minimal VM for the escape matrix, built from the same sandbox-core
//! calls vm-init makes: one clone into user + PID + mount namespaces, id
//! maps written by this (host root) process, PID 1 non-dumpable with the
//! VM's mount namespace and no nested user namespaces, then services
//! started through test-wrap. Exits with the probe's status.
//!
//! vm-harness --state-dir DIR --slot N --name NAME --scenario SCENARIO
//!            [--profile user|root] [--weaken X] [--tcp-port P] [--other-vm NAME]
//!
//! Scenarios: hold (a sibling only, until killed; prints "ready"),
//! normal (sibling B, then the probe as A), sibling-gone (B exits before A
//! runs), pid-reused (B exits and a new sibling gets B's PID).

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::process::{kill_process, Signal};
use sandbox_core::contract::fd;
use sandbox_core::ids::Slot;
use sandbox_core::ns::{clone_vm, Cloned};
use sandbox_core::parent::ParentWatch;
use sandbox_core::spawn::{self, Child, Command};
use sandbox_core::{mount, prctl, Error, VmName};
use tests::{abstract_name, bin_dir, UID_A, UID_B, UID_B2};

struct Args {
    state_dir: PathBuf,
    slot: Slot,
    name: VmName,
    scenario: String,
    profile: String,
    weaken: Option<String>,
    tcp_port: Option<String>,
    other_vm: Option<String>,
    bench_wrapper: Option<PathBuf>,
    iterations: usize,
}

fn main() {
    let args = parse();
    let code = match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("vm-harness: {}: {e}", args.name);
            e.exit_code().into()
        }
    };
    std::process::exit(code);
}

fn run(args: &Args) -> Result<i32, Error> {
    let watch = ParentWatch::of_self()?;
    // As vm-init's outer does: the VM's session keyring is host root's.
    sandbox_core::keyring::join_new_session_keyring()?;
    match clone_vm()? {
        Cloned::Parent(child) => {
            child.write_id_maps(args.slot, &[])?;
            // As vm-init's outer does: PID 1 may not search the state dir.
            let vm_dir = mount::clone_tree(&args.state_dir.join(args.name.as_str()))?;
            let running = child.release(&[std::os::fd::AsFd::as_fd(&vm_dir)])?;
            let status = spawn::wait(running.pid)?;
            Ok(status.relay_code().into())
        }
        Cloned::Child(pending) => {
            let vm_dir = pending
                .wait_for_id_maps()?
                .into_iter()
                .next()
                .ok_or_else(|| Error::Refused("no mount of the VM directory".into()))?;
            watch.arm_and_check()?;
            drop(watch);
            pid1(args, vm_dir)
        }
    }
}

fn pid1(args: &Args, vm_tree: OwnedFd) -> Result<i32, Error> {
    prctl::not_dumpable()?;
    let vm_dir = mount::build_vm_namespace(&args.state_dir, args.name.as_str(), &vm_tree)?;
    drop(vm_tree);
    // As vm-init's PID 1 does for wrap-virtiofsd (its fd 4).
    let guest_ids = sandbox_core::ns::guest_ids_user_namespace()?;
    sandbox_core::ns::forbid_user_namespaces()?;
    let name = args.name.as_str();
    if let Some(wrapper) = &args.bench_wrapper {
        return bench_wrapper(wrapper, &vm_dir, args.iterations, guest_ids.as_raw_fd());
    }
    let b = start_target(args, &vm_dir, UID_B)?;
    let mut abstracts = vec![abstract_name(name, UID_B)];
    let mut pids = vec![1, b.pid.as_raw_nonzero().get()];
    let mut gone = vec![];
    match args.scenario.as_str() {
        "hold" => {
            println!("ready");
            std::io::stdout()
                .flush()
                .map_err(|e| Error::sys("write ready", e))?;
            spawn::wait(b.pid)?;
            return Ok(0);
        }
        "normal" => {}
        "sibling-gone" | "pid-reused" => {
            let old = b.pid.as_raw_nonzero().get();
            kill_process(b.pid, Signal::KILL).map_err(|e| Error::sys("kill sibling", e))?;
            spawn::wait(b.pid)?;
            pids.pop();
            abstracts.clear();
            if args.scenario == "pid-reused" {
                // PID 1 owns the PID namespace: make the next PID the one B had.
                std::fs::write("/proc/sys/kernel/ns_last_pid", (old - 1).to_string())
                    .map_err(|e| Error::path("write", "/proc/sys/kernel/ns_last_pid", e))?;
                let b2 = start_target(args, &vm_dir, UID_B2)?;
                let reused = b2.pid.as_raw_nonzero().get();
                if reused != old {
                    return Err(Error::Refused(format!(
                        "PID {old} was not reused (got {reused})"
                    )));
                }
                pids.push(reused);
                abstracts.push(abstract_name(name, UID_B2));
                std::mem::forget(b2);
            } else {
                gone.push(old);
            }
        }
        other => return Err(Error::Usage(format!("unknown scenario {other}"))),
    }
    let mut probe: Vec<OsString> = vec![
        bin_dir().join("probe").into(),
        "--profile".into(),
        args.profile.clone().into(),
        "--state-dir".into(),
        args.state_dir.clone().into(),
        "--vm".into(),
        name.into(),
        "--own-dir".into(),
        vm_dir.join("out-a").into(),
    ];
    for pid in pids {
        probe.extend(["--pid".into(), pid.to_string().into()]);
    }
    for pid in gone {
        probe.extend(["--gone-pid".into(), pid.to_string().into()]);
    }
    for a in abstracts {
        probe.extend(["--abstract".into(), a.into()]);
    }
    if let Some(port) = &args.tcp_port {
        probe.extend(["--tcp-port".into(), port.into()]);
    }
    if let Some(other) = &args.other_vm {
        probe.extend(["--other-vm".into(), other.into()]);
    }
    let a = start_wrapped(
        args,
        &args.profile,
        UID_A,
        &vm_dir,
        &vm_dir.join("out-a"),
        None,
        &probe,
    )?;
    let status = spawn::wait(a.pid)?;
    Ok(status.relay_code().into())
}

/// `cargo xtask bench`: starts WRAPPER (wrap-virtiofsd) --program /bin/true
/// VMDIR (with a socket and the guest-ids user namespace at the fds
/// vm-init passes) `n` times from PID 1 and prints each
/// time from spawn to the exit of /bin/true, in microseconds: the cost of
/// the wrapper's whole policy, exec of the daemon included.
/// Also prints the time of /bin/true alone (bench-true-us), the floor of
/// any spawn from here, so the bench can report the wrapper's own cost.
fn bench_wrapper(wrapper: &Path, vm_dir: &Path, n: usize, userns: i32) -> Result<i32, Error> {
    let (listener, _peer) =
        std::os::unix::net::UnixStream::pair().map_err(|e| Error::sys("socketpair", e))?;
    for (label, sandboxed) in [("bench-true-us", false), ("bench-wrap-us", true)] {
        let times = time_spawns(
            wrapper,
            vm_dir,
            n,
            sandboxed,
            [listener.as_raw_fd(), userns],
        )?;
        println!("{label} {}", times.join(" "));
    }
    Ok(0)
}

fn time_spawns(
    wrapper: &Path,
    vm_dir: &Path,
    n: usize,
    sandboxed: bool,
    [listener, userns]: [i32; 2],
) -> Result<Vec<String>, Error> {
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let mut cmd = if sandboxed {
            let mut c = Command::new(wrapper)?;
            c.arg("--program")?.arg("/bin/true")?;
            c.arg("--allow-no-cgroups")?.arg(vm_dir)?;
            c
        } else {
            Command::new(Path::new("/bin/true"))?
        };
        cmd.pass_fd(listener, fd::VIRTIOFSD_LISTENER);
        cmd.pass_fd(userns, fd::VIRTIOFSD_USERNS);
        let start = std::time::Instant::now();
        let child = spawn::spawn(&cmd)?;
        let status = spawn::wait(child.pid)?;
        times.push(start.elapsed().as_micros().to_string());
        if status != spawn::ExitStatus::Code(0) {
            return Err(Error::Refused(format!("{} {status}", wrapper.display())));
        }
    }
    Ok(times)
}

/// Starts sibling B (a target) as `uid` and waits for its readiness line.
fn start_target(args: &Args, vm_dir: &Path, uid: u32) -> Result<Child, Error> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| Error::sys("pipe", e))?;
    let target: Vec<OsString> = vec![
        bin_dir().join("target").into(),
        abstract_name(args.name.as_str(), uid).into(),
    ];
    let child = start_wrapped(
        args,
        "user",
        uid,
        vm_dir,
        &vm_dir.join("out-b"),
        Some(&write),
        &target,
    )?;
    drop(write);
    let mut byte = [0u8; 1];
    let mut read = std::fs::File::from(read);
    match read.read(&mut byte) {
        Ok(1) => Ok(child),
        _ => Err(Error::Refused(format!(
            "sibling uid {uid} did not become ready"
        ))),
    }
}

fn start_wrapped(
    args: &Args,
    profile: &str,
    uid: u32,
    vm_dir: &Path,
    own_dir: &Path,
    stdout: Option<&OwnedFd>,
    program: &[OsString],
) -> Result<Child, Error> {
    let mut cmd = Command::new(&bin_dir().join("test-wrap"))?;
    cmd.arg("--profile")?.arg(profile)?;
    cmd.arg("--uid")?.arg(uid.to_string())?;
    cmd.arg("--vm-dir")?
        .arg(vm_dir)?
        .arg("--own-dir")?
        .arg(own_dir)?;
    if let Some(w) = &args.weaken {
        if program[0] == bin_dir().join("probe") {
            cmd.arg("--weaken")?.arg(w)?;
        }
    }
    cmd.arg("--")?;
    for a in program {
        cmd.arg(a)?;
    }
    if let Some(fd) = stdout {
        cmd.pass_fd(fd.as_raw_fd(), 1);
    }
    spawn::spawn(&cmd)
}

fn parse() -> Args {
    let mut a = Args {
        state_dir: PathBuf::new(),
        slot: Slot::new(0).expect("slot 0"),
        name: VmName::parse("x".as_ref()).expect("x is a name"),
        scenario: "normal".into(),
        profile: "user".into(),
        weaken: None,
        tcp_port: None,
        other_vm: None,
        bench_wrapper: None,
        iterations: 20,
    };
    let mut it = std::env::args_os().skip(1);
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| usage());
        let s = v.to_string_lossy().into_owned();
        match k.to_str().unwrap_or("") {
            "--state-dir" => a.state_dir = v.into(),
            "--slot" => {
                a.slot = s
                    .parse()
                    .ok()
                    .and_then(Slot::new)
                    .unwrap_or_else(|| usage())
            }
            "--name" => {
                a.name = VmName::parse(&v).unwrap_or_else(|e| {
                    eprintln!("vm-harness: {e}");
                    std::process::exit(100)
                })
            }
            "--scenario" => a.scenario = s,
            "--profile" => a.profile = s,
            "--weaken" => a.weaken = Some(s),
            "--tcp-port" => a.tcp_port = Some(s),
            "--other-vm" => a.other_vm = Some(s),
            "--bench-wrapper" => a.bench_wrapper = Some(v.into()),
            "--iterations" => a.iterations = s.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    a
}

fn usage() -> ! {
    eprintln!("vm-harness: usage: vm-harness --state-dir DIR --slot N --name NAME --scenario hold|normal|sibling-gone|pid-reused [--profile user|root] [--weaken X] [--tcp-port P] [--other-vm NAME]");
    std::process::exit(100);
}
