//! The probe: runs inside a sandbox in place of a daemon and tries what a
//! compromised daemon would try. One line per attempt:
//!
//!     ok   kill(1, SIGKILL)                  expected EPERM    got EPERM
//!
//! and a last line `probe: N attempts, M failed`; exits 1 if any failed.
//! Every expectation is the errno the kernel gives today for that layer
//! (Landlock: EACCES for files and TCP, EPERM for scopes; hidepid: ENOENT).
//!
//! probe --profile user|root --state-dir DIR --vm NAME --own-dir DIR
//!       [--pid N]... [--gone-pid N]... [--abstract NAME]... [--other-vm NAME]
//!       [--tcp-port P]

#![forbid(unsafe_code)]

use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::path::{Path, PathBuf};

use rustix::process::{kill_process, pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};
use sandbox_core::attempts;
use sandbox_core::policy::DEFAULT_MEMLOCK;
use sandbox_core::seccomp::{self, Group, Verdict};
use sandbox_core::vmdir::{fd, VmDir};
use sandbox_core::Errno;
use syscalls::Sysno;
use tests::{vhost_user, Privilege};

/// What an attempt must give.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    Ok,
    Err(Errno),
}

impl std::fmt::Display for Want {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Want::Ok => f.write_str("success"),
            Want::Err(e) => f.write_str(&e.name()),
        }
    }
}

struct Probe {
    attempts: usize,
    failed: usize,
    /// The seccomp list the daemon runs under, if the wrapper installs one.
    filter: Option<&'static [Group]>,
}

/// A line of /proc/self/status, after the colon.
fn status_field(name: &str) -> String {
    fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
        .unwrap_or_default()
}

impl Probe {
    /// kill(PID, 0) of every PID of the namespace but ours: none may work.
    fn kill_sweep(&mut self, me: i32) {
        let signalled: Vec<i32> = (1..=512)
            .filter(|&n| n != me)
            .filter(|&n| {
                rustix::process::test_kill_process(Pid::from_raw(n).expect("n > 0")).is_ok()
            })
            .collect();
        self.record(
            "kill(PID, 0) for PID 1..512 but self",
            "none",
            &format!("{signalled:?}"),
            signalled.is_empty(),
        );
    }

    /// The soft limit of a /proc/self/limits row must read `want`.
    fn limit_is(&mut self, row: &str, want: &str) {
        let limits = fs::read_to_string("/proc/self/limits").unwrap_or_default();
        let got = limits
            .lines()
            .find_map(|l| l.strip_prefix(row))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or("?")
            .to_owned();
        self.record(&format!("limit: {row}"), want, &got, got == want);
    }

    /// A /proc/self/status field must read `want` (CapEff, NoNewPrivs, ...).
    fn status_is(&mut self, attempt: &str, field: &str, want: &str) {
        let got = status_field(field);
        self.record(attempt, want, &got, got == want);
    }

    /// Runs `attempt` unless one of its `calls` is off the seccomp list
    /// the probe runs under: that would kill it, so it prints the call
    /// instead (`off the allow-list: NAME ARGS`), which gpu.rs then makes
    /// alone in a VM of its own and sees killed. Not counted as an attempt.
    fn filtered(
        &mut self,
        attempt: &str,
        calls: &[(Sysno, [u64; 6])],
        want: Want,
        f: impl FnOnce() -> Result<(), Errno>,
    ) {
        let off = self.filter.and_then(|list| {
            calls
                .iter()
                .find(|(call, args)| seccomp::allows(list, *call, args) == Verdict::Kill)
        });
        match off {
            Some((call, args)) => {
                let args: Vec<String> = args.iter().map(u64::to_string).collect();
                println!(
                    "kill {attempt:<52} off the allow-list: {} {}",
                    call.name(),
                    args.join(" ")
                );
            }
            None => self.check(attempt, want, f()),
        }
    }

    fn check(&mut self, attempt: &str, want: Want, got: Result<(), Errno>) {
        let got = match got {
            Ok(()) => Want::Ok,
            Err(e) => Want::Err(e),
        };
        self.record(attempt, &want.to_string(), &got.to_string(), want == got);
    }

    fn record(&mut self, attempt: &str, expected: &str, got: &str, ok: bool) {
        self.attempts += 1;
        if !ok {
            self.failed += 1;
        }
        let verdict = if ok { "ok  " } else { "FAIL" };
        println!("{verdict} {attempt:<52} expected {expected:<10} got {got}");
    }
}

fn io(r: std::io::Result<impl Sized>) -> Result<(), Errno> {
    r.map(drop).map_err(Errno::from)
}

fn rx(r: rustix::io::Result<impl Sized>) -> Result<(), Errno> {
    r.map(drop).map_err(Errno::from)
}

fn create(path: &Path) -> Result<(), Errno> {
    io(fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path))
}

