//! cgroup v2: each VM in a cgroup of its own below a parent the host
//! delegates, each daemon in a child of it with its policy's bounds, the
//! VM's vm-init processes in one more child (cgroup v2 puts processes only
//! in leaves once controllers are on).
//!
//! ```text
//! PARENT/vm-NAME@SLOT/      memory, pids, cpu on for the children
//!     vm-init/              the VM's PID 1 (and with --services its s6)
//!     virtiofsd/ vmm/ gpu/  each wrapper, its reaper and its daemon
//! ```
//!
//! Everything here is done by the outer vm-init as host root: the files
//! stay host root's, so no process of the VM can write a limit. What
//! crosses into the VM is one fd per leaf of its `cgroup.procs`, opened by
//! the outer: the kernel checks a migration against the credentials the
//! file was opened with (Linux 5.16), so PID 1 and each wrapper can move
//! themselves into their leaf without any cgroup file being theirs. A
//! wrapper then makes a cgroup namespace rooted there (the daemon sees
//! `0::/`) and closes the fd before its daemon runs; no daemon's view
//! holds a cgroup file system, and none may mount one (Landlock).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rustix::fs::{openat, Mode, OFlags, CWD};

use crate::error::{Context, Error, Result};

/// The controllers every VM's cgroup needs: memory and pids bound what a
/// daemon can take from the host, cpu its share.
pub const CONTROLLERS: &[&str] = &["memory", "pids", "cpu"];
/// The leaf of a VM's vm-init processes, named as the program.
pub const VM_INIT_LEAF: &str = crate::contract::bin::VM_INIT;
/// The default parent's name below the cgroup2 mount: a plain s6 host
/// (s6-linux-init makes no cgroups) gets one subtree for every VM.
pub const DEFAULT_PARENT: &str = "vm-sandbox";
/// How long the outer waits for a killed VM's cgroup to empty.
const KILL_WAIT: Duration = Duration::from_secs(5);
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// One daemon's bounds, each written to its leaf before it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// memory.max, bytes: past it the kernel reclaims, then kills the whole
    /// leaf (memory.oom.group).
    pub memory_max: u64,
    /// memory.swap.max, bytes: none of this project's daemons is given swap
    /// (0), so memory.max bounds all it can hold.
    pub swap_max: u64,
    /// pids.max: tasks, threads included (the wrapper and its reaper are
    /// two of them).
    pub pids_max: u64,
    /// cpu.weight (1..10000, 100 the kernel's default): its share beside
    /// the VM's other daemons when the CPU is contended.
    pub cpu_weight: u64,
}

impl Limits {
    /// Each limit as its file and value, `memory.oom.group` with them.
    fn files(&self) -> [(&'static str, String); 5] {
        [
            ("memory.swap.max", self.swap_max.to_string()),
            ("memory.max", self.memory_max.to_string()),
            ("pids.max", self.pids_max.to_string()),
            ("cpu.weight", self.cpu_weight.to_string()),
            ("memory.oom.group", "1".into()),
        ]
    }

    /// The one-line-error checks of a limit set (an override included).
    pub fn check(&self, daemon: &str) -> Result<()> {
        let bad = |what: String| Err(Error::Usage(format!("limits of {daemon}: {what}")));
        if self.memory_max < 16 << 20 {
            return bad(format!("memory.max {} is below 16 MiB", self.memory_max));
        }
        if !(4..=1 << 22).contains(&self.pids_max) {
            return bad(format!(
                "pids.max {} is not from 4 to 4194304",
                self.pids_max
            ));
        }
        if !(1..=10_000).contains(&self.cpu_weight) {
            return bad(format!(
                "cpu.weight {} is not from 1 to 10000",
                self.cpu_weight
            ));
        }
        Ok(())
    }

    /// `self` with the lines of a VM's `config/limits/DAEMON` applied: each
    /// `KEY VALUE`, KEY one of memory.max, memory.swap.max, pids.max,
    /// cpu.weight; sizes in bytes or with K, M or G.
    pub fn with_overrides(mut self, daemon: &str, text: &str) -> Result<Limits> {
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let bad = || {
                Error::Usage(format!(
                    "{}: {line:?} is not `KEY VALUE` with KEY one of memory.max, \
                     memory.swap.max, pids.max, cpu.weight and VALUE a number",
                    limits_file(daemon)
                ))
            };
            let (key, value) = line.split_once(char::is_whitespace).ok_or_else(bad)?;
            let value = value.trim();
            let number = value.parse::<u64>().ok();
            let size = || {
                let (digits, unit) = value.split_at(value.len() - 1);
                let shift = match unit {
                    "K" => 10,
                    "M" => 20,
                    "G" => 30,
                    _ => return number,
                };
                digits
                    .parse::<u64>()
                    .ok()
                    .and_then(|n| n.checked_mul(1 << shift))
            };
            match key {
                "memory.max" => self.memory_max = size().ok_or_else(bad)?,
                "memory.swap.max" => self.swap_max = size().ok_or_else(bad)?,
                "pids.max" => self.pids_max = number.ok_or_else(bad)?,
                "cpu.weight" => self.cpu_weight = number.ok_or_else(bad)?,
                _ => return Err(bad()),
            }
        }
        self.check(daemon)?;
        Ok(self)
    }
}

