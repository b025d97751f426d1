//! File descriptors: a service gets 0, 1, 2 and the fds its policy names,
//! nothing else its parent happened to hold.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};

use rustix::io::{fcntl_getfd, fcntl_setfd, FdFlags};
use syscalls::{syscall, Sysno};

use crate::error::{Context, Error, Result};

fn close_range(first: RawFd, last: RawFd) -> Result<()> {
    // SAFETY: close_range only closes fds of this process; the caller keeps
    // no Rust object owning an fd in the range (see `close_all_except`).
    unsafe {
        syscall!(
            Sysno::close_range,
            first as usize,
            last as u32 as usize,
            0usize
        )
    }
    .map(drop)
    .op("close_range")
}

/// Closes every fd but 0, 1, 2 and `keep`, and clears close-on-exec on the
/// kept ones. Must run where no Rust object still owns a closed fd: right
/// before exec, with every other fd dropped or leaked on purpose.
pub fn close_all_except(keep: &[RawFd]) -> Result<()> {
    let mut kept: Vec<RawFd> = keep.iter().copied().filter(|&fd| fd > 2).collect();
    kept.sort_unstable();
    kept.dedup();
    let mut next = 3;
    for &fd in &kept {
        if fd > next {
            close_range(next, fd - 1)?;
        }
        next = fd + 1;
    }
    close_range(next, RawFd::MAX)?;
    for &fd in &kept {
        // SAFETY: `fd` is one of the fds the policy passes on; it stays open
        // (nothing above closed it) for the duration of this borrow.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        let flags = fcntl_getfd(fd).op("fcntl F_GETFD of a passed fd")?;
        fcntl_setfd(fd, flags - FdFlags::CLOEXEC).op("fcntl F_SETFD")?;
    }
    Ok(())
}

/// A new session (no controlling terminal), and stdin on /dev/null. A
/// process s6-supervise started leads a session of its own already
/// (setsid then fails with EPERM), with no controlling terminal either.
pub fn detach_from_terminal() -> Result<()> {
    match rustix::process::setsid() {
        Ok(_) => {}
        Err(rustix::io::Errno::PERM)
            if rustix::process::getsid(None).ok() == Some(rustix::process::getpid()) => {}
        Err(e) => return Err(Error::sys("setsid", e)),
    }
    let null = std::fs::OpenOptions::new()
        .read(true)
        .open("/dev/null")
        .op_path("open", "/dev/null")?;
    rustix::stdio::dup2_stdin(&null).op("dup2 /dev/null to stdin")
}

/// Makes a FIFO at `path` with `mode` (its owner is the caller's to set).
pub fn make_fifo(path: &std::path::Path, mode: u32) -> Result<()> {
    rustix::fs::mknodat(
        rustix::fs::CWD,
        path,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(mode),
        0,
    )
    .op_path("mkfifo", path)
}

/// Opens a FIFO to read it, without blocking (no writer needed yet) and
/// non-blocking for reads after. The open holds the write side too, so the
/// reader never sees end-of-file: a writer that comes again (a VMM its s6
/// service starts again) opens the FIFO as the first did, instead of
/// blocking forever on a FIFO that nobody reads any more.
pub fn open_fifo_reader(path: &std::path::Path) -> Result<std::fs::File> {
    rustix::fs::open(
        path,
        rustix::fs::OFlags::RDWR | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map(std::fs::File::from)
    .op_path("open", path)
}

/// A pipe for a child's stderr: the read end (ours) non-blocking, the
/// write end (the child's fd 2) blocking, as a program expects its stderr.
/// Both close-on-exec: the child gets the write end through `pass_fd`.
pub fn stderr_pipe() -> Result<(OwnedFd, OwnedFd)> {
    let (read, write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).op("pipe")?;
    rustix::fs::fcntl_setfl(&read, rustix::fs::OFlags::NONBLOCK).op("set a pipe non-blocking")?;
    Ok((read, write))
}

/// Checks that `fd` is an open descriptor (an s6 notification fd, a passed
/// socket) and takes ownership of it.
pub fn take_fd(fd: RawFd, what: &str) -> Result<OwnedFd> {
    if fd < 3 {
        return Err(Error::Usage(format!(
            "{what} {fd} is one of stdin, stdout, stderr"
        )));
    }
    // SAFETY: only borrowed for the F_GETFD probe below, which fails with
    // EBADF (and then we own nothing) if `fd` is not open.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    if rustix::io::fcntl_getfd(borrowed).is_err() {
        return Err(Error::Usage(format!(
            "{what} {fd} is not an open file descriptor"
        )));
    }
    // SAFETY: `fd` is open (checked above) and this process's argv says it
    // was handed to us for this purpose: nothing else in this process owns it.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// s6 readiness: one newline on the notification fd, then close it.
pub fn notify_ready(fd: OwnedFd) -> Result<()> {
    rustix::io::write(&fd, b"\n")
        .map(drop)
        .op("write readiness to the notification fd")
}

/// Sets O_NONBLOCK on an fd the event loop reads.
pub fn set_nonblocking(fd: impl AsFd) -> Result<()> {
    let flags = rustix::fs::fcntl_getfl(&fd).op("fcntl F_GETFL")?;
    rustix::fs::fcntl_setfl(&fd, flags | rustix::fs::OFlags::NONBLOCK).op("fcntl F_SETFL")
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).op("pipe")
}

/// Connects to the path socket `path` without waiting on the peer beyond
/// `limit`: a daemon that listens and never accepts (its backlog full)
/// must not hold up vm-init or vmm-api. `None` never waits: the stream
/// is non-blocking and a full backlog is EAGAIN at once (vm-init's event
/// loop). `Some(t)`: a blocking stream whose connect, and every write
/// after it, gives up after `t` (SO_SNDTIMEO, which bounds a Unix
/// socket's connect too).
pub fn connect_unix(
    path: &std::path::Path,
    limit: Option<std::time::Duration>,
) -> Result<std::os::unix::net::UnixStream> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let flags = match limit {
        None => SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
        Some(_) => SocketFlags::CLOEXEC,
    };
    let fd = rustix::net::socket_with(AddressFamily::UNIX, SocketType::STREAM, flags, None)
        .op("socket")?;
    if let Some(t) = limit {
        rustix::net::sockopt::set_socket_timeout(&fd, rustix::net::sockopt::Timeout::Send, Some(t))
            .op("set SO_SNDTIMEO")?;
    }
    let addr = SocketAddrUnix::new(path).op_path("connect", path)?;
    rustix::net::connect(&fd, &addr).op_path("connect", path)?;
    Ok(std::os::unix::net::UnixStream::from(fd))
}
