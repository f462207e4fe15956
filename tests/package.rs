//! The Debian package (packaging/build-deb.sh) and the systemd unit
//! (packaging/tandem.service): the package's files, modes, owners, fields
//! and conffiles; an install, reinstall, remove and purge into a scratch root
//! (dpkg --root with --force-script-chrootless: the maintainer scripts must
//! use $DPKG_ROOT and never touch the host's users); and, with
//! TANDEM_TEST_SERVICE=1, the unit's ExecStart run as an unprivileged user
//! holding only CAP_NET_BIND_SERVICE, as systemd would.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

const REPO: &str = env!("CARGO_MANIFEST_DIR");

/// A directory under the system temp dir, removed on drop (kept, and
/// named, when the test failed).
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("tandem-{name}-{}", unique_tag()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        TempDir(d)
    }
    fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {}", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[track_caller]
fn run(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}):\n{}\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).mode() & 0o7777
}

/// Cargo's version as the package spells it (a pre-release's '-' is '~').
fn deb_version() -> String {
    env!("CARGO_PKG_VERSION").replace('-', "~")
}

/// NAME's line in a passwd or group file, split at ':'.
fn entry(file: &Path, name: &str) -> Option<Vec<String>> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines().map(|l| l.split(':').map(str::to_string).collect::<Vec<_>>()).find(|f| f[0] == name)
}

/// The regular files of the package and their modes.
fn expected_files() -> BTreeMap<String, &'static str> {
    let mut m: BTreeMap<String, &'static str> = [
        ("./usr/bin/tandem", "-rwxr-xr-x"),
        ("./lib/systemd/system/tandem.service", "-rw-r--r--"),
        ("./etc/tandem/tandem.toml", "-rw-r-----"),
        ("./usr/share/man/man8/tandem.8.gz", "-rw-r--r--"),
        ("./usr/share/bash-completion/completions/tandem", "-rw-r--r--"),
        ("./usr/share/zsh/vendor-completions/_tandem", "-rw-r--r--"),
        ("./usr/share/fish/vendor_completions.d/tandem.fish", "-rw-r--r--"),
        ("./usr/share/doc/tandem/copyright", "-rw-r--r--"),
    ]
    .into_iter()
    .map(|(p, m)| (p.to_string(), m))
    .collect();
    for e in std::fs::read_dir(Path::new(REPO).join("examples")).unwrap().flatten() {
        let n = e.file_name().into_string().unwrap();
        if n.ends_with(".toml") {
            m.insert(format!("./usr/share/doc/tandem/examples/{n}"), "-rw-r--r--");
        }
    }
    m
}

