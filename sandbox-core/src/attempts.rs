//! Raw system calls the escape-matrix probe attempts and rustix does not
//! wrap. Compiled only with the `probe` feature, which no wrapper enables:
//! it exists so that the probe (tests/) needs no `unsafe` of its own.

use syscalls::{syscall, Sysno};

use crate::error::Errno;

const PTRACE_ATTACH: usize = 16;
const PTRACE_DETACH: usize = 17;
const CLONE_NEWUSER: usize = 0x1000_0000;
const CLONE_NEWNS: usize = 0x0002_0000;

/// PTRACE_ATTACH to `pid`; detaches at once if it ever succeeds.
pub fn ptrace_attach(pid: i32) -> Result<(), Errno> {
    // SAFETY: PTRACE_ATTACH with null addr/data reads no memory of ours.
    let r = unsafe { syscall!(Sysno::ptrace, PTRACE_ATTACH, pid as usize, 0usize, 0usize) };
    match r {
        Ok(_) => {
            // SAFETY: as above; undoes the attach the sandbox failed to stop.
            let _ = unsafe { syscall!(Sysno::ptrace, PTRACE_DETACH, pid as usize, 0usize, 0usize) };
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Reads 8 bytes at `addr` of `pid`'s memory with process_vm_readv.
pub fn process_vm_read(pid: i32, addr: usize) -> Result<(), Errno> {
    let mut buf = [0u8; 8];
    let local = [buf.as_mut_ptr() as usize, buf.len()];
    let remote = [addr, buf.len()];
    // SAFETY: `local` describes a live 8-byte buffer we own; `remote` is
    // only read by the kernel in the other process (if permitted at all).
    unsafe {
        syscall!(
            Sysno::process_vm_readv,
            pid as usize,
            local.as_ptr() as usize,
            1usize,
            remote.as_ptr() as usize,
            1usize,
            0usize
        )
    }
    .map(drop)
    .map_err(Into::into)
}

/// unshare(CLONE_NEWUSER).
pub fn unshare_user() -> Result<(), Errno> {
    // SAFETY: unshare of a user namespace touches no memory of ours.
    unsafe { syscall!(Sysno::unshare, CLONE_NEWUSER) }
        .map(drop)
        .map_err(Into::into)
}

/// unshare(CLONE_NEWNS).
pub fn unshare_mount() -> Result<(), Errno> {
    // SAFETY: unshare of a mount namespace touches no memory of ours.
    unsafe { syscall!(Sysno::unshare, CLONE_NEWNS) }
        .map(drop)
        .map_err(Into::into)
}

const IPC_CREAT: usize = 0o1000;
const IPC_RMID: usize = 0;

/// shmget(key, size, IPC_CREAT when `create` | mode): the segment's id.
pub fn shmget(key: i32, size: usize, create: bool, mode: u32) -> Result<i32, Errno> {
    let flags = mode as usize | if create { IPC_CREAT } else { 0 };
    // SAFETY: shmget takes plain integers and reads no memory of ours.
    unsafe { syscall!(Sysno::shmget, key as isize as usize, size, flags) }
        .map(|id| id as i32)
        .map_err(Into::into)
}

/// shmctl(id, IPC_RMID): removes a segment.
pub fn shm_remove(id: i32) -> Result<(), Errno> {
    // SAFETY: IPC_RMID with a null buffer reads and writes no memory.
    unsafe { syscall!(Sysno::shmctl, id as usize, IPC_RMID, 0usize) }
        .map(drop)
        .map_err(Into::into)
}

/// Maps `len` bytes of `fd` shared and read-write (guest memory a
/// vhost-user backend gets), writes and reads one byte, unmaps.
pub fn map_shared(fd: std::os::fd::BorrowedFd<'_>, len: usize) -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    // SAFETY: a fresh mapping at an address the kernel picks; nothing of
    // ours is overwritten.
    let addr = unsafe {
        syscall!(
            Sysno::mmap,
            0usize,
            len,
            PROT_READ_WRITE,
            MAP_SHARED,
            fd.as_raw_fd() as usize,
            0usize
        )
    }?;
    let byte = addr as *mut u8;
    // SAFETY: `addr` is the start of the `len`-byte (len > 0 checked by
    // the kernel) read-write mapping made above, unmapped only below.
    let read = unsafe {
        byte.write_volatile(0x5a);
        byte.read_volatile()
    };
    // SAFETY: unmaps exactly the mapping made above; no reference to it
    // outlives this call.
    unsafe { syscall!(Sysno::munmap, addr, len) }?;
    if read == 0x5a {
        Ok(())
    } else {
        Err(Errno::EINVAL)
    }
}

/// Any system call with integer arguments, for seeing what a seccomp
/// filter does with it. The caller passes no pointer but null: a test
/// names calls like keyctl(0), bpf(0, NULL) or socket(AF_INET, ...).
pub fn raw_call(call: Sysno, args: [u64; 6]) -> Result<(), Errno> {
    let a = args.map(|v| v as usize);
    // SAFETY: the arguments are integers the test chose; the only
    // pointers among them are null, which the kernel refuses to follow.
    unsafe { syscall!(call, a[0], a[1], a[2], a[3], a[4], a[5]) }
        .map(drop)
        .map_err(Into::into)
}

const PROT_READ_WRITE: usize = 3;
const PROT_READ_EXEC: usize = 5;
const MAP_SHARED: usize = 1;

/// Maps `len` bytes of `fd` with `prot` and `flags`, and unmaps them.
pub fn map(
    fd: std::os::fd::BorrowedFd<'_>,
    len: usize,
    prot: u64,
    flags: u64,
) -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    // SAFETY: a fresh mapping at an address the kernel picks, never
    // touched; nothing of ours is overwritten.
    let addr = unsafe {
        syscall!(
            Sysno::mmap,
            0usize,
            len,
            prot as usize,
            flags as usize,
            fd.as_raw_fd() as usize,
            0usize
        )
    }?;
    // SAFETY: unmaps exactly the mapping made above.
    unsafe { syscall!(Sysno::munmap, addr, len) }?;
    Ok(())
}

/// Runs code written at runtime, as a JIT would without W+X memory: a
/// memfd mapped twice, read-write (shared) and read-exec (`exec_flags`,
/// MAP_SHARED or MAP_PRIVATE). Writes `mov eax, 1; ret`, calls it, patches
/// it to return 2 through the writable mapping, calls it again. Ok when
/// both calls returned what was written: the process ran code it wrote.
#[cfg(target_arch = "x86_64")]
pub fn run_written_code(exec_flags: u64) -> Result<(), Errno> {
    use std::os::fd::AsRawFd;
    const PAGE: usize = 4096;
    let memfd = rustix::fs::memfd_create("jit", rustix::fs::MemfdFlags::CLOEXEC)?;
    rustix::fs::ftruncate(&memfd, PAGE as u64)?;
    let fd = memfd.as_raw_fd() as usize;
    // SAFETY: a fresh shared mapping of our own memfd at an address the
    // kernel picks; nothing of ours is overwritten.
    let rw = unsafe {
        syscall!(
            Sysno::mmap,
            0usize,
            PAGE,
            PROT_READ_WRITE,
            MAP_SHARED,
            fd,
            0usize
        )
    }?;
    // SAFETY: as above, the same memfd's page mapped again, executable.
    let rx = unsafe {
        syscall!(
            Sysno::mmap,
            0usize,
            PAGE,
            PROT_READ_EXEC,
            exec_flags as usize,
            fd,
            0usize
        )
    };
    let ran = rx.map_err(Errno::from).and_then(|rx| {
        let code = rw as *mut u8;
        let write = |value: u8| {
            // mov eax, imm32; ret
            for (i, b) in [0xb8, value, 0, 0, 0, 0xc3].into_iter().enumerate() {
                // SAFETY: `rw` is the page-sized writable mapping above,
                // unmapped only at the end; the six bytes are within it.
                unsafe { code.add(i).write_volatile(b) };
            }
        };
        // SAFETY: `rx` maps the page just written with a complete
        // function (mov, ret) that takes nothing and touches no memory.
        let call = || unsafe { std::mem::transmute::<usize, extern "C" fn() -> u32>(rx)() };
        write(1);
        let first = call();
        write(2);
        let second = call();
        // SAFETY: unmaps exactly the executable mapping made above.
        let _ = unsafe { syscall!(Sysno::munmap, rx, PAGE) };
        if (first, second) == (1, 2) {
            Ok(())
        } else {
            Err(Errno::EINVAL)
        }
    });
    // SAFETY: unmaps exactly the writable mapping made above; no
    // reference into it outlives this call.
    unsafe { syscall!(Sysno::munmap, rw, PAGE) }?;
    ran
}

/// The calling process's session keyring, for keyctl and add_key.
pub const KEY_SPEC_SESSION_KEYRING: i32 = -3;
/// The calling process's user keyring.
pub const KEY_SPEC_USER_KEYRING: i32 = -4;
const KEYCTL_DESCRIBE: usize = 6;
const KEYCTL_SEARCH: usize = 10;
const KEYCTL_READ: usize = 11;

/// add_key(2) of a "user" key: its serial number.
pub fn add_user_key(description: &str, payload: &[u8], keyring: i32) -> Result<i32, Errno> {
    let kind = c"user";
    let description = std::ffi::CString::new(description).map_err(|_| Errno::EINVAL)?;
    // SAFETY: two NUL-terminated strings and a buffer of `payload.len()`
    // bytes, all alive for the call; the kernel only reads them.
    unsafe {
        syscall!(
            Sysno::add_key,
            kind.as_ptr() as usize,
            description.as_ptr() as usize,
            payload.as_ptr() as usize,
            payload.len(),
            keyring as isize as usize
        )
    }
    .map(|id| id as i32)
    .map_err(Into::into)
}

/// keyctl(`op`, `id`, buffer, length) for the operations that fill a
/// buffer: what the kernel wrote of it (at most `len` bytes).
fn keyctl_into(op: usize, id: i32, len: usize) -> Result<Vec<u8>, Errno> {
    let mut buf = vec![0u8; len];
    // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`.
    let n = unsafe {
        syscall!(
            Sysno::keyctl,
            op,
            id as isize as usize,
            buf.as_mut_ptr() as usize,
            buf.len()
        )
    }?;
    buf.truncate(n.min(len));
    Ok(buf)
}

/// keyctl(KEYCTL_READ): the payload of key `id` (of a keyring: the
/// serials it links, 4 bytes each).
pub fn key_read(id: i32) -> Result<Vec<u8>, Errno> {
    keyctl_into(KEYCTL_READ, id, 4096)
}

/// keyctl(KEYCTL_DESCRIBE): "type;uid;gid;perm;description" of key `id`.
pub fn key_describe(id: i32) -> Result<String, Errno> {
    let buf = keyctl_into(KEYCTL_DESCRIBE, id, 512)?;
    let text = String::from_utf8_lossy(&buf);
    Ok(text.trim_end_matches('\0').to_owned())
}

/// keyctl(KEYCTL_SEARCH) of `keyring` (and what it links) for the "user"
/// key `description`: its serial number.
pub fn key_search(keyring: i32, description: &str) -> Result<i32, Errno> {
    let kind = c"user";
    let description = std::ffi::CString::new(description).map_err(|_| Errno::EINVAL)?;
    // SAFETY: two NUL-terminated strings alive for the call, only read;
    // no keyring to link the key found into (0).
    unsafe {
        syscall!(
            Sysno::keyctl,
            KEYCTL_SEARCH,
            keyring as isize as usize,
            kind.as_ptr() as usize,
            description.as_ptr() as usize,
            0usize
        )
    }
    .map(|id| id as i32)
    .map_err(Into::into)
}
