//! The probe in cloud-hypervisor's place.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use rustix::process::{kill_process, Pid, Signal};
use sandbox_core::attempts;
use sandbox_core::vmdir::{fd, VmDir};
use sandbox_core::Errno;

use crate::escapes::*;
use crate::report::*;

/// The probe as the --vmm program of vm-init, config/vmm cloud-hypervisor:
/// cloud-hypervisor's exact argv, fds and policy. It prints its argv, tries
/// what a compromised VMM would, then serves its API like cloud-hypervisor
/// (a booted event on fd 4, 204 to vm.power-button, then exit 0).
pub(crate) fn as_vmm(argv: &[String]) -> ! {
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
    // The other processes of its VM: no signal, no ptrace, no /proc.
    for (pid, who) in neighbours().into_iter().filter(|(_, w)| *w != "the VMM") {
        let target = Pid::from_raw(pid).expect("pid > 0");
        p.check(
            &format!("kill({who}, SIGKILL)"),
            EPERM,
            rx(kill_process(target, Signal::KILL)),
        );
        p.check(
            &format!("ptrace(PTRACE_ATTACH, {who})"),
            EPERM,
            attempts::ptrace_attach(pid),
        );
        p.check(
            &format!("open /proc/PID/environ ({who})"),
            ENOENT,
            io(fs::File::open(format!("/proc/{pid}/environ"))),
        );
    }
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

/// The VMM's table's sockets, from its argv: virtiofsd's and the GPU's.
pub(crate) fn vmm_sockets(argv: &[String]) -> Vec<PathBuf> {
    argv.windows(2)
        .filter(|w| w[0] == "--fs" || w[0] == "--gpu")
        .filter_map(|w| w[1].split(',').find_map(|kv| kv.strip_prefix("socket=")))
        .map(PathBuf::from)
        .collect()
}

pub(crate) fn serve_api_like_cloud_hypervisor(_backend: Option<UnixStream>, failed: usize) -> ! {
    use std::io::Read as _;
    let mut events = sandbox_core::fds::take_fd(fd::VMM_EVENTS, "--event-monitor")
        .ok()
        .map(fs::File::from);
    if let Some(e) = &mut events {
        let _ = e.write_all(b"{\n  \"source\": \"vm\",\n  \"event\": \"booted\"\n}\n\n");
    }
    let api = match sandbox_core::fds::take_fd(fd::VMM_API, "--api-socket") {
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
            // Like cloud-hypervisor when its guest powers off.
            if let Some(e) = &mut events {
                let _ = e.write_all(b"{\n  \"source\": \"vm\",\n  \"event\": \"shutdown\"\n}\n\n");
            }
            let _ = std::io::stdout().flush();
            std::process::exit(i32::from(failed > 0));
        }
    }
    std::process::exit(1);
}