#[test]
fn the_package_has_its_files_and_fields_and_installs_into_a_scratch_root_without_touching_the_host() {
    if !is_root() {
        eprintln!("SKIPPED: installing the package into a scratch root needs root (file owners, dpkg --root)");
        return;
    }
    for t in ["dpkg-deb", "dpkg", "useradd", "groupadd", "gzip"] {
        if !tool(t) {
            eprintln!("SKIPPED: {t} is missing (apt-get install dpkg passwd gzip)");
            return;
        }
    }
    let tmp = TempDir::new("package");
    let out = tmp.join("out");
    // Uncompressed: xz takes a minute over the test build's binary.
    let printed = run(Command::new(Path::new(REPO).join("packaging/build-deb.sh"))
        .arg("--binary")
        .arg(BIN)
        .arg("--out")
        .arg(&out)
        .env("DEB_COMPRESS", "none"));
    let arch = run(Command::new("dpkg").arg("--print-architecture")).trim().to_string();
    let version = deb_version();
    let deb = out.join(format!("tandem_{version}_{arch}.deb"));
    assert_eq!(printed.trim(), deb.to_str().unwrap(), "the script prints the package's path");
    assert!(deb.is_file());

    // Contents: every path root/root, directories 0755, exactly these files.
    let listing = run(Command::new("dpkg-deb").arg("--contents").arg(&deb));
    let mut files = BTreeMap::new();
    for line in listing.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (perm, owner, path) = (f[0], f[1], *f.last().unwrap());
        assert_eq!(owner, "root/root", "{line}");
        match perm.as_bytes()[0] {
            b'd' => assert_eq!(perm, "drwxr-xr-x", "{line}"),
            b'-' => {
                files.insert(path.to_string(), perm.to_string());
            }
            _ => panic!("neither a file nor a directory: {line}"),
        }
    }
    let want: BTreeMap<String, String> = expected_files().into_iter().map(|(p, m)| (p, m.to_string())).collect();
    assert_eq!(files, want, "files and modes in the package");

    // Control fields.
    let field = |name: &str| run(Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name)).trim().to_string();
    assert_eq!(field("Package"), "tandem");
    assert_eq!(field("Version"), version);
    assert_eq!(field("Architecture"), arch);
    assert_eq!(field("Section"), "net");
    assert_eq!(field("Priority"), "optional");
    assert!(!field("Maintainer").is_empty());
    assert!(field("Installed-Size").parse::<u64>().unwrap() > 0);
    let depends = field("Depends");
    let deps: Vec<&str> = depends.split(',').map(|d| d.split_whitespace().next().unwrap()).collect();
    assert!(deps.contains(&"libc6") && deps.contains(&"passwd"), "Depends: {depends}");
    assert!(field("Description").starts_with("DHCPv6 server"), "{}", field("Description"));

    // Control files: the conffile, executable and parseable maintainer scripts.
    let ctrl = tmp.join("control");
    run(Command::new("dpkg-deb").arg("--control").arg(&deb).arg(&ctrl));
    assert_eq!(std::fs::read_to_string(ctrl.join("conffiles")).unwrap(), "/etc/tandem/tandem.toml\n");
    for s in ["postinst", "prerm", "postrm"] {
        assert_eq!(mode(&ctrl.join(s)), 0o755, "{s}");
        run(Command::new("sh").arg("-n").arg(ctrl.join(s)));
    }

    // Unpacked: the same binary, unit and config as the sources; a valid
    // gzip'd man page; completions for each shell; a config that checks.
    let x = tmp.join("unpacked");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x));
    let read = |p: &str| std::fs::read(x.join(p)).unwrap_or_else(|e| panic!("{p}: {e}"));
    assert!(read("usr/bin/tandem") == std::fs::read(BIN).unwrap(), "the packaged binary is the one given");
    assert_eq!(read("lib/systemd/system/tandem.service"), std::fs::read(Path::new(REPO).join("packaging/tandem.service")).unwrap());
    assert_eq!(read("etc/tandem/tandem.toml"), std::fs::read(Path::new(REPO).join("packaging/tandem.toml")).unwrap());
    let man = run(Command::new("gzip").arg("-dc").arg(x.join("usr/share/man/man8/tandem.8.gz")));
    assert!(man.lines().any(|l| l.starts_with(".TH ")), "roff with a .TH header:\n{}", &man[..man.len().min(300)]);
    assert!(man.contains("serve"), "the man page documents the commands");
    for (p, needle) in [
        ("usr/share/bash-completion/completions/tandem", "complete"),
        ("usr/share/zsh/vendor-completions/_tandem", "#compdef tandem"),
        ("usr/share/fish/vendor_completions.d/tandem.fish", "complete -c tandem"),
    ] {
        let text = String::from_utf8(read(p)).unwrap();
        assert!(text.contains(needle), "{p} lacks {needle:?}");
    }
    assert!(String::from_utf8(read("usr/share/doc/tandem/copyright")).unwrap().contains("Apache-2.0"));
    run(Command::new(BIN).arg("check-config").arg("--config").arg(x.join("etc/tandem/tandem.toml")));

    // Install into a scratch root: the maintainer scripts run on the host
    // with DPKG_ROOT set and must write users only under it.
    let root = tmp.join("root");
    for d in ["var/lib/dpkg/updates", "var/lib/dpkg/info", "etc"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    let host_ids = (std::fs::read("/etc/passwd").unwrap(), std::fs::read("/etc/group").unwrap());
    let dpkg = |args: &[&str]| {
        run(Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args(["--force-script-chrootless", "--log=/dev/null"])
            .args(args))
    };
    // Dependencies (libc6, passwd) are not in the scratch root's database.
    dpkg(&["--force-depends", "--install", deb.to_str().unwrap()]);
    assert!(dpkg(&["--status", "tandem"]).contains("Status: install ok installed"));
    let check_installed = || {
        for (p, m) in expected_files() {
            let installed = root.join(p.trim_start_matches("./"));
            let want = u32::from_str_radix(
                &m[1..].chars().map(|c| if c == '-' { '0' } else { '1' }).collect::<String>(),
                2,
            )
            .unwrap();
            assert_eq!(mode(&installed), want, "{p}");
            assert_eq!(std::fs::metadata(&installed).unwrap().uid(), 0, "{p}");
        }
        let user = entry(&root.join("etc/passwd"), "tandem").expect("user tandem in the scratch root's passwd");
        let group = entry(&root.join("etc/group"), "tandem").expect("group tandem in the scratch root's group");
        let (uid, gid): (u32, u32) = (user[2].parse().unwrap(), group[2].parse().unwrap());
        assert!(uid > 0 && uid < 1000, "a system uid: {user:?}");
        assert!(gid > 0 && gid < 1000, "a system gid: {group:?}");
        assert_eq!(user[3], gid.to_string(), "primary group tandem: {user:?}");
        assert_eq!(user[5], "/var/lib/tandem", "home: {user:?}");
        assert_eq!(user[6], "/usr/sbin/nologin", "no login shell: {user:?}");
        let data = std::fs::metadata(root.join("var/lib/tandem")).unwrap();
        assert_eq!(data.mode() & 0o7777, 0o700, "the data-dir is the service's alone");
        assert_eq!((data.uid(), data.gid()), (uid, gid), "the data-dir belongs to tandem");
        let conf = std::fs::metadata(root.join("etc/tandem/tandem.toml")).unwrap();
        assert_eq!((conf.uid(), conf.gid(), conf.mode() & 0o7777), (0, gid, 0o640), "root:tandem 0640");
        (uid, gid)
    };
    let ids = check_installed();
    assert!(
        (std::fs::read("/etc/passwd").unwrap(), std::fs::read("/etc/group").unwrap()) == host_ids,
        "the host's /etc/passwd and /etc/group must not change"
    );

    // Reinstall (an upgrade's path): same user, nothing duplicated.
    dpkg(&["--force-depends", "--install", deb.to_str().unwrap()]);
    assert_eq!(check_installed(), ids);
    let passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    assert_eq!(passwd.lines().filter(|l| l.starts_with("tandem:")).count(), 1);

    // Remove keeps the conffile and the store; purge drops the conffile and
    // still keeps the store (leases are precious).
    std::fs::write(root.join("var/lib/tandem/lease-store"), "precious").unwrap();
    dpkg(&["--remove", "tandem"]);
    assert!(!root.join("usr/bin/tandem").exists());
    assert!(!root.join("lib/systemd/system/tandem.service").exists());
    assert!(root.join("etc/tandem/tandem.toml").exists(), "remove keeps the conffile");
    dpkg(&["--purge", "tandem"]);
    assert!(!root.join("etc/tandem/tandem.toml").exists(), "purge removes the conffile");
    assert_eq!(std::fs::read_to_string(root.join("var/lib/tandem/lease-store")).unwrap(), "precious", "purge keeps the store");
    assert!(
        (std::fs::read("/etc/passwd").unwrap(), std::fs::read("/etc/group").unwrap()) == host_ids,
        "the host's /etc/passwd and /etc/group must not change"
    );
}

