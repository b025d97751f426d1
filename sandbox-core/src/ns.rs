//! The VM's namespaces: one clone makes PID 1 in new user, PID, mount,
//! network, IPC and UTS namespaces; the parent (host root) writes its id maps; only then does the
//! child go on. The two sides talk over a socketpair whose messages say what
//! each waits for, and an EOF on either side is an error with a clear line.

use std::io::{IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use rustix::process::Pid;
use syscalls::{syscall, Sysno};

use crate::error::{Context, Error, Result};
use crate::ids::{self, Slot};

const CLONE_NEWNS: usize = 0x0002_0000;
const CLONE_NEWUTS: usize = 0x0400_0000;
const CLONE_NEWIPC: usize = 0x0800_0000;
const CLONE_NEWUSER: usize = 0x1000_0000;
const CLONE_NEWPID: usize = 0x2000_0000;
const CLONE_NEWNET: usize = 0x4000_0000;
/// Every namespace a VM gets of its own, made by one clone. Network: an
/// empty one (only a loopback that stays down), so abstract unix names,
/// UDP, ICMP, netlink and /proc/net are the VM's alone; Landlock scopes
/// abstract connects but not binds, and handles TCP only. IPC: SysV and
/// POSIX message queues the VM's alone, gone with it. UTS: a hostname a
/// daemon may set without touching the host's.
const VM_NAMESPACES: usize =
    CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS;
const CLONE_PIDFD: usize = 0x0000_1000;
const SIGCHLD: usize = 17;

/// The parent's view of a freshly cloned PID 1, maps not written yet.
#[derive(Debug)]
pub struct VmChild {
    pub pid: Pid,
    pub pidfd: OwnedFd,
    chan: UnixStream,
}

/// The child's end of the handshake.
#[derive(Debug)]
pub struct MapsPending {
    chan: UnixStream,
}

#[derive(Debug)]
pub enum Cloned {
    Parent(VmChild),
    Child(MapsPending),
}

/// Fails unless the calling process has exactly one thread: a fork-style
/// clone of a multi-threaded process leaves locks held by threads that do
/// not exist in the child.
pub fn require_single_thread() -> Result<()> {
    let tasks = std::fs::read_dir("/proc/self/task")
        .op_path("read", "/proc/self/task")?
        .count();
    if tasks == 1 {
        Ok(())
    } else {
        Err(Error::Refused(format!(
            "clone of a VM needs a single-threaded process, this one has {tasks} threads"
        )))
    }
}

/// A fork-style clone with `namespaces` (CLONE_NEW* flags) and a pidfd.
/// Returns `Some((pid, pidfd))` in the parent and `None` in the child.
///
/// # Safety
/// The caller must be single-threaded: the child gets a copy of the address
/// space, and a lock held by a thread that does not exist in the child would
/// never be released. What the child may do after is the caller's to
/// restrict (async-signal-safe calls only, when it execs or exits soon).
pub(crate) unsafe fn fork_into(
    namespaces: usize,
) -> std::result::Result<Option<(Pid, OwnedFd)>, syscalls::Errno> {
    let mut pidfd: RawFd = -1;
    // SAFETY: a raw clone without CLONE_VM and with a null stack behaves
    // like fork (the caller guarantees a single thread). CLONE_PIDFD makes
    // the kernel store the pidfd in `pidfd`, which outlives the call.
    let ret = unsafe {
        syscall!(
            Sysno::clone,
            namespaces | CLONE_PIDFD | SIGCHLD,
            0usize,
            std::ptr::addr_of_mut!(pidfd) as usize,
            0usize,
            0usize
        )
    }?;
    if ret == 0 {
        return Ok(None);
    }
    // SAFETY: the kernel just created this fd for us (CLONE_PIDFD) and
    // nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let pid = Pid::from_raw(i32::try_from(ret).expect("pid fits in i32")).expect("pid > 0");
    Ok(Some((pid, pidfd)))
}

/// A user namespace below the caller's that maps only the guest's ids
/// (0..65535, [`ids::GUEST_IDS`]) one to one, as an fd to join with setns.
/// virtiofsd runs in it: its CAP_SETUID and CAP_SETGID then reach the
/// guest's ids and nothing else (no service id of the VM: it cannot become
/// the VMM). Made by PID 1 before it switches user namespaces off; a child
/// holds the namespace while PID 1 writes its maps, then exits.
pub fn guest_ids_user_namespace() -> Result<OwnedFd> {
    const PR_SET_DUMPABLE: usize = 4;
    require_single_thread()?;
    let (hold_read, hold_write) = rustix::pipe::pipe().op("pipe")?;
    let (ready_read, ready_write) = rustix::pipe::pipe().op("pipe")?;
    // SAFETY: single-threaded (checked above); the child makes only raw
    // calls on fds it already has and a local byte, then exits.
    let forked = unsafe { fork_into(CLONE_NEWUSER) }.op("clone a user namespace")?;
    let Some((pid, _pidfd)) = forked else {
        // SAFETY: closes our copies of the parent's ends (else the read
        // below never sees EOF); makes us dumpable again (a uid change made
        // our parent non-dumpable, and the maps of a non-dumpable process
        // are host root's to write); says so; waits for EOF; exits. Nothing
        // is allocated or freed.
        unsafe {
            let _ = syscall!(Sysno::close, hold_write.as_raw_fd() as usize);
            let _ = syscall!(Sysno::close, ready_read.as_raw_fd() as usize);
            let mut byte = 0u8;
            if syscall!(Sysno::prctl, PR_SET_DUMPABLE, 1usize).is_ok() {
                let _ = syscall!(
                    Sysno::write,
                    ready_write.as_raw_fd() as usize,
                    std::ptr::addr_of!(byte) as usize,
                    1usize
                );
            }
            let _ = syscall!(
                Sysno::read,
                hold_read.as_raw_fd() as usize,
                std::ptr::addr_of_mut!(byte) as usize,
                1usize
            );
            let _ = syscall!(Sysno::exit_group, 0usize);
        }
        unreachable!("exit_group returned");
    };
    drop((hold_read, ready_write));
    let mut byte = [0u8; 1];
    let made = match rustix::io::read(&ready_read, &mut byte) {
        Ok(1) => Ok(()),
        _ => Err(Error::Refused(
            "the user namespace's holder did not become dumpable".into(),
        )),
    };
    let dir = format!("/proc/{}", pid.as_raw_nonzero());
    let map = format!("0 0 {}\n", ids::GUEST_IDS);
    let made = made
        .and_then(|()| write_proc(&format!("{dir}/uid_map"), &map))
        .and_then(|()| write_proc(&format!("{dir}/gid_map"), &map))
        .and_then(|()| {
            let path = format!("{dir}/ns/user");
            std::fs::File::open(&path)
                .op_path("open", &path)
                .map(OwnedFd::from)
        });
    drop(hold_write);
    rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty())
        .op("waitpid the user namespace's holder")?;
    made
}

