//! vm-init: one VM under s6. See `vm-init --help` and docs/DESIGN.md
//! ("The processes of a VM", "Life and death of a VM", "s6, in both modes").

#![forbid(unsafe_code)]

mod args;
mod cgroups;
mod outer;
mod output;
mod pid1;
mod serial;
mod services;
mod vm;
mod vmm;

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = match args::parse(std::env::args_os().skip(1)) {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{}", args::HELP);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            sandbox_core::say!("vm-init: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    match outer::run(&args) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            sandbox_core::say!("vm-init: {}: {e}", args.name);
            ExitCode::from(e.exit_code())
        }
    }
}
