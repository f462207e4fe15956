//! UDP sockets for DHCPv6 with the ancillary data glommio does not expose:
//! IPV6_PKTINFO tells the arrival interface and destination of each
//! datagram, and sets the interface and source of each reply.
//! (shared/notes/stack-spike.md Q2: socket2 + raw recvmsg/sendmsg.)

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::os::fd::{AsRawFd, RawFd};

use socket2::{Domain, Protocol, Socket, Type};

pub const ALL_DHCP_RELAY_AGENTS_AND_SERVERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 1, 2);

/// One received datagram's addressing.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    pub len: usize,
    pub source: SocketAddrV6,
    pub destination: Ipv6Addr,
    pub ifindex: u32,
    /// When the kernel received it (SO_TIMESTAMPNS, CLOCK_REALTIME ns; 0
    /// when the kernel gave no time).
    pub received_ns: u64,
}

/// A UDP socket on `[::]:port`, sharing the port with the other shards.
pub fn bind_shared(port: u16) -> io::Result<Socket> {
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_only_v6(true)?;
    s.set_reuse_port(true)?;
    s.set_reuse_address(true)?;
    s.set_nonblocking(true)?;
    // Without this every SO_REUSEPORT socket receives every multicast
    // datagram and clients get one reply per shard (measured in the spike).
    s.set_multicast_all_v6(false)?;
    set_int(s.as_raw_fd(), libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
    // Kernel receive times for `tandem_reply_latency_seconds`.
    set_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 1)?;
    s.set_recv_buffer_size(4 << 20).ok();
    s.set_send_buffer_size(4 << 20).ok();
    s.bind(&SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0)).into())?;
    Ok(s)
}

/// Fails with AddrInUse when another program (not using SO_REUSEPORT with
/// us) holds the port for two seconds: a server of ours that just died may
/// hold it that long, while the kernel tears its io_uring down (the ring
/// keeps its receive's socket until then).
pub fn check_port_free(port: u16) -> io::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
        s.set_only_v6(true)?;
        match s.bind(&SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0)).into()) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            r => return r,
        }
    }
}

pub fn join_dhcp_multicast(s: &Socket, ifindex: u32) -> io::Result<()> {
    s.join_multicast_v6(&ALL_DHCP_RELAY_AGENTS_AND_SERVERS, ifindex)
}

pub fn leave_dhcp_multicast(s: &Socket, ifindex: u32) -> io::Result<()> {
    s.leave_multicast_v6(&ALL_DHCP_RELAY_AGENTS_AND_SERVERS, ifindex)
}

fn set_int(fd: RawFd, level: i32, name: i32, v: i32) -> io::Result<()> {
    // SAFETY: valid fd and a pointer to a live i32 of the size given.
    let r = unsafe { libc::setsockopt(fd, level, name, &v as *const i32 as *const _, size_of::<i32>() as u32) };
    if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

pub fn ifindex(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (i != 0).then_some(i)
}

/// Control-data room: IPV6_PKTINFO (40 bytes) and SCM_TIMESTAMPNS (32).
pub const CMSG_SPACE: usize = 128;

/// Receive one datagram without blocking; Ok(None) when none is waiting.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<Option<Received>> {
    // SAFETY: all-zero is a valid sockaddr_in6 / msghdr.
    let mut from: libc::sockaddr_in6 = unsafe { zeroed() };
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr() as *mut _, iov_len: buf.len() };
    let mut cbuf = [0u64; CMSG_SPACE / 8];
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = &mut from as *mut _ as *mut _;
    msg.msg_namelen = size_of::<libc::sockaddr_in6>() as u32;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr() as *mut _;
    msg.msg_controllen = CMSG_SPACE;
    // SAFETY: msg points at live buffers sized as declared.
    let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_DONTWAIT | libc::MSG_TRUNC) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock { Ok(None) } else { Err(e) };
    }
    let source = SocketAddrV6::new(
        Ipv6Addr::from(from.sin6_addr.s6_addr),
        u16::from_be(from.sin6_port),
        from.sin6_flowinfo,
        from.sin6_scope_id,
    );
    let mut r = Received { len: n as usize, source, destination: Ipv6Addr::UNSPECIFIED, ifindex: 0, received_ns: 0 };
    // SAFETY: the kernel wrote msg_controllen bytes of control data.
    let control = unsafe { std::slice::from_raw_parts(cbuf.as_ptr() as *const u8, msg.msg_controllen.min(CMSG_SPACE)) };
    parse_control(control, &mut r);
    Ok(Some(r))
}