/// `Key=value` settings of the unit's [Service] section (the last one wins,
/// as for systemd's single-valued settings).
fn unit_settings() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(Path::new(REPO).join("packaging/tandem.service")).unwrap();
    let mut in_service = false;
    let mut m = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_service = line == "[Service]";
        } else if in_service && !line.is_empty() && !line.starts_with('#') {
            let (k, v) = line.split_once('=').unwrap_or_else(|| panic!("not key=value: {line}"));
            m.insert(k.to_string(), v.to_string());
        }
    }
    m
}

/// A throwaway system user for the service test, removed on drop.
struct TestUser {
    name: &'static str,
    uid: u32,
    gid: u32,
}

const TEST_USER_COMMENT: &str = "tandem package test (tests/package.rs)";

impl TestUser {
    fn create(name: &'static str) -> Option<TestUser> {
        if let Some(e) = entry(Path::new("/etc/passwd"), name) {
            if e[4] != TEST_USER_COMMENT {
                eprintln!("SKIPPED: a user {name} exists and is not this test's");
                return None;
            }
            // Left by an interrupted run: start again.
            let _ = sh(&format!("userdel {name}"));
        }
        must(&format!(
            "useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin --comment '{TEST_USER_COMMENT}' {name}"
        ));
        let u = entry(Path::new("/etc/passwd"), name).unwrap();
        Some(TestUser { name, uid: u[2].parse().unwrap(), gid: u[3].parse().unwrap() })
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = sh(&format!("userdel {0}; groupdel {0} 2>/dev/null", self.name));
    }
}

