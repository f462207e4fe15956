//! Operating-system checks and helpers used at start-up: io_uring, memlock,
//! the data-directory lock, signals, the clock, and a fresh server DUID.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::wire::Duid;

/// Seconds since the Unix epoch: the engine's `now`.
pub fn unix_now() -> u64 {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    t.saturating_add_signed(clock_offset())
}

/// Tests of clock skew between partners (RFC 8156 §7.1) move one server's
/// clock with `TANDEM_TEST_CLOCK_OFFSET=SECONDS`; never set in production.
fn clock_offset() -> i64 {
    static OFFSET: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *OFFSET.get_or_init(|| {
        let v = std::env::var("TANDEM_TEST_CLOCK_OFFSET").ok().and_then(|v| v.parse().ok()).unwrap_or(0);
        if v != 0 {
            eprintln!("tandem: TANDEM_TEST_CLOCK_OFFSET={v}: this server's clock is moved by {v} s (testing only)");
        }
        v
    })
}

/// glommio panics with a misleading "kernel too old" message when
/// io_uring is blocked (seccomp, io_uring_disabled); check first.
pub fn check_io_uring() -> Result<(), String> {
    #[repr(C)]
    struct Params([u32; 30]);
    let mut p = Params([0; 30]);
    // SAFETY: io_uring_setup with a zeroed params struct of the kernel's size (120 bytes).
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 4u32, &mut p as *mut Params) };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(format!(
            "io_uring is not available ({e}): tandem needs Linux 5.8+ with io_uring enabled \
             (check /proc/sys/kernel/io_uring_disabled and the container's seccomp profile)"
        ));
    }
    // SAFETY: closing the fd we just got.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// Raise RLIMIT_MEMLOCK's soft limit to the hard limit; fail when even that
/// is below what glommio needs (512 KiB hard minimum per executor).
pub fn raise_memlock(shards: usize) -> Result<u64, String> {
    let mut r = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: valid pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) };
    if r.rlim_cur < r.rlim_max {
        let nr = libc::rlimit { rlim_cur: r.rlim_max, rlim_max: r.rlim_max };
        // SAFETY: valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &nr) } == 0 {
            r = nr;
        }
    }
    let need = 512u64 << 10;
    let is_root = unsafe { libc::geteuid() } == 0;
    if r.rlim_cur != libc::RLIM_INFINITY && r.rlim_cur < need && !is_root {
        return Err(format!(
            "RLIMIT_MEMLOCK is {} KiB; io_uring needs at least 512 KiB for {shards} shard(s): \
             raise it (ulimit -l, LimitMEMLOCK= in systemd) or grant CAP_IPC_LOCK",
            r.rlim_cur >> 10
        ));
    }
    Ok(r.rlim_cur)
}

/// An exclusive lock on the data directory, held for the server's life.
pub struct DataDirLock {
    _file: File,
}

impl DataDirLock {
    pub fn acquire(dir: &Path) -> Result<DataDirLock, String> {
        let path = dir.join("tandem.lock");
        let f = File::create(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: flock on an open fd.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(format!(
                "{}: the lease store is in use by another running tandem (lock {} held)",
                dir.display(),
                path.display()
            ));
        }
        Ok(DataDirLock { _file: f })
    }
}

/// A new DUID-LLT from the first interface with a real MAC address
/// (RFC 9915 §11.2), or a DUID-UUID from the kernel's random UUID.
pub fn generate_duid(prefer: &[String]) -> Duid {
    let time = (unix_now().saturating_sub(946_684_800)) as u32;
    let mut names: Vec<String> = prefer.to_vec();
    if let Ok(rd) = std::fs::read_dir("/sys/class/net") {
        names.extend(rd.flatten().filter_map(|e| e.file_name().into_string().ok()));
    }
    for n in names {
        let Ok(s) = std::fs::read_to_string(format!("/sys/class/net/{n}/address")) else { continue };
        let mac: Vec<u8> = s.trim().split(':').filter_map(|x| u8::from_str_radix(x, 16).ok()).collect();
        if mac.len() == 6 && mac.iter().any(|b| *b != 0) {
            return Duid::llt(1, time, &mac);
        }
    }
    let uuid = std::fs::read_to_string("/proc/sys/kernel/random/uuid").unwrap_or_default();
    let hex: String = uuid.chars().filter(char::is_ascii_hexdigit).collect();
    let bytes = crate::wire::hex::decode(&hex).unwrap_or_else(|_| vec![0; 16]);
    let mut u = [0u8; 16];
    u.copy_from_slice(&bytes[..16.min(bytes.len())]);
    Duid::uuid(u)
}

