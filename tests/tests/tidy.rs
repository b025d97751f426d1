#![forbid(unsafe_code)]
//! Project rules that plain `cargo test` checks: `unsafe` lives only in
//! sandbox-core, and every other crate forbids it at its roots; the
//! contract between the processes (sandbox-core's contract module) is
//! spelled there alone, and the run scripts of s6/ agree with it.

use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_owned()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn unsafe_only_in_sandbox_core() {
    let root = workspace();
    for krate in [
        "wrap-virtiofsd",
        "wrap-vmm",
        "wrap-gpu",
        "vm-init",
        "xtask",
        "tests",
    ] {
        let mut files = Vec::new();
        rust_files(&root.join(krate), &mut files);
        assert!(!files.is_empty(), "{krate} has no sources");
        for f in files.into_iter().filter(|f| !f.ends_with("tests/tidy.rs")) {
            let text = std::fs::read_to_string(&f).unwrap();
            let uses_unsafe = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .any(|l| {
                    l.contains("unsafe {") || l.contains("unsafe fn") || l.contains("unsafe impl")
                });
            assert!(!uses_unsafe, "{} uses unsafe", f.display());
            let is_root = f.ends_with("src/main.rs")
                || f.ends_with("src/lib.rs")
                || f.parent().is_some_and(|p| p.ends_with("src/bin"));
            if is_root {
                assert!(
                    text.contains("#![forbid(unsafe_code)]"),
                    "{} does not forbid unsafe",
                    f.display()
                );
            }
        }
    }
}

const CRATES: [&str; 7] = [
    "sandbox-core",
    "wrap-virtiofsd",
    "wrap-vmm",
    "wrap-gpu",
    "vm-init",
    "xtask",
    "tests",
];