/// Capabilities as setpriv takes them: CAP_NET_BIND_SERVICE → net_bind_service.
fn setpriv_caps(unit: &str) -> String {
    unit.split_whitespace().map(|c| c.trim_start_matches("CAP_").to_lowercase()).map(|c| format!("+{c}")).collect::<Vec<_>>().join(",")
}

/// A size as systemd writes it (512M) in bytes.
fn bytes(v: &str) -> u64 {
    let (n, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    n.parse::<u64>().unwrap()
        * match unit {
            "" => 1,
            "K" => 1 << 10,
            "M" => 1 << 20,
            "G" => 1 << 30,
            u => panic!("size unit {u}"),
        }
}

/// Receive $NOTIFY_SOCKET datagrams (kept in `seen`) until one has the line
/// `want`, for up to 30 s.
#[track_caller]
fn wait_notify(sock: &UnixDatagram, seen: &mut Vec<String>, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = sock.recv(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            let found = m.lines().any(|l| l == want);
            seen.push(m);
            if found {
                return;
            }
        }
    }
    panic!("no {want} on $NOTIFY_SOCKET within 30 s; received: {seen:?}");
}

/// A command line of the unit with its installed paths moved into the test's
/// directory: every absolute path must be one the test knows.
fn localize(line: &str, map: &[(&str, &Path)]) -> Vec<String> {
    line.split_whitespace()
        .map(|w| {
            if !w.starts_with('/') {
                return w.to_string();
            }
            for (from, to) in map {
                if let Some(rest) = w.strip_prefix(from) {
                    return format!("{}{rest}", to.display());
                }
            }
            panic!("the unit names {w}, which this test does not know: add it to the map");
        })
        .collect()
}

