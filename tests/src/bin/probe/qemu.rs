//! The probe in QEMU's place.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

use sandbox_core::contract::{config, fd, VmDir};

use crate::report::*;

/// The probe as the --vmm program of vm-init, config/vmm qemu: QEMU's
/// exact argv, fds and policy. It prints its argv, tries what a
/// compromised QEMU would with the paths its argv names, then answers QMP
/// like QEMU (its greeting, `return` to every command, and exit 0 on
/// system_powerdown).
pub(crate) fn as_qemu(argv: &[String]) -> ! {
    println!("argv: {}", argv[1..].join(" "));
    let mut p = Probe::new(None);
    let backend = qemu_attempts(&mut p, argv);
    let failed = p.close();
    serve_qmp_like_qemu(backend.ok(), failed)
}

/// Its view holds the sockets its argv names, and no other of the VM
/// directory's: no gpu.sock, as QEMU has no GPU device, whatever the VM's
/// config says. Returns its connection to virtiofsd, held like QEMU's.
fn qemu_attempts(p: &mut Probe, argv: &[String]) -> std::io::Result<UnixStream> {
    let serial = arg_after(argv, "-serial").trim_start_matches("file:");
    let vm_dir = Path::new(serial)
        .parent()
        .expect("serial FIFO in the VM dir");
    let d = VmDir::new(vm_dir);
    let fs_sock = argv
        .iter()
        .find_map(|a| a.strip_prefix("socket,id=vfs,path="))
        .unwrap_or("");
    let backend = crate::vmm::console_and_backend(p, Path::new(serial), fs_sock);
    p.check(
        "read its kernel (config/)",
        Want::Ok,
        io(fs::read(d.config_file(config::KERNEL))),
    );
    p.check(
        "connect VMDIR/gpu.sock (QEMU has no GPU)",
        ENOENT,
        io(UnixStream::connect(d.gpu_socket())),
    );
    p.check(
        "connect VMDIR/api.sock",
        ENOENT,
        io(UnixStream::connect(d.api_socket())),
    );
    p.check("ls VMDIR", EACCES, io(fs::read_dir(vm_dir)));
    backend
}

fn serve_qmp_like_qemu(_backend: Option<UnixStream>, failed: usize) -> ! {
    let qmp = match sandbox_core::fds::take_fd(fd::VMM_API, "the QMP chardev") {
        Ok(fd) => UnixListener::from(fd),
        Err(e) => {
            eprintln!("probe: {e}");
            std::process::exit(111);
        }
    };
    for conn in qmp.incoming() {
        let Ok(mut conn) = conn else { continue };
        let _ = conn.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n");
        let Ok(read) = conn.try_clone() else { continue };
        for line in BufReader::new(read).lines() {
            let Ok(line) = line else { break };
            println!("qmp: {}", line.trim_end());
            let _ = conn.write_all(b"{\"return\": {}}\r\n");
            if line.contains("system_powerdown") || line.contains("\"quit\"") {
                let _ = std::io::stdout().flush();
                std::process::exit(i32::from(failed > 0));
            }
        }
    }
    std::process::exit(1);
}
