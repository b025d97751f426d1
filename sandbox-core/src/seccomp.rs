//! Seccomp: a daemon's system calls as an allow-list, installed last
//! before exec and killing the process on anything else.
//!
//! The list is plain data (groups of [`Rule`]s, each group with its
//! reason), like the Landlock tables. It is compiled to BPF by seccompiler,
//! the rust-vmm crate Firecracker and cloud-hypervisor use for their own
//! filters: it checks the architecture in the filter, keeps each argument
//! comparison to one audited code path, and needs nothing but libc. This
//! module keeps the semantics small enough to mirror in [`allows`], which
//! the tests and the probe use to know what the kernel will do.
//!
//! Argument comparisons are on the low 32 bits: every argument compared
//! here is an `int` or `unsigned int` for the kernel (clone's flags are
//! truncated to 32 bits by clone(2) too), so high bits a caller sets are
//! ignored by the kernel and must be by the filter.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use syscalls::Sysno;

use crate::error::{Error, Result};

/// When a rule lets a call through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// Whatever its arguments.
    Always,
    /// When argument `arg` is one of `values`.
    ArgIn { arg: u8, values: &'static [u64] },
    /// When argument `arg`, masked with `mask`, is one of `values`.
    ArgMasked {
        arg: u8,
        mask: u64,
        values: &'static [u64],
    },
    /// When every condition holds: a call whose meaning depends on two
    /// arguments together (mmap's protection and its sharing).
    All(&'static [Cond]),
    /// Never runs: fails with this errno, so that a library falls back
    /// (clone3 to clone, io_uring to epoll) instead of the daemon dying.
    Fails(i32),
}

/// Argument `arg`, masked with `mask`, equals `value`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cond {
    pub arg: u8,
    pub mask: u64,
    pub value: u64,
}

impl Cond {
    fn holds(&self, args: &[u64; 6]) -> bool {
        args[usize::from(self.arg)] & 0xffff_ffff & self.mask == self.value
    }
}

pub const fn eq(arg: u8, value: u64) -> Cond {
    Cond {
        arg,
        mask: 0xffff_ffff,
        value,
    }
}

pub const fn masked(arg: u8, mask: u64, value: u64) -> Cond {
    Cond { arg, mask, value }
}

/// One system call and when it may run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    pub call: Sysno,
    pub when: When,
}

pub const fn allow(call: Sysno) -> Rule {
    Rule {
        call,
        when: When::Always,
    }
}

pub const fn arg_in(call: Sysno, arg: u8, values: &'static [u64]) -> Rule {
    Rule {
        call,
        when: When::ArgIn { arg, values },
    }
}

pub const fn arg_masked(call: Sysno, arg: u8, mask: u64, values: &'static [u64]) -> Rule {
    Rule {
        call,
        when: When::ArgMasked { arg, mask, values },
    }
}

pub const fn all(call: Sysno, conds: &'static [Cond]) -> Rule {
    Rule {
        call,
        when: When::All(conds),
    }
}

pub const fn fails(call: Sysno, errno: i32) -> Rule {
    Rule {
        call,
        when: When::Fails(errno),
    }
}

/// Rules that are there for one reason.
#[derive(Clone, Copy, Debug)]
pub struct Group {
    pub why: &'static str,
    pub rules: &'static [Rule],
}

/// What the filter does with one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Fail(i32),
    Kill,
}

/// What `groups` make of `call` with `args`, by the same semantics the
/// compiled filter has: a failing rule wins, then any allowing rule; no
/// rule kills.
pub fn allows(groups: &[Group], call: Sysno, args: &[u64; 6]) -> Verdict {
    let low = |arg: u8| args[usize::from(arg)] & 0xffff_ffff;
    let mut verdict = Verdict::Kill;
    for rule in groups
        .iter()
        .flat_map(|g| g.rules)
        .filter(|r| r.call == call)
    {
        match rule.when {
            When::Fails(e) => return Verdict::Fail(e),
            When::Always => verdict = Verdict::Allow,
            When::ArgIn { arg, values } if values.contains(&low(arg)) => verdict = Verdict::Allow,
            When::ArgMasked { arg, mask, values } if values.contains(&(low(arg) & mask)) => {
                verdict = Verdict::Allow
            }
            When::All(conds) if conds.iter().all(|c| c.holds(args)) => verdict = Verdict::Allow,
            _ => {}
        }
    }
    verdict
}

