//! What the escape matrix's runs share, whoever is the VM's PID 1: the
//! matrix's own harness (escape_matrix.rs) or vm-init with the siblings
//! as services of the VM's own s6 (per_daemon.rs). The probe is sibling
//! A, the target sibling B; another VM holds a sibling of its own.

use std::io::{BufRead, BufReader};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixStream};
use std::process::{Child, Command, Stdio};

use sandbox_core::ids::Slot;

use crate::{abstract_name, StateDir, UID_A, UID_B};

/// What a matrix run printed, and how it ended.
#[derive(Debug)]
pub struct Outcome {
    pub code: Option<i32>,
    pub ok: usize,
    pub failed: Vec<String>,
    pub output: String,
}

impl Outcome {
    pub fn of(code: Option<i32>, output: String) -> Outcome {
        Outcome {
            code,
            ok: output.lines().filter(|l| l.starts_with("ok ")).count(),
            failed: output
                .lines()
                .filter(|l| l.starts_with("FAIL"))
                .map(str::to_owned)
                .collect(),
            output,
        }
    }

    /// Nothing got through, the probe said so by its status, and at least
    /// `min` attempts ran.
    pub fn assert_all_denied(self, min: usize) {
        assert!(
            self.failed.is_empty(),
            "attempts that got through:\n{}",
            self.failed.join("\n")
        );
        assert_eq!(self.code, Some(0), "{}", self.output);
        assert!(self.ok >= min, "only {} attempts ran", self.ok);
    }
}

/// The other VM (the matrix's own harness in its "hold" scenario): sibling
/// B with its abstract socket in the VM's network namespace, until
/// [`OtherVm::release`].
#[derive(Debug)]
pub struct OtherVm {
    child: Child,
    name: String,
}

impl OtherVm {
    pub fn hold(state: &StateDir, name: &str, slot: u32) -> OtherVm {
        state.add_vm(name, Slot::new(slot).unwrap(), UID_A);
        let mut child = Command::new(state.bin().join("vm-harness"))
            .args([
                "--state-dir",
                state.0.to_str().unwrap(),
                "--slot",
                &slot.to_string(),
            ])
            .args(["--name", name, "--scenario", "hold"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start vm-harness hold");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .expect("read ready");
        assert_eq!(line, "ready\n", "VM2 did not become ready");
        OtherVm {
            child,
            name: name.to_owned(),
        }
    }

    /// From the host, before the VM goes: its sibling bound its abstract
    /// name in the VM's own network namespace, so a host client finds
    /// nothing there. Then the VM is killed.
    pub fn release(self) {
        let addr =
            SocketAddr::from_abstract_name(abstract_name(&self.name, UID_B).as_bytes()).unwrap();
        let host_connect = UnixStream::connect_addr(&addr);
        drop(self);
        assert_eq!(
            host_connect.map(drop).map_err(|e| e.raw_os_error()),
            Err(Some(111)),
            "a host client reached an abstract name bound inside a VM"
        );
    }
}

/// Also when a test fails: the VM goes with its test.
impl Drop for OtherVm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
