//! `cargo xtask test`'s runner: every test executable of the workspace,
//! run as `cargo test` runs it (in its package's directory), one at a
//! time, each under a time limit, and a table of how long each took.
//!
//! Not `cargo test` itself: it has no time limit, and a test binary that
//! hangs (a test waiting on a guard another test never let go of) hangs
//! the whole run without a word about what it waits for.

use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{cargo, root, Result};

/// One test binary's limit. The slowest measured on 2 cores: fresh_clone.rs
/// (a release build from nothing), 65 s idle and 2 min with other builds
/// beside it; the others 17 s at most (vm_init.rs). Ten minutes lets a far
/// slower machine pass, and still ends a hang.
pub const LIMIT: Duration = Duration::from_secs(10 * 60);

/// A test harness cargo built: unit tests of a crate's target, or an
/// integration test.
#[derive(Debug)]
pub struct TestExe {
    pub exe: PathBuf,
    /// The package's directory: where cargo test runs it.
    pub package_dir: PathBuf,
    /// The source it was built from, relative to the workspace: its name.
    pub src: String,
}

/// Builds the test harnesses of `cargo test --no-run ARGS` and returns
/// them, ordered by their source.
pub fn test_executables(args: &[&str]) -> Result<Vec<TestExe>> {
    let out = cargo()
        .args(["test", "--no-run", "--message-format=json"])
        .args(args)
        .current_dir(root())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("cargo test --no-run: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo test --no-run: {}", out.status));
    }
    let mut exes: Vec<TestExe> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"reason\":\"compiler-artifact\""))
        // The crate's own binaries are artifacts with an executable too;
        // a test harness is built with the test profile flag.
        .filter(|l| object(l, "profile").is_some_and(|p| p.contains("\"test\":true")))
        .filter_map(|l| {
            let exe = PathBuf::from(json_string(l, "executable")?);
            let manifest = PathBuf::from(json_string(l, "manifest_path")?);
            let src = PathBuf::from(json_string(l, "src_path")?);
            Some(TestExe {
                src: src
                    .strip_prefix(root())
                    .unwrap_or(&src)
                    .display()
                    .to_string(),
                package_dir: manifest.parent()?.to_owned(),
                exe,
            })
        })
        .collect();
    exes.sort_by(|a, b| a.src.cmp(&b.src));
    Ok(exes)
}

/// The object after `"key":{` on one line of cargo's JSON, without its
/// braces (cargo's `profile` and `target` objects nest no object).
fn object<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let start = line.find(&format!("\"{key}\":{{"))? + key.len() + 4;
    let len = line[start..].find('}')?;
    Some(&line[start..start + len])
}

/// The string after the first `"key":` on one line of cargo's JSON,
/// unescaped (the keys read here occur once a line).
fn json_string(line: &str, key: &str) -> Option<String> {
    let start = line.find(&format!("\"{key}\":\""))? + key.len() + 4;
    let mut chars = line[start..].chars();
    let mut s = String::new();
    loop {
        match chars.next()? {
            '"' => return Some(s),
            '\\' => match chars.next()? {
                'n' => s.push('\n'),
                't' => s.push('\t'),
                'r' => s.push('\r'),
                'u' => {
                    let hex: String = chars.by_ref().take(4).collect();
                    s.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                c => s.push(c),
            },
            c => s.push(c),
        }
    }
}

/// How a test binary (or the doc tests) ended, and how long it took.
#[derive(Debug)]
pub struct Timing {
    pub what: String,
    pub took: Duration,
    pub result: String,
}

/// Runs one test binary as `cargo test -- --show-output` would.
pub fn run(t: &TestExe) -> (Timing, Result) {
    let listed = match list(t) {
        Ok(names) => names,
        Err(e) => {
            let timing = Timing {
                what: t.src.clone(),
                took: Duration::ZERO,
                result: "FAILED (--list)".into(),
            };
            return (timing, Err(e));
        }
    };
    let mut cmd = Command::new(&t.exe);
    // --show-output: the escape table of each matrix test lands in the log.
    cmd.arg("--show-output");
    as_cargo_test_runs(&mut cmd, t);
    run_limited(&t.src, cmd, &listed, LIMIT)
}

/// The package's directory and CARGO_MANIFEST_DIR, as cargo test gives a
/// test binary (xtask's own, from cargo run, would mislead a test that
/// reads it; none reads the CARGO_PKG_* ones, so xtask's are dropped).
fn as_cargo_test_runs(cmd: &mut Command, t: &TestExe) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_PKG_") || k.starts_with("CARGO_MANIFEST_") {
            cmd.env_remove(&*k);
        }
    }
    cmd.current_dir(&t.package_dir)
        .env("CARGO_MANIFEST_DIR", &t.package_dir)
        .env("CARGO_MANIFEST_PATH", t.package_dir.join("Cargo.toml"));
}