/// What a compromised daemon would go for on a stock host, whatever its
/// role: host files, devices and sockets outside its view, the host's
/// network, abstract names and SysV IPC (the host's side is
/// `tests::bait`, set up by the test).
fn host_reach(p: &mut Probe, table: &[PathBuf]) {
    use tests::bait;
    // Every path socket its view holds, wherever: only its table's connect.
    let (found, connected) = sockets_in_view();
    let mut want: Vec<PathBuf> = table.to_vec();
    want.sort();
    p.record(
        &format!(
            "walk the view ({} sockets): those that connect",
            found.len()
        ),
        &format!("{want:?}"),
        &format!("{connected:?}"),
        connected == want,
    );
    p.check(
        "read /etc/passwd (not in the view)",
        ENOENT,
        io(fs::read("/etc/passwd")),
    );
    p.check(
        "create /etc/vm-sandbox-probe",
        EROFS,
        create(Path::new("/etc/vm-sandbox-probe")),
    );
    for dev in [
        "/dev/kmsg",
        "/dev/console",
        "/dev/tty0",
        "/dev/vda",
        "/dev/mem",
    ] {
        p.check(
            &format!("open {dev}"),
            ENOENT,
            io(fs::OpenOptions::new().read(true).write(true).open(dev)),
        );
    }
    // Host services' sockets: a 0666 one under /run, syslog, journald,
    // D-Bus, X11. None is in the view: none can be named.
    for path in [
        bait::SOCKET,
        "/dev/log",
        "/run/systemd/journal/socket",
        "/var/run/dbus/system_bus_socket",
        "/tmp/.X11-unix/X0",
    ] {
        p.check(
            &format!("connect {path}"),
            ENOENT,
            io(UnixStream::connect(path)),
        );
    }
    // The VM's network namespace is empty: no route to the host's
    // loopback, no ping socket, no host abstract name.
    p.filtered(
        &format!("UDP sendto 127.0.0.1:{}", bait::UDP_PORT),
        &[(Sysno::socket, [AF_INET, SOCK_DGRAM, 0, 0, 0, 0])],
        Want::Err(Errno(101)),
        || {
            io(std::net::UdpSocket::bind(("0.0.0.0", 0))
                .and_then(|u| u.send_to(b"escape", ("127.0.0.1", bait::UDP_PORT))))
        },
    );
    p.filtered(
        "socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)",
        &[(Sysno::socket, [AF_INET, SOCK_DGRAM, 1, 0, 0, 0])],
        EACCES,
        || {
            rx(rustix::net::socket(
                rustix::net::AddressFamily::INET,
                rustix::net::SocketType::DGRAM,
                Some(rustix::net::ipproto::ICMP),
            ))
        },
    );
    let host_name = SocketAddr::from_abstract_name(bait::ABSTRACT.as_bytes()).unwrap();
    p.check(
        &format!("connect @{} (the host's)", bait::ABSTRACT),
        ECONNREFUSED,
        io(UnixStream::connect_addr(&host_name)),
    );
    // A name bound here is the VM's own: no host client can reach it
    // (the test checks that from the host side).
    let squat = SocketAddr::from_abstract_name(b"vm-sandbox-squat").unwrap();
    let mut squatted = None;
    p.filtered(
        "bind @vm-sandbox-squat (the VM's own namespace)",
        &[(Sysno::bind, [0; 6])],
        Want::Ok,
        || {
            let l = std::os::unix::net::UnixListener::bind_addr(&squat).map_err(Errno::from)?;
            squatted = Some(l);
            Ok(())
        },
    );
    let unix = fs::read_to_string("/proc/net/unix").unwrap_or_default();
    let leaked: Vec<&str> = unix
        .lines()
        .filter(|l| l.contains(bait::SOCKET) || l.contains(bait::ABSTRACT))
        .collect();
    p.record(
        "/proc/net/unix: the host's sockets",
        "none",
        &format!("{leaked:?}"),
        leaked.is_empty(),
    );
    let interfaces: Vec<String> = fs::read_to_string("/proc/net/dev")
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter_map(|l| Some(l.split(':').next()?.trim().to_owned()))
        .collect();
    p.record(
        "network interfaces (/proc/net/dev)",
        "[lo]",
        &format!("{interfaces:?}").replace('"', ""),
        interfaces == ["lo"],
    );
    // No terminal to push input into, nothing read that was meant for vm-init.
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command's closing parenthesis: state ppid pgrp
    // session tty_nr ...
    let after: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let me = std::process::id().to_string();
    p.record(
        "session (its own) and controlling tty (none)",
        &format!("{me} 0"),
        &format!(
            "{} {}",
            after.get(3).unwrap_or(&"?"),
            after.get(4).unwrap_or(&"?")
        ),
        after.get(3) == Some(&me.as_str()) && after.get(4) == Some(&"0"),
    );
    let stdin = fs::read_link("/proc/self/fd/0").unwrap_or_default();
    p.record(
        "stdin",
        "/dev/null",
        &stdin.display().to_string(),
        stdin == Path::new("/dev/null"),
    );
    // SysV IPC is the VM's own: the host's segment does not exist here,
    // and one made here is gone with the VM.
    p.filtered(
        "shmget(the host's key)",
        &[(Sysno::shmget, [0; 6])],
        ENOENT,
        || attempts::shmget(bait::SHM_KEY, 0, false, 0).map(drop),
    );
    p.filtered(
        "shmget(IPC_CREAT) (the VM's own namespace)",
        &[(Sysno::shmget, [0; 6])],
        Want::Ok,
        || attempts::shmget(bait::PROBE_SHM_KEY, 4096, true, 0o666).map(drop),
    );
}

