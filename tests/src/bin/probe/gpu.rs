//! The probe in crosvm's place (`device gpu`).

use std::fs;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use rustix::process::{kill_process, Pid, Signal};
use sandbox_core::attempts;
use sandbox_core::contract::fd;
use sandbox_core::policy::DEFAULT_MEMLOCK;
use sandbox_core::Errno;
use syscalls::Sysno;
use tests::vhost_user;

use crate::escapes::*;
use crate::report::*;

/// The probe as the --gpu program of vm-init: crosvm `device gpu`'s argv,
/// fds and policy, its seccomp filter included. Like crosvm, it serves the
/// VMM's vhost-user connection (fd 3) and connects the compositor once
/// queue 0 starts; the test's compositor then says what to do: `probe`
/// (every attempt below) or `try NAME [ARG]...` (one system call off the
/// allow-list, which must kill it). The test put its compositor socket at
/// TOP/wayland/wayland-0 and an open (0666) host socket at TOP/host.sock.
pub(crate) fn as_gpu(argv: &[String]) -> ! {
    let wayland = PathBuf::from(arg_after(argv, "--wayland-sock"));
    let top = wayland
        .parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/"))
        .to_owned();
    let me = std::process::id() as i32;
    let mut p = Probe::new(Some(wrap_gpu::policy::SYSCALLS));
    p.status_is("Seccomp (filter mode)", "Seccomp", "2");
    let conn = match sandbox_core::fds::take_fd(fd::GPU_CONNECTION, "--fd") {
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
    if let Some(program) = command.trim().strip_prefix("exec ") {
        exec_in_place(program);
    }
    gpu_attempts(&mut p, &wayland, &top, me);
    p.close();
    // Like crosvm: serve the VMM's connection until it goes away.
    while let Ok(Some(_)) = vhost_user::recv(&conn) {}
    std::process::exit(i32::from(p.failed > 0));
}

/// The backend's side of the exchange measured between a VMM and crosvm
/// (docs/DESIGN.md, "Measured: crosvm device gpu"), making the calls
/// crosvm makes on it: recvmsg with fds, the guest memory mapped shared,
/// epoll on the kick eventfd, then the compositor's socket.
pub(crate) fn serve_until_queue_0_starts(
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

/// Code it writes at runtime: never through a mapping both writable and
/// executable, one made executable later, or a shared executable alias
/// of a writable memfd; nor from a file of its writable tmpfs.
fn written_code(p: &mut Probe) {
    const RX: u64 = 5;
    const MAP_SHARED: u64 = 1;
    const MAP_PRIVATE: u64 = 2;
    // Any fd: the filter decides on the flags alone.
    let fd = u64::from(u32::MAX);
    p.filtered(
        "run written code: a memfd mapped read-write + read-exec, shared",
        &[(Sysno::mmap, [0, 4096, RX, MAP_SHARED, fd, 0])],
        EPERM,
        || attempts::run_written_code(MAP_SHARED),
    );
    p.filtered(
        "make a written page executable (mprotect read-exec)",
        &[(Sysno::mprotect, [0, 4096, RX, 0, 0, 0])],
        EPERM,
        || attempts::raw_call(Sysno::mprotect, [0, 4096, RX, 0, 0, 0]),
    );
    for dir in ["/tmp", "/dev/shm"] {
        let file = Path::new(dir).join("gpu-code");
        p.check(
            &format!("map a file it wrote in {dir} read-exec (noexec)"),
            EPERM,
            io(fs::write(&file, [0xc3u8; 4096])).and_then(|()| {
                let f = fs::File::open(&file).map_err(Errno::from)?;
                attempts::map(f.as_fd(), 4096, RX, MAP_PRIVATE)
            }),
        );
    }
    // What remains (README): the loader's kind of mapping, private and
    // read-exec, of a memfd it also maps writable sees what is written
    // until a write to it would copy the page.
    p.check(
        "run written code: a memfd mapped read-write + read-exec, private (remains)",
        Want::Ok,
        attempts::run_written_code(MAP_PRIVATE),
    );
}

/// One system call off the allow-list, asked for by the test's
/// compositor: the filter must kill the process before it returns.
pub(crate) fn try_off_the_list(call: &str) -> ! {
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

/// Another program in crosvm's place, asked for by the test's compositor:
/// exec'd under the same filter, view and ids, it starts from its loader
/// and its libraries' constructors, as crosvm does (the filter precedes
/// crosvm's exec too).
fn exec_in_place(program: &str) -> ! {
    use std::os::unix::process::CommandExt;
    let mut words = program.split_whitespace();
    let name = words.next().unwrap_or("");
    println!("probe: exec {program}");
    let _ = std::io::stdout().flush();
    let e = std::process::Command::new(name).args(words).exec();
    println!("probe: exec {name}: {e}");
    std::process::exit(111);
}

/// What crosvm's place may and may not reach, once it runs.
pub(crate) fn gpu_attempts(p: &mut Probe, wayland: &Path, top: &Path, me: i32) {
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
    written_code(p);
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
    fill_private_tmpfs(
        p,
        &[
            ("/tmp", wrap_gpu::policy::TMP_INODES),
            ("/dev/shm", wrap_gpu::policy::SHM_INODES),
        ],
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
    // Not its reaper (PID 1 here), nor anything of its VM outside its
    // PID namespace, which it cannot even name.
    for (pid, who) in std::iter::once((1, "its reaper")).chain(neighbours()) {
        let target = Pid::from_raw(pid).expect("pid > 0");
        let want = if pid == 1 { EPERM } else { ESRCH };
        p.check(
            &format!("kill({who}, SIGKILL)"),
            want,
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
    no_kvm(p);
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
