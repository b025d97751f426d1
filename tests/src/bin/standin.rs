//! A stand-in daemon for vm-init's tests, exec'd by the wrappers with the
//! real daemon's argv and fds. Its role comes from its argv (cloud-hypervisor
//! `--api-socket fd=N`, virtiofsd `--fd N`), its behaviour from the name it
//! was started as (the tests hard-link it under these names):
//!
//!   vmm-cooperative  answers vm.power-button with 204 and exits 0, as a
//!                    guest that powers off would make cloud-hypervisor do
//!   vmm-stubborn     answers 204 and does nothing (a guest that ignores it)
//!   vmm-crash        exits 7 once booted
//!   vmm-refuses      refuses its argv as an upstream cloud-hypervisor
//!                    refuses Spectrum's --gpu (clap's message, exit 2)
//!   vmm-chatty       writes 20 MiB to the serial console, then behaves as
//!                    vmm-cooperative
//!   vmm-flood        writes 64 MiB to the event pipe before "booted",
//!                    then behaves as vmm-cooperative
//!   vmm-brief        powers off by itself (exits 0) a second after booting
//!   vmm-deaf         once booted, never accepts on its API socket again,
//!                    its backlog cut to one (listen(3, 0)): a connect to
//!                    it after the first blocks for ever
//!   virtiofsd-ok     accepts the VMM and serves until it disconnects
//!   virtiofsd-crash  accepts the VMM, then exits 3
//!   virtiofsd-meddle before it serves: lowers the open-file limit and the
//!                    priority of every process it can name (prlimit on
//!                    PIDs 1 to 64, setpriority of its own uid), and
//!                    leaves a grandchild in a session of its own holding
//!                    its listener (`setsid -f tail -f /dev/null`)
//!   virtiofsd-flood  accepts the VMM, writes a line as vm-init's own to
//!                    stdout and stderr, then newlines to stderr without end
//!   virtiofsd-hog    accepts the VMM, then allocates and touches memory,
//!                    1 MiB at a time, up to 4 GiB (says so if it gets there)
//!   virtiofsd-forkbomb  accepts the VMM, then starts `sleep` until a fork
//!                    fails, says how many and why, and serves
//!   virtiofsd-forkloop  accepts the VMM, then starts `sleep` and
//!                    tries again when a fork fails, for 3 s (a daemon
//!                    pushing at its pids.max), says how many were refused,
//!                    and serves
//!   virtiofsd-churn  accepts the VMM, reads every file below /usr/lib for
//!                    4 s (page cache churning at its memory.max), says
//!                    how much, and serves
//!   virtiofsd-cgroup says what a daemon sees of cgroups (its
//!                    /proc/self/cgroup, opening /sys/fs/cgroup, mounting
//!                    cgroup2), then serves
//!
//! Every request the VMM stand-in gets is appended to VMDIR/serial.log.

#![forbid(unsafe_code)]

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};

fn arg_after<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.windows(2)
        .find(|w| w[0] == flag)
        .map(|w| w[1].as_str())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let name = std::path::Path::new(&args[0])
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    if let Some(api) = arg_after(&args, "--api-socket") {
        vmm(&name, &args, api);
    } else if arg_after(&args, "--fd").is_some() {
        virtiofsd(&name);
    } else {
        eprintln!("standin: unknown role: {args:?}");
        std::process::exit(100);
    }
}

fn listener_fd(n: i32) -> OwnedFd {
    sandbox_core::fds::take_fd(n, "fd").unwrap_or_else(|e| {
        eprintln!("standin: {e}");
        std::process::exit(111)
    })
}