/// `config/limits/DAEMON`, as the VM's errors name it.
pub fn limits_file(daemon: &str) -> String {
    use crate::contract::config;
    format!("{}/{}/{daemon}", config::DIR, config::LIMITS)
}

/// Where the VM's cgroup goes, once checked (nothing created).
#[derive(Clone, Debug)]
pub struct Parent {
    pub path: PathBuf,
    /// The default parent, not there yet: made below the cgroup2 root.
    make: bool,
}

/// The cgroup2 file system of this mount namespace, from mountinfo.
fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (fields, after) = l.split_once(" - ")?;
        let point = fields.split(' ').nth(4)?;
        (after.split(' ').next()? == "cgroup2").then(|| PathBuf::from(point))
    })
}

fn is_cgroup2(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|s| s.f_type == CGROUP2_SUPER_MAGIC)
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).op_path("read", path)
}

fn write(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).op_path("write", path)
}

/// Checks that the VM's cgroup can be made below `parent` (default:
/// [`DEFAULT_PARENT`] at the cgroup2 root) with [`CONTROLLERS`]; creates
/// nothing. `Ok(Err(what))`: the host lacks `what` (no cgroup v2, a
/// controller); `Err`: `parent` is no cgroup v2 directory, or a read failed.
pub fn check_parent(parent: Option<&Path>) -> Result<std::result::Result<Parent, String>> {
    let Some(root) = cgroup2_mount() else {
        return Ok(Err(
            "no cgroup v2 file system is mounted (a cgroup v1 host?)".into(),
        ));
    };
    let (path, make) = match parent {
        Some(p) => {
            if !p.is_absolute() || !p.is_dir() || !is_cgroup2(p) {
                return Err(Error::Usage(format!(
                    "--cgroup-parent {} is not a directory of the cgroup v2 file system",
                    p.display()
                )));
            }
            (p.to_owned(), false)
        }
        None => {
            let p = root.join(DEFAULT_PARENT);
            let make = !p.is_dir();
            (p, make)
        }
    };
    // The controllers the parent can give its children: its own, or for
    // a default parent still to be made, the root's.
    let source = if make { &root } else { &path };
    let have = read(&source.join("cgroup.controllers"))?;
    let lacks: Vec<&str> = CONTROLLERS
        .iter()
        .copied()
        .filter(|c| !have.split_whitespace().any(|h| h == *c))
        .collect();
    if !lacks.is_empty() {
        return Ok(Err(format!(
            "cgroup {} lacks the {} controller{} (it has: {})",
            source.display(),
            lacks.join(", "),
            if lacks.len() == 1 { "" } else { "s" },
            have.trim()
        )));
    }
    Ok(Ok(Parent { path, make }))
}

/// What a daemon's leaf counted at its bounds so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Events {
    /// memory.events `oom`: its own memory.max reached and not reclaimed
    /// (a bound above it, its parent's or the host's, counts only there).
    pub own_ooms: u64,
    /// memory.events `oom_group_kill` (Linux 5.17): the kernel killed the
    /// whole leaf for memory (memory.oom.group), whichever bound it met.
    /// Counted once a kill, unlike `oom_kill`, which counts the victim,
    /// then each process of the group, the victim again.
    pub group_kills: u64,
    /// pids.events `max`: forks refused at pids.max.
    pub pids_refused: u64,
}

