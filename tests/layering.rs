//! The sans-IO rule: protocol modules (wire, server, pool, failover, shard,
//! sim, ddns, lease) never touch sockets, disks, TLS, executors, the system
//! clock or the OS random source. Time and randomness come in as inputs. The
//! cores also stay below the front ends: wire, pool, server, failover, shard
//! and lease never import `config`, `cli` or `runtime` (their own tests may
//! build settings from a config text). This test fails when a file breaks
//! either rule.

use std::path::Path;

const PURE_MODULES: &[&str] = &["wire", "server", "pool", "failover", "shard", "sim", "ddns", "lease", "leasequery"];

/// Core modules that must not depend on the front ends or the runtime.
const CORE_MODULES: &[&str] = &["wire", "server", "pool", "failover", "shard", "lease", "leasequery"];
const FRONT_ENDS: &[(&str, &str)] =
    &[("crate::config", "the configuration front end"), ("crate::cli", "the command line"), ("crate::runtime", "the IO runtime")];

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
    FORBIDDEN.iter().copied().filter(|(p, _)| code.contains(p) || grouped_use(&code, p)).collect()
}

/// `use std::{fs, …}` names `std::fs` too.
fn grouped_use(code: &str, pattern: &str) -> bool {
    let Some((head, tail)) = pattern.rsplit_once("::") else { return false };
    if tail.is_empty() {
        return false;
    }
    code.match_indices(&format!("{head}::{{")).any(|(i, _)| {
        let rest = &code[i + head.len() + 3..];
        let group = &rest[..rest.find('}').unwrap_or(rest.len())];
        group.split([',', ' ', '\n']).any(|w| w.trim() == tail)
    })
}

/// The code of a core file without its tests: files named `tests.rs` and
/// everything after a `#[cfg(test)]` line.
fn production_code(src: &str) -> String {
    let code = strip_comments(src);
    match code.find("#[cfg(test)]") {
        Some(i) => code[..i].to_string(),
        None => code,
    }
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
fn cores_do_not_import_the_front_ends() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut problems = Vec::new();
    for m in CORE_MODULES {
        let mut files = Vec::new();
        rust_files(&src.join(m), &mut files);
        for f in files.into_iter().filter(|f| f.file_name().is_some_and(|n| n != "tests.rs")) {
            let code = production_code(&std::fs::read_to_string(&f).unwrap());
            for (p, what) in FRONT_ENDS {
                if code.contains(p) {
                    problems.push(format!("{}: imports `{p}` ({what})", f.display()));
                }
            }
        }
    }
    assert!(problems.is_empty(), "a core depends on a front end:\n{}", problems.join("\n"));
}

#[test]
fn the_scanner_catches_what_it_should() {
    assert!(!violations("let t = std::time::SystemTime::now();").is_empty());
    assert!(!violations("use glommio::net::UdpSocket;").is_empty());
    assert!(violations("// glommio is used only in runtime/").is_empty());
    assert!(violations("pub fn step(now: u64) {}").is_empty());
    assert!(!violations("use std::{fs, io};").is_empty(), "grouped imports are seen");
    assert!(violations("use std::{io, fmt};").is_empty());
    assert!(production_code("use a;\n#[cfg(test)]\nmod tests { use crate::config::Config; }").find("config").is_none());
}

/// Which sibling modules of `src/runtime/` a file names (`super::x`,
/// `super::{x, y}`, `crate::runtime::x`).
fn runtime_imports(code: &str, siblings: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for prefix in ["super::", "crate::runtime::"] {
        let mut rest = code;
        while let Some(i) = rest.find(prefix) {
            rest = &rest[i + prefix.len()..];
            let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
                group.split('}').next().unwrap_or("").split(',').map(|n| n.trim().split("::").next().unwrap_or("")).collect()
            } else {
                vec![rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or("")]
            };
            for n in names {
                if siblings.iter().any(|s| s == n) && !out.iter().any(|o| o == n) {
                    out.push(n.to_string());
                }
            }
        }
    }
    out
}

/// The runtime's modules form a tree of owners, not a knot: no module
/// reaches itself through the imports of others (review H1).
#[test]
fn the_runtime_modules_import_each_other_without_a_circle() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/runtime");
    let mut files = Vec::new();
    rust_files(&dir, &mut files);
    let name = |f: &std::path::PathBuf| f.file_stem().unwrap().to_string_lossy().to_string();
    let siblings: Vec<String> = files.iter().map(name).filter(|n| n != "mod").collect();
    assert!(siblings.len() >= 5, "runtime modules not found: {siblings:?}");
    let graph: Vec<(String, Vec<String>)> = files
        .iter()
        .filter(|f| name(f) != "mod")
        .map(|f| (name(f), runtime_imports(&production_code(&std::fs::read_to_string(f).unwrap()), &siblings)))
        .collect();
    // Depth-first search for a back edge.
    fn visit(n: &str, g: &[(String, Vec<String>)], path: &mut Vec<String>, done: &mut Vec<String>) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.iter().any(|d| d == n) {
            return None;
        }
        path.push(n.to_string());
        for next in g.iter().find(|(m, _)| m == n).map(|(_, e)| e.clone()).unwrap_or_default() {
            if let Some(c) = visit(&next, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.push(n.to_string());
        None
    }
    let mut done = Vec::new();
    for (m, _) in &graph {
        if let Some(c) = visit(m, &graph, &mut Vec::new(), &mut done) {
            panic!("import circle in src/runtime/: {}", c.join(" → "));
        }
    }
    // The scanner sees the edges it must (so the check is not vacuous).
    let server = &graph.iter().find(|(m, _)| m == "server").expect("runtime/server.rs").1;
    assert!(server.iter().any(|e| e == "shard") && server.iter().any(|e| e == "failover"), "{server:?}");
    let s = vec!["a".to_string(), "b".to_string()];
    assert_eq!(runtime_imports("use super::{a, b::X};", &s), s);
    assert_eq!(runtime_imports("use crate::runtime::b::Y;", &s), vec!["b".to_string()]);
}
