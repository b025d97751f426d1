//! `cargo xtask demo`: a real VM booted fully sandboxed under s6, on a
//! fresh machine. Fetches and prepares everything (QEMU, virtiofsd, the
//! guest), starts s6-svscan with the project's service template, brings
//! the VM up, shows the guest booting and writing into its storage, what
//! each daemon can and cannot reach, then `s6-svc -d`: the guest gets the
//! ACPI power button and powers off; the demo checks nothing is left.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sandbox_core::contract::bin::{VM, VM_INIT};
use sandbox_core::contract::{config, env, VmDir};
use sandbox_core::vmconfig::Vmm;
use tests::new_vm::NewVm;

use crate::{cargo, link, root, sh, target_dir, tools, Result};

const TOP: &str = "/run/vm-sandbox-demo";

fn phase(name: &str, start: Instant) {
    println!("   [{name}: {:.2} s]", start.elapsed().as_secs_f64());
}

fn within(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

fn write(path: &Path, text: &str) -> Result {
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}

fn status_field(pid: i32, field: &str) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(':')
                .map(|v| v.trim().to_owned())
        })
        .unwrap_or_default()
}

fn children(pid: i32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn pidns(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

const CAP_NAMES: &[&str] = &[
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

fn cap_names(hex: &str) -> String {
    let bits = u64::from_str_radix(hex, 16).unwrap_or(0);
    let names: Vec<&str> = (0..CAP_NAMES.len())
        .filter(|i| bits & (1 << i) != 0)
        .map(|i| CAP_NAMES[i])
        .collect();
    if names.is_empty() {
        "none".into()
    } else {
        names.join(",")
    }
}

/// What a live daemon is, read from the host: ids, capabilities, seccomp,
/// its view of the VM directory and of /proc, /tmp, /dev/shm.
fn inspect(pid: i32, vm_dir: &Path) {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let uid = status_field(pid, "Uid");
    let host_uid = uid.split_whitespace().next().unwrap_or("?");
    let uid_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap_or_default();
    let base: u64 = uid_map
        .split_whitespace()
        .nth(1)
        .and_then(|b| b.parse().ok())
        .unwrap_or(0);
    let inside = host_uid
        .parse::<u64>()
        .map_or("?".into(), |u| (u - base).to_string());
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    println!("   {} (host pid {pid}): {}", comm.trim(), exe.display());
    println!(
        "     uid {inside} in the VM = host uid {host_uid}; groups {}",
        status_field(pid, "Groups")
    );
    println!(
        "     capabilities: {}",
        cap_names(&status_field(pid, "CapEff"))
    );
    println!(
        "     bounding set: {}",
        cap_names(&status_field(pid, "CapBnd"))
    );
    println!(
        "     no_new_privs {}, seccomp mode {} (2: a filter, the daemon's own or wrap-gpu's)",
        status_field(pid, "NoNewPrivs"),
        status_field(pid, "Seccomp")
    );
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let seen = |p: &Path| -> String {
        let rel = p.strip_prefix("/").unwrap_or(p);
        match std::fs::read_dir(root.join(rel)) {
            Ok(d) => {
                let mut v: Vec<String> = d
                    .filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                v.sort();
                format!("[{}]", v.join(" "))
            }
            Err(e) => format!("({e})"),
        }
    };
    println!("     sees of its VM directory: {}", seen(vm_dir));
    println!(
        "     sees of the state dir:    {}",
        seen(vm_dir.parent().unwrap_or(vm_dir))
    );
    print_mounts(pid, &root);
}

/// How /proc, /tmp and /dev/shm are mounted in a daemon's view.
fn print_mounts(pid: i32, root: &Path) {
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    for target in ["/proc", "/tmp", "/dev/shm"] {
        // mountinfo: ... mount-point mount-options ... - fstype source super-options
        let m = mountinfo
            .lines()
            .rfind(|l| l.split_whitespace().nth(4) == Some(target))
            .map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let sep = f.iter().position(|&x| x == "-").unwrap_or(0);
                let (opts, fstype, sup) = (
                    f[5],
                    f.get(sep + 1).unwrap_or(&"?"),
                    f.get(sep + 3).unwrap_or(&""),
                );
                let own = if sup.contains("hidepid") {
                    "hidepid=invisible"
                } else {
                    ""
                };
                format!("{fstype} {opts} {own}")
            });
        println!(
            "     {target:<9} {}",
            m.unwrap_or_else(|| {
                if root.join(&target[1..]).exists() {
                    "the host's (read-only)".into()
                } else {
                    "none: not in its view".into()
                }
            })
        );
    }
}

/// s6-svscan, stopped (with every service) when dropped.
struct S6(Child);

impl Drop for S6 {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let _ = self.0.wait();
    }
}

