//! The probe as the escape matrix's service: a test-wrap'd program that
//! tries what a compromised daemon would against its siblings, its VM and
//! the host.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::path::{Path, PathBuf};

use rustix::process::{kill_process, pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
use sandbox_core::attempts;
use sandbox_core::contract::VmDir;
use sandbox_core::Errno;
use tests::Privilege;

use crate::escapes::*;
use crate::report::*;
/// The matrix's view of this service: its profile, its VM, and the
/// siblings and names the test set up around it.
#[derive(Clone, Debug)]
struct Args {
    profile: Privilege,
    state_dir: PathBuf,
    vm: String,
    own_dir: PathBuf,
    other_vm: Option<String>,
    pids: Vec<i32>,
    gone: Vec<i32>,
    abstracts: Vec<String>,
    tcp_port: Option<u16>,
}

fn parse() -> Args {
    let mut profile = Privilege::User;
    let (mut state_dir, mut vm, mut own_dir, mut other_vm) =
        (PathBuf::new(), String::new(), PathBuf::new(), None);
    let (mut pids, mut gone, mut abstracts, mut tcp_port) = (
        Vec::<i32>::new(),
        Vec::<i32>::new(),
        Vec::<String>::new(),
        None,
    );
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_else(|| usage());
        match a.as_str() {
            "--profile" => profile = Privilege::parse(&v).unwrap_or_else(|| usage()),
            "--state-dir" => state_dir = v.into(),
            "--vm" => vm = v,
            "--own-dir" => own_dir = v.into(),
            "--other-vm" => other_vm = Some(v),
            "--pid" => pids.push(v.parse().unwrap_or_else(|_| usage())),
            "--gone-pid" => gone.push(v.parse().unwrap_or_else(|_| usage())),
            "--abstract" => abstracts.push(v),
            "--tcp-port" => tcp_port = Some(v.parse::<u16>().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
    }
    if vm.is_empty() || own_dir.as_os_str().is_empty() || state_dir.as_os_str().is_empty() {
        usage();
    }
    Args {
        profile,
        state_dir,
        vm,
        own_dir,
        other_vm,
        pids,
        gone,
        abstracts,
        tcp_port,
    }
}

pub(crate) fn run() {
    let a = parse();
    let mut p = Probe::new(None);
    processes(&mut p, &a);
    sockets(&mut p, &a);
    files(&mut p, &a);
    privilege(&mut p, a.profile);
    granted(&mut p, &a);
    std::process::exit(i32::from(p.close() > 0));
}

/// Other processes of the VM and every PID of its namespace.
fn processes(p: &mut Probe, a: &Args) {
    let Args { pids, gone, .. } = a.clone();
    let me = std::process::id() as i32;
    // Other processes of the VM: signals, ptrace, memory, /proc. The
    // service runs in a PID namespace of its own (its wrapper's reaper is
    // its PID 1): PID 1 is there, and refuses; a process of the VM
    // outside it cannot even be named (ESRCH).
    for &pid in &pids {
        let target = Pid::from_raw(pid).expect("pid > 0");
        let denied = if pid == 1 { EPERM } else { ESRCH };
        p.check(
            &format!("kill({pid}, SIGKILL)"),
            denied,
            rx(kill_process(target, Signal::KILL)),
        );
        p.check(
            &format!("kill({pid}, 0)"),
            denied,
            rx(rustix::process::test_kill_process(target)),
        );
        p.check(
            &format!("ptrace(PTRACE_ATTACH, {pid})"),
            denied,
            attempts::ptrace_attach(pid),
        );
        p.check(
            &format!("process_vm_readv({pid})"),
            denied,
            attempts::process_vm_read(pid, 0x40_0000),
        );
        match pidfd_open(target, PidfdFlags::empty()) {
            Ok(fd) => {
                p.check(
                    &format!("pidfd_send_signal({pid}, SIGKILL)"),
                    EPERM,
                    rx(pidfd_send_signal(&fd, Signal::KILL)),
                );
                p.check(
                    &format!("pidfd_getfd({pid}, 0)"),
                    EPERM,
                    rx(rustix::process::pidfd_getfd(
                        &fd,
                        0,
                        rustix::process::PidfdGetfdFlags::empty(),
                    )),
                );
            }
            Err(e) => p.record(
                &format!("pidfd_open({pid})"),
                if pid == 1 { "success" } else { "ESRCH" },
                &Errno::from(e).name(),
                pid != 1 && Errno::from(e) == Errno::ESRCH,
            ),
        }
        for file in ["mem", "environ", "maps", "cmdline", "status", "fd"] {
            let path = format!("/proc/{pid}/{file}");
            p.check(&format!("open {path}"), ENOENT, io(fs::File::open(&path)));
        }
    }
    for &pid in &gone {
        let target = Pid::from_raw(pid).expect("pid > 0");
        p.check(
            &format!("kill({pid}, SIGKILL) of an exited sibling"),
            ESRCH,
            rx(kill_process(target, Signal::KILL)),
        );
        p.check(
            &format!("open /proc/{pid}/status of an exited sibling"),
            ENOENT,
            io(fs::File::open(format!("/proc/{pid}/status"))),
        );
    }
    // Every other PID number of the namespace: nothing may be signalled.
    p.kill_sweep(me);
    let mut visible: Vec<String> = fs::read_dir("/proc")
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                .collect()
        })
        .unwrap_or_default();
    visible.sort();
    p.record(
        "ls /proc: processes visible",
        &format!("[{me}]"),
        &format!("{visible:?}").replace('"', ""),
        visible == [me.to_string()],
    );
}