/// Read IPV6_PKTINFO (destination, interface) and SCM_TIMESTAMPNS from a
/// datagram's control data.
pub fn parse_control(control: &[u8], r: &mut Received) {
    let hdr = size_of::<libc::cmsghdr>();
    let mut at = 0;
    while at + hdr <= control.len() {
        // SAFETY: a cmsghdr fits at `at` (checked), read unaligned.
        let c: libc::cmsghdr = unsafe { std::ptr::read_unaligned(control.as_ptr().add(at) as *const _) };
        let len = c.cmsg_len;
        if len < hdr || at + len > control.len() {
            break;
        }
        let data = &control[at + hdr..at + len];
        if c.cmsg_level == libc::IPPROTO_IPV6 && c.cmsg_type == libc::IPV6_PKTINFO && data.len() >= size_of::<libc::in6_pktinfo>() {
            // SAFETY: length checked.
            let info: libc::in6_pktinfo = unsafe { std::ptr::read_unaligned(data.as_ptr() as *const _) };
            r.destination = Ipv6Addr::from(info.ipi6_addr.s6_addr);
            r.ifindex = info.ipi6_ifindex;
        } else if c.cmsg_level == libc::SOL_SOCKET && c.cmsg_type == libc::SCM_TIMESTAMPNS && data.len() >= size_of::<libc::timespec>() {
            // SAFETY: length checked.
            let t: libc::timespec = unsafe { std::ptr::read_unaligned(data.as_ptr() as *const _) };
            r.received_ns = (t.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64);
        }
        // Each message is padded to the alignment of cmsghdr.
        at += len.next_multiple_of(size_of::<usize>());
    }
}

/// CLOCK_REALTIME in ns: the clock SO_TIMESTAMPNS uses.
pub fn realtime_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// Send one datagram out of `ifindex` (0: let routing choose) from
/// `source` (unspecified: let the kernel choose). Ok(false) when the socket
/// buffer is full.
pub fn send(fd: RawFd, data: &[u8], to: SocketAddrV6, source: Ipv6Addr, ifindex: u32) -> io::Result<bool> {
    // SAFETY: zeroed C structs, filled by fill_msghdr.
    let mut dst: libc::sockaddr_in6 = unsafe { zeroed() };
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut _, iov_len: data.len() };
    let mut cbuf = [0u64; CMSG_SPACE / 8];
    let mut msg: libc::msghdr = unsafe { zeroed() };
    fill_msghdr(&mut msg, &mut dst, &mut iov, &mut cbuf, to, source, ifindex);
    // SAFETY: msg points at live buffers.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock { Ok(false) } else { Err(e) };
    }
    Ok(true)
}

/// Lay out a reply's msghdr: destination `to`, out of `ifindex` (0: let
/// routing choose) from `source` (unspecified or multicast: let the kernel
/// choose), pointing at `iov` and `control` (which must outlive its use).
pub fn fill_msghdr(
    msg: &mut libc::msghdr,
    dst: &mut libc::sockaddr_in6,
    iov: &mut libc::iovec,
    control: &mut [u64; CMSG_SPACE / 8],
    to: SocketAddrV6,
    source: Ipv6Addr,
    ifindex: u32,
) {
    // SAFETY: all-zero is a valid sockaddr_in6 / msghdr.
    *dst = unsafe { zeroed() };
    dst.sin6_family = libc::AF_INET6 as u16;
    dst.sin6_port = to.port().to_be();
    dst.sin6_addr.s6_addr = to.ip().octets();
    dst.sin6_scope_id = if to.scope_id() != 0 { to.scope_id() } else { ifindex };
    *msg = unsafe { zeroed() };
    msg.msg_name = dst as *mut _ as *mut _;
    msg.msg_namelen = size_of::<libc::sockaddr_in6>() as u32;
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    let multicast_src = source.is_multicast();
    if ifindex != 0 || (!source.is_unspecified() && !multicast_src) {
        msg.msg_control = control.as_mut_ptr() as *mut _;
        // SAFETY: CMSG_SPACE of a small struct.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) } as usize;
        // SAFETY: the control buffer is large enough for one in6_pktinfo.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(msg);
            (*c).cmsg_level = libc::IPPROTO_IPV6;
            (*c).cmsg_type = libc::IPV6_PKTINFO;
            (*c).cmsg_len = libc::CMSG_LEN(size_of::<libc::in6_pktinfo>() as u32) as usize;
            let mut info: libc::in6_pktinfo = zeroed();
            if !multicast_src {
                info.ipi6_addr.s6_addr = source.octets();
            }
            info.ipi6_ifindex = ifindex;
            std::ptr::write_unaligned(libc::CMSG_DATA(c) as *mut libc::in6_pktinfo, info);
        }
    }
}
