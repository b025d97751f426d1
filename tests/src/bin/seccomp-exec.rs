//! For `cargo xtask bench`: what wrap-gpu's seccomp filter costs at exec.
//!
//! seccomp-exec --filter|--none PROGRAM [ARGS]...
//!
//! Sets no_new_privs, then (with --filter) compiles and installs wrap-gpu's
//! allow-list exactly as policy::apply does, and execs PROGRAM. The bench
//! times both ways side by side; the difference is the filter's cost.

#![forbid(unsafe_code)]

use std::os::unix::process::CommandExt;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (filter, rest) = match args.split_first() {
        Some((mode, rest)) if mode == "--filter" && !rest.is_empty() => (true, rest),
        Some((mode, rest)) if mode == "--none" && !rest.is_empty() => (false, rest),
        _ => {
            eprintln!("seccomp-exec: usage: seccomp-exec --filter|--none PROGRAM [ARGS]...");
            std::process::exit(100);
        }
    };
    let mut command = std::process::Command::new(&rest[0]);
    command.args(&rest[1..]);
    let installed = sandbox_core::prctl::no_new_privs().and_then(|()| {
        if filter {
            let compiled = sandbox_core::seccomp::compile(wrap_gpu::policy::SYSCALLS)?;
            sandbox_core::seccomp::install(&compiled)?;
        }
        Ok(())
    });
    if let Err(e) = installed {
        eprintln!("seccomp-exec: {e}");
        std::process::exit(e.exit_code().into());
    }
    let err = command.exec();
    eprintln!("seccomp-exec: exec {}: {err}", rest[0]);
    std::process::exit(111);
}
