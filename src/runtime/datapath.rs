//! A shard's packet path through its own io_uring (glommio's ring cannot
//! carry these operations): one multishot recvmsg fills a ring of provided
//! buffers with datagrams, their addressing (IPV6_PKTINFO) and kernel
//! receive times (SO_TIMESTAMPNS); replies are queued as sendmsg entries
//! and submitted as a batch with one `io_uring_enter`. The ring signals an
//! eventfd, which the shard's executor reads through glommio, so a parked
//! shard wakes for packets like for anything else.
//!
//! Kernels without multishot recvmsg (before 6.0) or provided-buffer rings
//! (before 5.19) use `udp::recv`/`udp::send`, a syscall per datagram (the
//! fallback); `Uring::new` says why it cannot run.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv6Addr, SocketAddrV6};
use std::ops::Range;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::{BufRingEntry, Fd, RecvMsgOut};
use io_uring::{IoUring, Probe, cqueue, opcode};

use super::udp::{self, Received};

/// Receive buffers: each holds the kernel's recvmsg header, the source
/// address, the control data and the datagram (up to ~8 KiB; a longer one
/// is counted as oversized and dropped).
const BUF_SIZE: usize = 8192;
const BUF_COUNT: u16 = 256;
const BUF_GROUP: u16 = 0;
const CONTROL_LEN: usize = 128;
/// Replies in flight (submitted, completion not yet reaped).
const SEND_SLOTS: usize = 1024;
const RECV_TAG: u64 = u64::MAX;
const CANCEL_TAG: u64 = u64::MAX - 1;

/// What a shard's datapath runs on, for `ctl status` and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub mode: &'static str,
    /// Why the fallback runs (None on io_uring).
    pub reason: Option<String>,
}

/// How an operator chose the datapath (`--datapath`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Choice {
    /// io_uring where the kernel has it, else the fallback.
    #[default]
    Auto,
    Fallback,
}

/// One datagram taken from the ring: its bytes in the batch's arena.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub bytes: Range<usize>,
    pub rcv: Received,
}

/// A reply whose send completed (or failed), with what it was for.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub tag: SendTag,
    /// Bytes sent, or the negated errno.
    pub result: i32,
}

/// What the shard wants back with a send's completion.
#[derive(Debug, Clone, Copy, Default)]
pub struct SendTag {
    pub reply_type: u8,
    pub request_type: u8,
    /// Kernel receive time of the request (CLOCK_REALTIME ns; 0: unknown).
    pub received_ns: u64,
}

/// What `poll` found: datagrams (bytes in `arena`), completed sends and
/// receive-side losses.
#[derive(Default)]
pub struct Batch {
    pub arena: Vec<u8>,
    pub datagrams: Vec<Datagram>,
    pub sent: Vec<Sent>,
    /// Datagrams longer than a receive buffer (dropped).
    pub oversized: u64,
    /// Times the kernel found no free receive buffer (datagrams it dropped).
    pub no_buffer: u64,
}

impl Batch {
    pub fn clear(&mut self) {
        self.arena.clear();
        self.datagrams.clear();
        self.sent.clear();
        self.oversized = 0;
        self.no_buffer = 0;
    }
}

/// An anonymous mapping (page-aligned, as the buffer ring needs).
struct Region {
    ptr: *mut u8,
    len: usize,
}

impl Region {
    fn new(len: usize) -> io::Result<Region> {
        // SAFETY: a fresh private anonymous mapping.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0)
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Region { ptr: p as *mut u8, len })
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once.
        unsafe { libc::munmap(self.ptr as *mut _, self.len) };
    }
}

/// One reply's buffers (in a boxed slice that never moves, so the
/// kernel's pointers stay valid until its completion).
struct SendSlot {
    hdr: libc::msghdr,
    iov: libc::iovec,
    addr: libc::sockaddr_in6,
    control: [u64; udp::CMSG_SPACE / 8],
    data: Vec<u8>,
    tag: SendTag,
}

