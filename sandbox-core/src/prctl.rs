//! The two prctl bits a sandbox sets on itself.

use rustix::process::{set_dumpable_behavior, DumpableBehavior};
use rustix::thread::set_no_new_privs;

use crate::error::{Context, Result};

/// No exec can gain privileges (setuid bits, file capabilities) from here on.
pub fn no_new_privs() -> Result<()> {
    set_no_new_privs(true).op("prctl PR_SET_NO_NEW_PRIVS")
}

/// Non-dumpable: /proc/PID/* of this process belongs to root of the host's
/// view, and a process of the same uid without CAP_SYS_PTRACE (virtiofsd,
/// which is root of the VM's user namespace like vm-init) cannot ptrace or
/// read it.
pub fn not_dumpable() -> Result<()> {
    set_dumpable_behavior(DumpableBehavior::NotDumpable).op("prctl PR_SET_DUMPABLE 0")
}
