//! The kvm guards of `tests::host` against the orderings that hung or
//! misled them, run by tests/tests/kvm_guards.rs under `unshare -m`: in
//! this mount namespace /run, /etc and /dev/kvm are private copies (a
//! tmpfs, an overlay, a node of the tmpfs bound on /dev/kvm), so nothing
//! here changes the host's.
//!
//! Each scenario ends with the next test's turn: /dev/kvm usable, in a
//! thread of its own, which must come within 10 s; once it is done,
//! /dev/kvm and the kvm group are as found.
//!
//! `kvm-guards hold pristine|usable`: holds that state until killed (a
//! killed test run).

#![forbid(unsafe_code)]

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use tests::host::{kvm_pristine, kvm_snapshot, kvm_usable};

const TURN: Duration = Duration::from_secs(10);

fn sh(script: &str) {
    let status = Command::new("sh")
        .args(["-c", script])
        .status()
        .expect("run sh");
    assert!(status.success(), "{script}: {status}");
}

type Snapshot = Option<(u32, u32, u32, Option<u32>)>;

/// The next test's turn, in a thread of its own: /dev/kvm usable. What
/// it saw while it held it, or None if it did not get it within `wait`.
fn next_test(wait: Duration) -> Option<Snapshot> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let usable = kvm_usable();
        let seen = kvm_snapshot();
        drop(usable);
        let _ = tx.send(seen);
    });
    rx.recv_timeout(wait).ok()
}

/// The next test got /dev/kvm usable, and the host is as `found` after.
fn proceeded(scenario: &str, seen: Option<Snapshot>, found: Snapshot) {
    let seen = seen.unwrap_or_else(|| {
        panic!("{scenario}: the next test still waits for /dev/kvm after {TURN:?}")
    });
    let (uid, gid, mode, group) = seen.expect("/dev/kvm");
    assert_eq!(
        (uid, mode, group),
        (0, 0o660, Some(gid)),
        "{scenario}: usable"
    );
    assert_eq!(kvm_snapshot(), found, "{scenario}: put back as found");
    eprintln!("kvm-guards: {scenario}: the next test proceeded, the host is as found");
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("hold") {
        let _held = match std::env::args().nth(2).as_deref() {
            Some("pristine") => (Some(kvm_pristine()), None),
            Some("usable") => (None, Some(kvm_usable())),
            _ => {
                eprintln!("usage: kvm-guards [hold pristine|usable]");
                std::process::exit(100);
            }
        };
        println!("held");
        loop {
            std::thread::sleep(Duration::from_secs(60));
        }
    }
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).expect("mount ns");
    if ns("self") == ns(&std::os::unix::process::parent_id().to_string()) {
        eprintln!("kvm-guards: run me under unshare -m: I change /etc and /dev/kvm");
        std::process::exit(100);
    }
    // The private copies, as udev leaves a host: a kvm group, /dev/kvm
    // crw-rw---- root:kvm.
    sh("mount -t tmpfs -o mode=755 kvm-guards /run \
        && mkdir /run/upper /run/work \
        && mount -t overlay overlay -o lowerdir=/etc,upperdir=/run/upper,workdir=/run/work /etc \
        && mknod -m 0660 /run/kvm c 10 232 \
        && mount --bind /run/kvm /dev/kvm \
        && { getent group kvm >/dev/null || groupadd --system kvm; } \
        && chgrp kvm /dev/kvm");
    let found = kvm_snapshot();
    let (read_only, writable) = (
        "mount -o remount,bind,ro /etc",
        "mount -o remount,bind,rw /etc",
    );

    // A test panics while it holds the pristine state; another waits.
    let (held_tx, held) = mpsc::channel();
    let (go, go_rx) = mpsc::channel::<()>();
    let failing = std::thread::spawn(move || {
        let _pristine = kvm_pristine();
        held_tx.send(()).unwrap();
        let _ = go_rx.recv();
        panic!("a test fails while it holds the pristine state");
    });
    held.recv_timeout(TURN).expect("the pristine state");
    let (tx, waiter) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(next_test(TURN));
    });
    assert!(
        waiter.recv_timeout(Duration::from_millis(300)).is_err(),
        "the next test did not wait for the pristine state to end"
    );
    go.send(()).unwrap();
    assert!(failing.join().is_err());
    proceeded(
        "a holder panicked",
        waiter.recv_timeout(TURN).unwrap(),
        found,
    );

    // A guard fails while it changes the host (groupdel cannot lock a
    // read-only /etc/group).
    sh(read_only);
    assert!(std::thread::spawn(|| drop(kvm_pristine())).join().is_err());
    sh(writable);
    proceeded("taking the pristine state failed", next_test(TURN), found);

    // Putting the host back fails (groupadd, likewise).
    let pristine = kvm_pristine();
    sh(read_only);
    assert!(std::thread::spawn(move || drop(pristine)).join().is_err());
    sh(writable);
    proceeded("putting the host back failed", next_test(TURN), found);

    // A test run is killed while it holds the pristine state.
    killed_while_holding("pristine");
    proceeded("a test run was killed", next_test(TURN), found);

    // A fresh machine of this kind: two tests use /dev/kvm usable at
    // once, and the last one out puts it back.
    sh("groupdel kvm && chown 0:0 /dev/kvm && chmod 0600 /dev/kvm");
    let fresh = kvm_snapshot();
    let first = kvm_usable();
    let second = next_test(TURN).expect("a second test gets /dev/kvm while the first uses it");
    assert_eq!(second.and_then(|s| s.3), second.map(|s| s.1), "usable");
    assert!(
        kvm_snapshot() != fresh,
        "still usable: the first test uses it"
    );
    drop(first);
    assert_eq!(kvm_snapshot(), fresh, "put back by the last one out");

    // A test run is killed while it uses the change; the next guard, one
    // that needs the pristine state, puts it back and goes on.
    killed_while_holding("usable");
    let pristine = std::thread::spawn(|| drop(kvm_pristine()));
    assert!(pristine.join().is_ok());
    assert_eq!(
        kvm_snapshot(),
        fresh,
        "a usable change left behind put back"
    );
    eprintln!("kvm-guards: a fresh machine: shared, put back, a killed run's change put back");
}

/// A test run (this program, `hold STATE`) killed with -9 while it holds
/// a guard.
fn killed_while_holding(state: &str) {
    let mut killed = Command::new(std::env::current_exe().unwrap())
        .args(["hold", state])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(killed.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "held\n");
    killed.kill().unwrap();
    killed.wait().unwrap();
}