fn s6_ok(args: &[&str], service: &Path) -> bool {
    Command::new(args[0])
        .args(&args[1..])
        .arg(service)
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs a probe VM: the probe in one daemon's place, stand-ins in the
/// others'. With `gpu`, the VM has a GPU whose daemon is that program and
/// whose compositor is `gpu`'s socket. Prints the probe's report; returns
/// whether every attempt held.
fn probe_vm(
    bin: &Path,
    state: &Path,
    name: &str,
    (vmm, virtiofsd): (&str, &str),
    gpu: Option<(&str, &Path)>,
) -> Result<bool> {
    let mut vm = NewVm::create(state.join(name)).and_then(NewVm::storage_for_the_probe);
    if let Some((_, socket)) = gpu {
        vm = vm.and_then(|v| v.set(config::GPU, &socket.display().to_string()));
    }
    vm.map_err(|e| e.to_string())?;
    let mut child = Command::new(bin.join(VM_INIT))
        .args(tests::no_cgroups())
        .args([
            "--parent-pid",
            &std::process::id().to_string(),
            "--state-dir",
        ])
        .arg(state)
        .arg("--vmm")
        .arg(bin.join(vmm))
        .arg("--virtiofsd")
        .arg(bin.join(virtiofsd))
        .args(
            gpu.map(|(program, _)| ["--gpu".into(), bin.join(program)])
                .into_iter()
                .flatten(),
        )
        .arg(name)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("vm-init: {e}"))?;
    use std::io::BufRead;
    let mut out = std::io::BufReader::new(child.stdout.take().expect("piped"));
    let mut ok = false;
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let line = sandbox_core::contract::unmarked(&line);
        if !line.starts_with("argv:") && !line.starts_with("api:") {
            print!("     {line}");
        }
        if line.starts_with("probe: ") {
            ok = line.contains(" 0 failed");
            break;
        }
    }
    // vm-init's own lines up to its ready line: a refusal shows here.
    let mut err = std::io::BufReader::new(child.stderr.take().expect("piped"));
    let mut ready = false;
    loop {
        let mut l = String::new();
        if err.read_line(&mut l).unwrap_or(0) == 0 {
            break;
        }
        if l.contains(": ready") {
            ready = true;
            break;
        }
        print!("     {l}");
    }
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
    Ok(ok && ready)
}

/// A compositor for the GPU probe: a socket 0660 root:render under a
/// directory only root may enter (as Spectrum's /run/user/0), which tells
/// each connection to run the probe's attempts.
fn compositor(dir: &Path) -> Result<PathBuf> {
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| e.to_string())?;
    let socket = dir.join("wayland-1");
    let listener = std::os::unix::net::UnixListener::bind(&socket)
        .map_err(|e| format!("bind {}: {e}", socket.display()))?;
    sh(Command::new("chgrp").arg("render").arg(&socket))?;
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| e.to_string())?;
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            let _ = c.write_all(b"probe\n");
            std::thread::spawn(move || {
                let mut b = [0u8; 64];
                while std::io::Read::read(&mut c, &mut b).is_ok_and(|n| n > 0) {}
            });
        }
    });
    Ok(socket)
}

/// A program of the user's own, named by an environment variable.
fn users_own(var: &str) -> Result<Option<PathBuf>> {
    let Some(path) = std::env::var_os(var).map(PathBuf::from) else {
        return Ok(None);
    };
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(Some(path)),
        _ => Err(format!("{var}={}: not an executable file", path.display())),
    }
}