fn vmm(name: &str, args: &[String], api: &str) {
    if name == "vmm-refuses" {
        eprint!(
            "error: unexpected argument '--gpu' found\n\n  tip: to pass '--gpu' as a value, \
             use '-- --gpu'\n\nUsage: cloud-hypervisor [OPTIONS]\n\nFor more information, \
             try '--help'.\n"
        );
        std::process::exit(2);
    }
    let fd = |spec: &str| {
        spec.strip_prefix("fd=")
            .and_then(|n| n.parse().ok())
            .expect("fd=N")
    };
    let api = UnixListener::from(listener_fd(fd(api)));
    let mut events = std::fs::File::from(listener_fd(fd(
        arg_after(args, "--event-monitor").expect("--event-monitor")
    )));
    let serial = arg_after(args, "--serial")
        .and_then(|s| s.strip_prefix("file="))
        .expect("--serial file=");
    let mut log = std::fs::OpenOptions::new()
        .append(true)
        .open(serial)
        .expect("open serial log");
    // Like cloud-hypervisor: connect to virtiofsd before booting.
    let fs_sock = arg_after(args, "--fs")
        .and_then(|s| s.split(',').find_map(|kv| kv.strip_prefix("socket=")))
        .expect("--fs socket=");
    let _fs = UnixStream::connect(fs_sock).expect("connect to virtiofsd");
    // ... and to the GPU daemon's socket, when the VM has one, starting
    // its queue 0 as measured (docs/DESIGN.md, "Measured: crosvm device gpu").
    let _gpu = arg_after(args, "--gpu")
        .and_then(|s| s.strip_prefix("socket="))
        .map(|p| {
            let gpu = UnixStream::connect(p).expect("connect to the GPU socket");
            match tests::vhost_user::start_queue_0(&gpu) {
                Ok(f) => {
                    let _ = writeln!(log, "standin: GPU backend features {f:#x}, queue 0 started");
                }
                Err(e) => {
                    let _ = writeln!(log, "standin: GPU backend: {e}");
                }
            }
            gpu
        });
    let event = |e: &mut std::fs::File, what: &str| {
        let _ = write!(e, "{{\n  \"timestamp\": {{\"secs\": 0, \"nanos\": 1}},\n  \"source\": \"vm\",\n  \"event\": \"{what}\",\n  \"properties\": null\n}}\n\n");
    };
    event(&mut events, "booting");
    if name == "vmm-chatty" {
        // A guest that prints without end: 20 MiB on the console.
        let line = [b'y'; 1023];
        for _ in 0..(20 << 10) {
            let _ = log.write_all(&line);
            let _ = log.write_all(b"\n");
        }
    }
    if name == "vmm-flood" {
        // A VMM that writes without end before it says it booted: PID 1
        // must not keep it all (the test reads PID 1's VmHWM).
        let junk = vec![b'x'; 1 << 20];
        for _ in 0..64 {
            let _ = events.write_all(&junk);
        }
    }
    event(&mut events, "booted");
    let _ = writeln!(log, "standin: booted");
    if name == "vmm-crash" {
        std::process::exit(7);
    }
    if name == "vmm-brief" {
        std::thread::sleep(std::time::Duration::from_secs(1));
        event(&mut events, "shutdown");
        std::process::exit(0);
    }
    if name == "vmm-deaf" {
        rustix::net::listen(&api, 0).expect("listen(3, 0)");
        loop {
            std::thread::park();
        }
    }
    for conn in api.incoming() {
        let Ok(mut conn) = conn else { continue };
        let (line, _) = tests::read_http_request(&mut conn);
        let _ = writeln!(log, "standin: request {line}");
        let power = line.starts_with("PUT /api/v1/vm.power-button ");
        let quit = line.starts_with("PUT /api/v1/vmm.shutdown ");
        if name == "vmm-stubborn" || !(power || quit) {
            let _ = conn.write_all(b"HTTP/1.1 204 No Content\r\n\r\n");
            continue;
        }
        let _ = conn.write_all(if power {
            b"HTTP/1.1 204 No Content\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\n\r\n"
        });
        event(&mut events, "shutdown");
        let _ = writeln!(log, "standin: guest powered off");
        std::process::exit(0);
    }
}

fn virtiofsd(name: &str) {
    let listener = UnixListener::from(listener_fd(sandbox_core::contract::fd::VIRTIOFSD_LISTENER));
    if name == "virtiofsd-meddle" {
        meddle();
    }
    let (mut conn, _) = listener.accept().expect("accept the VMM");
    if name == "virtiofsd-crash" {
        std::process::exit(3);
    }
    if name == "virtiofsd-flood" {
        // A line that would read as vm-init's own, then newlines for ever.
        println!("vm-init: some-other-vm: ready (slot 9)");
        eprintln!("vm-init: some-other-vm: ready (slot 9)");
        let lines = [b'\n'; 4096];
        loop {
            let _ = std::io::stderr().write_all(&lines);
        }
    }
    match name {
        "virtiofsd-hog" => hog(),
        "virtiofsd-forkbomb" => fork_bomb(),
        "virtiofsd-forkloop" => fork_loop(),
        "virtiofsd-churn" => churn(),
        "virtiofsd-cgroup" => cgroup_view(),
        _ => {}
    }
    let mut buf = [0u8; 64];
    while conn.read(&mut buf).is_ok_and(|n| n > 0) {}
}

