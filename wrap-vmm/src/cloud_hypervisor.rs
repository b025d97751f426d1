//! cloud-hypervisor, as Spectrum runs it: its API on the listener vm-init
//! bound (fd 3), its events on a pipe PID 1 reads (fd 4), the VM on its
//! command line. Its own seccomp filters and Landlock stay on.

use sandbox_core::contract::config;
use sandbox_core::landlock::Access;

use crate::policy::{arg, Specifics, VmConfig, API_FD, EVENT_FD, FS_TAG};

pub fn specifics(c: &VmConfig) -> Specifics {
    let d = c.dir();
    let p = |name: &str| arg(d.config_file(name));
    let mut s = Specifics {
        keep_fds: vec![API_FD, EVENT_FD],
        ..Specifics::default()
    };
    s.args(&[
        "--api-socket",
        &format!("fd={API_FD}"),
        "--event-monitor",
        &format!("fd={EVENT_FD}"),
    ]);
    s.args(&["--kernel", &p(config::KERNEL)]);
    if c.initramfs {
        s.args(&["--initramfs", &p(config::INITRAMFS)]);
    }
    if let Some(cmdline) = &c.cmdline {
        s.args(&["--cmdline", cmdline]);
    }
    for disk in &c.disks {
        s.args(&["--disk", &format!("path={},readonly=on", disk.display())]);
    }
    s.args(&[
        "--fs",
        &format!("tag={FS_TAG},socket={}", arg(d.virtiofsd_socket())),
    ]);
    if c.gpu.is_some() {
        s.args(&["--gpu", &format!("socket={}", arg(d.gpu_socket()))]);
    }
    s.args(&["--memory", &format!("size={}M,shared=on", c.memory_mib)]);
    s.args(&[
        "--serial",
        &format!("file={}", arg(d.serial_fifo())),
        "--console",
        "off",
    ]);
    // It unlinks and binds its vsock socket (and connects to VSOCK_PORT
    // sockets host programs bind beside it).
    s.args(&[
        "--vsock",
        &format!("cid=3,socket={}", arg(d.vsock_socket())),
    ]);
    s.row(d.vsock_dir(), Access::Sockets, false);
    s
}

/// The argv of Spectrum's flow: the API listener and nothing else; the VM
/// comes over the API (`vm.create` with [`vm_config_json`], then
/// `vm.boot`, see the vmm-api binary). The policy is the same as for the
/// argv flow: it is derived from the VM's config directory either way.
pub fn api_only_args() -> Vec<std::ffi::OsString> {
    ["--api-socket", &format!("fd={API_FD}")]
        .iter()
        .map(std::ffi::OsString::from)
        .collect()
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
    let path = |p: std::path::PathBuf| json_string(&arg(p));
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
        assert_eq!(api_only_args(), ["--api-socket", "fd=3"]);
    }
}