/// One daemon's leaf, as PID 1 holds it.
#[derive(Debug)]
pub struct Leaf {
    pub name: &'static str,
    /// Its `cgroup.procs`, opened by the outer for writing: the wrapper
    /// moves itself in through it.
    pub procs: OwnedFd,
    /// Its memory.events and pids.events (read-only), which change when it
    /// meets a bound: PID 1 polls them for a change.
    memory_events: OwnedFd,
    pids_events: OwnedFd,
    /// The counts as of the last line said of each.
    said: Events,
}

impl Leaf {
    /// The fds whose change PID 1 waits for (poll's POLLPRI).
    pub fn event_fds(&self) -> [BorrowedFd<'_>; 2] {
        [self.memory_events.as_fd(), self.pids_events.as_fd()]
    }

    /// What is new to say of its bounds, one phrase each after the
    /// daemon's name (`met its memory.max: ...`), or nothing.
    pub fn news(&mut self) -> Result<Vec<String>> {
        // The kill first: the out-of-memory that made it was counted
        // before it, so the second read has it (one read shows `oom`
        // before `oom_group_kill`, and could miss it).
        let group_kills = counter(&self.memory_events, "oom_group_kill")?;
        let now = Events {
            own_ooms: counter(&self.memory_events, "oom")?,
            group_kills,
            pids_refused: counter(&self.pids_events, "max")?,
        };
        let mut said = Vec::new();
        // An out-of-memory of its own is taken with the kill it made (it
        // may be read a moment before that kill is). Without one, the
        // bound met was above the leaf's: its VM's cgroup parent's, or the
        // host's (a VM filling a parent it shares with others must not
        // have this one blamed).
        if now.group_kills > self.said.group_kills {
            said.push(if now.own_ooms > self.said.own_ooms {
                "met its memory.max: the kernel killed its whole cgroup".to_string()
            } else {
                "was killed for memory by a bound above its own memory.max (the cgroup \
                 parent's, or the host's): the kernel killed its whole cgroup"
                    .to_string()
            });
            self.said.group_kills = now.group_kills;
            self.said.own_ooms = now.own_ooms;
        }
        // A refused fork kills nothing, and a daemon may push at its
        // pids.max for ever (the kernel notifies up to 100 times a second):
        // said at the first, then each time the count has doubled.
        if now.pids_refused >= self.said.pids_refused.saturating_mul(2).max(1) {
            let n = now.pids_refused;
            said.push(format!(
                "met its pids.max ({n} fork{} refused so far)",
                if n == 1 { "" } else { "s" }
            ));
            self.said.pids_refused = n;
        }
        Ok(said)
    }
}

/// `KEY N` of a flat-keyed cgroup file, read from its start (which also
/// re-arms its change notification).
fn counter(fd: &OwnedFd, key: &str) -> Result<u64> {
    let mut buf = [0u8; 512];
    let n = rustix::io::pread(fd, &mut buf, 0).op("read cgroup events")?;
    let text = String::from_utf8_lossy(&buf[..n]);
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0))
}

/// A VM's cgroup as PID 1 holds it: the fds of its leaves.
#[derive(Debug)]
pub struct VmCgroup {
    /// vm-init's leaf's `cgroup.procs`, for PID 1 to move itself in.
    pub vm_init: OwnedFd,
    pub leaves: Vec<Leaf>,
}

/// The outer's hold on a VM's cgroup: killed and removed when it drops.
#[derive(Debug)]
pub struct Made(pub PathBuf);

impl Drop for Made {
    fn drop(&mut self) {
        if let Err(e) = remove(&self.0) {
            crate::say!("vm-init: {e}");
        }
    }
}