/// Memory past any bound a daemon should have: its cgroup's memory.max
/// should kill it long before the end.
fn hog() {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    for _ in 0..4096 {
        // Touched page by page: resident, not merely reserved.
        kept.push(vec![1u8; 1 << 20]);
    }
    eprintln!("standin: 4 GiB allocated and not killed");
}

/// Processes until the kernel says no.
fn fork_bomb() {
    let mut children = Vec::new();
    let err = loop {
        match std::process::Command::new("/usr/bin/sleep")
            .arg("600")
            .spawn()
        {
            Ok(c) if children.len() < 1000 => children.push(c),
            Ok(_) => break "1000 started, none refused".to_string(),
            Err(e) => break format!("{e}"),
        }
    };
    eprintln!("standin: forked {}, then: {err}", children.len());
    std::mem::forget(children);
}

/// Forks without end for 3 s, whatever the kernel says.
fn fork_loop() {
    let (mut children, mut refused) = (Vec::new(), 0u64);
    let end = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < end {
        match std::process::Command::new("/usr/bin/sleep")
            .arg("600")
            .spawn()
        {
            Ok(c) => children.push(c),
            Err(_) => refused += 1,
        }
    }
    eprintln!("standin: forkloop {refused} refused");
    std::mem::forget(children);
}

/// Page cache past its memory.max: every file below /usr/lib (its view's
/// system libraries, gigabytes on a Debian host) read for 4 s, again from
/// the start if need be. The kernel reclaims at the bound, and says so in
/// memory.events each time.
fn churn() {
    let end = std::time::Instant::now() + std::time::Duration::from_secs(4);
    let mut buf = vec![0u8; 1 << 20];
    let mut read = 0u64;
    while std::time::Instant::now() < end {
        let mut todo = vec![std::path::PathBuf::from("/usr/lib")];
        while let Some(dir) = todo.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if std::time::Instant::now() >= end {
                    break;
                }
                let Ok(t) = e.file_type() else { continue };
                if t.is_dir() {
                    todo.push(e.path());
                } else if t.is_file() {
                    let Ok(mut f) = std::fs::File::open(e.path()) else {
                        continue;
                    };
                    while let Ok(n @ 1..) = f.read(&mut buf) {
                        read += n as u64;
                    }
                }
            }
        }
    }
    eprintln!("standin: churned {} MiB", read >> 20);
}

/// What of cgroups a daemon can see or reach, one `standin: cgroup ...`
/// line each.
fn cgroup_view() {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_else(|e| e.to_string());
    eprintln!("standin: cgroup self {:?}", own.trim());
    let open = std::fs::File::open("/sys/fs/cgroup").map(drop);
    eprintln!("standin: cgroup open-sysfs {}", errno_of(open));
    let mounted = rustix::mount::mount(
        "none",
        "/tmp",
        "cgroup2",
        rustix::mount::MountFlags::empty(),
        None,
    );
    eprintln!(
        "standin: cgroup mount {}",
        errno_of(mounted.map_err(Into::into))
    );
}

fn errno_of(r: Result<(), std::io::Error>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(e) => sandbox_core::Errno::from(e).name(),
    }
}

/// What a compromised daemon may try on the processes around it: their
/// limits and priority, and a descendant that outlives it.
fn meddle() {
    use rustix::process::{getpid, getuid, prlimit, setpriority_user, Pid, Resource, Rlimit};
    let me = getpid();
    let low = Rlimit {
        current: Some(64),
        maximum: Some(64),
    };
    let mut changed = Vec::new();
    for pid in (1..=64).filter_map(Pid::from_raw).filter(|&p| p != me) {
        if prlimit(Some(pid), Resource::Nofile, low).is_ok() {
            changed.push(pid.as_raw_nonzero().get());
        }
    }
    let niced = setpriority_user(getuid(), 19).is_ok();
    eprintln!("standin: prlimit changed {changed:?}; setpriority of its uid: {niced}");
    // Inherits the listener (fd 3 is not close-on-exec: the wrapper passed it).
    let _ = std::process::Command::new("/usr/bin/setsid")
        .args(["-f", "/usr/bin/tail", "-f", "/dev/null"])
        .status();
}