pub fn run() -> Result {
    let total = Instant::now();
    // A user's own daemons, instead of QEMU and no GPU.
    let cloud_hypervisor = users_own("VM_SANDBOX_CLOUD_HYPERVISOR")?;
    let crosvm = users_own("VM_SANDBOX_CROSVM")?;
    println!("== vm-sandbox demo: one VM, fully sandboxed, under s6\n");
    prepare()?;
    let top = PathBuf::from(TOP);
    let _ = std::fs::remove_dir_all(&top);
    let _mount = crate::host::top_mount(&top)?;
    let (bin, state, scan) = lay_out(&top)?;
    let (vm, vm_init_args) = demo_vm(&state, cloud_hypervisor.as_deref(), crosvm.as_deref())?;
    let (s6, service) = start_under_s6(&top, &scan, &bin, &state, &vm_init_args)?;
    let serial = show_boot_and_storage(&vm)?;
    let pid1 = show_daemons(&service, &vm)?;
    let (a, b, c) = show_probes(&top, &bin)?;
    let down = power_off(&service, &vm, pid1, s6, &serial)?;
    let held = |ok: bool| if ok { "held" } else { "FAILED" };
    println!(
        "\n   probes: virtiofsd's policy {}, the VMM's {}, the GPU daemon's {}",
        held(a),
        held(b),
        held(c)
    );
    phase("total", total);
    let _ = std::fs::remove_dir_all(&top);
    if a && b && c && down {
        Ok(())
    } else {
        Err("the demo found a problem (see above)".into())
    }
}

/// Step 1: everything the demo needs, fetched and built.
fn prepare() -> Result {
    println!("1. Preparing: Debian packages, virtiofsd {} (crates.io), QEMU (Debian packages), the guest", tools::VIRTIOFSD_VERSION);
    let t = Instant::now();
    crate::deps()?;
    tools::tools()?;
    tools::guest()?;
    sh(cargo().args(["build", "--workspace", "--bins"]))?;
    crate::host::kvm_as_udev_makes_it()?;
    phase("prepare", t);
    Ok(())
}

/// The binaries (linked from the build tree), the state dir and the scan
/// dir under `top`.
fn lay_out(top: &Path) -> Result<(PathBuf, PathBuf, PathBuf)> {
    let (bin, state, scan) = (top.join("bin"), top.join("state"), top.join("scan"));
    for d in [&bin, &scan] {
        std::fs::create_dir_all(d).map_err(|e| format!("mkdir {}: {e}", d.display()))?;
    }
    crate::host::state_dir(&state)?;
    let build = target_dir().join("debug");
    for b in VM.into_iter().chain(["probe", "standin"]) {
        link(&build.join(b), &bin.join(b))?;
    }
    for s in ["vmm-cooperative", "virtiofsd-ok"] {
        link(&build.join("standin"), &bin.join(s))?;
    }
    Ok((bin, state, scan))
}

/// The demo VM's directory and the arguments its service gives vm-init.
fn demo_vm(
    state: &Path,
    cloud_hypervisor: Option<&Path>,
    crosvm: Option<&Path>,
) -> Result<(PathBuf, String)> {
    let new = NewVm::create(state.join("demo"))
        .and_then(|v| v.test_guest("wait"))
        .and_then(|v| v.set(config::MEMORY, "256"));
    let (new, vmm) = match cloud_hypervisor {
        Some(path) => (
            new.and_then(|v| v.set(config::VMM, Vmm::CloudHypervisor.config_name())),
            path.to_owned(),
        ),
        None => (new.and_then(NewVm::qemu_tcg), tools::qemu()),
    };
    let mut vm_init_args = format!(
        "--vmm {} --virtiofsd {}",
        vmm.display(),
        tools::virtiofsd().display()
    );
    // Each daemon is bounded in its own cgroup (v2); a host without it
    // gets the explicit opt-out, and the demo says so.
    for flag in tests::no_cgroups() {
        println!(
            "   this host has no cgroup v2 with the memory, pids and cpu controllers: \
             the demo VM runs without those bounds ({flag})"
        );
    }
    let new = match crosvm {
        Some(crosvm) => {
            vm_init_args.push_str(&format!(" --gpu {}", crosvm.display()));
            // The compositor's socket: the user's, or Spectrum's path.
            let socket = std::env::var("VM_SANDBOX_WAYLAND_SOCKET").unwrap_or_default();
            new.and_then(|v| v.set(config::GPU, &socket))
        }
        None => new,
    };
    let vm = new.map_err(|e| e.to_string())?.into_path();
    println!(
        "   the VMM: {}; virtiofsd {} ({}); the GPU daemon: {}",
        match cloud_hypervisor {
            Some(p) => format!("your cloud-hypervisor ({})", p.display()),
            None => format!("QEMU, Debian's ({})", vmm.display()),
        },
        tools::VIRTIOFSD_VERSION,
        tools::virtiofsd().display(),
        match crosvm {
            Some(p) => format!("your crosvm ({})", p.display()),
            None => "none in this VM (the probe shows its policy below)".into(),
        }
    );
    write(
        &VmDir::new(&vm).storage().join("README"),
        "the VM's private storage, shared by virtiofsd\n",
    )?;

    Ok((vm, vm_init_args))
}