/// The names of the binary's tests (`NAME: test` lines of `--list`).
fn list(t: &TestExe) -> Result<Vec<String>> {
    let mut cmd = Command::new(&t.exe);
    cmd.arg("--list");
    as_cargo_test_runs(&mut cmd, t);
    let out = cmd
        .output()
        .map_err(|e| format!("{} --list: {e}", t.exe.display()))?;
    if !out.status.success() {
        return Err(format!("{} --list: {}", t.exe.display(), out.status));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_suffix(": test").map(str::to_owned))
        .collect())
}

/// What libtest says of a test on stdout: its result, or that it has
/// run for over 60 s (it says so once of each running test).
#[derive(Debug)]
enum Said {
    Result(String),
    Running(String),
}

/// `test NAME ... RESULT` or `test NAME has been running for over 60 seconds`.
fn libtest_said(line: &str) -> Option<Said> {
    let rest = line.trim_end().strip_prefix("test ")?;
    if let Some((name, _)) = rest.split_once(" ... ") {
        let name = name.strip_suffix(" - should panic").unwrap_or(name);
        return Some(Said::Result(name.to_owned()));
    }
    let (name, _) = rest.split_once(" has been running for over ")?;
    Some(Said::Running(name.to_owned()))
}

/// Runs `cmd` (stdout passed through, read for libtest's lines), killed
/// with everything it started when it outlives `limit`; `listed` are the
/// tests it runs, to say which never reported.
pub fn run_limited(
    what: &str,
    mut cmd: Command,
    listed: &[String],
    limit: Duration,
) -> (Timing, Result) {
    let dir = cmd.get_current_dir().map(|d| d.display().to_string());
    let argv: Vec<_> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy())
        .collect();
    eprintln!(
        "xtask: running {what}: {}{}",
        dir.map(|d| format!("cd {d} && ")).unwrap_or_default(),
        argv.join(" ")
    );
    let start = Instant::now();
    let timing = |result: String| Timing {
        what: what.to_owned(),
        took: start.elapsed(),
        result,
    };
    let mut child = match cmd.stdout(Stdio::piped()).spawn() {
        Ok(c) => c,
        Err(e) => {
            return (
                timing("FAILED (start)".into()),
                Err(format!("{cmd:?}: {e}")),
            )
        }
    };
    let said = relay_stdout(child.stdout.take().expect("piped"));
    let (mut reported, mut running) = (BTreeSet::new(), BTreeSet::new());
    let status: Option<ExitStatus> = loop {
        match said.recv_timeout(Duration::from_millis(50)) {
            Ok(Said::Result(name)) => {
                running.remove(&name);
                reported.insert(name);
            }
            Ok(Said::Running(name)) => {
                running.insert(name);
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                std::thread::sleep(Duration::from_millis(50))
            }
        }
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() > limit => break None,
            Ok(None) => {}
            Err(e) => return (timing("FAILED (wait)".into()), Err(format!("{what}: {e}"))),
        }
    };
    let Some(status) = status else {
        let processes = stop_and_describe(child.id());
        kill(&processes.iter().map(|p| p.0).collect::<Vec<_>>(), "KILL");
        let _ = child.wait();
        let msg = timed_out(what, limit, listed, (&reported, &running), &processes);
        return (timing("TIMED OUT".into()), Err(msg));
    };
    // The rest of its output (a process it left behind may hold the
    // pipe open: not waited for beyond 2 s).
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until
        && said
            .recv_timeout(until.saturating_duration_since(Instant::now()))
            .is_ok()
    {}
    if status.success() {
        (timing("ok".into()), Ok(()))
    } else {
        (
            timing(format!("FAILED ({status})")),
            Err(format!("{what}: {status}")),
        )
    }
}

