//! cloud-hypervisor, as Spectrum runs it: its API on the listener vm-init
//! bound (fd 3), its events on a pipe PID 1 reads (fd 4), the VM on its
//! command line, or over its API (Spectrum's flow). Its own seccomp
//! filters and Landlock stay on.

use sandbox_core::contract::config;
use sandbox_core::landlock::Access;

use crate::policy::{utf8, Flow, Specifics, VmConfig, API_FD, EVENT_FD, FS_TAG};

/// In the API flow the argv holds the API listener alone; the VM's items
/// come as `vm.create` ([`vm_config_json`], sent by vmm-api), and each
/// keeps its rows and sockets. No event monitor there: fd 4 is not kept.
pub fn specifics(c: &VmConfig, flow: Flow) -> Specifics {
    let mut s = Specifics::default();
    s.args(&["--api-socket", &format!("fd={API_FD}")]);
    s.keeps(API_FD);
    let vm = vm_items(c);
    match flow {
        Flow::Argv => s.extend(vm),
        Flow::Api => {
            s.rows.extend(vm.rows);
            s.connect.extend(vm.connect);
        }
    }
    s
}

/// The VM, item by item, each with what it needs of the policy.
fn vm_items(c: &VmConfig) -> Specifics {
    let d = c.dir();
    let input = |name: &str| utf8(d.config_file(name));
    let mut s = Specifics::default();
    s.args(&["--event-monitor", &format!("fd={EVENT_FD}")]);
    s.keeps(EVENT_FD);
    // Its kernel, initramfs and disks: config/, readable (policy.rs).
    s.args(&["--kernel", &input(config::KERNEL)]);
    if c.initramfs {
        s.args(&["--initramfs", &input(config::INITRAMFS)]);
    }
    if let Some(cmdline) = &c.cmdline {
        s.args(&["--cmdline", cmdline]);
    }
    for disk in &c.disks {
        s.args(&["--disk", &format!("path={},readonly=on", disk.display())]);
    }
    s.args(&[
        "--fs",
        &format!("tag={FS_TAG},socket={}", utf8(d.virtiofsd_socket())),
    ]);
    s.connects(d.virtiofsd_socket());
    if c.gpu.is_some() {
        s.args(&["--gpu", &format!("socket={}", utf8(d.gpu_socket()))]);
        s.connects(d.gpu_socket());
    }
    s.args(&["--memory", &format!("size={}M,shared=on", c.memory_mib)]);
    // The guest's console: a FIFO PID 1 copies into serial.log, bounded.
    s.args(&[
        "--serial",
        &format!("file={}", utf8(d.serial_fifo())),
        "--console",
        "off",
    ]);
    s.row(d.serial_fifo(), Access::ReadWrite, false);
    // It unlinks and binds its vsock socket (and connects to VSOCK_PORT
    // sockets host programs bind beside it).
    s.args(&[
        "--vsock",
        &format!("cid=3,socket={}", utf8(d.vsock_socket())),
    ]);
    s.row(d.vsock_dir(), Access::Sockets, false);
    s
}