/// Sockets: siblings' abstract names, another VM's, TCP.
fn sockets(p: &mut Probe, a: &Args) {
    let Args {
        abstracts,
        other_vm,
        tcp_port,
        ..
    } = a.clone();
    // Abstract unix sockets of siblings: the Landlock scope refuses them.
    for name in &abstracts {
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract addr");
        p.check(
            &format!("connect @{name}"),
            EPERM,
            io(UnixStream::connect_addr(&addr)),
        );
    }
    // Another VM's: they live in its network namespace, not in ours.
    if let Some(other) = &other_vm {
        let name = tests::abstract_name(other, tests::UID_B);
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).expect("abstract addr");
        p.check(
            &format!("connect @{name} (another VM's)"),
            ECONNREFUSED,
            io(UnixStream::connect_addr(&addr)),
        );
    }
    // TCP, both directions.
    if let Some(port) = tcp_port {
        p.check(
            &format!("TCP connect 127.0.0.1:{port}"),
            EACCES,
            io(TcpStream::connect(("127.0.0.1", port))),
        );
    }
    p.check(
        "TCP bind 127.0.0.1:0",
        EACCES,
        io(TcpListener::bind(("127.0.0.1", 0))),
    );
    p.check(
        "TCP bind 0.0.0.0:8080",
        EACCES,
        io(TcpListener::bind(("0.0.0.0", 8080))),
    );
}