/// Walks every mount of the process's view (/proc/self/mountinfo; not
/// procfs or sysfs, which hold no sockets) and returns the path sockets
/// found and, of those, the ones connect(2) reaches, both sorted.
fn sockets_in_view() -> (Vec<PathBuf>, Vec<PathBuf>) {
    use std::os::unix::fs::FileTypeExt;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut todo: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| {
            let (head, tail) = l.split_once(" - ")?;
            let fstype = tail.split_whitespace().next()?;
            let point = head.split_whitespace().nth(4)?.replace("\\040", " ");
            (!matches!(fstype, "proc" | "sysfs")).then(|| PathBuf::from(point))
        })
        .collect();
    let (mut seen, mut found) = (std::collections::HashSet::new(), Vec::new());
    while let Some(path) = todo.pop() {
        if !seen.insert(path.clone()) {
            continue;
        }
        let Ok(meta) = fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_socket() {
            found.push(path);
        } else if meta.is_dir() {
            // Where Landlock lets it list: what it cannot list, it can
            // still not find.
            if let Ok(dir) = fs::read_dir(&path) {
                todo.extend(dir.filter_map(|e| Some(e.ok()?.path())));
            }
        }
    }
    found.sort();
    let connected = found
        .iter()
        .filter(|s| UnixStream::connect(s).is_ok())
        .cloned()
        .collect();
    (found, connected)
}

/// The VMM's table's sockets, from its argv: virtiofsd's and the GPU's.
fn vmm_sockets(argv: &[String]) -> Vec<PathBuf> {
    argv.windows(2)
        .filter(|w| w[0] == "--fs" || w[0] == "--gpu")
        .filter_map(|w| w[1].split(',').find_map(|kv| kv.strip_prefix("socket=")))
        .map(PathBuf::from)
        .collect()
}

/// Writes an executable script to `path` and tries to run it.
fn exec_written(path: &Path) -> Result<(), Errno> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, "#!/bin/sh\nexit 0\n").map_err(Errno::from)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).map_err(Errno::from)?;
    let r = io(std::process::Command::new(path).status());
    let _ = fs::remove_file(path);
    r
}

/// PIDs of a VM's daemons, in the order PID 1 starts them: PID 2 is the
/// short-lived holder of virtiofsd's user namespace (gone before any
/// daemon starts), then virtiofsd, then the VMM.
const VIRTIOFSD_PID: i32 = 3;
const VMM_PID: i32 = 4;

const EPERM: Want = Want::Err(Errno::EPERM);
const EACCES: Want = Want::Err(Errno::EACCES);
const ENOENT: Want = Want::Err(Errno::ENOENT);
const ESRCH: Want = Want::Err(Errno::ESRCH);
const EROFS: Want = Want::Err(Errno::EROFS);
const ECONNREFUSED: Want = Want::Err(Errno(111));
const AF_INET: u64 = 2;
const SOCK_STREAM: u64 = 1;
const SOCK_DGRAM: u64 = 2;