/// Step 2: s6-svscan with the project's template, until the VM is up.
fn start_under_s6(
    top: &Path,
    scan: &Path,
    bin: &Path,
    state: &Path,
    vm_init_args: &str,
) -> Result<(S6, PathBuf)> {
    println!(
        "\n2. Starting s6-svscan on {} with the project's template (s6/vm)",
        scan.display()
    );
    let t = Instant::now();
    let service = scan.join("vm-demo");
    std::fs::create_dir_all(&service).map_err(|e| e.to_string())?;
    for f in ["run", "notification-fd", "timeout-kill"] {
        std::fs::copy(root().join("s6/vm").join(f), service.join(f)).map_err(|e| e.to_string())?;
    }
    write(
        &service.join(env::VM_CONF),
        &tests::vm::vm_conf(Some("demo"), state, vm_init_args),
    )?;
    let log = std::fs::File::create(top.join("s6.log")).map_err(|e| e.to_string())?;
    let path = format!(
        "{}:/usr/lib/execline/bin:/usr/bin:/bin:/usr/sbin:/sbin",
        bin.display()
    );
    let svscan = Command::new("s6-svscan")
        .arg(scan)
        .env_clear()
        .env("PATH", path)
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .spawn()
        .map_err(|e| format!("s6-svscan: {e}"))?;
    let s6 = S6(svscan);
    if !within(Duration::from_secs(60), || {
        s6_ok(&["s6-svwait", "-U", "-t", "1000"], &service)
    }) {
        return Err(format!(
            "the VM did not come up; s6 log:\n{}",
            std::fs::read_to_string(top.join("s6.log")).unwrap_or_default()
        ));
    }
    println!("   s6-svwait -U returned: the VM runs");
    phase("up", t);

    Ok((s6, service))
}

/// Steps 3 and 4: the guest booting, and what it wrote through virtiofs.
/// Returns serial.log's path.
fn show_boot_and_storage(vm: &Path) -> Result<PathBuf> {
    println!("\n3. The guest booting (serial.log, excerpts)");
    let t = Instant::now();
    let hello = VmDir::new(vm).storage().join(tests::guest::HELLO);
    let serial = sandbox_core::contract::VmDir::new(vm).serial_log();
    let waiting = || std::fs::read_to_string(&serial).is_ok_and(|s| s.contains("GUEST-WAITING"));
    if !within(Duration::from_secs(60), waiting) {
        return Err("the guest did not reach its power-button wait".into());
    }
    let text = std::fs::read_to_string(&serial).unwrap_or_default();
    for l in text.lines().filter(|l| {
        l.contains("Linux version")
            || l.contains("Command line")
            || l.contains("fuse: init")
            || l.contains("GUEST")
    }) {
        println!("   | {}", l.trim_end());
    }
    phase("boot", t);

    println!("\n4. The guest wrote into its storage, through virtiofs");
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(&hello).map_err(|e| format!("{}: {e}", hello.display()))?;
    println!(
        "   {} (owner {} on disk): {}",
        hello.display(),
        meta.uid(),
        std::fs::read_to_string(&hello).unwrap_or_default().trim()
    );

    Ok(serial)
}

