//! The sans-IO rule: protocol modules (wire, server, pool, failover, sim, ddns)
//! never touch sockets, disks, TLS, executors, the system clock or the OS
//! random source. Time and randomness come in as inputs. This test fails the
//! build when one of those modules names a forbidden API.

use std::path::Path;

const PURE_MODULES: &[&str] = &["wire", "server", "pool", "failover", "sim", "ddns"];

/// (pattern, why it is forbidden)
const FORBIDDEN: &[(&str, &str)] = &[
    ("glommio", "executor and IO runtime"),
    ("heed", "LMDB store"),
    ("rustls", "TLS"),
    ("socket2", "sockets"),
    ("UdpSocket", "sockets"),
    ("TcpStream", "sockets"),
    ("TcpListener", "sockets"),
    ("UnixStream", "sockets"),
    ("libc::", "system calls"),
    ("std::fs", "files"),
    ("std::process", "processes"),
    ("std::thread", "threads"),
    ("SystemTime::now", "the system clock (take `now` as an input)"),
    ("Instant::now", "the monotonic clock (take `now` as an input)"),
    ("UNIX_EPOCH.elapsed", "the system clock"),
    ("rand::", "randomness (inject a seeded source)"),
    ("getrandom", "OS randomness"),
    ("thread_rng", "OS randomness"),
    // hickory-proto's message types are pure; its clients and transports are not.
    ("hickory_client", "DNS client IO"),
    ("hickory_resolver", "DNS client IO"),
    ("hickory_proto::udp", "DNS transport IO"),
    ("hickory_proto::tcp", "DNS transport IO"),
    ("hickory_proto::xfer", "DNS transport IO"),
];

/// Code without `//` comments, so prose may name what code must not use.
fn strip_comments(src: &str) -> String {
    src.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn violations(src: &str) -> Vec<(&'static str, &'static str)> {
    let code = strip_comments(src);
    FORBIDDEN.iter().copied().filter(|(p, _)| code.contains(p)).collect()
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn pure_modules_do_no_io() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = 0;
    let mut problems = Vec::new();
    for m in PURE_MODULES {
        let mut files = Vec::new();
        rust_files(&src.join(m), &mut files);
        let single = src.join(format!("{m}.rs"));
        if single.exists() {
            files.push(single);
        }
        for f in files {
            checked += 1;
            let text = std::fs::read_to_string(&f).unwrap();
            for (p, why) in violations(&text) {
                problems.push(format!("{}: uses `{p}` ({why})", f.display()));
            }
        }
    }
    assert!(checked > 0, "no files found under the pure modules");
    assert!(problems.is_empty(), "sans-IO layering broken:\n{}", problems.join("\n"));
}

#[test]
fn the_scanner_catches_what_it_should() {
    assert!(!violations("let t = std::time::SystemTime::now();").is_empty());
    assert!(!violations("use glommio::net::UdpSocket;").is_empty());
    assert!(violations("// glommio is used only in runtime/").is_empty());
    assert!(violations("pub fn step(now: u64) {}").is_empty());
}
