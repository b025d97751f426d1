//! The escapes every role tries: what a compromised daemon would go for on
//! a stock host whatever its job.

use std::fs;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::path::{Path, PathBuf};

use sandbox_core::attempts;
use sandbox_core::Errno;
use syscalls::Sysno;

use crate::report::*;

/// What a compromised daemon would go for on a stock host, whatever its
/// role: host files, devices and sockets outside its view, the host's
/// network, abstract names and SysV IPC (the host's side is
/// `tests::bait`, set up by the test).
pub(crate) fn host_reach(p: &mut Probe, table: &[PathBuf]) {
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
pub(crate) fn sockets_in_view() -> (Vec<PathBuf>, Vec<PathBuf>) {
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
    // Each entry's type comes with the directory listing (d_type): only
    // directories are looked up and opened, so the walk costs a read of
    // each directory, not a stat of each file (through virtio-fs under
    // TCG, in the kernel matrix, the difference is minutes). A mount
    // point is a directory or a socket (the view binds sockets alone).
    let mut dirs = Vec::new();
    let mut found = Vec::new();
    for point in todo.drain(..) {
        match fs::symlink_metadata(&point) {
            Ok(m) if m.file_type().is_socket() => found.push(point),
            Ok(m) if m.is_dir() => dirs.push(point),
            _ => {}
        }
    }
    let mut seen = std::collections::HashSet::new();
    while let Some(dir) = dirs.pop() {
        if !seen.insert(dir.clone()) {
            continue;
        }
        // Where Landlock lets it list: what it cannot list, it can still
        // not find.
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.file_type() {
                Ok(t) if t.is_socket() => found.push(entry.path()),
                Ok(t) if t.is_dir() => dirs.push(entry.path()),
                _ => {}
            }
        }
    }
    found.sort();
    found.dedup();
    let connected = found
        .iter()
        .filter(|s| UnixStream::connect(s).is_ok())
        .cloned()
        .collect();
    (found, connected)
}

/// Writes an executable script to `path` and tries to run it.
pub(crate) fn exec_written(path: &Path) -> Result<(), Errno> {
    use std::os::unix::fs::PermissionsExt;
    fs::write(path, "#!/bin/sh\nexit 0\n").map_err(Errno::from)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).map_err(Errno::from)?;
    let r = io(std::process::Command::new(path).status());
    let _ = fs::remove_file(path);
    r
}

/// PID 1 of its VM: no signal, no ptrace, no /proc entry.
pub(crate) fn pid1(p: &mut Probe) {
    use rustix::process::{kill_process, Pid, Signal};
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
}

/// No new user namespace (the VM allows none), no mount namespace, no
/// mount (on its root, which every view has): the privilege attempts of
/// every role without a syscall filter.
pub(crate) fn namespaces_and_mounts(p: &mut Probe) {
    p.check(
        "unshare(CLONE_NEWUSER)",
        Want::Err(Errno::ENOSPC),
        attempts::unshare_user(),
    );
    p.check("unshare(CLONE_NEWNS)", EPERM, attempts::unshare_mount());
    p.check(
        "mount tmpfs on /",
        EPERM,
        rx(rustix::mount::mount(
            "tmpfs",
            "/",
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            None,
        )),
    );
}

/// KVM is the VMM's alone.
pub(crate) fn no_kvm(p: &mut Probe) {
    p.check(
        "open /dev/kvm",
        ENOENT,
        io(fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")),
    );
}

/// The description of the launcher's key, which the keyring test adds to
/// the session keyring vm-init is started under.
pub(crate) const LAUNCHER_KEY: &str = "vm-sandbox-secret";

/// Key serials a test names for the probe (`vm-sandbox-keys=ID,ID` in
/// `text`): keys of the launcher's and of another VM's.
pub(crate) fn named_keys(text: &str) -> Vec<i32> {
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("vm-sandbox-keys="))
        .map(|ids| ids.split(',').filter_map(|n| n.parse().ok()).collect())
        .unwrap_or_default()
}