/// Files: the state dir, the host's, the VM directory, and exec.
fn files(p: &mut Probe, a: &Args) {
    let Args {
        state_dir,
        vm,
        other_vm,
        own_dir,
        ..
    } = a.clone();
    // The state dir: only this VM's directory exists.
    if let Some(other) = &other_vm {
        let dir = state_dir.join(other);
        p.check(
            &format!("stat {}", dir.display()),
            ENOENT,
            io(fs::metadata(&dir)),
        );
        p.check(
            &format!("create {}/x", dir.display()),
            ENOENT,
            create(&dir.join("x")),
        );
    }
    // Not even listable: the state dir is in no rule of the policy.
    p.check(
        &format!("ls {}", state_dir.display()),
        EACCES,
        io(fs::read_dir(&state_dir)),
    );

    // Host files: the service's root is a read-only tmpfs holding its
    // view (ERofs where a path of it is written), and nothing else of the
    // host exists (ENOENT).
    for path in ["/usr/vm-sandbox-probe", "/vm-sandbox-probe"] {
        p.check(&format!("create {path}"), EROFS, create(Path::new(path)));
    }
    p.check(
        "create /var/tmp/vm-sandbox-probe",
        ENOENT,
        create(Path::new("/var/tmp/vm-sandbox-probe")),
    );
    p.check(
        "open /etc/passwd for writing",
        ENOENT,
        io(fs::OpenOptions::new().append(true).open("/etc/passwd")),
    );
    let vm_dir = state_dir.join(&vm);
    p.check(
        "create VM/config/evil",
        EROFS,
        create(&VmDir::new(&vm_dir).config_file("evil")),
    );
    p.check(
        "create VM/evil (outside own paths)",
        EROFS,
        create(&vm_dir.join("evil")),
    );
    p.check(
        "create STATE_DIR/evil",
        EROFS,
        create(&state_dir.join("evil")),
    );
    p.check("read /etc/shadow", ENOENT, io(fs::read("/etc/shadow")));
    p.check("ls /root", ENOENT, io(fs::read_dir("/root")));
    p.check(
        "read /etc/hostname (not in policy)",
        ENOENT,
        io(fs::read("/etc/hostname")),
    );
    no_kvm(p);
    host_reach(p, &[]);
    keyrings(p, "matrix", &[]);
    // Where the view does let it write, Landlock still decides: nothing
    // written there runs.
    p.check(
        "exec a file written to OWN",
        EACCES,
        exec_written(&own_dir.join("probe-exec")),
    );
    p.check(
        "open /proc/1/root/etc/passwd",
        ENOENT,
        io(fs::File::open("/proc/1/root/etc/passwd")),
    );
}

/// Privilege: namespaces, mounts, ids, capabilities.
fn privilege(p: &mut Probe, profile: Privilege) {
    namespaces_and_mounts(p);
    p.check("chroot /tmp", EPERM, rx(rustix::process::chroot("/tmp")));
    if profile == Privilege::User {
        p.check(
            "setuid(0)",
            EPERM,
            rx(rustix::thread::set_thread_uid(rustix::process::Uid::ROOT)),
        );
        p.check(
            "setgid(0)",
            EPERM,
            rx(rustix::thread::set_thread_gid(rustix::process::Gid::ROOT)),
        );
    }
    let caps = format!("{:016x}", profile.caps().bits());
    p.status_is("NoNewPrivs", "NoNewPrivs", "1");
    p.status_is("CapEff", "CapEff", &caps);
    p.status_is("CapBnd", "CapBnd", &caps);
    p.status_is("CapAmb", "CapAmb", "0000000000000000");
}

/// What the policy grants works, and only that.
fn granted(p: &mut Probe, a: &Args) {
    let Args {
        own_dir,
        state_dir,
        vm,
        ..
    } = a.clone();
    let vm_dir = state_dir.join(&vm);
    // Positive controls: what the policy grants works.
    p.check(
        "create OWN/probe-out",
        Want::Ok,
        create(&own_dir.join("probe-out")),
    );
    p.check(
        "read VM/config/marker",
        Want::Ok,
        io(fs::read(
            VmDir::new(&vm_dir).config_file(tests::new_vm::MARKER),
        )),
    );
    p.check(
        "create /tmp/probe-marker",
        Want::Ok,
        create(Path::new("/tmp/probe-marker")),
    );
    p.check(
        "create /dev/shm/probe-marker",
        Want::Ok,
        create(Path::new("/dev/shm/probe-marker")),
    );
    p.check(
        "read /proc/self/status",
        Want::Ok,
        io(fs::read("/proc/self/status")),
    );
    p.check(
        "memfd_create",
        Want::Ok,
        rx(rustix::fs::memfd_create(
            "probe",
            rustix::fs::MemfdFlags::CLOEXEC,
        )),
    );
    // ... and a sibling's private tmpfs is not ours.
    p.check(
        "read /tmp/target-marker (sibling's /tmp)",
        ENOENT,
        io(fs::read("/tmp/target-marker")),
    );
    p.check(
        "read /dev/shm/target-marker (sibling's)",
        ENOENT,
        io(fs::read("/dev/shm/target-marker")),
    );
}

pub(crate) fn usage() -> ! {
    eprintln!("probe: usage: probe --profile user|root --state-dir DIR --vm NAME --own-dir DIR [--pid N]... [--gone-pid N]... [--abstract NAME]... [--other-vm NAME] [--tcp-port P]");
    std::process::exit(100);
}