impl VmCgroup {
    /// Makes `PARENT/vm-NAME@SLOT` and its leaves with their limits: the
    /// name alone is not the VM's (two state dirs may each have a VM of
    /// that name), the slot is, while the caller holds it. A cgroup of that
    /// slot left by a VM that was killed (no live VM holds the slot, so it
    /// is no live VM's) is killed and removed first.
    pub fn create(
        parent: &Parent,
        vm: &str,
        slot: u32,
        daemons: &[(&'static str, Limits)],
    ) -> Result<(Made, VmCgroup)> {
        let enable = CONTROLLERS
            .iter()
            .map(|c| format!("+{c}"))
            .collect::<Vec<_>>()
            .join(" ");
        if parent.make {
            std::fs::create_dir(&parent.path)
                .or_else(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => Ok(()),
                    _ => Err(e),
                })
                .op_path("mkdir", &parent.path)?;
            let root = parent.path.parent().expect("below the cgroup2 root");
            write(&root.join("cgroup.subtree_control"), &enable)?;
        }
        write(&parent.path.join("cgroup.subtree_control"), &enable)?;
        let slot = format!("@{slot}");
        for entry in std::fs::read_dir(&parent.path).op_path("read", &parent.path)? {
            let entry = entry.op_path("read", &parent.path)?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with("vm-") && name.ends_with(&slot) {
                remove(&entry.path())?;
            }
        }
        let path = parent.path.join(format!("vm-{vm}{slot}"));
        std::fs::create_dir(&path).op_path("mkdir", &path)?;
        // From here on, dropping it removes it.
        let guard = Made(path.clone());
        let vm_init = path.join(VM_INIT_LEAF);
        std::fs::create_dir(&vm_init).op_path("mkdir", &vm_init)?;
        let mut made = VmCgroup {
            vm_init: open(&vm_init.join("cgroup.procs"), OFlags::WRONLY)?,
            leaves: Vec::new(),
        };
        write(&path.join("cgroup.subtree_control"), &enable)?;
        for &(name, limits) in daemons {
            limits.check(name)?;
            let leaf = path.join(name);
            std::fs::create_dir(&leaf).op_path("mkdir", &leaf)?;
            for (file, value) in limits.files() {
                write(&leaf.join(file), &value)?;
            }
            made.leaves.push(Leaf {
                name,
                procs: open(&leaf.join("cgroup.procs"), OFlags::WRONLY)?,
                memory_events: open(&leaf.join("memory.events"), OFlags::RDONLY)?,
                pids_events: open(&leaf.join("pids.events"), OFlags::RDONLY)?,
                said: Events::default(),
            });
        }
        Ok((guard, made))
    }

    /// The leaf of daemon `name`.
    pub fn leaf(&self, name: &str) -> Option<&Leaf> {
        self.leaves.iter().find(|l| l.name == name)
    }
}

/// A cgroup file, opened close-on-exec with `flags`: `cgroup.procs` for
/// writing (the fd that moves a process in), an events file for reading.
fn open(path: &Path, flags: OFlags) -> Result<OwnedFd> {
    openat(CWD, path, flags | OFlags::CLOEXEC, Mode::empty()).op_path("open", path)
}

/// Moves the calling process into the leaf whose `cgroup.procs` is `procs`
/// (an fd another process opened: see the module's doc).
pub fn enter(procs: BorrowedFd<'_>) -> Result<()> {
    let is_cgroup = rustix::fs::fstatfs(procs).is_ok_and(|s| s.f_type == CGROUP2_SUPER_MAGIC);
    if !is_cgroup {
        return Err(Error::Refused(
            "the cgroup fd is not a file of the cgroup v2 file system".into(),
        ));
    }
    rustix::io::write(procs, b"0")
        .map(drop)
        .op("move into the daemon's cgroup (write cgroup.procs)")
}

/// [`enter`], then a cgroup namespace rooted at that leaf: the caller (a
/// wrapper, before it forks its reaper) and all it starts see `0::/` in
/// /proc/self/cgroup and no path of the host's.
pub fn enter_as_root(procs: OwnedFd) -> Result<()> {
    enter(procs.as_fd())?;
    drop(procs);
    // SAFETY: NEWCGROUP alone does not unshare the fd table, the only flag
    // that makes unshare unsafe for other threads.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWCGROUP) }
        .op("unshare cgroup namespace")
}

/// Kills everything in the cgroup at `path` (cgroup.kill, Linux 5.14),
/// waits until it is empty and removes it with its children.
pub fn remove(path: &Path) -> Result<()> {
    write(&path.join("cgroup.kill"), "1")?;
    let start = Instant::now();
    while read(&path.join("cgroup.events"))?
        .lines()
        .any(|l| l == "populated 1")
    {
        if start.elapsed() > KILL_WAIT {
            return Err(Error::Refused(format!(
                "{}: still populated {} s after cgroup.kill",
                path.display(),
                KILL_WAIT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    for entry in std::fs::read_dir(path).op_path("read", path)? {
        let entry = entry.op_path("read", path)?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            rmdir(&entry.path(), start)?;
        }
    }
    rmdir(path, start)
}

/// rmdir of an emptied cgroup: EBUSY while the kernel still tears down
/// what its last processes left (their css), for a moment.
fn rmdir(path: &Path, since: Instant) -> Result<()> {
    loop {
        match std::fs::remove_dir(path) {
            Err(e) if e.raw_os_error() == Some(16) && since.elapsed() < KILL_WAIT => {
                std::thread::sleep(Duration::from_millis(5));
            }
            r => return r.op_path("rmdir", path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Limits = Limits {
        memory_max: 64 << 20,
        swap_max: 0,
        pids_max: 16,
        cpu_weight: 100,
    };

    /// A leaf whose memory.events and pids.events are plain files the
    /// test rewrites.
    fn leaf(dir: &Path) -> Leaf {
        let open = |name: &str| -> OwnedFd {
            let p = dir.join(name);
            std::fs::write(&p, "").unwrap();
            std::fs::File::open(p).unwrap().into()
        };
        Leaf {
            name: "virtiofsd",
            procs: open("cgroup.procs"),
            memory_events: open("memory.events"),
            pids_events: open("pids.events"),
            said: Events::default(),
        }
    }

    #[test]
    fn bounds_are_said_once_and_a_kill_above_the_leaf_is_not_its_memory_max() {
        let dir = std::env::temp_dir().join(format!("cgroup-news-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut leaf = leaf(&dir);
        let set = |memory: (u64, u64, u64), pids: u64| {
            let (oom, kills, groups) = memory;
            std::fs::write(
                dir.join("memory.events"),
                format!(
                    "low 0\nhigh 0\nmax 9\noom {oom}\noom_kill {kills}\noom_group_kill {groups}\n"
                ),
            )
            .unwrap();
            std::fs::write(dir.join("pids.events"), format!("max {pids}\n")).unwrap();
        };
        set((0, 0, 0), 0);
        assert!(leaf.news().unwrap().is_empty());
        // Its own: the out-of-memory, then (a moment later) the kill.
        set((1, 1, 0), 0);
        assert!(leaf.news().unwrap().is_empty());
        set((1, 4, 1), 0);
        assert_eq!(
            leaf.news().unwrap(),
            ["met its memory.max: the kernel killed its whole cgroup"]
        );
        // A parent's bound or the host's: a kill, no out-of-memory here.
        set((1, 8, 2), 0);
        let said = leaf.news().unwrap();
        assert_eq!(said.len(), 1);
        assert!(said[0].starts_with("was killed for memory by a bound above its own"));
        // Refused forks: at the first, then each time the count doubled.
        let mut lines = 0;
        for n in 1..=1000 {
            set((1, 8, 2), n);
            lines += leaf.news().unwrap().len();
        }
        assert_eq!(lines, 10, "1, 2, 4, ... 512");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn overrides_are_checked_like_the_rest() {
        let l = BASE
            .with_overrides("vmm", "memory.max 1G\npids.max 64\n\ncpu.weight 50\n")
            .unwrap();
        assert_eq!(l.memory_max, 1 << 30);
        assert_eq!((l.pids_max, l.cpu_weight, l.swap_max), (64, 50, 0));
        for bad in [
            "memory.max",
            "memory.max lots",
            "memory.max 1T",
            "memory.max 1M",
            "pids.max 2",
            "cpu.weight 0",
            "cpu.weight 10001",
            "memory.high 1G",
            "pids.max 1K",
        ] {
            let e = BASE.with_overrides("vmm", bad).unwrap_err();
            assert_eq!(e.exit_code(), 100, "{bad:?}: {e}");
            assert!(!e.to_string().contains('\n'), "{e}");
        }
    }
}