/// The two BPF programs of a list, ready before anything else happens so
/// that a list the kernel cannot take refuses before the daemon's
/// sandbox is half built.
#[derive(Clone, Debug)]
pub struct Compiled {
    /// Every allowed call; anything else kills the process.
    allow_list: BpfProgram,
    /// The calls that fail with an errno, stacked on top: the kernel runs
    /// both filters and takes the stricter answer (an errno over allow).
    failing: Option<BpfProgram>,
}

fn target_arch() -> Result<TargetArch> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else {
        Err(Error::Usage(format!(
            "seccomp: no allow-list for {}: refusing to run the daemon unfiltered",
            std::env::consts::ARCH
        )))
    }
}

fn bad(what: String) -> Error {
    Error::Refused(format!("seccomp: {what}"))
}

/// A list's rules by call number.
#[derive(Default)]
struct ByCall {
    /// Argument chains allowed (an empty chain: whatever the arguments).
    allowed: BTreeMap<i64, Vec<SeccompRule>>,
    /// Allowed whatever the arguments.
    always: Vec<i64>,
    /// Failing with this errno.
    failing: BTreeMap<i64, i32>,
}

/// Sorts `groups` by call; a call failing twice, or a rule with no value,
/// is a bug in the list.
fn by_call(groups: &[Group]) -> Result<ByCall> {
    let ByCall {
        mut allowed,
        mut always,
        mut failing,
    } = ByCall::default();
    let cond = |arg: u8, op: SeccompCmpOp, value: u64| {
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
            .map_err(|e| bad(e.to_string()))
    };
    for rule in groups.iter().flat_map(|g| g.rules) {
        let nr = i64::from(rule.call.id());
        // seccompiler reads an empty chain as "whatever the arguments":
        // a rule with no value would allow everything, not nothing.
        if let When::ArgIn { values: [], .. } | When::ArgMasked { values: [], .. } | When::All([]) =
            rule.when
        {
            return Err(bad(format!(
                "{} has an argument rule with no value",
                rule.call.name()
            )));
        }
        let rules = allowed.entry(nr).or_default();
        match rule.when {
            When::Always => always.push(nr),
            When::ArgIn { arg, values } => {
                for &v in values {
                    let c = cond(arg, SeccompCmpOp::Eq, v)?;
                    rules.push(SeccompRule::new(vec![c]).map_err(|e| bad(e.to_string()))?);
                }
            }
            When::ArgMasked { arg, mask, values } => {
                for &v in values {
                    let c = cond(arg, SeccompCmpOp::MaskedEq(mask), v)?;
                    rules.push(SeccompRule::new(vec![c]).map_err(|e| bad(e.to_string()))?);
                }
            }
            When::All(conds) => {
                let chain = conds
                    .iter()
                    .map(|c| cond(c.arg, SeccompCmpOp::MaskedEq(c.mask), c.value))
                    .collect::<Result<Vec<_>>>()?;
                rules.push(SeccompRule::new(chain).map_err(|e| bad(e.to_string()))?);
            }
            When::Fails(e) => {
                if failing.insert(nr, e).is_some() {
                    return Err(bad(format!("{} fails twice", rule.call.name())));
                }
            }
        }
    }
    Ok(ByCall {
        allowed,
        always,
        failing,
    })
}

/// Checks and compiles `groups`: a call both failing and allowed, or
/// failing twice, is a bug in the list.
pub fn compile(groups: &[Group]) -> Result<Compiled> {
    let arch = target_arch()?;
    let ByCall {
        mut allowed,
        always,
        failing,
    } = by_call(groups)?;
    // Failing calls must pass the allow-list, or the kill would win.
    for &nr in failing.keys() {
        if allowed.get(&nr).is_some_and(|r| !r.is_empty()) || always.contains(&nr) {
            let name = Sysno::new(nr as usize).map_or("?", |s| s.name());
            return Err(bad(format!("{name} both fails and is allowed")));
        }
    }
    // An empty chain is seccompiler's "whatever the arguments".
    for nr in always.iter().chain(failing.keys()) {
        allowed.insert(*nr, Vec::new());
    }
    let program = |rules, mismatch, matched| -> Result<BpfProgram> {
        let filter =
            SeccompFilter::new(rules, mismatch, matched, arch).map_err(|e| bad(e.to_string()))?;
        BpfProgram::try_from(filter).map_err(|e| bad(e.to_string()))
    };
    let allow_list = program(allowed, SeccompAction::KillProcess, SeccompAction::Allow)?;
    let failing = if failing.is_empty() {
        None
    } else {
        // One errno per program: group the failing calls by errno.
        let mut by_errno: BTreeMap<i32, BTreeMap<i64, Vec<SeccompRule>>> = BTreeMap::new();
        for (nr, e) in failing {
            by_errno.entry(e).or_default().insert(nr, Vec::new());
        }
        if by_errno.len() > 1 {
            return Err(bad(
                "every failing call must fail with the same errno".into()
            ));
        }
        let (errno, rules) = by_errno.into_iter().next().expect("not empty");
        Some(program(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(errno as u32),
        )?)
    };
    Ok(Compiled {
        allow_list,
        failing,
    })
}

