//! The probe in virtiofsd's place.

use std::fs;
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::Path;

use sandbox_core::contract::{config, daemon, fd, VmDir};
use sandbox_core::policy::DEFAULT_MEMLOCK;
use sandbox_core::Errno;

use crate::escapes::*;
use crate::report::*;

/// The probe as the --virtiofsd program of vm-init: virtiofsd's exact argv,
/// fds and policy. Everything outside VMDIR/fs must be out of reach; then
/// it holds the VMM's connection like virtiofsd until the VMM goes away.
pub(crate) fn as_virtiofsd(shared: &Path) -> ! {
    let vm_dir = shared
        .parent()
        .expect("the storage has a parent")
        .to_owned();
    let state_dir = vm_dir.parent().expect("VM dir has a parent").to_owned();
    let mut p = Probe::new(None);
    let me = std::process::id() as i32;
    p.check(
        "create fs/probe-out",
        Want::Ok,
        create(&shared.join("probe-out")),
    );
    p.check(
        "read fs/from-host.txt",
        Want::Ok,
        io(fs::read(shared.join(tests::new_vm::FROM_HOST))),
    );
    // The guest's root owns fs/ through the idmap: it may open fs/ to
    // everyone and leave a setuid-root program there. Allowed here; the
    // test checks from the host that no host user reaches it (the state
    // dir, above fs/, is root's alone), whatever fs/'s mode.
    use std::os::unix::fs::PermissionsExt;
    p.check(
        "chmod fs/ 0755",
        Want::Ok,
        io(fs::set_permissions(
            shared,
            fs::Permissions::from_mode(0o755),
        )),
    );
    let suid = shared.join(tests::SETUID_COPY);
    p.check(
        "copy itself to fs/ with mode 04755",
        Want::Ok,
        io(fs::copy("/proc/self/exe", &suid)
            .and_then(|_| fs::set_permissions(&suid, fs::Permissions::from_mode(0o4755)))),
    );
    // Not even listable (no rule), and holding nothing but fs/ anyway.
    p.check("ls VMDIR", EACCES, io(fs::read_dir(&vm_dir)));
    let d = VmDir::new(&vm_dir);
    let kernel = d.config_file(config::KERNEL);
    for path in [
        kernel.clone(),
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
    let kernel = kernel.strip_prefix(&vm_dir).unwrap_or(&kernel);
    p.check(
        &format!("open fs/../{}", kernel.display()),
        ENOENT,
        io(fs::File::open(shared.join("..").join(kernel))),
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
    pid1(&mut p);
    p.kill_sweep(me);
    namespaces_and_mounts(&mut p);
    p.check("chroot /", EPERM, rx(rustix::process::chroot("/")));
    p.check(
        "TCP bind 127.0.0.1:0",
        EACCES,
        io(TcpListener::bind(("127.0.0.1", 0))),
    );
    no_kvm(&mut p);
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
            .open(shared.join(tests::new_vm::HOST_DEVICE))),
    );
    let named = named_keys(&fs::read_to_string(shared.join("vm-sandbox-keys")).unwrap_or_default());
    keyrings(&mut p, daemon::VIRTIOFSD, &named);
    // Last: were it allowed, it would change who the probe is.
    let vmm = rustix::process::Uid::from_raw(sandbox_core::ids::VMM_UID);
    p.check(
        "setresuid(the VMM's uid)",
        Want::Err(Errno::EINVAL),
        rx(rustix::thread::set_thread_res_uid(vmm, vmm, vmm)),
    );
    p.close();
    // Like virtiofsd: serve the VMM's connection until it goes away.
    if let Ok(fd) = sandbox_core::fds::take_fd(fd::VIRTIOFSD_LISTENER, "--fd") {
        let listener = std::os::unix::net::UnixListener::from(fd);
        if let Ok((mut conn, _)) = listener.accept() {
            let mut buf = [0u8; 64];
            while std::io::Read::read(&mut conn, &mut buf).is_ok_and(|n| n > 0) {}
        }
    }
    std::process::exit(i32::from(p.failed > 0));
}