pub struct Uring {
    // Declared first: dropped (and the kernel's references released) before
    // the memory it points into.
    ring: IoUring,
    fd: RawFd,
    eventfd: OwnedFd,
    buf_ring: Region,
    bufs: Region,
    tail: u16,
    recv_hdr: Box<libc::msghdr>,
    armed: bool,
    /// Whether a multishot receive ever delivered (an EINVAL before that
    /// means the kernel lacks it).
    delivered: bool,
    /// `close` is waiting for the receive to end: it is not armed again.
    closing: bool,
    slots: Box<[SendSlot]>,
    free: Vec<u16>,
    queued: usize,
    cqes: Vec<(u64, i32, u32)>,
}

/// Why the io_uring datapath cannot run on this kernel.
#[derive(Debug)]
pub struct Unsupported(pub String);

impl Uring {
    /// Set up the ring for socket `fd` (which the caller keeps open for the
    /// ring's life) and arm the receive.
    pub fn new(fd: RawFd) -> Result<Uring, Unsupported> {
        let err = |what: &str, e: io::Error| Unsupported(format!("{what}: {e}"));
        if kernel_older_than(6, 0) {
            return Err(Unsupported("multishot recvmsg needs Linux 6.0 or later".into()));
        }
        let ring = IoUring::builder().setup_cqsize(8192).build(1024).map_err(|e| err("io_uring_setup", e))?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe).map_err(|e| err("io_uring probe", e))?;
        for (code, name) in [(opcode::RecvMsgMulti::CODE, "recvmsg"), (opcode::SendMsg::CODE, "sendmsg")] {
            if !probe.is_supported(code) {
                return Err(Unsupported(format!("the kernel's io_uring has no {name}")));
            }
        }
        let buf_ring = Region::new(BUF_COUNT as usize * size_of::<BufRingEntry>()).map_err(|e| err("mmap", e))?;
        let bufs = Region::new(BUF_SIZE * BUF_COUNT as usize).map_err(|e| err("mmap", e))?;
        // SAFETY: both regions live as long as the ring (field order).
        unsafe { ring.submitter().register_buf_ring_with_flags(buf_ring.ptr as u64, BUF_COUNT, BUF_GROUP, 0) }
            .map_err(|e| err("provided-buffer ring (Linux 5.19+)", e))?;
        // SAFETY: an eventfd we own from here.
        let efd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if efd < 0 {
            return Err(err("eventfd", io::Error::last_os_error()));
        }
        // SAFETY: fresh descriptor.
        let eventfd = unsafe { OwnedFd::from_raw_fd(efd) };
        ring.submitter().register_eventfd(efd).map_err(|e| err("register eventfd", e))?;
        // SAFETY: all-zero msghdr is valid; only the lengths matter to a
        // multishot recvmsg (they lay out each buffer).
        let mut recv_hdr: Box<libc::msghdr> = Box::new(unsafe { zeroed() });
        recv_hdr.msg_namelen = size_of::<libc::sockaddr_in6>() as u32;
        recv_hdr.msg_controllen = CONTROL_LEN;
        let mut slots = Vec::with_capacity(SEND_SLOTS);
        for _ in 0..SEND_SLOTS {
            slots.push(SendSlot {
                // SAFETY: zeroed C structs, filled per send.
                hdr: unsafe { zeroed() },
                iov: libc::iovec { iov_base: std::ptr::null_mut(), iov_len: 0 },
                addr: unsafe { zeroed() },
                control: [0; udp::CMSG_SPACE / 8],
                data: Vec::with_capacity(1500),
                tag: SendTag::default(),
            });
        }
        let slots = slots.into_boxed_slice();
        let mut u = Uring {
            ring,
            fd,
            eventfd,
            buf_ring,
            bufs,
            tail: 0,
            recv_hdr,
            armed: false,
            delivered: false,
            closing: false,
            slots,
            free: (0..SEND_SLOTS as u16).rev().collect(),
            queued: 0,
            cqes: Vec::with_capacity(256),
        };
        for bid in 0..BUF_COUNT {
            u.provide(bid);
        }
        u.arm();
        u.submit().map_err(|e| err("io_uring_enter", e))?;
        Ok(u)
    }

    /// The eventfd the ring signals for every completion.
    pub fn eventfd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    /// Give receive buffer `bid` (back) to the kernel.
    fn provide(&mut self, bid: u16) {
        let mask = BUF_COUNT - 1;
        // SAFETY: the ring region holds BUF_COUNT entries; index masked.
        unsafe {
            let e = (self.buf_ring.ptr as *mut BufRingEntry).add((self.tail & mask) as usize);
            (*e).set_addr(self.bufs.ptr.add(bid as usize * BUF_SIZE) as u64);
            (*e).set_len(BUF_SIZE as u32);
            (*e).set_bid(bid);
            self.tail = self.tail.wrapping_add(1);
            let tail = BufRingEntry::tail(self.buf_ring.ptr as *const BufRingEntry) as *mut u16;
            AtomicU16::from_ptr(tail).store(self.tail, Ordering::Release);
        }
    }

    fn arm(&mut self) {
        let sqe = opcode::RecvMsgMulti::new(Fd(self.fd), &*self.recv_hdr as *const _, BUF_GROUP).build().user_data(RECV_TAG);
        // Not armed (retried at the next poll) when the queue takes nothing.
        self.armed = self.push(&sqe);
    }

    /// Queue an entry (submitting first when the queue is full); false
    /// when the kernel takes no more.
    fn push(&mut self, sqe: &io_uring::squeue::Entry) -> bool {
        for _ in 0..2 {
            // SAFETY: every pointer in our entries stays valid until its
            // completion (the slots' slice, the boxed header, the regions).
            if unsafe { self.ring.submission().push(sqe) }.is_ok() {
                self.queued += 1;
                return true;
            }
            if let Err(e) = self.submit() {
                tracing::warn!("io_uring submit: {e}");
                return false;
            }
        }
        false
    }

    fn submit(&mut self) -> io::Result<()> {
        if self.queued == 0 {
            return Ok(());
        }
        loop {
            match self.ring.submit() {
                Ok(_) => {
                    self.queued = 0;
                    return Ok(());
                }
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }

    /// Queue a reply: `fill` writes the datagram (false: nothing to send).
    /// Err when every send slot is in flight even after reaping.
    pub fn send(
        &mut self,
        batch: &mut Batch,
        to: SocketAddrV6,
        source: Ipv6Addr,
        ifindex: u32,
        tag: SendTag,
        fill: impl FnOnce(&mut Vec<u8>) -> bool,
    ) -> Result<(), Full> {
        if self.free.is_empty() {
            let _ = self.flush(batch);
        }
        let Some(i) = self.free.pop() else { return Err(Full) };
        let slot = &mut self.slots[i as usize];
        slot.data.clear();
        if !fill(&mut slot.data) {
            self.free.push(i);
            return Ok(());
        }
        slot.tag = tag;
        slot.iov = libc::iovec { iov_base: slot.data.as_mut_ptr() as *mut _, iov_len: slot.data.len() };
        udp::fill_msghdr(&mut slot.hdr, &mut slot.addr, &mut slot.iov, &mut slot.control, to, source, ifindex);
        let sqe = opcode::SendMsg::new(Fd(self.fd), &slot.hdr as *const _).build().user_data(i as u64);
        if !self.push(&sqe) {
            self.free.push(i);
            return Err(Full);
        }
        Ok(())
    }

    /// Submit what is queued (one syscall) and reap what completed.
    pub fn flush(&mut self, batch: &mut Batch) -> Result<(), Unsupported> {
        if let Err(e) = self.submit() {
            tracing::warn!("io_uring submit: {e}");
        }
        self.poll(batch)
    }

    /// Take every completion: datagrams into `batch`, buffers back to the
    /// kernel, finished sends' slots freed. Err when the kernel refused the
    /// multishot receive before it ever delivered (no support).
    pub fn poll(&mut self, batch: &mut Batch) -> Result<(), Unsupported> {
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.clear();
        for c in self.ring.completion() {
            cqes.push((c.user_data(), c.result(), c.flags()));
        }
        let mut result = Ok(());
        for &(tag, res, flags) in &cqes {
            if tag == CANCEL_TAG {
                continue;
            }
            if tag != RECV_TAG {
                let i = tag as usize;
                batch.sent.push(Sent { tag: self.slots[i].tag, result: res });
                self.free.push(i as u16);
                continue;
            }
            if !cqueue::more(flags) {
                self.armed = false;
            }
            if res < 0 {
                match -res {
                    libc::ENOBUFS => batch.no_buffer += 1,
                    libc::EINVAL if !self.delivered => {
                        result = Err(Unsupported("the kernel refused a multishot recvmsg (Linux 6.0+ needed)".into()));
                    }
                    // `close` cancels the receive at shutdown.
                    libc::ECANCELED => {}
                    e => tracing::warn!("io_uring recvmsg: {}", io::Error::from_raw_os_error(e)),
                }
                continue;
            }
            self.delivered = true;
            let Some(bid) = cqueue::buffer_select(flags) else { continue };
            // SAFETY: the kernel wrote `res` bytes into buffer `bid`, which
            // is ours until provided again below.
            let buf = unsafe { std::slice::from_raw_parts(self.bufs.ptr.add(bid as usize * BUF_SIZE), res as usize) };
            if let Ok(out) = RecvMsgOut::parse(buf, &self.recv_hdr) {
                if out.is_payload_truncated() {
                    batch.oversized += 1;
                } else if let Some(rcv) = decode_addressing(out.name_data(), out.control_data(), out.payload_data().len()) {
                    let start = batch.arena.len();
                    batch.arena.extend_from_slice(out.payload_data());
                    batch.datagrams.push(Datagram { bytes: start..batch.arena.len(), rcv });
                }
            }
            self.provide(bid);
        }
        self.cqes = cqes;
        if !self.armed && result.is_ok() && !self.closing {
            self.arm();
            if let Err(e) = self.submit() {
                tracing::warn!("io_uring submit: {e}");
            }
        }
        result
    }
}

impl Uring {
    /// End the receive and wait (up to a second) for it and every send in
    /// flight to complete. The kernel tears a ring down after its last
    /// descriptor closes, asynchronously: a request still in flight then
    /// would keep the socket, and the port, bound after the process exited
    /// (seen as "port 547 in use" by a server restarted at once).
    pub fn close(&mut self, batch: &mut Batch) {
        self.closing = true;
        if self.armed {
            let _ = self.push(&opcode::AsyncCancel::new(RECV_TAG).build().user_data(CANCEL_TAG));
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
        while (self.armed || self.free.len() < SEND_SLOTS) && std::time::Instant::now() < deadline {
            let ts = io_uring::types::Timespec::new().nsec(50_000_000);
            let args = io_uring::types::SubmitArgs::new().timespec(&ts);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => self.queued = 0,
                Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME | libc::EINTR | libc::EBUSY)) => {}
                Err(e) => {
                    tracing::warn!("io_uring at shutdown: {e}");
                    break;
                }
            }
            let _ = self.poll(batch);
        }
    }
}

