//! The wrapper of the test services: applies a test profile with
//! sandbox_core::policy::apply exactly as wrap-* do, then execs a program.
//!
//! test-wrap --profile user|root --uid N --vm-dir DIR --own-dir DIR
//!           [--keep-fd N]... [--weaken signal-scope|abstract-scope] -- PROGRAM ARGS...

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::path::PathBuf;

use sandbox_core::parent::ExpectedParent;
use sandbox_core::policy::{apply, Exec};
use tests::{test_policy, Privilege, Weaken};

fn main() {
    let mut args = std::env::args_os().skip(1);
    let (mut profile, mut uid, mut vm_dir, mut own_dir, mut keep, mut weaken) =
        (None, None, None, None, Vec::new(), Weaken::None);
    let mut rest: Vec<OsString> = Vec::new();
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .and_then(|v| v.into_string().ok())
                .unwrap_or_default()
        };
        match a.to_str().unwrap_or("") {
            "--profile" => profile = Privilege::parse(&val()),
            "--uid" => uid = val().parse().ok(),
            "--vm-dir" => vm_dir = Some(PathBuf::from(val())),
            "--own-dir" => own_dir = Some(PathBuf::from(val())),
            "--keep-fd" => keep.push(val().parse().unwrap_or(-1)),
            "--weaken" => {
                weaken = match val().as_str() {
                    "signal-scope" => Weaken::NoSignalScope,
                    "abstract-scope" => Weaken::NoAbstractScope,
                    _ => usage(),
                }
            }
            "--" => {
                rest = args.collect();
                break;
            }
            _ => usage(),
        }
    }
    let (Some(profile), Some(uid), Some(vm_dir), Some(own_dir)) = (profile, uid, vm_dir, own_dir)
    else {
        usage()
    };
    if rest.is_empty() {
        usage();
    }
    let policy = test_policy(profile, uid, &vm_dir, &own_dir, weaken, keep);
    let exec = Exec {
        program: PathBuf::from(rest.remove(0)),
        args: rest,
    };
    // Started by the harness's PID 1 (getppid() is 1 inside the VM), or
    // as a service of the VM's own s6-svscan (vm-init --services).
    let err = apply(&policy, &ExpectedParent::InsideVm, &exec).unwrap_err();
    eprintln!("test-wrap: {err}");
    std::process::exit(err.exit_code().into());
}

fn usage() -> ! {
    eprintln!("test-wrap: usage: test-wrap --profile user|root --uid N --vm-dir DIR --own-dir DIR [--keep-fd N]... [--weaken X] -- PROGRAM ARGS...");
    std::process::exit(100);
}
