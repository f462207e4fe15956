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
    s.set_recv_buffer_size(4 << 20).ok();
    s.set_send_buffer_size(4 << 20).ok();
    s.bind(&SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0)).into())?;
    Ok(s)
}

/// Fails with AddrInUse when another program (not using SO_REUSEPORT with
/// us) holds the port.
pub fn check_port_free(port: u16) -> io::Result<()> {
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_only_v6(true)?;
    s.bind(&SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, port, 0, 0)).into())
}

pub fn join_dhcp_multicast(s: &Socket, ifindex: u32) -> io::Result<()> {
    s.join_multicast_v6(&ALL_DHCP_RELAY_AGENTS_AND_SERVERS, ifindex)
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

const CMSG_SPACE: usize = 64;

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
    let mut destination = Ipv6Addr::UNSPECIFIED;
    let mut ifindex = 0;
    // SAFETY: walking the control buffer the kernel filled, with libc's macros.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::IPPROTO_IPV6 && (*c).cmsg_type == libc::IPV6_PKTINFO {
                let info = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::in6_pktinfo);
                destination = Ipv6Addr::from(info.ipi6_addr.s6_addr);
                ifindex = info.ipi6_ifindex;
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    let source = SocketAddrV6::new(
        Ipv6Addr::from(from.sin6_addr.s6_addr),
        u16::from_be(from.sin6_port),
        from.sin6_flowinfo,
        from.sin6_scope_id,
    );
    Ok(Some(Received { len: n as usize, source, destination, ifindex }))
}

/// Send one datagram out of `ifindex` (0: let routing choose) from
/// `source` (unspecified: let the kernel choose). Ok(false) when the socket
/// buffer is full.
pub fn send(fd: RawFd, data: &[u8], to: SocketAddrV6, source: Ipv6Addr, ifindex: u32) -> io::Result<bool> {
    // SAFETY: zeroed C structs, filled below.
    let mut dst: libc::sockaddr_in6 = unsafe { zeroed() };
    dst.sin6_family = libc::AF_INET6 as u16;
    dst.sin6_port = to.port().to_be();
    dst.sin6_addr.s6_addr = to.ip().octets();
    dst.sin6_scope_id = if to.scope_id() != 0 { to.scope_id() } else { ifindex };
    let mut iov = libc::iovec { iov_base: data.as_ptr() as *mut _, iov_len: data.len() };
    let mut cbuf = [0u64; CMSG_SPACE / 8];
    let mut msg: libc::msghdr = unsafe { zeroed() };
    msg.msg_name = &mut dst as *mut _ as *mut _;
    msg.msg_namelen = size_of::<libc::sockaddr_in6>() as u32;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    let multicast_src = source.is_multicast();
    if ifindex != 0 || (!source.is_unspecified() && !multicast_src) {
        msg.msg_control = cbuf.as_mut_ptr() as *mut _;
        // SAFETY: CMSG_SPACE of a small struct.
        msg.msg_controllen = unsafe { libc::CMSG_SPACE(size_of::<libc::in6_pktinfo>() as u32) } as usize;
        // SAFETY: the control buffer is large enough for one in6_pktinfo.
        unsafe {
            let c = libc::CMSG_FIRSTHDR(&msg);
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
    // SAFETY: msg points at live buffers.
    let n = unsafe { libc::sendmsg(fd, &msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::WouldBlock { Ok(false) } else { Err(e) };
    }
    Ok(true)
}