/// No process of the caller's user namespace, or of one below it, may
/// create a user namespace from now on (and with it the capabilities to
/// mount and unshare): `user.max_user_namespaces` 0, the caller's user
/// namespace's own, through its /proc. PID 1 of a VM, once it made the
/// guest-ids one.
pub fn forbid_user_namespaces() -> Result<()> {
    write_proc("/proc/sys/user/max_user_namespaces", "0")
}

/// Clones the calling process into new user, PID, mount, network, IPC and
/// UTS namespaces ([`VM_NAMESPACES`]).
/// Returns twice, like fork: once in the parent with the child's pid and
/// pidfd, once in the child (PID 1 of the new PID namespace).
pub fn clone_vm() -> Result<Cloned> {
    require_single_thread()?;
    let (parent_end, child_end) = UnixStream::pair().op("socketpair")?;
    // SAFETY: single-threaded (checked above); the child only returns
    // into PID 1's code, which runs as a process of its own from here.
    let forked = unsafe { fork_into(VM_NAMESPACES) }
        .op("clone user, pid, mount, network, ipc and uts namespaces")?;
    let Some((pid, pidfd)) = forked else {
        drop(parent_end);
        return Ok(Cloned::Child(MapsPending { chan: child_end }));
    };
    drop(child_end);
    Ok(Cloned::Parent(VmChild {
        pid,
        pidfd,
        chan: parent_end,
    }))
}

