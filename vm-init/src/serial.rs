//! The guest's serial console, bounded. The VMM writes it to a FIFO in the
//! VM directory (`serial.fifo`, the VMM's own); PID 1 copies it into
//! `serial.log` (host root's, opened by the outer vm-init) up to
//! [`SERIAL_LOG_MAX`], then drops the rest. A guest that prints without end
//! cannot fill the file system the VM directory is on, and the VMM owns no
//! host file it could leave behind with a mode of its choosing.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};

use sandbox_core::Error;

/// The most of the guest's console kept on the host, per VM start.
pub const SERIAL_LOG_MAX: u64 = 16 << 20;
/// Reads per wake-up: a VMM that writes without pause still leaves PID 1
/// time for its other fds.
const READS_PER_WAKE: usize = 16;

#[derive(Debug)]
pub struct SerialRelay {
    /// The FIFO's read end (non-blocking; held with its write side, see
    /// fds::open_fifo_reader); None after end-of-file, which a FIFO opened
    /// otherwise would read once the VMM closed it.
    fifo: Option<File>,
    log: File,
    written: u64,
}

impl SerialRelay {
    pub fn new(fifo: File, log: File) -> SerialRelay {
        SerialRelay {
            fifo: Some(fifo),
            log,
            written: 0,
        }
    }

    /// The fd to poll, while there is one.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fifo.as_ref().map(AsFd::as_fd)
    }

    /// Copies what the VMM wrote, up to the bound; at EOF (the VMM closed
    /// its end, or exited) stops polling the FIFO.
    pub fn pump(&mut self) -> Result<(), Error> {
        let mut chunk = [0u8; 16 * 1024];
        for _ in 0..READS_PER_WAKE {
            let Some(fifo) = &mut self.fifo else {
                return Ok(());
            };
            let n = match fifo.read(&mut chunk) {
                Ok(0) => {
                    self.fifo = None;
                    return Ok(());
                }
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(Error::sys("read the serial FIFO", e)),
            };
            self.keep(&chunk[..n])?;
        }
        Ok(())
    }

    fn keep(&mut self, bytes: &[u8]) -> Result<(), Error> {
        if self.written >= SERIAL_LOG_MAX {
            return Ok(());
        }
        let room = SERIAL_LOG_MAX - self.written;
        let take = bytes.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        self.log
            .write_all(&bytes[..take])
            .map_err(|e| Error::sys("write serial.log", e))?;
        self.written += take as u64;
        if self.written >= SERIAL_LOG_MAX {
            let _ = self.log.write_all(
                format!(
                    "\n[vm-init: serial.log stops at {} MiB; the rest is dropped]\n",
                    SERIAL_LOG_MAX >> 20
                )
                .as_bytes(),
            );
        }
        Ok(())
    }

    /// After the VM's end: what the FIFO holds now (one wake-up's reads,
    /// more than its buffer), then no more. A VMM still writing must not
    /// keep PID 1 from ending the VM.
    pub fn finish(&mut self) -> Result<(), Error> {
        self.pump()?;
        self.fifo = None;
        Ok(())
    }
}