fn main() {
    // Started by wrap-virtiofsd in virtiofsd's place, with its argv.
    let argv: Vec<String> = std::env::args().collect();
    // For the kernel matrix: which Landlock this kernel has.
    if argv.get(1).is_some_and(|a| a == "--landlock-abi") {
        println!("{}", sandbox_core::landlock::kernel_abi());
        std::process::exit(0);
    }
    if let Some(shared) = argv
        .windows(2)
        .find(|w| w[0] == "--shared-dir")
        .map(|w| w[1].clone())
    {
        as_virtiofsd(Path::new(&shared));
    }
    // Started by wrap-gpu in crosvm's place (`device gpu`), with its argv.
    if argv.windows(2).any(|w| w == ["device", "gpu"]) {
        as_gpu(&argv);
    }
    // Started by wrap-vmm in cloud-hypervisor's place, with its argv.
    if argv.iter().any(|a| a == "--api-socket") {
        as_vmm(&argv);
    }
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
    let me = std::process::id() as i32;
    let mut p = Probe {
        attempts: 0,
        failed: 0,
        filter: None,
    };

    // Other processes of the VM: signals, ptrace, memory, /proc.
    for &pid in &pids {
        let target = Pid::from_raw(pid).expect("pid > 0");
        p.check(
            &format!("kill({pid}, SIGKILL)"),
            EPERM,
            rx(kill_process(target, Signal::KILL)),
        );
        p.check(
            &format!("kill({pid}, 0)"),
            EPERM,
            rx(rustix::process::test_kill_process(target)),
        );
        p.check(
            &format!("ptrace(PTRACE_ATTACH, {pid})"),
            EPERM,
            attempts::ptrace_attach(pid),
        );
        p.check(
            &format!("process_vm_readv({pid})"),
            EPERM,
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
                "success",
                &Errno::from(e).name(),
                false,
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
        create(&vm_dir.join("config/evil")),
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
    p.check(
        "open /dev/kvm",
        ENOENT,
        io(fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")),
    );
    host_reach(&mut p, &[]);
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

    // Privilege: namespaces, mounts, ids.
    p.check(
        "unshare(CLONE_NEWUSER)",
        Want::Err(Errno::ENOSPC),
        attempts::unshare_user(),
    );
    p.check("unshare(CLONE_NEWNS)", EPERM, attempts::unshare_mount());
    p.check(
        "mount tmpfs on /tmp",
        EPERM,
        rx(rustix::mount::mount(
            "tmpfs",
            "/tmp",
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            None,
        )),
    );
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

    // Positive controls: what the policy grants works.
    p.check(
        "create OWN/probe-out",
        Want::Ok,
        create(&own_dir.join("probe-out")),
    );
    p.check(
        "read VM/config/marker",
        Want::Ok,
        io(fs::read(vm_dir.join("config/marker"))),
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

    println!("probe: {} attempts, {} failed", p.attempts, p.failed);
    let _ = std::io::stdout().flush();
    std::process::exit(i32::from(p.failed > 0));
}

/// The probe as the --virtiofsd program of vm-init: virtiofsd's exact argv,
/// fds and policy. Everything outside VMDIR/fs must be out of reach; then
/// it holds the VMM's connection like virtiofsd until the VMM goes away.
fn as_virtiofsd(shared: &Path) -> ! {
    let vm_dir = shared.parent().expect("fs/ has a parent").to_owned();
    let state_dir = vm_dir.parent().expect("VM dir has a parent").to_owned();
    let mut p = Probe {
        attempts: 0,
        failed: 0,
        filter: None,
    };
    let me = std::process::id() as i32;
    p.check(
        "create fs/probe-out",
        Want::Ok,
        create(&shared.join("probe-out")),
    );
    p.check(
        "read fs/from-host.txt",
        Want::Ok,
        io(fs::read(shared.join("from-host.txt"))),
    );
    // Not even listable (no rule), and holding nothing but fs/ anyway.
    p.check("ls VMDIR", EACCES, io(fs::read_dir(&vm_dir)));
    let d = VmDir::new(&vm_dir);
    for path in [
        d.config().join("vmlinux"),
        d.api_socket(),
        d.virtiofsd_socket(),
        d.gpu_socket(),
        d.serial_log(),
    ] {
        let name = path.strip_prefix(&vm_dir).unwrap_or(&path).display();
        p.check(
            &format!("open VMDIR/{name}"),
            ENOENT,
            io(fs::File::open(&path)),
        );
    }
    p.check(
        "connect VMDIR/api.sock",
        ENOENT,
        io(UnixStream::connect(d.api_socket())),
    );
    p.check("create VMDIR/evil", EROFS, create(&vm_dir.join("evil")));
    p.check(
        "open fs/../config/vmlinux",
        ENOENT,
        io(fs::File::open(shared.join("../config/vmlinux"))),
    );
    let link = shared.join("probe-link");
    let _ = fs::remove_file(&link);
    p.check(
        "symlink fs/probe-link -> /etc/shadow",
        Want::Ok,
        io(std::os::unix::fs::symlink("/etc/shadow", &link)),
    );
    p.check("read through fs/probe-link", ENOENT, io(fs::read(&link)));
    let _ = fs::remove_file(&link);
    p.check(
        "read /proc/self/root/etc/shadow",
        ENOENT,
        io(fs::read("/proc/self/root/etc/shadow")),
    );
    host_reach(&mut p, &[]);
    // fs/ is writable, and Landlock alone keeps what is written there
    // from running (the test finds this denial in the audit log).
    p.check(
        "exec a file written to fs/",
        EACCES,
        exec_written(&shared.join("probe-exec")),
    );
    p.check(
        "create /tmp/x (no /tmp for virtiofsd)",
        ENOENT,
        create(Path::new("/tmp/vm-sandbox-probe")),
    );
    let others: Vec<String> = fs::read_dir(&state_dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_else(|e| vec![format!("error {e}")]);
    p.record(
        "ls STATE_DIR: other VMs",
        "EACCES",
        &format!("{others:?}").replace('"', ""),
        others.len() == 1 && others[0].contains("Permission denied"),
    );
    p.check(
        "kill(1, SIGKILL)",
        EPERM,
        rx(kill_process(Pid::INIT, Signal::KILL)),
    );
    p.check(
        "ptrace(PTRACE_ATTACH, 1)",
        EPERM,
        attempts::ptrace_attach(1),
    );
    p.check(
        "open /proc/1/status",
        ENOENT,
        io(fs::File::open("/proc/1/status")),
    );
    p.kill_sweep(me);
    p.check(
        "unshare(CLONE_NEWUSER)",
        Want::Err(Errno::ENOSPC),
        attempts::unshare_user(),
    );
    p.check("unshare(CLONE_NEWNS)", EPERM, attempts::unshare_mount());
    p.check("chroot /", EPERM, rx(rustix::process::chroot("/")));
    p.check(
        "TCP bind 127.0.0.1:0",
        EACCES,
        io(TcpListener::bind(("127.0.0.1", 0))),
    );
    p.check(
        "open /dev/kvm",
        ENOENT,
        io(fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")),
    );
    let caps = format!("{:016x}", tests::VIRTIOFSD_EXEC_CAPS.bits());
    p.status_is("CapEff (virtiofsd's)", "CapEff", &caps);
    p.status_is("CapBnd (virtiofsd's)", "CapBnd", &caps);
    p.status_is("NoNewPrivs", "NoNewPrivs", "1");
    p.limit_is("Max processes", &wrap_virtiofsd::policy::NPROC.to_string());
    p.limit_is("Max locked memory", &DEFAULT_MEMLOCK.to_string());
    // Its set-id capabilities reach the guest's ids alone.
    let uid_map = fs::read_to_string("/proc/self/uid_map").unwrap_or_default();
    let map: Vec<&str> = uid_map.split_whitespace().collect();
    p.record(
        "uid_map (the guest's ids only)",
        "0 0 65536",
        &map.join(" "),
        map == ["0", "0", "65536"],
    );
    // A device node the host left in the storage: nodev.
    p.check(
        "open fs/host-device read-write (a char device)",
        EACCES,
        io(fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(shared.join("host-device"))),
    );
    // Last: were it allowed, it would change who the probe is.
    let vmm = rustix::process::Uid::from_raw(sandbox_core::ids::VMM_UID);
    p.check(
        "setresuid(the VMM's uid)",
        Want::Err(Errno::EINVAL),
        rx(rustix::thread::set_thread_res_uid(vmm, vmm, vmm)),
    );
    println!("probe: {} attempts, {} failed", p.attempts, p.failed);
    let _ = std::io::stdout().flush();
    // Like virtiofsd: serve the VMM's connection until it goes away.
    if let Ok(fd) = sandbox_core::event::take_fd(fd::VIRTIOFSD_LISTENER, "--fd") {
        let listener = std::os::unix::net::UnixListener::from(fd);
        if let Ok((mut conn, _)) = listener.accept() {
            let mut buf = [0u8; 64];
            while std::io::Read::read(&mut conn, &mut buf).is_ok_and(|n| n > 0) {}
        }
    }
    std::process::exit(i32::from(p.failed > 0));
}

fn arg_after<'a>(argv: &'a [String], flag: &str) -> &'a str {
    argv.windows(2)
        .find(|w| w[0] == flag)
        .map_or("", |w| w[1].as_str())
}

/// The probe as the --vmm program of vm-init, config/vmm cloud-hypervisor:
/// cloud-hypervisor's exact argv, fds and policy. It prints its argv, tries
/// what a compromised VMM would, then serves its API like cloud-hypervisor
/// (a booted event on fd 4, 204 to vm.power-button, then exit 0).
fn as_vmm(argv: &[String]) -> ! {
    println!("argv: {}", argv[1..].join(" "));
    let serial = arg_after(argv, "--serial")
        .trim_start_matches("file=")
        .to_owned();
    let vm_dir = Path::new(&serial)
        .parent()
        .expect("serial log in the VM dir")
        .to_owned();
    let fs_sock = arg_after(argv, "--fs")
        .split(',')
        .find_map(|kv| kv.strip_prefix("socket="))
        .unwrap_or("")
        .to_owned();
    let me = std::process::id() as i32;
    let mut p = Probe {
        attempts: 0,
        failed: 0,
        filter: None,
    };
    // What the table grants.
    p.check(
        "write a line to its serial FIFO",
        Want::Ok,
        io(fs::OpenOptions::new()
            .append(true)
            .open(&serial)
            .and_then(|mut f| f.write_all(b"probe: serial line\n"))),
    );
    // Its own FIFO: allowed here, and worth nothing after the VM (the
    // outer removes it; the test checks from the host).
    p.check(
        "chmod 04755 its serial FIFO",
        Want::Ok,
        io(fs::set_permissions(
            &serial,
            std::os::unix::fs::PermissionsExt::from_mode(0o4755),
        )),
    );
    p.check(
        "read config/vmlinux",
        Want::Ok,
        io(fs::read(vm_dir.join("config/vmlinux"))),
    );
    p.check(
        "open /dev/kvm read-write",
        Want::Ok,
        io(fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")),
    );
    p.check(
        "read /dev/urandom",
        Want::Ok,
        io(fs::File::open("/dev/urandom")),
    );
    // Held, like cloud-hypervisor's vhost-user connection: virtiofsd ends
    // when its one client goes away.
    let backend = UnixStream::connect(&fs_sock);
    p.check(
        "connect virtiofsd.sock",
        Want::Ok,
        backend
            .as_ref()
            .map(drop)
            .map_err(|e| Errno(e.raw_os_error().unwrap_or(0))),
    );
    let d = VmDir::new(&vm_dir);
    let vsock = d.vsock_dir().join("probe.sock");
    let _ = fs::remove_file(&vsock);
    p.check(
        "bind a socket in vsock.d",
        Want::Ok,
        io(std::os::unix::net::UnixListener::bind(&vsock)),
    );
    let _ = fs::remove_file(&vsock);
    // What it does not.
    p.check(
        "create vsock.d/file (sockets only)",
        EACCES,
        create(&d.vsock_dir().join("file")),
    );
    p.check(
        "create config/evil",
        EROFS,
        create(&vm_dir.join("config/evil")),
    );
    p.check(
        "open config/vmlinux for writing",
        EACCES,
        io(fs::OpenOptions::new()
            .append(true)
            .open(vm_dir.join("config/vmlinux"))),
    );
    p.check(
        "open VMDIR/serial.log (PID 1's)",
        ENOENT,
        io(fs::File::open(d.serial_log())),
    );
    p.check(
        "open VMDIR/fs (the VM's storage)",
        ENOENT,
        io(fs::read_dir(d.storage())),
    );
    p.check(
        "connect VMDIR/api.sock",
        ENOENT,
        io(UnixStream::connect(d.api_socket())),
    );
    p.check("create VMDIR/evil", EROFS, create(&vm_dir.join("evil")));
    p.check("ls VMDIR", EACCES, io(fs::read_dir(&vm_dir)));
    host_reach(&mut p, &vmm_sockets(argv));
    p.check(
        "kill(1, SIGKILL)",
        EPERM,
        rx(kill_process(Pid::INIT, Signal::KILL)),
    );
    p.check(
        "ptrace(PTRACE_ATTACH, 1)",
        EPERM,
        attempts::ptrace_attach(1),
    );
    // virtiofsd: no signal, no ptrace.
    let vfs = Pid::from_raw(VIRTIOFSD_PID).expect("pid > 0");
    p.check(
        "kill(virtiofsd, SIGKILL)",
        EPERM,
        rx(kill_process(vfs, Signal::KILL)),
    );
    p.check(
        "ptrace(PTRACE_ATTACH, virtiofsd)",
        EPERM,
        attempts::ptrace_attach(VIRTIOFSD_PID),
    );
    p.check(
        "open /proc/VIRTIOFSD/environ",
        ENOENT,
        io(fs::File::open(format!("/proc/{VIRTIOFSD_PID}/environ"))),
    );
    p.kill_sweep(me);
    p.check(
        "TCP bind 127.0.0.1:0",
        EACCES,
        io(TcpListener::bind(("127.0.0.1", 0))),
    );
    p.check(
        "unshare(CLONE_NEWUSER)",
        Want::Err(Errno::ENOSPC),
        attempts::unshare_user(),
    );
    p.check(
        "mount tmpfs on /tmp",
        EPERM,
        rx(rustix::mount::mount(
            "tmpfs",
            "/tmp",
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            None,
        )),
    );
    p.check(
        "setuid(0)",
        EPERM,
        rx(rustix::thread::set_thread_uid(rustix::process::Uid::ROOT)),
    );
    p.status_is("CapEff", "CapEff", "0000000000000000");
    p.status_is("NoNewPrivs", "NoNewPrivs", "1");
    p.limit_is("Max processes", &wrap_vmm::policy::NPROC.to_string());
    println!("probe: {} attempts, {} failed", p.attempts, p.failed);
    let _ = std::io::stdout().flush();
    serve_api_like_cloud_hypervisor(backend.ok(), p.failed);
}

/// The probe as the --gpu program of vm-init: crosvm `device gpu`'s argv,
/// fds and policy, its seccomp filter included. Like crosvm, it serves the
/// VMM's vhost-user connection (fd 3) and connects the compositor once
/// queue 0 starts; the test's compositor then says what to do: `probe`
/// (every attempt below) or `try NAME [ARG]...` (one system call off the
/// allow-list, which must kill it). The test put its compositor socket at
/// TOP/wayland/wayland-0 and an open (0666) host socket at TOP/host.sock.
fn as_gpu(argv: &[String]) -> ! {
    let wayland = PathBuf::from(arg_after(argv, "--wayland-sock"));
    let top = wayland
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/"))
        .to_owned();
    let me = std::process::id() as i32;
    let mut p = Probe {
        attempts: 0,
        failed: 0,
        filter: Some(wrap_gpu::policy::SYSCALLS),
    };
    p.status_is("Seccomp (filter mode)", "Seccomp", "2");
    let conn = match sandbox_core::event::take_fd(fd::GPU_CONNECTION, "--fd") {
        Ok(fd) => UnixStream::from(fd),
        Err(e) => {
            eprintln!("probe: {e}");
            std::process::exit(111);
        }
    };
    let compositor = serve_until_queue_0_starts(&mut p, &conn, &wayland);
    let mut command = String::new();
    if let Some(c) = &compositor {
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(c), &mut command);
    }
    if let Some(call) = command.trim().strip_prefix("try ") {
        try_off_the_list(call);
    }
    gpu_attempts(&mut p, &wayland, &top, me);
    println!("probe: {} attempts, {} failed", p.attempts, p.failed);
    let _ = std::io::stdout().flush();
    // Like crosvm: serve the VMM's connection until it goes away.
    while let Ok(Some(_)) = vhost_user::recv(&conn) {}
    std::process::exit(i32::from(p.failed > 0));
}

/// The backend's side of facts/crosvm.md's exchange, making the calls
/// crosvm makes on it: recvmsg with fds, the guest memory mapped shared,
/// epoll on the kick eventfd, then the compositor's socket.
fn serve_until_queue_0_starts(
    p: &mut Probe,
    conn: &UnixStream,
    wayland: &Path,
) -> Option<UnixStream> {
    use tests::vhost_user as vu;
    let mut seen = Vec::new();
    loop {
        let m = match vu::recv(conn) {
            Ok(Some(m)) => m,
            Ok(None) => {
                p.record(
                    "vhost-user: queue 0 started",
                    "SET_VRING_KICK",
                    "closed",
                    false,
                );
                return None;
            }
            Err(e) => {
                p.record("vhost-user: receive", "a message", &e.to_string(), false);
                return None;
            }
        };
        seen.push(m.request);
        match m.request {
            vu::GET_FEATURES => p.check(
                "vhost-user: answer GET_FEATURES",
                Want::Ok,
                io(vu::reply_features(conn, vu::CROSVM_GPU_FEATURES)),
            ),
            vu::SET_MEM_TABLE => p.check(
                "vhost-user: map the guest memory (memfd, shared)",
                Want::Ok,
                match m.fds.first() {
                    Some(fd) => attempts::map_shared(fd.as_fd(), vu::MEMORY as usize),
                    None => Err(Errno::EINVAL),
                },
            ),
            vu::SET_VRING_KICK => {
                let kick = m.fds.first();
                p.check(
                    "vhost-user: epoll on the kick eventfd",
                    Want::Ok,
                    rx(rustix::event::epoll::create(
                        rustix::event::epoll::CreateFlags::CLOEXEC,
                    ))
                    .and_then(|_| kick.map(drop).ok_or(Errno::EINVAL)),
                );
                let want = [
                    vu::GET_FEATURES,
                    vu::SET_OWNER,
                    vu::SET_FEATURES,
                    vu::SET_MEM_TABLE,
                    vu::SET_VRING_NUM,
                    vu::SET_VRING_ADDR,
                    vu::SET_VRING_BASE,
                    vu::SET_VRING_CALL,
                    vu::SET_VRING_KICK,
                ];
                p.record(
                    "vhost-user: the exchange that starts queue 0",
                    &format!("{want:?}"),
                    &format!("{seen:?}"),
                    seen == want,
                );
                match UnixStream::connect(wayland) {
                    Ok(c) => {
                        p.check("connect the compositor's socket", Want::Ok, Ok(()));
                        return Some(c);
                    }
                    Err(e) => {
                        p.check(
                            "connect the compositor's socket",
                            Want::Ok,
                            io(Err::<(), _>(e)),
                        );
                        return None;
                    }
                }
            }
            _ => {}
        }
    }
}

/// One system call off the allow-list, asked for by the test's
/// compositor: the filter must kill the process before it returns.
fn try_off_the_list(call: &str) -> ! {
    let mut words = call.split_whitespace();
    let name = words.next().unwrap_or("");
    let Ok(sysno) = name.parse::<Sysno>() else {
        println!("probe: no such system call: {name}");
        std::process::exit(100);
    };
    let mut args = [0u64; 6];
    for (a, w) in args.iter_mut().zip(words) {
        *a = w.parse().unwrap_or(0);
    }
    println!("probe: trying {call}");
    let _ = std::io::stdout().flush();
    let r = attempts::raw_call(sysno, args);
    println!("probe: {call} returned {r:?}: the filter let it through");
    let _ = std::io::stdout().flush();
    std::process::exit(1);
}

/// What crosvm's place may and may not reach, once it runs.
fn gpu_attempts(p: &mut Probe, wayland: &Path, top: &Path, me: i32) {
    // /dev/dri is not listable (no rule); its render nodes are openable.
    p.check("ls /dev/dri", EACCES, io(fs::read_dir("/dev/dri")));
    let mut nodes = 0;
    for n in 128..=255 {
        let node = format!("/dev/dri/renderD{n}");
        match fs::OpenOptions::new().read(true).write(true).open(&node) {
            Err(e) if e.raw_os_error() == Some(2) => {}
            r => {
                nodes += 1;
                p.check(&format!("open {node} read-write"), Want::Ok, io(r));
            }
        }
    }
    p.record(
        "render nodes openable",
        "at least one",
        &nodes.to_string(),
        nodes > 0,
    );
    p.check(
        "open /dev/dri/card0 (primary node)",
        ENOENT,
        io(fs::File::open("/dev/dri/card0")),
    );
    let memfd = rustix::fs::memfd_create("gpu-buffer", rustix::fs::MemfdFlags::CLOEXEC);
    p.check(
        "memfd_create + ftruncate 1 MiB",
        Want::Ok,
        memfd
            .map_err(Errno::from)
            .and_then(|fd| rx(rustix::fs::ftruncate(&fd, 1 << 20))),
    );
    p.check(
        "create /dev/shm/gpu-buffer",
        Want::Ok,
        create(Path::new("/dev/shm/gpu-buffer")),
    );
    p.check(
        "create /tmp/gpu-probe",
        Want::Ok,
        create(Path::new("/tmp/gpu-probe")),
    );
    p.check(
        "read /sys/devices (GPU identification)",
        Want::Ok,
        io(fs::read_dir("/sys/devices")),
    );
    // Mesa starts threads: glibc's clone3 fails with ENOSYS, it falls back
    // to clone with CLONE_THREAD, which the filter lets through.
    p.check(
        "start and join a thread",
        Want::Ok,
        std::thread::Builder::new()
            .spawn(std::process::id)
            .map_err(Errno::from)
            .and_then(|t| t.join().map(drop).map_err(|_| Errno::EINVAL)),
    );
    p.filtered(
        "clone3 (glibc falls back to clone)",
        &[(Sysno::clone3, [0; 6])],
        Want::Err(Errno(38)),
        || attempts::raw_call(Sysno::clone3, [0; 6]),
    );
    // Not the other daemons of its VM.
    for (pid, who) in [
        (1, "vm-init"),
        (VIRTIOFSD_PID, "virtiofsd"),
        (VMM_PID, "the VMM"),
    ] {
        let target = Pid::from_raw(pid).expect("pid > 0");
        p.check(
            &format!("kill({who}, SIGKILL)"),
            EPERM,
            rx(kill_process(target, Signal::KILL)),
        );
        p.filtered(
            &format!("ptrace(PTRACE_ATTACH, {who})"),
            &[(Sysno::ptrace, [16, pid as u64, 0, 0, 0, 0])],
            EPERM,
            || attempts::ptrace_attach(pid),
        );
        p.check(
            &format!("open /proc/{pid}/status ({who})"),
            ENOENT,
            io(fs::File::open(format!("/proc/{pid}/status"))),
        );
    }
    p.kill_sweep(me);
    p.check(
        "connect an open host socket under /run",
        ENOENT,
        io(UnixStream::connect(top.join("host.sock"))),
    );
    p.check(
        "ls the state dir (VM storage)",
        ENOENT,
        io(fs::read_dir(top.join("state"))),
    );
    p.check(
        "open /dev/kvm",
        ENOENT,
        io(fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")),
    );
    host_reach(p, &[wayland.to_owned()]);
    p.filtered(
        "TCP bind 127.0.0.1:0",
        &[(Sysno::socket, [AF_INET, SOCK_STREAM, 0, 0, 0, 0])],
        EACCES,
        || io(TcpListener::bind(("127.0.0.1", 0))),
    );
    p.filtered(
        "TCP connect 127.0.0.1:22",
        &[(Sysno::socket, [AF_INET, SOCK_STREAM, 0, 0, 0, 0])],
        EACCES,
        || io(TcpStream::connect(("127.0.0.1", 22))),
    );
    p.filtered(
        "unshare(CLONE_NEWUSER)",
        &[(Sysno::unshare, [0x1000_0000, 0, 0, 0, 0, 0])],
        Want::Err(Errno::ENOSPC),
        attempts::unshare_user,
    );
    p.filtered("setuid(0)", &[(Sysno::setuid, [0; 6])], EPERM, || {
        rx(rustix::thread::set_thread_uid(rustix::process::Uid::ROOT))
    });
    p.status_is("CapEff", "CapEff", "0000000000000000");
    p.status_is("CapBnd", "CapBnd", "0000000000000000");
    p.status_is("NoNewPrivs", "NoNewPrivs", "1");
    p.limit_is("Max processes", &wrap_gpu::policy::NPROC.to_string());
    p.limit_is("Max locked memory", &DEFAULT_MEMLOCK.to_string());
}

fn serve_api_like_cloud_hypervisor(_backend: Option<UnixStream>, failed: usize) -> ! {
    use std::io::Read as _;
    if let Ok(fd) = sandbox_core::event::take_fd(fd::VMM_EVENTS, "--event-monitor") {
        let mut events = fs::File::from(fd);
        let _ = events.write_all(b"{\n  \"source\": \"vm\",\n  \"event\": \"booted\"\n}\n\n");
        std::mem::forget(events);
    }
    let api = match sandbox_core::event::take_fd(fd::VMM_API, "--api-socket") {
        Ok(fd) => std::os::unix::net::UnixListener::from(fd),
        Err(e) => {
            eprintln!("probe: {e}");
            std::process::exit(111);
        }
    };
    for conn in api.incoming() {
        let Ok(mut conn) = conn else { continue };
        let mut req = [0u8; 1024];
        let n = conn.read(&mut req).unwrap_or(0);
        let line = String::from_utf8_lossy(&req[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_owned();
        println!("api: {line}");
        let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
        if line.starts_with("PUT /api/v1/vm.power-button ") {
            let _ = std::io::stdout().flush();
            std::process::exit(i32::from(failed > 0));
        }
    }
    std::process::exit(1);
}

fn usage() -> ! {
    eprintln!("probe: usage: probe --profile user|root --state-dir DIR --vm NAME --own-dir DIR [--pid N]... [--gone-pid N]... [--abstract NAME]... [--other-vm NAME] [--tcp-port P]");
    std::process::exit(100);
}