/// Installs the filter on the calling thread (the wrapper is single
/// threaded). no_new_privs must already be set; nothing is undone.
pub fn install(compiled: &Compiled) -> Result<()> {
    // The failing calls first: installing a filter takes prctl and
    // seccomp(2), which the allow-list, once in force, does not allow.
    if let Some(p) = &compiled.failing {
        seccompiler::apply_filter(p)
            .map_err(|e| Error::Refused(format!("seccomp: install the failing calls: {e}")))?;
    }
    seccompiler::apply_filter(&compiled.allow_list)
        .map_err(|e| Error::Refused(format!("seccomp: install the allow-list: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &[Group] = &[
        Group {
            why: "test",
            rules: &[
                allow(Sysno::read),
                arg_in(Sysno::socket, 0, &[1]),
                arg_masked(Sysno::clone, 0, 0x10000, &[0x10000]),
                fails(Sysno::clone3, 38),
                all(Sysno::mmap, &[eq(2, 5), masked(3, 0xf, 2)]),
            ],
        },
        Group {
            why: "a second reason for the same call",
            rules: &[arg_in(Sysno::socket, 0, &[16])],
        },
    ];

    #[test]
    fn verdicts_follow_the_rules() {
        let a = |call, a0: u64| allows(LIST, call, &[a0, 0, 0, 0, 0, 0]);
        assert_eq!(a(Sysno::read, 7), Verdict::Allow);
        assert_eq!(a(Sysno::socket, 1), Verdict::Allow);
        assert_eq!(a(Sysno::socket, 16), Verdict::Allow);
        assert_eq!(a(Sysno::socket, 2), Verdict::Kill);
        // High bits are the kernel's to ignore.
        assert_eq!(a(Sysno::socket, (1 << 32) | 1), Verdict::Allow);
        assert_eq!(a(Sysno::clone, 0x10000 | 0x100), Verdict::Allow);
        assert_eq!(a(Sysno::clone, 0x11), Verdict::Kill);
        assert_eq!(a(Sysno::clone3, 0), Verdict::Fail(38));
        assert_eq!(a(Sysno::ptrace, 0), Verdict::Kill);
        // Both conditions or nothing.
        let mmap = |prot, flags| allows(LIST, Sysno::mmap, &[0, 4096, prot, flags, 0, 0]);
        assert_eq!(mmap(5, 0x802), Verdict::Allow);
        assert_eq!(mmap(5, 0x1), Verdict::Kill);
        assert_eq!(mmap(7, 0x2), Verdict::Kill);
    }

    #[test]
    fn compiles_and_refuses_contradictions() {
        compile(LIST).unwrap();
        const BOTH: &[Group] = &[Group {
            why: "bad",
            rules: &[allow(Sysno::clone3), fails(Sysno::clone3, 38)],
        }];
        let e = compile(BOTH).unwrap_err().to_string();
        assert!(e.contains("clone3 both fails and is allowed"), "{e}");
        const EMPTY: &[Group] = &[Group {
            why: "bad",
            rules: &[arg_in(Sysno::socket, 0, &[])],
        }];
        let e = compile(EMPTY).unwrap_err().to_string();
        assert!(
            e.contains("socket has an argument rule with no value"),
            "{e}"
        );
        const NONE: &[Group] = &[Group {
            why: "bad",
            rules: &[all(Sysno::mmap, &[])],
        }];
        let e = compile(NONE).unwrap_err().to_string();
        assert!(e.contains("mmap has an argument rule with no value"), "{e}");
    }
}
