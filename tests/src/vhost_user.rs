//! The vhost-user exchange that starts a GPU backend's queue 0, as
//! measured between a VMM and `crosvm device gpu` (docs/DESIGN.md,
//! "Measured: crosvm device gpu"): the VMM side (the VMM stand-in sends
//! it) and the backend side (the probe in crosvm's place answers it,
//! making the calls crosvm makes on that path).
//!
//! Messages: a 12-byte header (request, flags, payload size, native
//! endian), the payload, and fds as SCM_RIGHTS.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

pub const GET_FEATURES: u32 = 1;
pub const SET_FEATURES: u32 = 2;
pub const SET_OWNER: u32 = 3;
pub const SET_MEM_TABLE: u32 = 5;
pub const SET_VRING_NUM: u32 = 8;
pub const SET_VRING_ADDR: u32 = 9;
pub const SET_VRING_BASE: u32 = 10;
pub const SET_VRING_KICK: u32 = 12;
pub const SET_VRING_CALL: u32 = 13;

/// What crosvm's GPU backend answers to GET_FEATURES.
pub const CROSVM_GPU_FEATURES: u64 = 0x0401_6000_001f;
/// VHOST_USER_F_PROTOCOL_FEATURES: left out, so rings start enabled.
const PROTOCOL_FEATURES: u64 = 1 << 30;
const VERSION: u32 = 1;
const REPLY: u32 = 1 << 2;
/// The guest memory the VMM side shares: one region, a memfd.
pub const MEMORY: u64 = 1 << 20;

/// One message.
#[derive(Debug)]
pub struct Message {
    pub request: u32,
    pub payload: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

pub fn send(
    s: &UnixStream,
    request: u32,
    flags: u32,
    payload: &[u8],
    fds: &[BorrowedFd<'_>],
) -> std::io::Result<()> {
    let mut header = Vec::with_capacity(12);
    header.extend_from_slice(&request.to_ne_bytes());
    header.extend_from_slice(&(VERSION | flags).to_ne_bytes());
    header.extend_from_slice(&(payload.len() as u32).to_ne_bytes());
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !control.push(SendAncillaryMessage::ScmRights(fds)) {
        return Err(std::io::Error::other("too many fds"));
    }
    let iov = [IoSlice::new(&header), IoSlice::new(payload)];
    let n = sendmsg(s, &iov, &mut control, SendFlags::NOSIGNAL)?;
    if n != header.len() + payload.len() {
        return Err(std::io::Error::other("short vhost-user write"));
    }
    Ok(())
}

/// The next message, or None when the other side closed.
pub fn recv(s: &UnixStream) -> std::io::Result<Option<Message>> {
    let mut header = [0u8; 12];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let got = recvmsg(
        s,
        &mut [IoSliceMut::new(&mut header)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    if got.bytes == 0 {
        return Ok(None);
    }
    if got.bytes != header.len() {
        return Err(std::io::Error::other("short vhost-user header"));
    }
    let mut fds = Vec::new();
    for m in control.drain() {
        if let RecvAncillaryMessage::ScmRights(r) = m {
            fds.extend(r);
        }
    }
    let word = |i: usize| u32::from_ne_bytes(header[i..i + 4].try_into().expect("4 bytes"));
    let mut payload = vec![0u8; word(8) as usize];
    std::io::Read::read_exact(&mut &*s, &mut payload)?;
    Ok(Some(Message {
        request: word(0),
        payload,
        fds,
    }))
}

fn u64s(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

fn vring_state(index: u32, num: u32) -> Vec<u8> {
    [index.to_ne_bytes(), num.to_ne_bytes()].concat()
}

/// The VMM's side: the messages that start queue 0, in the order
/// docs/DESIGN.md gives ("Measured: crosvm device gpu"). Returns the
/// backend's features.
pub fn start_queue_0(s: &UnixStream) -> std::io::Result<u64> {
    send(s, GET_FEATURES, 0, &[], &[])?;
    let reply = recv(s)?.ok_or_else(|| std::io::Error::other("backend closed"))?;
    let features = reply
        .payload
        .get(..8)
        .map(|b| u64::from_ne_bytes(b.try_into().expect("8 bytes")))
        .ok_or_else(|| std::io::Error::other("short GET_FEATURES reply"))?;
    send(s, SET_OWNER, 0, &[], &[])?;
    send(
        s,
        SET_FEATURES,
        0,
        &u64s(&[features & !PROTOCOL_FEATURES]),
        &[],
    )?;
    let memory = rustix::fs::memfd_create("guest-ram", rustix::fs::MemfdFlags::CLOEXEC)?;
    rustix::fs::ftruncate(&memory, MEMORY)?;
    // nregions, padding; then guest address, size, VMM address, offset.
    let mut table = [1u32.to_ne_bytes(), 0u32.to_ne_bytes()].concat();
    table.extend(u64s(&[0, MEMORY, 0x7f00_0000_0000, 0]));
    send(s, SET_MEM_TABLE, 0, &table, &[memory.as_fd()])?;
    send(s, SET_VRING_NUM, 0, &vring_state(0, 256), &[])?;
    let mut addr = [0u32.to_ne_bytes(), 0u32.to_ne_bytes()].concat();
    addr.extend(u64s(&[
        0x7f00_0000_0000,
        0x7f00_0000_2000,
        0x7f00_0000_1000,
        0,
    ]));
    send(s, SET_VRING_ADDR, 0, &addr, &[])?;
    send(s, SET_VRING_BASE, 0, &vring_state(0, 0), &[])?;
    let call = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)?;
    send(s, SET_VRING_CALL, 0, &u64s(&[0]), &[call.as_fd()])?;
    let kick = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC)?;
    send(s, SET_VRING_KICK, 0, &u64s(&[0]), &[kick.as_fd()])?;
    Ok(features)
}

/// The backend's answer to GET_FEATURES.
pub fn reply_features(s: &UnixStream, features: u64) -> std::io::Result<()> {
    send(s, GET_FEATURES, REPLY, &u64s(&[features]), &[])
}
