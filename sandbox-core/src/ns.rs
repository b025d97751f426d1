//! The VM's namespaces: one clone makes PID 1 in new user, PID, mount,
//! network, IPC and UTS namespaces; the parent (host root) writes its id maps; only then does the
//! child go on. The two sides talk over a socketpair whose messages say what
//! each waits for, and an EOF on either side is an error with a clear line.

use std::io::{IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
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

/// Clones the calling process into new user, PID, mount, network, IPC and
/// UTS namespaces ([`VM_NAMESPACES`]).
/// Returns twice, like fork: once in the parent with the child's pid and
/// pidfd, once in the child (PID 1 of the new PID namespace).
pub fn clone_vm() -> Result<Cloned> {
    require_single_thread()?;
    let (parent_end, child_end) = UnixStream::pair().op("socketpair")?;
    let mut pidfd: RawFd = -1;
    let flags = VM_NAMESPACES | CLONE_PIDFD | SIGCHLD;
    // SAFETY: a raw clone without CLONE_VM and with a null stack behaves
    // like fork: the child gets a copy of the address space and continues
    // here. The process is single-threaded (checked above), so no lock can be
    // held by a thread that does not exist in the child. CLONE_PIDFD makes
    // the kernel store the pidfd in `pidfd`, which outlives the call.
    let ret = unsafe {
        syscall!(
            Sysno::clone,
            flags,
            0usize,
            std::ptr::addr_of_mut!(pidfd) as usize,
            0usize,
            0usize
        )
    }
    .op("clone user, pid, mount, network, ipc and uts namespaces")?;
    if ret == 0 {
        drop(parent_end);
        return Ok(Cloned::Child(MapsPending { chan: child_end }));
    }
    drop(child_end);
    // SAFETY: the kernel just created this fd for us (CLONE_PIDFD) and
    // nothing else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let pid = Pid::from_raw(i32::try_from(ret).expect("pid fits in i32")).expect("pid > 0");
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