/// Passes a test binary's stdout on, line by line, from a thread of its
/// own; what libtest says of each test comes out of the channel.
fn relay_stdout(stdout: std::process::ChildStdout) -> mpsc::Receiver<Said> {
    let (tx, said) = mpsc::channel();
    let mut stdout = std::io::BufReader::new(stdout);
    std::thread::spawn(move || {
        let mut line = Vec::new();
        while stdout.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            let _ = std::io::stdout().write_all(&line);
            if let Some(s) = libtest_said(&String::from_utf8_lossy(&line)) {
                let _ = tx.send(s);
            }
            line.clear();
        }
    });
    said
}

/// The one message of a binary killed at its time limit: the tests it
/// was in (libtest's word, and those never reported) and what each of its
/// processes waited for.
fn timed_out(
    what: &str,
    limit: Duration,
    listed: &[String],
    (reported, running): (&BTreeSet<String>, &BTreeSet<String>),
    processes: &[(u32, String)],
) -> String {
    let queued: Vec<&str> = listed
        .iter()
        .filter(|n| !reported.contains(*n) && !running.contains(*n))
        .map(String::as_str)
        .collect();
    let running: Vec<&str> = running.iter().map(String::as_str).collect();
    let none_or = |v: &[&str]| {
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    };
    let mut msg = format!(
        "{what}: still running after {} s (its limit), killed with all it started.\n  \
         running, by libtest's word (it says so of a test after 60 s): {}\n  \
         never reported, waiting their turn or started in the last 60 s: {}\n  \
         its processes (command line; each thread's name, state and kernel wait channel):",
        limit.as_secs(),
        none_or(&running),
        none_or(&queued),
    );
    for (_, described) in processes {
        msg.push_str(&format!("\n{described}"));
    }
    msg
}

/// `pid` and every process below it, each stopped (SIGSTOP, until none
/// is new) after it was described: what it waits for, before a signal
/// changes that.
fn stop_and_describe(pid: u32) -> Vec<(u32, String)> {
    let mut seen: Vec<(u32, String)> = Vec::new();
    for _ in 0..10 {
        let new: Vec<u32> = tree(pid)
            .into_iter()
            .filter(|p| !seen.iter().any(|s| s.0 == *p))
            .collect();
        if new.is_empty() {
            break;
        }
        seen.extend(new.iter().map(|&p| (p, describe(p))));
        kill(&new, "STOP");
    }
    seen
}

fn kill(pids: &[u32], signal: &str) {
    if !pids.is_empty() {
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .args(pids.iter().map(u32::to_string))
            .stderr(Stdio::null())
            .status();
    }
}

/// `pid` and, by parent pid, every process below it.
fn tree(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let p: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            Some((p, stat_fields(&stat)?.1.parse().ok()?))
        })
        .collect();
    let mut found = vec![pid];
    let mut i = 0;
    while i < found.len() {
        for &(p, parent) in &parents {
            if parent == found[i] && !found.contains(&p) {
                found.push(p);
            }
        }
        i += 1;
    }
    found
}

/// The state and parent pid of a /proc stat line (after the command,
/// which may hold spaces and parentheses).
fn stat_fields(stat: &str) -> Option<(&str, &str)> {
    let mut f = stat.get(stat.rfind(')')? + 2..)?.split(' ');
    Some((f.next()?, f.next()?))
}

/// `  pid P: COMMAND LINE` and a line per thread: its name (libtest
/// names a test's thread after the test), state and wait channel.
fn describe(pid: u32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    let mut s = format!("    pid {pid}: {}", cmdline.trim_end());
    let mut threads: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    threads.sort();
    for t in threads {
        let task = format!("/proc/{pid}/task/{t}");
        let stat = std::fs::read_to_string(format!("{task}/stat")).unwrap_or_default();
        let name = std::fs::read_to_string(format!("{task}/comm")).unwrap_or_default();
        let wchan = std::fs::read_to_string(format!("{task}/wchan")).unwrap_or_default();
        let state = stat_fields(&stat).map_or("?", |f| f.0);
        s.push_str(&format!(
            "\n      thread {t} {:?}: state {state}, waiting in {}",
            name.trim_end(),
            match wchan.trim() {
                "" | "0" => "nothing (running)",
                w => w,
            }
        ));
    }
    s
}

