//! The probe in cloud-hypervisor's place.

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use rustix::process::{kill_process, Pid, Signal};
use sandbox_core::attempts;
use sandbox_core::contract::{config, daemon, fd, VmDir};
use sandbox_core::Errno;

use crate::escapes::*;
use crate::report::*;

/// The probe as the --vmm program of vm-init, config/vmm cloud-hypervisor:
/// cloud-hypervisor's exact argv, fds and policy. It prints its argv, tries
/// what a compromised VMM would, then serves its API like cloud-hypervisor
/// (a booted event on fd 4, 204 to vm.power-button, then exit 0).
pub(crate) fn as_vmm(argv: &[String]) -> ! {
    println!("argv: {}", argv[1..].join(" "));
    if argv[1..] == ["--api-socket", &format!("fd={}", fd::VMM_API)] {
        as_vmm_over_api();
    }
    let mut p = Probe::new(None);
    let backend = vmm_attempts(&mut p, argv);
    let failed = p.close();
    serve_api_like_cloud_hypervisor(backend.ok(), failed);
}

/// What a compromised VMM would try, with the paths its argv (or, in
/// Spectrum's flow, its vm.create) names. Returns its connection to
/// virtiofsd, held like cloud-hypervisor holds it.
fn vmm_attempts(p: &mut Probe, argv: &[String]) -> std::io::Result<UnixStream> {
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
    let d = VmDir::new(&vm_dir);
    let me = std::process::id() as i32;
    // What the table grants.
    let backend = console_and_backend(p, Path::new(&serial), &fs_sock);
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
    // Its FIFO and vsock.d are its own: it may open them to everyone.
    // Allowed here; the test checks from the host that no host user
    // reaches them (the state dir above is root's alone).
    p.check(
        "chmod 0666 its serial FIFO",
        Want::Ok,
        io(fs::set_permissions(
            &serial,
            std::os::unix::fs::PermissionsExt::from_mode(0o666),
        )),
    );
    p.check(
        "chmod 0777 vsock.d",
        Want::Ok,
        io(fs::set_permissions(
            d.vsock_dir(),
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )),
    );
    p.check(
        "read config/vmlinux",
        Want::Ok,
        io(fs::read(d.config_file(config::KERNEL))),
    );
    // ENODEV: the node opened, no KVM behind it (a guest under TCG, as in
    // the kernel matrix): the sandbox let it through all the same.
    let kvm = io(fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm"))
    .or_else(|e| if e == Errno(19) { Ok(()) } else { Err(e) });
    p.check("open /dev/kvm read-write", Want::Ok, kvm);
    p.check(
        "read /dev/urandom",
        Want::Ok,
        io(fs::File::open("/dev/urandom")),
    );
    let vsock = d.vsock_dir().join("probe.sock");
    let _ = fs::remove_file(&vsock);
    p.check(
        "bind a socket in vsock.d",
        Want::Ok,
        io(std::os::unix::net::UnixListener::bind(&vsock)),
    );
    let _ = fs::remove_file(&vsock);
    // vsock.d is a tmpfs of its own: filled, it says ENOSPC and the state
    // dir's file system keeps its inodes. Kept full for the test to check
    // that from the host; gone with the VM.
    fill(
        p,
        "its vsock directory with sockets",
        &d.vsock_dir(),
        sandbox_core::contract::VSOCK_DIR_INODES,
        |s| std::os::unix::net::UnixListener::bind(s).map(drop),
    );
    fill_private_tmpfs(
        p,
        &[
            ("/tmp", wrap_vmm::policy::TMP_INODES),
            ("/dev/shm", wrap_vmm::policy::SHM_INODES),
        ],
    );
    // What it does not.
    p.check(
        "create vsock.d/file (sockets only)",
        EACCES,
        create(&d.vsock_dir().join("file")),
    );
    p.check("create config/evil", EROFS, create(&d.config_file("evil")));
    p.check(
        "open config/vmlinux for writing",
        EACCES,
        io(fs::OpenOptions::new()
            .append(true)
            .open(d.config_file(config::KERNEL))),
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
    host_reach(p, &vmm_sockets(argv));
    pid1(p);
    // The other processes of its VM: outside its PID namespace, they
    // cannot even be named.
    for (pid, who) in neighbours() {
        let target = Pid::from_raw(pid).expect("pid > 0");
        p.check(
            &format!("kill({who}, SIGKILL)"),
            ESRCH,
            rx(kill_process(target, Signal::KILL)),
        );
        p.check(
            &format!("ptrace(PTRACE_ATTACH, {who})"),
            ESRCH,
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
    namespaces_and_mounts(p);
    p.check(
        "setuid(0)",
        EPERM,
        rx(rustix::thread::set_thread_uid(rustix::process::Uid::ROOT)),
    );
    p.status_is("CapEff", "CapEff", "0000000000000000");
    p.status_is("NoNewPrivs", "NoNewPrivs", "1");
    p.limit_is("Max processes", &wrap_vmm::policy::NPROC.to_string());
    keyrings(p, daemon::VMM, &named_keys(arg_after(argv, "--cmdline")));
    backend
}

/// What every VMM's table grants for the serial FIFO and virtiofsd's
/// socket its argv names: a console line, and the vhost-user connection,
/// returned to be held like the VMM's (virtiofsd ends when its one client
/// goes away).
pub(crate) fn console_and_backend(
    p: &mut Probe,
    serial: &Path,
    fs_sock: &str,
) -> std::io::Result<UnixStream> {
    p.check(
        "write a line to its serial FIFO",
        Want::Ok,
        io(fs::OpenOptions::new()
            .append(true)
            .open(serial)
            .and_then(|mut f| f.write_all(b"probe: serial line\n"))),
    );
    let backend = UnixStream::connect(fs_sock);
    p.check(
        "connect virtiofsd.sock",
        Want::Ok,
        backend
            .as_ref()
            .map(drop)
            .map_err(|e| Errno(e.raw_os_error().unwrap_or(0))),
    );
    backend
}

/// The string value of `key` in the JSON object that follows `section`
/// in `json` (enough for the vm.create body vmm-api sends).
fn json_field(json: &str, section: &str, key: &str) -> Option<String> {
    let from = json.find(section)?;
    let rest = &json[from..];
    let at = rest.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let mut out = String::new();
    let mut chars = rest[at..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push(chars.next()?),
            '"' => return Some(out),
            c => out.push(c),
        }
    }
    None
}

/// Spectrum's flow: cloud-hypervisor started with `--api-socket fd=3` and
/// nothing else. The VM comes as vm.create (from vmm-api, built from the
/// VM's config directory): the probe checks it, then tries what a
/// compromised VMM would with the paths it names, the same attempts as
/// the argv flow's. vm.boot is the separate command.
fn as_vmm_over_api() -> ! {
    let api = match sandbox_core::fds::take_fd(fd::VMM_API, "--api-socket") {
        Ok(fd) => std::os::unix::net::UnixListener::from(fd),
        Err(e) => {
            eprintln!("probe: {e}");
            std::process::exit(111);
        }
    };
    let mut failed = 0;
    let mut backend = None;
    let mut booted = false;
    for conn in api.incoming() {
        let Ok(mut conn) = conn else { continue };
        let (line, body) = tests::read_http_request(&mut conn);
        println!("api: {line}");
        if line.starts_with("PUT /api/v1/vm.create ") {
            println!("vm.create: {body}");
            let mut p = Probe::new(None);
            for (what, found) in [
                ("memory shared", body.contains("\"shared\":true")),
                (
                    "console off",
                    body.contains("\"console\":{\"mode\":\"Off\"}"),
                ),
                (
                    "every disk read-only",
                    body.matches("\"path\":").count() == body.matches("\"readonly\":true").count(),
                ),
            ] {
                p.record(
                    &format!("vm.create: {what}"),
                    "yes",
                    if found { "yes" } else { "no" },
                    found,
                );
            }
            let field =
                |section: &str, key: &str| json_field(&body, section, key).unwrap_or_default();
            // The argv the argv flow would have given for the same VM.
            let mut argv: Vec<String> = vec!["probe".into()];
            for (flag, value) in [
                ("--kernel", field("\"payload\"", "kernel")),
                (
                    "--fs",
                    format!("tag=virtiofs0,socket={}", field("\"fs\"", "socket")),
                ),
                ("--serial", format!("file={}", field("\"serial\"", "file"))),
                (
                    "--vsock",
                    format!("cid=3,socket={}", field("\"vsock\"", "socket")),
                ),
            ] {
                argv.extend([flag.to_owned(), value]);
            }
            if body.contains("\"gpu\"") {
                argv.extend([
                    "--gpu".into(),
                    format!("socket={}", field("\"gpu\"", "socket")),
                ]);
            }
            backend = vmm_attempts(&mut p, &argv).ok();
            failed = p.close();
        }
        // As cloud-hypervisor answers (docs/DESIGN.md, "Measured: cloud-hypervisor"): the
        // power button of a VM that is not running is refused; the guest
        // powering off, or vmm.shutdown, ends the process.
        let power_button = line.starts_with("PUT /api/v1/vm.power-button ");
        booted |= line.starts_with("PUT /api/v1/vm.boot ");
        let done = (power_button && booted) || line.starts_with("PUT /api/v1/vmm.shutdown ");
        let answer: &[u8] = if power_button && !booted {
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 71\r\n\r\n\
              [\"Error from API\",\"Error triggering power button\",\"VM is not running\"]\n"
        } else {
            b"HTTP/1.1 204 No Content\r\n\r\n"
        };
        let _ = conn.write_all(answer);
        let _ = std::io::stdout().flush();
        if done {
            drop(backend);
            std::process::exit(i32::from(failed > 0));
        }
    }
    std::process::exit(1);
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
        let (line, _) = tests::read_http_request(&mut conn);
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