#[test]
fn the_units_command_line_serves_as_an_unprivileged_user_with_only_net_bind_service() {
    if std::env::var_os("TANDEM_TEST_SERVICE").is_none() {
        eprintln!("SKIPPED: set TANDEM_TEST_SERVICE=1 to run the unit's ExecStart as a throwaway system user (needs root)");
        return;
    }
    if !is_root() {
        eprintln!("SKIPPED: this test creates a system user and drops to it: it needs root");
        return;
    }
    for t in ["setpriv", "useradd", "userdel"] {
        if !tool(t) {
            eprintln!("SKIPPED: {t} is missing (apt-get install util-linux passwd)");
            return;
        }
    }
    let unit = unit_settings();
    assert_eq!(unit["Type"], "notify");
    assert_eq!(unit["AmbientCapabilities"], "CAP_NET_BIND_SERVICE");
    assert_eq!(unit["CapabilityBoundingSet"], "CAP_NET_BIND_SERVICE");
    let Some(user) = TestUser::create("tandemtest") else { return };
    let tmp = TempDir::new("service");

    // What systemd would set up: StateDirectory (the data-dir) and
    // RuntimeDirectory owned by the service's user with the unit's modes, a
    // config root:GROUP 0640 (as the postinst leaves it), the binary where
    // the user can run it.
    let state = tmp.join("state");
    let runtime = tmp.join("run");
    for (dir, mode_key) in [(&state, "StateDirectoryMode"), (&runtime, "RuntimeDirectoryMode")] {
        std::fs::create_dir(dir).unwrap();
        std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid)).unwrap();
        let m = u32::from_str_radix(&unit[mode_key], 8).unwrap();
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(m)).unwrap();
    }
    assert_eq!(unit["StateDirectory"], "tandem");
    assert_eq!(unit["RuntimeDirectory"], "tandem");
    let etc = tmp.join("etc");
    std::fs::create_dir(&etc).unwrap();
    let config = etc.join("tandem.toml");
    std::fs::write(
        &config,
        format!(
            "data-dir = \"{}\"\ninterfaces = []\n[runtime]\nshards = 1\n[[subnet]]\nprefix = \"2001:db8:1::/64\"\nrelay-links = [\"2001:db8:1::1\"]\npools = [\"2001:db8:1::1000-2001:db8:1::ffff\"]\n",
            state.display()
        ),
    )
    .unwrap();
    std::os::unix::fs::chown(&config, Some(0), Some(user.gid)).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o640)).unwrap();
    let bin_dir = tmp.join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    std::fs::copy(BIN, bin_dir.join("tandem")).unwrap();
    std::fs::set_permissions(bin_dir.join("tandem"), std::fs::Permissions::from_mode(0o755)).unwrap();

    let map: [(&str, &Path); 3] =
        [("/usr/bin/tandem", &bin_dir.join("tandem")), ("/etc/tandem/tandem.toml", &config), ("/run/tandem", &runtime)];
    let start = localize(&unit["ExecStart"], &map);
    let reload = localize(&unit["ExecReload"], &map);
    let socket = PathBuf::from(&start[start.iter().position(|a| a == "--control-socket").expect("ExecStart names the control socket") + 1]);
    let umask = u32::from_str_radix(&unit["UMask"], 8).unwrap();
    let mut memlock = bytes(&unit["LimitMEMLOCK"]);
    // systemd raises the hard limit with CAP_SYS_RESOURCE; a container may
    // not give the test that capability: keep its hard limit then.
    let mut hard = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: a valid pointer.
    unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut hard) };
    let own = std::fs::read_to_string("/proc/self/status").unwrap();
    let cap_eff = own.lines().find_map(|l| l.strip_prefix("CapEff:")).map(|v| u64::from_str_radix(v.trim(), 16).unwrap()).unwrap();
    if cap_eff & (1 << 24) == 0 /* CAP_SYS_RESOURCE */ && hard.rlim_max != libc::RLIM_INFINITY && hard.rlim_max < memlock {
        eprintln!("note: no CAP_SYS_RESOURCE here: RLIMIT_MEMLOCK stays {} KiB, not LimitMEMLOCK's {} KiB", hard.rlim_max >> 10, memlock >> 10);
        memlock = hard.rlim_max;
    }
    let caps = setpriv_caps(&unit["AmbientCapabilities"]);
    let drop_to = |cmd: &mut Command, uid: u32, gid: u32, groups: Option<u32>| {
        cmd.arg(format!("--reuid={uid}")).arg(format!("--regid={gid}"));
        match groups {
            Some(g) => cmd.arg(format!("--groups={g}")),
            None => cmd.arg("--clear-groups"),
        };
    };

    // Type=notify: systemd's $NOTIFY_SOCKET, writable by the service.
    let notify_path = tmp.join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    std::fs::set_permissions(&notify_path, std::fs::Permissions::from_mode(0o666)).unwrap();
    notify.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut notified: Vec<String> = Vec::new();

    let mut serve = Command::new("setpriv");
    drop_to(&mut serve, user.uid, user.gid, None);
    serve
        .arg(format!("--inh-caps=-all,{caps}"))
        .arg(format!("--ambient-caps=-all,{caps}"))
        .arg(format!("--bounding-set=-all,{caps}"))
        .arg("--")
        .args(&start)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec only async-signal-safe calls: a private
    // network namespace (UDP 547 of the host stays free, and nothing the
    // host serves is touched), the unit's UMask and LimitMEMLOCK.
    unsafe {
        serve.pre_exec(move || {
            if libc::unshare(libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::umask(umask as libc::mode_t);
            let l = libc::rlimit { rlim_cur: memlock, rlim_max: memlock };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    struct Server(Child);
    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut server = Server(serve.spawn().expect("setpriv"));
    let (tx, rx) = mpsc::channel::<String>();
    let stderr = server.0.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
                if line.split_whitespace().any(|w| w == "ready") {
                    break;
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("no `ready` line within 60 s; log:\n{log}"),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                panic!("the server exited before `ready` ({:?}); log:\n{log}", server.0.wait())
            }
        }
    }

    wait_notify(&notify, &mut notified, "READY=1");

    // The server really runs as the user, with only the one capability.
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.0.id())).unwrap();
    let field = |k: &str| status.lines().find_map(|l| l.strip_prefix(k)).unwrap().split_whitespace().next().unwrap().to_string();
    assert_eq!(field("Uid:"), user.uid.to_string());
    let net_bind_service = format!("{:016x}", 1u64 << 10);
    assert_eq!(field("CapEff:"), net_bind_service, "{status}");
    assert_eq!(field("CapBnd:"), net_bind_service, "{status}");

    // The control socket: the service's group may connect, others not.
    let meta = std::fs::metadata(&socket).unwrap_or_else(|e| panic!("{}: {e}; log:\n{log}", socket.display()));
    assert_eq!(meta.uid(), user.uid);
    assert_eq!(meta.gid(), user.gid, "the socket's group is the service's");
    let m = meta.mode() & 0o777;
    assert_eq!(m, 0o660, "control socket mode: group read+write (connect), nothing for others");

    let ctl = |uid: u32, gid: u32, groups: Option<u32>, args: &[String]| {
        let mut c = Command::new("setpriv");
        drop_to(&mut c, uid, gid, groups);
        c.arg("--").args(args).output().unwrap()
    };
    let bin = bin_dir.join("tandem").display().to_string();
    let status_cmd = [bin.clone(), "ctl".into(), "--socket".into(), socket.display().to_string(), "status".into()];
    // As the service, and as an operator: another user in the service's group.
    for (who, uid, gid, groups) in [("the service user", user.uid, user.gid, None), ("an operator in its group", 65534, 65534, Some(user.gid))] {
        let o = ctl(uid, gid, groups, &status_cmd);
        assert!(o.status.success(), "ctl status as {who}: {}", String::from_utf8_lossy(&o.stderr));
        let st: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(st["shards"], 1, "{st}");
    }
    let o = ctl(65534, 65534, None, &status_cmd);
    assert!(!o.status.success(), "a user outside the group must not reach the control socket");
    // ExecReload, as systemd runs it (same user); judged after the stop below.
    let reloaded = ctl(user.uid, user.gid, None, &reload);
    if reloaded.status.success() {
        let from = notified.len();
        wait_notify(&notify, &mut notified, "READY=1");
        let during = &notified[from..];
        let reloading = during.iter().position(|m| m.lines().any(|l| l == "RELOADING=1"));
        assert!(reloading.is_some(), "RELOADING=1 before READY=1 around a reload: {during:?}");
        // systemd 253+ ignores a RELOADING=1 without the time it began.
        assert!(during[reloading.unwrap()].lines().any(|l| l.starts_with("MONOTONIC_USEC=")), "{during:?}");
    }

    // SIGTERM (the unit's KillSignal): a clean exit 0.
    assert_eq!(unit["KillSignal"], "SIGTERM");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(server.0.id() as i32, libc::SIGTERM) };
    let stop_by = Instant::now() + Duration::from_secs(bytes(unit["TimeoutStopSec"].trim_end_matches('s')));
    wait_notify(&notify, &mut notified, "STOPPING=1");
    let code = loop {
        if let Some(st) = server.0.try_wait().unwrap() {
            break st.code();
        }
        assert!(Instant::now() < stop_by, "not stopped within TimeoutStopSec");
        std::thread::sleep(Duration::from_millis(20));
    };
    reader.join().unwrap();
    for line in rx.try_iter() {
        log.push_str(&line);
        log.push('\n');
    }
    assert_eq!(code, Some(0), "log:\n{log}");
    let owners: BTreeSet<u32> = std::fs::read_dir(&state).unwrap().flatten().map(|e| e.metadata().unwrap().uid()).collect();
    assert_eq!(owners, BTreeSet::from([user.uid]), "the store was written by the service user only");
    assert!(
        reloaded.status.success(),
        "ExecReload {reload:?}: {}\n{}",
        String::from_utf8_lossy(&reloaded.stdout),
        String::from_utf8_lossy(&reloaded.stderr)
    );
}