impl VmChild {
    /// Writes the child's uid_map and gid_map (the VM's id block plus each
    /// host group, as (inside, host), mapped alone).
    pub fn write_id_maps(&self, slot: Slot, host_groups: &[(u32, u32)]) -> Result<()> {
        let dir = format!("/proc/{}", self.pid.as_raw_nonzero());
        write_proc(&format!("{dir}/uid_map"), &ids::uid_map(slot))?;
        write_proc(&format!("{dir}/gid_map"), &ids::gid_map(slot, host_groups))
    }

    /// The child's user namespace (for idmapped mounts), once mapped.
    pub fn user_namespace(&self) -> Result<std::fs::File> {
        let path = format!("/proc/{}/ns/user", self.pid.as_raw_nonzero());
        std::fs::File::open(&path).op_path("open", &path)
    }

    /// Lets the child go on, handing it `fds` (SCM_RIGHTS) with the message.
    pub fn release(self, fds: &[BorrowedFd<'_>]) -> Result<Running> {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_HANDED_FDS))];
        let mut ancillary = SendAncillaryBuffer::new(&mut space);
        assert!(fds.len() <= MAX_HANDED_FDS);
        if !fds.is_empty() && !ancillary.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(Error::Refused("too many fds for the handshake".into()));
        }
        sendmsg(
            &self.chan,
            &[IoSlice::new(b"m")],
            &mut ancillary,
            SendFlags::empty(),
        )
        .op("tell PID 1 its id maps are written")?;
        Ok(Running {
            pid: self.pid,
            pidfd: self.pidfd,
        })
    }
}

/// The most fds the parent hands PID 1 with the handshake.
pub const MAX_HANDED_FDS: usize = 4;

/// PID 1 as the parent sees it once it runs.
#[derive(Debug)]
pub struct Running {
    pub pid: Pid,
    pub pidfd: OwnedFd,
}

fn write_proc(path: &str, text: &str) -> Result<()> {
    // One write(2): the kernel accepts an id map only in a single write.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .op_path("open", path)?;
    f.write_all(text.as_bytes()).op_path("write", path)
}

impl MapsPending {
    /// Blocks until the parent has written the id maps, then becomes root
    /// of the new user namespace (until then our host ids are unmapped in
    /// it). Returns the fds the parent handed over. An EOF means the parent
    /// failed or died: PID 1 must not go on without its ids. The id change
    /// clears PDEATHSIG: arm it afterwards.
    pub fn wait_for_id_maps(self) -> Result<Vec<OwnedFd>> {
        let mut byte = [0u8; 1];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_HANDED_FDS))];
        let mut ancillary = RecvAncillaryBuffer::new(&mut space);
        let got = recvmsg(
            &self.chan,
            &mut [IoSliceMut::new(&mut byte)],
            &mut ancillary,
            RecvFlags::CMSG_CLOEXEC,
        )
        .op("read the id-map handshake")?;
        let mut fds = Vec::new();
        for msg in ancillary.drain() {
            if let RecvAncillaryMessage::ScmRights(handed) = msg {
                fds.extend(handed);
            }
        }
        if got.bytes != 1 || byte[0] != b'm' {
            return Err(Error::Refused(
                "the parent closed the handshake before writing the id maps".into(),
            ));
        }
        crate::creds::switch_ids(0, 0, &[])?;
        Ok(fds)
    }
}
