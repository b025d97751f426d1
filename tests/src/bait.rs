//! Host-side bait for the host-reach attempts: what a compromised daemon
//! on a stock host would go for, set up by the test on the host while a
//! probe runs. The probe (in any daemon's place) knows these names; the
//! test checks afterwards what only the host can see: no datagram came,
//! no SysV segment of the VM's is left.
//!
//! One bait per test process, shared by its tests and removed by the last.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::sync::Mutex;

use sandbox_core::attempts;

/// A host service's socket, 0666 in a 0755 directory under /run, as
/// journald's, D-Bus's or X11's are.
pub const SOCKET: &str = "/run/vm-sandbox-bait/host.sock";
const SOCKET_DIR: &str = "/run/vm-sandbox-bait";
/// An abstract name a host service bound (X11's and D-Bus's kind).
pub const ABSTRACT: &str = "vm-sandbox-bait";
/// A UDP service on the host's loopback.
pub const UDP_PORT: u16 = 47_999;
/// A SysV shared memory segment of the host, mode 0666.
pub const SHM_KEY: i32 = 0x7673_6200;
/// The key the probe creates its own segment under: the host checks that
/// none is left (the VM's IPC namespace is gone with it).
pub const PROBE_SHM_KEY: i32 = 0x7673_6201;

#[derive(Debug)]
struct Bait {
    _socket: UnixListener,
    _abstract: UnixListener,
    udp: std::net::UdpSocket,
    shm: i32,
}

static HELD: Mutex<(usize, Option<Bait>)> = Mutex::new((0, None));

/// Held while a test's probes run.
#[derive(Debug)]
pub struct BaitGuard(());

pub fn hold() -> BaitGuard {
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    if held.0 == 0 {
        std::fs::create_dir_all(SOCKET_DIR).expect("mkdir bait dir");
        let _ = std::fs::remove_file(SOCKET);
        let socket = UnixListener::bind(SOCKET).expect("bind bait socket");
        std::fs::set_permissions(SOCKET, std::fs::Permissions::from_mode(0o666)).unwrap();
        let addr = SocketAddr::from_abstract_name(ABSTRACT.as_bytes()).unwrap();
        let abstract_ = UnixListener::bind_addr(&addr).expect("bind bait abstract name");
        let udp = std::net::UdpSocket::bind(("127.0.0.1", UDP_PORT)).expect("bind bait UDP");
        udp.set_nonblocking(true).unwrap();
        // A segment left by a killed run of ours is reused, not an error.
        let shm = attempts::shmget(SHM_KEY, 4096, true, 0o666).expect("bait shmget");
        held.1 = Some(Bait {
            _socket: socket,
            _abstract: abstract_,
            udp,
            shm,
        });
    }
    held.0 += 1;
    BaitGuard(())
}

impl BaitGuard {
    /// Datagrams that reached the host's UDP bait so far: must stay 0.
    pub fn datagrams(&self) -> usize {
        let held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        let bait = held.1.as_ref().expect("bait held");
        let mut buf = [0u8; 64];
        std::iter::from_fn(|| bait.udp.recv(&mut buf).ok()).count()
    }
}

impl BaitGuard {
    /// After a probe's VM has ended: no datagram reached the host, and the
    /// probe's SysV segment went with the VM's IPC namespace.
    pub fn assert_nothing_reached_the_host(&self) {
        assert_eq!(self.datagrams(), 0, "a datagram reached the host");
        assert!(
            !host_shm_keys().contains(&PROBE_SHM_KEY),
            "the probe's SysV segment outlived its VM"
        );
    }
}

impl Drop for BaitGuard {
    fn drop(&mut self) {
        let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
        held.0 -= 1;
        if held.0 == 0 {
            if let Some(bait) = held.1.take() {
                let _ = attempts::shm_remove(bait.shm);
            }
            let _ = std::fs::remove_file(SOCKET);
            let _ = std::fs::remove_dir(SOCKET_DIR);
        }
    }
}

/// The keys of the host's SysV shared memory segments.
pub fn host_shm_keys() -> Vec<i32> {
    std::fs::read_to_string("/proc/sysvipc/shm")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect()
}