/// Every send slot is in flight.
#[derive(Debug)]
pub struct Full;

impl Drop for Uring {
    fn drop(&mut self) {
        let _ = self.ring.submitter().unregister_buf_ring(BUF_GROUP);
    }
}

fn decode_addressing(name: &[u8], control: &[u8], len: usize) -> Option<Received> {
    if name.len() < size_of::<libc::sockaddr_in6>() {
        return None;
    }
    // SAFETY: the name is a sockaddr_in6 the kernel wrote (length checked).
    let from: libc::sockaddr_in6 = unsafe { std::ptr::read_unaligned(name.as_ptr() as *const _) };
    let mut r = Received {
        len,
        source: SocketAddrV6::new(
            Ipv6Addr::from(from.sin6_addr.s6_addr),
            u16::from_be(from.sin6_port),
            from.sin6_flowinfo,
            from.sin6_scope_id,
        ),
        destination: Ipv6Addr::UNSPECIFIED,
        ifindex: 0,
        received_ns: 0,
    };
    udp::parse_control(control, &mut r);
    Some(r)
}

fn kernel_older_than(major: u32, minor: u32) -> bool {
    // SAFETY: uname fills a zeroed struct.
    let mut u: libc::utsname = unsafe { zeroed() };
    if unsafe { libc::uname(&mut u) } != 0 {
        return false;
    }
    // SAFETY: NUL-terminated by the kernel.
    let release = unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }.to_string_lossy().into_owned();
    let mut parts = release.split(|c: char| !c.is_ascii_digit()).filter_map(|p| p.parse::<u32>().ok());
    let (a, b) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (a, b) < (major, minor)
}