/// Keyrings: its session keyring is new, empty and its own; nothing of
/// the launcher's or another VM's is found or read (`named`: keys the
/// test says exist); a key it adds is its own (printed as `key: ...`,
/// for another VM's probe to try and for the test to find gone after
/// the VM); and it cannot hand its keyring to its parent.
pub(crate) fn keyrings(p: &mut Probe, role: &str, named: &[i32]) {
    use attempts::{KEY_SPEC_SESSION_KEYRING as SESSION, KEY_SPEC_USER_KEYRING as USER};
    let me = rustix::process::getuid().as_raw();
    let want = format!("_ses of {me}, 0 keys");
    let got = match (attempts::key_describe(SESSION), attempts::key_read(SESSION)) {
        (Ok(d), Ok(keys)) => {
            let f: Vec<&str> = d.split(';').collect();
            let (uid, name) = (f.get(1).unwrap_or(&"?"), f.last().unwrap_or(&"?"));
            format!("{name} of {uid}, {} keys", keys.len() / 4)
        }
        (Err(e), _) | (_, Err(e)) => e.name(),
    };
    p.record("its session keyring", &want, &got, got == want);
    p.check(
        &format!("keyctl search @s for user:{LAUNCHER_KEY}"),
        Want::Err(Errno::ENOKEY),
        attempts::key_search(SESSION, LAUNCHER_KEY).map(drop),
    );
    for &id in named {
        p.check(
            &format!("keyctl read {id} (not its own)"),
            EACCES,
            attempts::key_read(id).map(drop),
        );
    }
    let mut added = Vec::new();
    for (keyring, which) in [(SESSION, "session"), (USER, "user")] {
        let description = format!("vm-sandbox-from-{role}");
        let r = attempts::add_user_key(&description, b"a VM's", keyring);
        if let Ok(id) = r {
            added.push(id.to_string());
        }
        p.check(
            &format!("add_key user:{description} to its {which} keyring"),
            Want::Ok,
            r.map(drop),
        );
    }
    println!("key: vm-sandbox-keys={}", added.join(","));
    const KEYCTL_SESSION_TO_PARENT: u64 = 18;
    p.check(
        "keyctl session-to-parent",
        EPERM,
        attempts::raw_call(Sysno::keyctl, [KEYCTL_SESSION_TO_PARENT, 0, 0, 0, 0, 0]),
    );
}

/// Makes entries in `dir` with `make` until one fails, at most twice
/// `inodes` + 16: a tmpfs of `inodes` inodes (its root one of them) must
/// refuse one before that many, with ENOSPC. Returns what it made.
pub(crate) fn fill(
    p: &mut Probe,
    what: &str,
    dir: &Path,
    inodes: u32,
    make: impl Fn(&Path) -> std::io::Result<()>,
) -> Vec<PathBuf> {
    let mut made = Vec::new();
    let mut failed = None;
    for n in 0..2 * inodes + 16 {
        let path = dir.join(format!("fill-{n}"));
        match make(&path) {
            Ok(()) => made.push(path),
            Err(e) => {
                failed = Some(Errno::from(e));
                break;
            }
        }
    }
    let got = match failed {
        Some(e) => format!("{} after {}", e.name(), made.len()),
        None => format!("success x{}", made.len()),
    };
    p.record(
        &format!("fill {what} until it fails"),
        &format!("ENOSPC before {inodes}"),
        &got,
        failed == Some(Errno::ENOSPC) && made.len() < inodes as usize,
    );
    made
}

/// Fills its private /tmp and /dev/shm with empty files: each a tmpfs
/// bounded in inodes too. Removes what it made.
pub(crate) fn fill_private_tmpfs(p: &mut Probe, bounds: &[(&str, u32)]) {
    for &(dir, inodes) in bounds {
        let made = fill(
            p,
            &format!("{dir} with files"),
            Path::new(dir),
            inodes,
            |f| fs::File::create_new(f).map(drop),
        );
        for f in made {
            let _ = fs::remove_file(f);
        }
    }
}
