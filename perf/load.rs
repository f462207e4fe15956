//! tandem-load: a DHCPv6 load generator that outpaces perfdhcp.
//!
//! Runs inside a client network namespace and talks to the server on the
//! link (ff02::1:2 on `--interface`). Every exchange is a distinct client
//! (DUID-EN with a counter). Modes: `4msg` (Solicit, Advertise, Request,
//! Reply), `rapid` (Solicit with Rapid Commit, Reply), `renew` (4msg, then a
//! Renew per lease), `release` (4msg, then a Release per lease). IA_NA
//! and/or IA_PD. Closed loop with `--window` exchanges in flight, or open
//! loop at `--rate` exchanges/s. One non-blocking socket; datagrams leave in
//! batches with sendmmsg(2) and arrive in batches with recvmmsg(2), and the
//! loop sleeps in poll(2) when it has nothing to do, so the CPU it reports is
//! the CPU it needed. Reports completed leases/s, timeouts, latency
//! percentiles and CPU used.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::HashMap;
use std::net::{Ipv6Addr, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use tandem::wire::*;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Mode {
    #[value(name = "4msg")]
    FourMsg,
    Rapid,
    Renew,
    Release,
}

#[derive(Parser, Debug)]
#[command(name = "tandem-load", about = "DHCPv6 load generator (run it in the clients' network namespace)")]
struct Args {
    /// Interface facing the server (multicast to ff02::1:2 on it).
    #[arg(long)]
    interface: String,
    #[arg(long, value_enum, default_value = "4msg")]
    mode: Mode,
    /// Ask for addresses (IA_NA).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    na: bool,
    /// Ask for delegated prefixes (IA_PD).
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    pd: bool,
    /// Exchanges in flight (closed loop).
    #[arg(long, default_value_t = 256)]
    window: usize,
    /// Offered exchanges per second (open loop); 0 = closed loop.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Test duration in seconds.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// First client number (distinct DUIDs across runs).
    #[arg(long, default_value_t = 1)]
    first_client: u64,
    /// Give up on an exchange after this many milliseconds.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// Stop after this many exchanges completed (0 = run for --duration).
    #[arg(long, default_value_t = 0)]
    count: u64,
}

struct Flight {
    client: u64,
    start: Instant,
    step: u8,
}

fn ifindex(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: NUL-terminated string.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

fn duid(n: u64) -> Duid {
    Duid::en(32473, &n.to_be_bytes())
}

fn message(t: MessageType, xid: u32, client: u64, a: &Args, server: Option<&Duid>, lease: &Options, rapid: bool) -> Vec<u8> {
    let mut o = vec![DhcpOption::ClientId(duid(client)), DhcpOption::ElapsedTime(0)];
    if let Some(s) = server {
        o.push(DhcpOption::ServerId(s.clone()));
    }
    if rapid {
        o.push(DhcpOption::RapidCommit);
    }
    // Echo what was offered/leased, or empty IAs.
    let mut echoed = false;
    for x in lease.iter() {
        if matches!(x, DhcpOption::IaNa(_) | DhcpOption::IaPd(_)) {
            o.push(x.clone());
            echoed = true;
        }
    }
    if !echoed {
        if a.na {
            o.push(DhcpOption::IaNa(IaNa { iaid: 1, t1: 0, t2: 0, options: Options::new() }));
        }
        if a.pd {
            o.push(DhcpOption::IaPd(IaPd { iaid: 1, t1: 0, t2: 0, options: Options::new() }));
        }
    }
    Message::Client(ClientMessage { msg_type: t, transaction_id: xid, options: o.into() }).encode().unwrap()
}

fn has_lease(o: &Options) -> bool {
    o.ia_nas().any(|ia| ia.options.ia_addrs().any(|a| a.valid > 0)) || o.ia_pds().any(|ia| ia.options.ia_prefixes().any(|p| p.valid > 0))
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage with a zeroed struct.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(r.ru_utime) + t(r.ru_stime)
}

const BATCH: usize = 64;

/// Send every datagram in `out` to `to` with as few sendmmsg calls as the
/// socket buffer allows; returns how many left.
fn send_batch(fd: i32, out: &[Vec<u8>], to: &SocketAddrV6) -> usize {
    let sa = sockaddr6(to);
    let mut sent = 0;
    for chunk in out.chunks(BATCH) {
        let mut iov: Vec<libc::iovec> =
            chunk.iter().map(|m| libc::iovec { iov_base: m.as_ptr() as *mut _, iov_len: m.len() }).collect();
        let mut hdrs: Vec<libc::mmsghdr> = iov
            .iter_mut()
            .map(|v| {
                // SAFETY: a zeroed msghdr is valid; we fill the fields we use.
                let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
                h.msg_hdr.msg_name = &sa as *const _ as *mut _;
                h.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as u32;
                h.msg_hdr.msg_iov = v;
                h.msg_hdr.msg_iovlen = 1;
                h
            })
            .collect();
        // SAFETY: headers point at live buffers for the duration of the call.
        let n = unsafe { libc::sendmmsg(fd, hdrs.as_mut_ptr(), hdrs.len() as u32, libc::MSG_DONTWAIT) };
        if n <= 0 {
            break;
        }
        sent += n as usize;
        if (n as usize) < chunk.len() {
            break;
        }
    }
    sent
}

fn sockaddr6(a: &SocketAddrV6) -> libc::sockaddr_in6 {
    // SAFETY: zeroed sockaddr_in6 is valid.
    let mut sa: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
    sa.sin6_family = libc::AF_INET6 as u16;
    sa.sin6_port = a.port().to_be();
    sa.sin6_addr.s6_addr = a.ip().octets();
    sa.sin6_scope_id = a.scope_id();
    sa
}

/// Receive up to BATCH datagrams; their lengths.
fn recv_batch(fd: i32, bufs: &mut [Vec<u8>], lens: &mut Vec<usize>) -> usize {
    lens.clear();
    let mut iov: Vec<libc::iovec> = bufs.iter_mut().map(|b| libc::iovec { iov_base: b.as_mut_ptr() as *mut _, iov_len: b.len() }).collect();
    let mut hdrs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|v| {
            // SAFETY: as above.
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    // SAFETY: headers point at our buffers.
    let n = unsafe { libc::recvmmsg(fd, hdrs.as_mut_ptr(), hdrs.len() as u32, libc::MSG_DONTWAIT, std::ptr::null_mut()) };
    if n <= 0 {
        return 0;
    }
    for h in &hdrs[..n as usize] {
        lens.push(h.msg_len as usize);
    }
    n as usize
}

fn main() {
    let a = Args::parse();
    let ifx = ifindex(&a.interface);
    if ifx == 0 {
        eprintln!("tandem-load: interface {:?} not found (run it in the clients' namespace)", a.interface);
        std::process::exit(2);
    }
    let sock = UdpSocket::bind(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 546, 0, 0)).unwrap_or_else(|e| {
        eprintln!("tandem-load: bind [::]:546: {e}");
        std::process::exit(2);
    });
    sock.set_nonblocking(true).unwrap();
    let to = SocketAddrV6::new("ff02::1:2".parse().unwrap(), 547, 0, ifx);
    let fd = sock.as_raw_fd();
    let timeout = Duration::from_millis(a.timeout_ms);
    let rapid = a.mode == Mode::Rapid;
    let mut inflight: HashMap<u32, Flight> = HashMap::new();
    let mut next_client = a.first_client;
    let mut xid: u32 = 0;
    let (mut started, mut completed, mut timeouts, mut no_lease, mut packets_out, mut packets_in) = (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut latencies: Vec<u32> = Vec::new();
    let t0 = Instant::now();
    let cpu0 = cpu_seconds();
    let end = t0 + Duration::from_secs(a.duration);
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut bufs: Vec<Vec<u8>> = (0..BATCH).map(|_| vec![0u8; 2048]).collect();
    let mut lens = Vec::with_capacity(BATCH);
    // A bigger receive buffer: replies arrive in bursts.
    let big: libc::c_int = 4 << 20;
    // SAFETY: setsockopt with an int.
    unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, &big as *const _ as *const _, 4) };
    let mut last_sweep = Instant::now();
    while Instant::now() < end {
        // Start new exchanges: keep the window full, or follow the rate.
        if a.count > 0 && completed >= a.count {
            break;
        }
        let room = if a.count > 0 { a.count.saturating_sub(started) as usize } else { usize::MAX };
        let want = if a.rate > 0 {
            let due = (t0.elapsed().as_secs_f64() * a.rate as f64) as u64;
            due.saturating_sub(started).min(1024) as usize
        } else {
            a.window.saturating_sub(inflight.len())
        }
        .min(room);
        for _ in 0..want {
            xid = (xid + 1) & 0xff_ffff;
            let c = next_client;
            next_client += 1;
            inflight.insert(xid, Flight { client: c, start: Instant::now(), step: 0 });
            out.push(message(MessageType::Solicit, xid, c, &a, None, &Options::new(), rapid));
            started += 1;
        }
        let mut busy = !out.is_empty();
        if !out.is_empty() {
            // What the socket buffer refused is lost, like a dropped datagram.
            packets_out += send_batch(fd, &out, &to) as u64;
            out.clear();
        }
        // Receive everything waiting.
        let mut got = Vec::new();
        loop {
            let n = recv_batch(fd, &mut bufs, &mut lens);
            if n == 0 {
                break;
            }
            busy = true;
            packets_in += n as u64;
            for (b, l) in bufs.iter().zip(lens.iter()) {
                got.push(b[..*l].to_vec());
            }
            if n < BATCH {
                break;
            }
        }
        for datagram in got {
            let Ok(Message::Client(m)) = Message::decode(&datagram) else { continue };
            let Some(f) = inflight.remove(&m.transaction_id) else { continue };
            let server = m.options.server_id().cloned();
            let lease: Options = m.options.iter().filter(|o| matches!(o, DhcpOption::IaNa(_) | DhcpOption::IaPd(_))).cloned().collect::<Vec<_>>().into();
            let done = |latencies: &mut Vec<u32>| latencies.push(f.start.elapsed().as_micros().min(u32::MAX as u128) as u32);
            match (m.msg_type, f.step, a.mode) {
                (MessageType::Advertise, 0, _) if has_lease(&m.options) => {
                    xid = (xid + 1) & 0xff_ffff;
                    out.push(message(MessageType::Request, xid, f.client, &a, server.as_ref(), &lease, false));
                    inflight.insert(xid, Flight { step: 1, ..f });
                }
                (MessageType::Reply, _, Mode::Renew | Mode::Release) if f.step < 2 && has_lease(&m.options) => {
                    xid = (xid + 1) & 0xff_ffff;
                    let t = if a.mode == Mode::Renew { MessageType::Renew } else { MessageType::Release };
                    out.push(message(t, xid, f.client, &a, server.as_ref(), &lease, false));
                    inflight.insert(xid, Flight { step: 2, ..f });
                }
                (MessageType::Reply, _, _) if has_lease(&m.options) || f.step == 2 => {
                    completed += 1;
                    done(&mut latencies);
                }
                _ => no_lease += 1,
            }
        }
        if last_sweep.elapsed() > Duration::from_millis(50) {
            last_sweep = Instant::now();
            let before = inflight.len();
            inflight.retain(|_, f| f.start.elapsed() < timeout);
            timeouts += (before - inflight.len()) as u64;
        }
        if a.count > 0 && started >= a.count && inflight.is_empty() {
            // Everything started has finished or timed out: start the stragglers again.
            let missing = a.count - completed;
            if missing > 0 {
                started -= missing;
            }
        }
        if !busy && out.is_empty() {
            // Nothing arrived and nothing to send: sleep until a reply (or 1 ms).
            let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: one pollfd.
            unsafe { libc::poll(&mut p, 1, 1) };
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    latencies.sort_unstable();
    let pct = |p: f64| latencies.get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1))).copied().unwrap_or(0);
    println!(
        "RESULT mode={:?} na={} pd={} window={} rate={} seconds={:.1} started={} completed={} leases_per_s={:.0} timeouts={} no_lease={} unfinished={} packets_out={} packets_in={} p50_us={} p99_us={} p999_us={} cpu_s={:.2} cpu_pct={:.0}",
        a.mode,
        a.na,
        a.pd,
        a.window,
        a.rate,
        secs,
        started,
        completed,
        completed as f64 / secs,
        timeouts,
        no_lease,
        inflight.len(),
        packets_out,
        packets_in,
        pct(0.5),
        pct(0.99),
        pct(0.999),
        cpu,
        100.0 * cpu / secs
    );
}