/// The string literals of a Rust source (plain, byte and raw), each with
/// its line; comments and char literals skipped.
fn literals(text: &str) -> Vec<(usize, String)> {
    let b = text.as_bytes();
    let (mut out, mut i, mut line) = (Vec::new(), 0, 1);
    let lines_in = |from: usize, to: usize| b[from..to].iter().filter(|&&c| c == b'\n').count();
    while i < b.len() {
        match b[i] {
            b'\n' => line += 1,
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = text[i..].find("*/").map_or(b.len(), |e| i + e + 2);
                line += lines_in(i, end);
                i = end;
                continue;
            }
            b'\'' => {
                // A char literal ('"', '\'', 'x'), or a lifetime.
                let end = text[i + 1..]
                    .char_indices()
                    .take(12)
                    .find(|&(k, c)| c == '\'' && (k > 0 || text[i + 1..].starts_with("''")))
                    .filter(|&(k, _)| k <= 1 || text[i + 1..].starts_with('\\'));
                if let Some((k, _)) = end {
                    i += k + 2;
                    continue;
                }
            }
            b'r' if !b[i.saturating_sub(1)].is_ascii_alphanumeric()
                && b[i.saturating_sub(1)] != b'_' =>
            {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                if b.get(i + 1 + hashes) == Some(&b'"') {
                    let close = format!("\"{}", "#".repeat(hashes));
                    let from = i + 2 + hashes;
                    let end = text[from..].find(&close).map_or(b.len(), |e| from + e);
                    out.push((line, text[from..end].to_owned()));
                    line += lines_in(from, end);
                    i = end + close.len();
                    continue;
                }
            }
            b'"' => {
                let mut j = i + 1;
                while j < b.len() && b[j] != b'"' {
                    j += if b[j] == b'\\' { 2 } else { 1 };
                }
                out.push((line, text[i + 1..j.min(b.len())].to_owned()));
                line += lines_in(i, j.min(b.len()));
                i = j + 1;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Every name of the contract a literal elsewhere could spell: the VM
/// directory's entries, the config inputs, the daemons, the binaries, the
/// run scripts' environment and files, the scan dir.
fn contract_names() -> Vec<String> {
    use sandbox_core::contract::{bin, config, daemon, env, VmDir};
    let entries = VmDir::new("/").entries();
    let names = entries
        .iter()
        .map(|p| p.file_name().unwrap().to_str().unwrap())
        .chain(daemon::ALL)
        .chain(bin::INSTALLED)
        .chain([
            config::KERNEL,
            config::INITRAMFS,
            config::CMDLINE,
            config::DISKS,
            config::VMM,
            config::GPU,
            config::MEMORY,
            config::ACCEL,
            env::VM_CONF,
            sandbox_core::contract::SCAN_DIR,
            sandbox_core::contract::SERVICES_MARK,
            sandbox_core::contract::DEFAULT_STATE_DIR,
        ]);
    let mut names: Vec<String> = names.map(str::to_owned).collect();
    names.sort();
    names.dedup();
    names
}

const ENV_NAMES: [&str; 7] = {
    use sandbox_core::contract::env::*;
    [
        VM_DIR,
        VIRTIOFSD_ARGS,
        VMM_ARGS,
        GPU_ARGS,
        VM_NAME,
        VM_STATE_DIR,
        VM_INIT_ARGS,
    ]
};

/// Literals that spell a contract name for something else, each with its
/// file, how often and why.
const NOT_THE_CONTRACTS: &[(&str, &str, usize, &str)] = &[
    (
        "wrap-gpu/src/policy.rs",
        "gpu",
        1,
        "crosvm's subcommand `device gpu`",
    ),
    ("tests/src/bin/probe/main.rs", "gpu", 1, "crosvm's argv"),
    (
        "tests/src/bin/probe/matrix.rs",
        "cmdline",
        1,
        "/proc/PID/cmdline",
    ),
    (
        "tests/src/guest.rs",
        "virtiofsd",
        1,
        "the cache's virtiofsd",
    ),
    ("tests/src/guest.rs", "initramfs", 1, "the cache's guests"),
    (
        "xtask/src/tools.rs",
        "virtiofsd",
        1,
        "the crate cargo installs",
    ),
    (
        "tests/tests/per_daemon.rs",
        "virtiofsd",
        1,
        "the real virtiofsd's comm",
    ),
    (
        "xtask/src/main.rs",
        "s6",
        2,
        "Debian's package, the s6/ dir",
    ),
    (
        "sandbox-core/src/cgroup.rs",
        "memory",
        1,
        "the cgroup controller",
    ),
];

/// What a literal must not hold (the contract's names are built with
/// its constants), if anything.
fn spells_the_contract(lit: &str, names: &[String]) -> Option<String> {
    use sandbox_core::contract::config;
    if names.iter().any(|n| n == lit) {
        return Some(format!("{lit:?}"));
    }
    let word = |w: &str| {
        lit.match_indices(w).any(|(at, _)| {
            let next = lit.as_bytes().get(at + w.len());
            let prev = lit[..at].bytes().last();
            let ident = |c: Option<&u8>| c.is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_');
            !ident(next) && !ident(prev.as_ref())
        })
    };
    if let Some(env) = ENV_NAMES.iter().find(|e| word(e)) {
        return Some(format!("{env} in {lit:?}"));
    }
    // A path into the VM directory spelled by hand (`config/vmlinux`,
    // `{vm}/config/cmdline`, `/run/vm/a/config/blk`, `fs/file`), not a
    // label that names one.
    let storage = sandbox_core::contract::VmDir::new("/").storage();
    let storage = storage.file_name().unwrap().to_str().unwrap();
    for dir in [config::DIR, storage] {
        let (dir, inner) = (format!("{dir}/"), format!("/{dir}/"));
        let absolute = lit.starts_with('/') && dir == format!("{}/", config::DIR);
        if lit.starts_with(&dir)
            || lit.starts_with(&format!("..{inner}"))
            || lit.contains(&format!("}}{inner}"))
            || absolute && lit.contains(&inner)
        {
            return Some(format!("the path {lit:?}"));
        }
    }
    // An fd number: `fd=3`, `fdmove 3 10`, `/proc/self/fd/14`.
    let fd_number = |after: &str| {
        lit.match_indices(after).any(|(at, _)| {
            lit[at + after.len()..]
                .split(|c: char| !c.is_ascii_digit() && c != ' ')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .any(|n| n.parse::<u32>().is_ok_and(|n| n > 2))
        })
    };
    for after in ["fd=", "fdmove ", "fdmove -c ", "fdclose ", "/proc/self/fd/"] {
        if fd_number(after) {
            return Some(format!("an fd number in {lit:?}"));
        }
    }
    None
}

/// The contract between the processes (sandbox-core's contract module) is
/// spelled once: no other source, the tests', the probe's and xtask's
/// included, spells a name of it in a literal or passes an fd by a bare
/// number (unit tests of a crate may spell what they check).
#[test]
fn the_contract_is_spelled_only_in_its_module() {
    let root = workspace();
    let names = contract_names();
    let mut found = Vec::new();
    for krate in CRATES {
        let mut files = Vec::new();
        rust_files(&root.join(krate), &mut files);
        for f in files.into_iter().filter(|f| {
            !f.ends_with("sandbox-core/src/contract.rs") && !f.ends_with("tests/tests/tidy.rs")
        }) {
            let text = std::fs::read_to_string(&f).unwrap();
            // Unit tests may spell what they check.
            let code = text.split("#[cfg(test)]").next().unwrap_or("");
            let rel = f.strip_prefix(&root).unwrap().to_str().unwrap().to_owned();
            let lits = literals(code);
            let mut allowed: Vec<(&str, usize)> = NOT_THE_CONTRACTS
                .iter()
                .filter(|a| a.0 == rel)
                .map(|a| (a.1, a.2))
                .collect();
            for (i, (line, lit)) in lits.iter().enumerate() {
                if let Some((_, left)) = allowed.iter_mut().find(|(l, n)| l == lit && *n > 0) {
                    *left -= 1;
                    continue;
                }
                let why = spells_the_contract(lit, &names).or_else(|| {
                    // `"--fd", "3"`: a flag's fd as a bare number.
                    let flag = matches!(lit.as_str(), "--fd" | "--notify-fd");
                    let next = lits.get(i + 1).map(|(_, n)| n.as_str()).unwrap_or("");
                    (flag && next.parse::<u32>().is_ok()).then(|| format!("{lit:?} {next:?}"))
                });
                if let Some(why) = why {
                    found.push(format!("{rel}:{line}: {why}"));
                }
            }
            // Code that passes or takes an fd by a bare number.
            let squeezed: String = code.split_whitespace().collect();
            for (at, _) in squeezed.match_indices("pass_fd(") {
                let call = &squeezed[at..];
                let args = &call[..call.find(");").unwrap_or(call.len())];
                let target = args.rsplit(',').next().unwrap_or("");
                if target.parse::<u32>().is_ok_and(|n| n > 2) {
                    found.push(format!("{rel}: {args})"));
                }
            }
            // (fd, N): an fd passed or parked at a bare number.
            for after in ["as_fd(),", "as_raw_fd(),"] {
                for (at, _) in squeezed.match_indices(after) {
                    let rest = &squeezed[at + after.len()..];
                    let n: String = rest.chars().take_while(char::is_ascii_digit).collect();
                    let pair = rest[n.len()..].starts_with(')');
                    if pair && n.parse::<u32>().is_ok_and(|n| n > 2) {
                        found.push(format!("{rel}: {after}{n})"));
                    }
                }
            }
            for pattern in ["take_fd(3", "take_fd(4", "_FD:i32=3", "_FD:i32=4"] {
                if squeezed.contains(pattern) {
                    found.push(format!("{rel}: {pattern}"));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "spelled outside sandbox_core::contract (use its constants):\n{}",
        found.join("\n")
    );
}

/// The allowances above are used up exactly: none outlives its reason.
#[test]
fn every_spelling_allowed_elsewhere_is_there() {
    let root = workspace();
    for (file, lit, count, why) in NOT_THE_CONTRACTS {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let code = text.split("#[cfg(test)]").next().unwrap_or("");
        let n = literals(code).iter().filter(|(_, l)| l == lit).count();
        assert_eq!(n, *count, "{file}: {lit:?} ({why})");
    }
}

/// What a run script says that the contract fixes, in order.
#[derive(Debug, PartialEq, Eq)]
enum Item {
    /// `fdmove [-c] TO FROM`.
    Move(i32, i32),
    Close(i32),
    /// `/proc/self/fd/N`.
    Open(i32),
    /// `--notify-fd N`.
    Notify(i32),
    /// An environment variable it imports.
    Env(&'static str),
    /// A file of its service directory it reads (vm.conf).
    File(&'static str),
    /// A program of the project it runs.
    Bin(&'static str),
    /// A sibling service it waits on (`../NAME`).
    Service(&'static str),
    /// Its `notification-fd` file.
    NotificationFd(i32),
}

/// The items of `run` (comments skipped); a number the items do not
/// explain is an error (`s6-ipcserverd -c 1` and `exit 0` are no fds).
fn items(service: &str, run: &str, notification_fd: Option<&str>) -> Vec<Item> {
    use sandbox_core::contract::{bin, daemon, env};
    let mut out = Vec::new();
    let words: Vec<&str> = run
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|l| l.split_whitespace())
        .map(|w| w.trim_matches(|c| c == '{' || c == '}'))
        .filter(|w| !w.is_empty())
        .collect();
    let number = |w: &str| -> i32 {
        w.parse()
            .unwrap_or_else(|_| panic!("{service}/run: {w:?} is not a number"))
    };
    let programs = bin::INSTALLED;
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        let next = |k: usize| words.get(i + k).copied().unwrap_or("");
        match w {
            "fdmove" if next(1) == "-c" => {
                out.push(Item::Move(number(next(2)), number(next(3))));
                i += 3;
            }
            "fdmove" => {
                out.push(Item::Move(number(next(1)), number(next(2))));
                i += 2;
            }
            "fdclose" => {
                out.push(Item::Close(number(next(1))));
                i += 1;
            }
            "--notify-fd" => {
                out.push(Item::Notify(number(next(1))));
                i += 1;
            }
            "importas" => {
                // importas [options] VAR NAME, options ending before VAR.
                let mut k = 1;
                while next(k).starts_with('-') {
                    k += if next(k).contains('D') { 2 } else { 1 };
                }
                let name = next(k + 1);
                if let Some(e) = ENV_NAMES.iter().find(|e| **e == name) {
                    out.push(Item::Env(e));
                }
                i += k + 1;
            }
            "envfile" | "-f" if next(1) == env::VM_CONF => {
                out.push(Item::File(env::VM_CONF));
                i += 1;
            }
            "s6-ipcserverd" if next(1) == "-c" && next(2) == "1" => i += 2,
            "exit" if next(1) == "0" => i += 1,
            // A positional parameter (vm-instance's $1, the VM's name).
            _ if w.starts_with('$') => {}
            _ if w.starts_with("/proc/self/fd/") => {
                out.push(Item::Open(number(&w["/proc/self/fd/".len()..])));
            }
            _ if w.starts_with("../") => {
                let name = &w[3..];
                match daemon::ALL.iter().find(|d| **d == name) {
                    Some(d) => out.push(Item::Service(d)),
                    None => panic!("{service}/run: {w}: no service of the contract"),
                }
            }
            _ if programs.contains(&w) => {
                out.push(Item::Bin(programs.iter().find(|p| **p == w).unwrap()));
            }
            _ if w.parse::<i64>().is_ok() => {
                panic!("{service}/run: {w:?}: a number the contract does not explain")
            }
            _ => {}
        }
        i += 1;
    }
    if let Some(fd) = notification_fd {
        out.push(Item::NotificationFd(number(fd.trim())));
    }
    out
}

/// Each run script of s6/ says exactly what the contract says, in order:
/// its fds (parked by vm-init, moved to the wrappers' numbers, closed,
/// its readiness), its environment, its programs and services. execline
/// cannot import the constants, so this reads every number and name.
#[test]
fn the_run_scripts_say_what_the_contract_says() {
    use sandbox_core::contract::fd::{self, parked, service};
    use sandbox_core::contract::{bin, daemon, env, DEFAULT_STATE_DIR};
    use Item::*;
    let vm = [
        File(env::VM_CONF),
        Env(env::VM_NAME),
        Env(env::VM_STATE_DIR),
        Env(env::VM_INIT_ARGS),
        Bin(bin::VM_INIT),
        Notify(fd::VM_NOTIFY),
        NotificationFd(fd::VM_NOTIFY),
    ];
    let instance = [
        File(env::VM_CONF),
        File(env::VM_CONF),
        Env(env::VM_STATE_DIR),
        Env(env::VM_INIT_ARGS),
        Bin(bin::VM_INIT),
        Notify(fd::VM_NOTIFY),
        Bin(bin::VM_INIT),
        Notify(fd::VM_NOTIFY),
        NotificationFd(fd::VM_NOTIFY),
    ];
    let virtiofsd = [
        Move(fd::VIRTIOFSD_LISTENER, parked::VIRTIOFSD_LISTENER),
        Move(fd::VIRTIOFSD_USERNS, parked::VIRTIOFSD_USERNS),
        Env(env::VM_DIR),
        Env(env::VIRTIOFSD_ARGS),
        Bin(bin::WRAP_VIRTIOFSD),
        Notify(service::NOTIFY),
        NotificationFd(service::NOTIFY),
    ];
    let vmm = [
        Service(daemon::VIRTIOFSD),
        Move(fd::VMM_API, parked::VMM_API),
        Move(fd::VMM_EVENTS, parked::VMM_EVENTS),
        Env(env::VM_DIR),
        Env(env::VMM_ARGS),
        Bin(bin::WRAP_VMM),
        Notify(service::NOTIFY),
        NotificationFd(service::NOTIFY),
    ];
    let gpu = [
        // No GPU, no listener: the service goes down.
        Open(parked::GPU_LISTENER),
        Move(service::GPU_STDOUT, 1),
        // s6-ipcserverd takes the listener as its stdin, and gives each
        // child the connection as stdin and stdout.
        Move(0, parked::GPU_LISTENER),
        Move(fd::GPU_COMPOSITOR, parked::GPU_COMPOSITOR),
        Env(env::VM_DIR),
        Env(env::GPU_ARGS),
        Move(fd::GPU_CONNECTION, 0),
        Move(1, service::GPU_STDOUT),
        Bin(bin::WRAP_GPU),
    ];
    // Spectrum's cloud-hypervisor flow: the API listener only; its helper
    // keeps none of the parked fds.
    let api = [
        Service(daemon::VIRTIOFSD),
        Move(fd::VMM_API, parked::VMM_API),
        Close(parked::VMM_EVENTS),
        Env(env::VM_DIR),
        Env(env::VMM_ARGS),
        Close(fd::VMM_API),
        Close(parked::VIRTIOFSD_LISTENER),
        Close(parked::VIRTIOFSD_USERNS),
        Close(parked::GPU_LISTENER),
        Close(parked::GPU_COMPOSITOR),
        Close(parked::VIRTIOFSD_CGROUP),
        Close(parked::VMM_CGROUP),
        Close(parked::GPU_CGROUP),
        Bin(bin::VMM_API),
        Notify(service::API_NOTIFY),
        Close(service::API_NOTIFY),
        Bin(bin::WRAP_VMM),
        NotificationFd(service::API_NOTIFY),
    ];
    let dir = workspace().join("s6");
    let want: [(String, &[Item]); 6] = [
        ("vm".into(), &vm),
        ("vm-instance".into(), &instance),
        (format!("vm-services/{}", daemon::VIRTIOFSD), &virtiofsd),
        (format!("vm-services/{}", daemon::VMM), &vmm),
        (format!("vm-services/{}", daemon::GPU), &gpu),
        (format!("vm-services-api/{}", daemon::VMM), &api),
    ];
    for (service, want) in &want {
        let run = std::fs::read_to_string(dir.join(service).join("run")).unwrap();
        let notification_fd =
            std::fs::read_to_string(dir.join(service).join("notification-fd")).ok();
        assert_eq!(
            &items(service, &run, notification_fd.as_deref()),
            want,
            "{service}/run"
        );
        // The state dir vm-init takes when none is given.
        if run.contains(env::VM_STATE_DIR) {
            assert!(
                run.contains(&format!("importas -D {DEFAULT_STATE_DIR} state")),
                "{service}/run: its default state dir is not vm-init's"
            );
        }
    }
    // Every run script is one of these.
    let mut scripts = Vec::new();
    let mut todo = vec![dir.clone()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else if p.ends_with("run") {
                scripts.push(p.parent().unwrap().strip_prefix(&dir).unwrap().to_owned());
            }
        }
    }
    scripts.sort();
    let mut known: Vec<_> = want
        .iter()
        .map(|(s, _)| std::path::PathBuf::from(s))
        .collect();
    known.sort();
    assert_eq!(scripts, known, "a run script this test does not read");
}

/// Every fd vm-init parks for its s6-svscan (contract::fd::parked).
fn all_parked() -> Vec<i32> {
    use sandbox_core::contract::fd::parked::*;
    vec![
        VIRTIOFSD_LISTENER,
        VIRTIOFSD_USERNS,
        VMM_API,
        VMM_EVENTS,
        GPU_LISTENER,
        GPU_COMPOSITOR,
        VIRTIOFSD_CGROUP,
        VMM_CGROUP,
        GPU_CGROUP,
    ]
}

/// A helper a run script starts beside its wrapper (`background { ... }`:
/// vmm-api) is no wrapper and closes no fd by itself: it must close every
/// parked fd the script has not moved or closed before it, the cgroup
/// leaves' `cgroup.procs` (opened by host root: a holder can move any
/// process of the VM into a leaf) as much as the listeners.
#[test]
fn a_run_scripts_helper_closes_every_parked_fd() {
    let dir = workspace().join("s6");
    for service in [
        "vm-services/virtiofsd",
        "vm-services/vmm",
        "vm-services/gpu",
        "vm-services-api/vmm",
    ] {
        let run = std::fs::read_to_string(dir.join(service).join("run")).unwrap();
        let mut open = all_parked();
        for line in run.lines().filter(|l| !l.trim_start().starts_with('#')) {
            let w: Vec<&str> = line.split_whitespace().collect();
            if w.first() == Some(&"background") {
                let closed: Vec<i32> = w
                    .windows(2)
                    .filter(|p| p[0] == "fdclose")
                    .filter_map(|p| p[1].parse().ok())
                    .collect();
                let kept: Vec<i32> = open
                    .iter()
                    .copied()
                    .filter(|fd| !closed.contains(fd))
                    .collect();
                assert!(
                    kept.is_empty(),
                    "{service}/run: its helper keeps parked fds {kept:?}"
                );
                continue;
            }
            match w.as_slice() {
                ["fdmove", _, from] | ["fdclose", from] => {
                    open.retain(|fd| Some(*fd) != from.parse().ok());
                }
                _ => {}
            }
        }
    }
}

/// The run scripts of a host's own that chain-load no wrapper close the
/// parked fds themselves, as the README and DESIGN.md say: both name the
/// whole range.
#[test]
fn the_docs_name_every_parked_fd_a_run_script_of_ones_own_closes() {
    let (low, high) = {
        let all = all_parked();
        (*all.iter().min().unwrap(), *all.iter().max().unwrap())
    };
    let range = format!("(`fdclose {low}` ... `fdclose {high}`)");
    for doc in ["README.md", "docs/DESIGN.md"] {
        let text = std::fs::read_to_string(workspace().join(doc)).unwrap();
        assert!(text.contains(&range), "{doc} does not say {range}");
    }
}