/// The table `cargo xtask test` ends with (and `cargo xtask ci` repeats).
pub fn print_table(timings: &[Timing], indent: &str) {
    for t in timings {
        eprintln!(
            "{indent}{:<40} {:>7.1} s  {}",
            t.what,
            t.took.as_secs_f64(),
            t.result
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_lines_are_read_as_libtest_writes_them() {
        for (line, want) in [
            ("test a::b ... ok\n", Some("result a::b")),
            ("test x ... FAILED", Some("result x")),
            ("test y - should panic ... ok", Some("result y")),
            ("test z ... ignored, needs root", Some("result z")),
            (
                "test w has been running for over 60 seconds",
                Some("running w"),
            ),
            ("test result: ok. 3 passed", None),
            ("---- x stdout ----", None),
        ] {
            let got = libtest_said(line).map(|s| match s {
                Said::Result(n) => format!("result {n}"),
                Said::Running(n) => format!("running {n}"),
            });
            assert_eq!(got.as_deref(), want, "{line:?}");
        }
    }

    #[test]
    fn cargo_json_fields_are_unescaped_and_scoped() {
        let line = r#"{"reason":"compiler-artifact","manifest_path":"/w/a\"b/Cargo.toml","target":{"kind":["bin"],"name":"x","src_path":"/w/x\\y.rs","test":true},"profile":{"opt_level":"0","test":false},"executable":"/t/x\u0041"}"#;
        assert_eq!(
            json_string(line, "manifest_path").as_deref(),
            Some("/w/a\"b/Cargo.toml")
        );
        assert_eq!(json_string(line, "src_path").as_deref(), Some("/w/x\\y.rs"));
        assert_eq!(json_string(line, "executable").as_deref(), Some("/t/xA"));
        // The target's "test":true is not the profile's.
        assert_eq!(
            object(line, "profile"),
            Some(r#""opt_level":"0","test":false"#)
        );
    }

    #[test]
    fn a_process_tree_is_found_by_parent_pid() {
        let mut sh = Command::new("sh")
            .args(["-c", "sleep 30 & sleep 30 & wait"])
            .spawn()
            .unwrap();
        let start = Instant::now();
        let mut found = tree(sh.id());
        while found.len() < 3 && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
            found = tree(sh.id());
        }
        let described = stop_and_describe(sh.id());
        kill(&found, "KILL");
        let _ = sh.wait();
        assert_eq!(found.len(), 3, "{found:?}");
        assert_eq!(described.len(), 3, "{described:?}");
        assert!(described[1].1.contains(": sleep 30"), "{described:?}");
        assert!(described[0].1.contains("state S"), "{described:?}");
    }

    #[test]
    fn a_binary_past_its_limit_is_killed_and_said_what_it_waited_for() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo 'test a ... ok'; echo 'test b has been running for over 60 seconds'; sleep 30 & wait"]);
        let listed = ["a", "b", "c"].map(String::from);
        let (timing, result) = run_limited("sh", cmd, &listed, Duration::from_secs(1));
        let msg = result.unwrap_err();
        assert_eq!(timing.result, "TIMED OUT");
        assert!(timing.took < Duration::from_secs(5), "{timing:?}");
        assert!(
            msg.contains("libtest's word (it says so of a test after 60 s): b\n"),
            "{msg}"
        );
        assert!(msg.contains("started in the last 60 s: c\n"), "{msg}");
        let sleep = msg.lines().find(|l| l.ends_with(": sleep 30")).expect(&msg);
        let pid = sleep
            .trim_start()
            .strip_prefix("pid ")
            .unwrap()
            .split(':')
            .next()
            .unwrap();
        // What it waits in: the kernel's wait channel (sleep's timer).
        let thread = msg.lines().skip_while(|l| *l != sleep).nth(1).expect(&msg);
        assert!(thread.contains("state S, waiting in "), "{msg}");
        assert!(!thread.contains("nothing"), "{msg}");
        // Killed (reaped by init once its parent is gone).
        let start = Instant::now();
        while std::path::Path::new(&format!("/proc/{pid}")).exists() {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "{pid} lives: {msg}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