/// Step 5: the live daemons. Returns PID 1's host pid.
fn show_daemons(service: &Path, vm: &Path) -> Result<i32> {
    println!("\n5. The live daemons, as the host sees them");
    let outer: i32 = String::from_utf8_lossy(
        &Command::new("s6-svstat")
            .args(["-o", "pid"])
            .arg(service)
            .output()
            .map_err(|e| e.to_string())?
            .stdout,
    )
    .trim()
    .parse()
    .map_err(|_| "no pid from s6-svstat")?;
    let pid1 = *children(outer).first().ok_or("vm-init has no PID 1")?;
    println!(
        "   s6-supervise -> vm-init (host pid {outer}) -> vm-init PID 1 (host pid {pid1}, NSpid {}), non-dumpable",
        status_field(pid1, "NSpid").replace('\t', " ")
    );
    println!(
        "   PID namespace {} (the host's is {})",
        pidns(pid1).map_or("?".into(), |p| p.display().to_string()),
        pidns(outer).map_or("?".into(), |p| p.display().to_string())
    );
    for d in children(pid1) {
        inspect(d, vm);
    }

    Ok(pid1)
}

/// Step 6: the probe in each daemon's place; whether each policy held.
fn show_probes(top: &Path, bin: &Path) -> Result<(bool, bool, bool)> {
    println!("\n6. What each daemon can and cannot reach: the probe in its place, same argv, fds and policy");
    let t = Instant::now();
    // A state dir of their own beside the demo VM's (which only root may
    // search, so none can be below it).
    let probes = top.join("probes");
    crate::host::state_dir(&probes)?;
    println!("   -- in virtiofsd's place (wrap-virtiofsd's policy):");
    let a = probe_vm(
        bin,
        &probes,
        "as-virtiofsd",
        ("vmm-cooperative", "probe"),
        None,
    )?;
    println!("   -- in the VMM's place (wrap-vmm's cloud-hypervisor profile):");
    let b = probe_vm(bin, &probes, "as-vmm", ("probe", "virtiofsd-ok"), None)?;
    println!("   -- in crosvm's place (wrap-gpu's policy, its seccomp filter on):");
    let _render = crate::host::render_node_as_udev_makes_it()?;
    let socket = compositor(&top.join("user0"))?;
    let c = probe_vm(
        bin,
        &probes,
        "as-gpu",
        ("vmm-cooperative", "virtiofsd-ok"),
        Some(("probe", &socket)),
    )?;
    phase("probes", t);

    Ok((a, b, c))
}

/// Step 7: s6-svc -d, the guest powering off, and nothing left. Returns
/// whether the VM went down cleanly.
fn power_off(service: &Path, vm: &Path, pid1: i32, s6: S6, serial: &Path) -> Result<bool> {
    println!("\n7. s6-svc -d: the guest gets the ACPI power button");
    let t = Instant::now();
    let ns = pidns(pid1);
    sh(Command::new("s6-svc").arg("-d").arg(service))?;
    if !within(Duration::from_secs(40), || {
        s6_ok(&["s6-svwait", "-D", "-t", "1000"], service)
    }) {
        return Err("the VM did not go down".into());
    }
    let took = t.elapsed();
    let text = std::fs::read_to_string(serial).unwrap_or_default();
    for l in text
        .lines()
        .filter(|l| l.contains("GUEST-POWER-BUTTON") || l.contains("reboot: Power down"))
    {
        println!("   | {}", l.trim_end());
    }
    println!(
        "   down {:.0} ms after s6-svc -d (timeout 30 s)",
        took.as_secs_f64() * 1000.0
    );
    drop(s6);
    let left_procs = std::fs::read_dir("/proc")
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&p| ns.is_some() && pidns(p) == ns)
        .count();
    let left_socks: Vec<String> = std::fs::read_dir(vm)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sock"))
        .collect();
    println!("   left: {left_procs} processes of the VM's PID namespace, sockets {left_socks:?}");
    Ok(left_procs == 0 && left_socks.is_empty() && text.contains("GUEST-POWER-BUTTON"))
}