/// Block SIGTERM, SIGINT and SIGHUP in this thread (threads spawned later
/// inherit it) so that only `wait_signal` sees them: SIGHUP reloads, it
/// never stops the server.
pub fn block_signals() -> libc::sigset_t {
    // SAFETY: building and applying a signal set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGHUP);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Wait up to `ms` for SIGTERM/SIGINT/SIGHUP; returns the signal number or None.
pub fn wait_signal(set: &libc::sigset_t, ms: u64) -> Option<i32> {
    let ts = libc::timespec { tv_sec: (ms / 1000) as i64, tv_nsec: ((ms % 1000) * 1_000_000) as i64 };
    // SAFETY: valid set and timespec.
    let s = unsafe { libc::sigtimedwait(set, std::ptr::null_mut(), &ts) };
    (s > 0).then_some(s)
}

/// Run the calling thread on `cpu` only (best effort: logged on failure).
pub fn pin_current_thread(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
    // sched_setaffinity get a pointer to it and its size.
    let r = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if r != 0 {
        tracing::warn!(cpu, "cannot pin the thread to CPU {cpu}: {}", std::io::Error::last_os_error());
    }
}

// mimalloc is the binaries' allocator (main.rs); linking it here makes its
// C API available to the library too.
use mimalloc as _;

unsafe extern "C" {
    fn mi_collect(force: bool);
}

/// Hand the memory freed since start-up (the store as read, the lists the
/// lease tables were built from: about as much as the tables) back to the
/// OS now, rather than after the allocator's purge delay.
pub fn release_free_memory() {
    // SAFETY: mi_collect takes no pointers; with another allocator in use
    // it finds mimalloc's heaps empty and does nothing.
    unsafe { mi_collect(true) }
}

/// Tell systemd (Type=notify) about a state change: `READY=1`,
/// `RELOADING=1`, `STOPPING=1`, `STATUS=…`. Nothing without $NOTIFY_SOCKET.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else { return };
    let bytes = path.as_encoded_bytes();
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name).and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), &path)
    };
    if let Err(e) = sent {
        tracing::warn!("sd_notify {state:?}: {e}");
    }
}

/// The monotonic clock in microseconds (systemd's RELOADING=1 wants it).
pub fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: a valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

/// Is the process running as root?
pub fn is_root() -> bool {
    // SAFETY: no arguments, no failure.
    unsafe { libc::geteuid() == 0 }
}

/// The uid and gid of a user name.
pub fn lookup_user(name: &str) -> Result<(u32, u32), String> {
    let c = std::ffi::CString::new(name).map_err(|_| format!("user {name:?}: not a valid name"))?;
    // SAFETY: NUL-terminated name; the result is read at once, before any
    // other getpw* call (start-up is single-threaded here).
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return Err(format!("user {name:?} (config key `user`) does not exist"));
    }
    // SAFETY: getpwnam returned a valid passwd entry.
    Ok(unsafe { ((*pw).pw_uid, (*pw).pw_gid) })
}

/// CAP_NET_BIND_SERVICE (linux/capability.h).
const CAP_NET_BIND_SERVICE: u32 = 10;

/// Become `uid`/`gid` (every thread: glibc applies set*id process-wide),
/// keeping only CAP_NET_BIND_SERVICE in this thread, so that threads it
/// starts later can still bind port 547.
pub fn drop_privileges(uid: u32, gid: u32) -> Result<(), String> {
    let err = |what: &str| format!("dropping privileges ({what}): {}", io::Error::last_os_error());
    // SAFETY: plain system calls with valid arguments; the capability
    // header and data follow linux/capability.h version 3.
    unsafe {
        if libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0 {
            return Err(err("PR_SET_KEEPCAPS"));
        }
        if libc::setgroups(1, &gid) != 0 {
            return Err(err("setgroups"));
        }
        if libc::setgid(gid) != 0 {
            return Err(err("setgid"));
        }
        if libc::setuid(uid) != 0 {
            return Err(err("setuid"));
        }
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let hdr = Header { version: 0x2008_0522, pid: 0 };
        let bit = 1u32 << CAP_NET_BIND_SERVICE;
        let data = [Data { effective: bit, permitted: bit, inheritable: 0 }, Data { effective: 0, permitted: 0, inheritable: 0 }];
        if libc::syscall(libc::SYS_capset, &hdr as *const Header, data.as_ptr()) != 0 {
            return Err(err("capset"));
        }
        libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0);
        if libc::setuid(0) == 0 {
            return Err("dropping privileges: root could be regained".into());
        }
    }
    Ok(())
}

/// Hand the data directory's files to the user the server will run as.
pub fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<(), String> {
    // lchown: a link planted in the data-dir must not hand its target over.
    let one = |p: &Path| std::os::unix::fs::lchown(p, Some(uid), Some(gid)).map_err(|e| format!("chown {}: {e}", p.display()));
    one(dir)?;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).map_err(|e| format!("{}: {e}", d.display()))?.flatten() {
            let p = e.path();
            one(&p)?;
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(p);
            }
        }
    }
    Ok(())
}