/// A JSON string (RFC 8259): quotes, backslashes and control characters
/// escaped.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The VM of the argv flow as cloud-hypervisor's `vm.create` body: kernel,
/// initramfs and cmdline, disks read-only, the virtio-fs device on
/// virtiofsd's socket, the GPU's socket (Spectrum's patch), shared memory,
/// the serial console to the FIFO PID 1 copies, no console, vsock cid 3.
pub fn vm_config_json(c: &VmConfig) -> String {
    let d = c.dir();
    let path = |p: std::path::PathBuf| json_string(&utf8(p));
    let mut payload = vec![format!(
        "\"kernel\":{}",
        path(d.config_file(config::KERNEL))
    )];
    if c.initramfs {
        payload.push(format!(
            "\"initramfs\":{}",
            path(d.config_file(config::INITRAMFS))
        ));
    }
    if let Some(cmdline) = &c.cmdline {
        payload.push(format!("\"cmdline\":{}", json_string(cmdline)));
    }
    let disks: Vec<String> = c
        .disks
        .iter()
        .map(|p| format!("{{\"path\":{},\"readonly\":true}}", path(p.clone())))
        .collect();
    let mut fields = vec![
        format!("\"payload\":{{{}}}", payload.join(",")),
        format!(
            "\"memory\":{{\"size\":{},\"shared\":true}}",
            c.memory_mib << 20
        ),
        format!("\"disks\":[{}]", disks.join(",")),
        format!(
            "\"fs\":[{{\"tag\":{},\"socket\":{},\"num_queues\":1,\"queue_size\":1024}}]",
            json_string(FS_TAG),
            path(d.virtiofsd_socket())
        ),
        format!(
            "\"serial\":{{\"mode\":\"File\",\"file\":{}}}",
            path(d.serial_fifo())
        ),
        "\"console\":{\"mode\":\"Off\"}".to_owned(),
        format!(
            "\"vsock\":{{\"cid\":3,\"socket\":{}}}",
            path(d.vsock_socket())
        ),
    ];
    if c.gpu.is_some() {
        fields.push(format!("\"gpu\":[{{\"socket\":{}}}]", path(d.gpu_socket())));
    }
    format!("{{{}}}", fields.join(","))
}

/// One whole HTTP/1.1 message at the start of `bytes`, once its head and
/// as much body as its Content-Length says have arrived: its first line
/// (request or status) and its body. The API's messages, both ways.
pub fn http_message(bytes: &[u8]) -> Option<(String, String)> {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0);
    (body.len() >= length).then(|| {
        let first = head.lines().next().unwrap_or("").to_owned();
        (first, body.get(..length).unwrap_or(body).to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandbox_core::landlock::FsRule;

    #[test]
    fn the_api_flow_carries_the_vm_of_the_argv_flow() {
        let c = VmConfig {
            vm_dir: "/run/vm/a".into(),
            vmm: crate::policy::Vmm::CloudHypervisor,
            initramfs: true,
            cmdline: Some("console=hvc0 \"quoted\"".into()),
            disks: vec!["/run/vm/a/config/blk/root.img".into()],
            gpu: None,
            memory_mib: 256,
            accel: "kvm".into(),
        };
        assert_eq!(
            vm_config_json(&c),
            "{\"payload\":{\"kernel\":\"/run/vm/a/config/vmlinux\",\
             \"initramfs\":\"/run/vm/a/config/initramfs\",\
             \"cmdline\":\"console=hvc0 \\\"quoted\\\"\"},\
             \"memory\":{\"size\":268435456,\"shared\":true},\
             \"disks\":[{\"path\":\"/run/vm/a/config/blk/root.img\",\"readonly\":true}],\
             \"fs\":[{\"tag\":\"virtiofs0\",\"socket\":\"/run/vm/a/virtiofsd.sock\",\
             \"num_queues\":1,\"queue_size\":1024}],\
             \"serial\":{\"mode\":\"File\",\"file\":\"/run/vm/a/serial.fifo\"},\
             \"console\":{\"mode\":\"Off\"},\
             \"vsock\":{\"cid\":3,\"socket\":\"/run/vm/a/vsock.d/vsock\"}}"
        );
        let api = specifics(&c, Flow::Api);
        assert_eq!(api.argv, ["--api-socket", "fd=3"]);
        assert_eq!(api.keep_fds, [API_FD]);
        // The same rows and sockets as the argv flow's.
        let argv = specifics(&c, Flow::Argv);
        let paths = |rows: &[FsRule]| rows.iter().map(|r| r.path.clone()).collect::<Vec<_>>();
        assert_eq!(paths(&api.rows), paths(&argv.rows));
        assert_eq!(api.connect, argv.connect);
    }
}
