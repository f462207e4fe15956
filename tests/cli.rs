//! The command line as operators use it (no root needed).

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_tandem");

fn tmp(name: &str, text: &str) -> std::path::PathBuf {
    let p = std::env::temp_dir().join(format!("tandem-cli-{}-{name}", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn check_config_accepts_the_example() {
    let o = Command::new(BIN).args(["check-config", "--config", concat!(env!("CARGO_MANIFEST_DIR"), "/examples/tandem.toml")]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("ok"));
}

#[test]
fn check_config_prints_one_line_per_problem_naming_file_and_key() {
    let p = tmp("bad.toml", "[[subnet]]\nprefix = \"2001:db8::/64\"\npools = [\"x\"]\nvalid-lifetime = 0\n");
    let o = Command::new(BIN).arg("check-config").arg("--config").arg(&p).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert!(lines.len() >= 2, "{err}");
    for l in &lines {
        assert!(l.starts_with(&format!("{}: subnet[0].", p.display())), "{l}");
    }
    let p2 = tmp("unknown.toml", "bogus-key = 1\n");
    let o = Command::new(BIN).arg("check-config").arg("--config").arg(&p2).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("bogus-key"));
}

#[test]
fn check_config_warns_about_a_pool_of_reserved_interface_identifiers_and_exits_0() {
    // RFC 9915 §13.1 / RFC 5453: such a pool is accepted, and never used.
    let text = "[[subnet]]\nprefix = \"2001:db8::/64\"\npools = [\"2001:db8::fdff:ffff:ffff:ff80-2001:db8::fdff:ffff:ffff:ffff\", \"2001:db8::2-2001:db8::3\", \"2001:db8::-2001:db8::\"]\n";
    let p = tmp("reserved.toml", text);
    let o = Command::new(BIN).arg("check-config").arg("--config").arg(&p).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "{err}");
    for l in &lines {
        assert!(l.starts_with(&format!("{}: subnet[0].pools: warning: ", p.display())), "{l}");
    }
    assert!(lines[0].contains("fdff:ffff:ffff:ff80") && lines[1].contains("2001:db8::-2001:db8::"), "{err}");
}

#[test]
fn serve_refuses_the_same_errors_and_a_failover_config_it_cannot_run() {
    let p = tmp("serve-bad.toml", "[[subnet]]\nprefix = \"2001:db8::/64\"\n");
    let o = Command::new(BIN).arg("serve").arg("--config").arg(&p).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("subnet[0].pools"));
}

#[test]
fn help_documents_every_interface_flag() {
    let o = Command::new(BIN).args(["serve", "--help"]).output().unwrap();
    let h = String::from_utf8_lossy(&o.stdout);
    for f in [
        "--shards", "--cpus", "--failover-cpu", "--data-dir", "--log-level", "--log-format", "--metrics-listen",
        "--control-socket", "--ready-file",
    ] {
        assert!(h.contains(f), "serve --help lacks {f}");
    }
    let o = Command::new(BIN).arg("--help").output().unwrap();
    let h = String::from_utf8_lossy(&o.stdout);
    for c in ["serve", "check-config", "leases", "ctl", "demo", "gen-tls"] {
        assert!(h.contains(c), "--help lacks {c}");
    }
}

#[test]
fn leases_on_a_missing_store_is_a_clear_error() {
    let o = Command::new(BIN).args(["leases", "--data-dir", "/nonexistent/tandem"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no tandem store"));
}

#[test]
fn check_config_accepts_the_pair_examples_and_checks_their_certificates() {
    let dir = std::env::temp_dir().join(format!("tandem-cli-{}-tls", std::process::id()));
    let o = Command::new(BIN)
        .args(["gen-tls", "--out"])
        .arg(&dir)
        .args(["--name", "tandem-a.example.net", "--name", "tandem-b.example.net"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for role in ["primary", "secondary"] {
        let text = std::fs::read_to_string(format!("{}/examples/{role}.toml", env!("CARGO_MANIFEST_DIR"))).unwrap();
        let p = tmp(&format!("{role}.toml"), &text.replace("/etc/tandem/tls", dir.to_str().unwrap()));
        let o = Command::new(BIN).arg("check-config").arg("--config").arg(&p).output().unwrap();
        assert!(o.status.success(), "{role}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains(role), "{}", String::from_utf8_lossy(&o.stdout));
        // The example as shipped points at certificates this machine lacks: a clear error.
        let p = tmp(&format!("{role}-nocert.toml"), &text.replace("/etc/tandem/tls", "/nonexistent/tls"));
        let o = Command::new(BIN).arg("check-config").arg("--config").arg(&p).output().unwrap();
        assert_eq!(o.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&o.stderr).contains("failover.tls.cert"), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_config_accepts_the_hub_example_and_names_its_relationships() {
    let dir = std::env::temp_dir().join(format!("tandem-cli-{}-hub-tls", std::process::id()));
    let o = Command::new(BIN)
        .args(["gen-tls", "--out"])
        .arg(&dir)
        .args(["--name", "hub.example.net", "--name", "site-a.example.net", "--name", "site-b.example.net"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(format!("{}/examples/hub.toml", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let p = tmp("hub.toml", &text.replace("/etc/tandem/tls", dir.to_str().unwrap()));
    let o = Command::new(BIN).arg("check-config").arg("--config").arg(&p).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("\"site-a\" as Secondary") && out.contains("\"site-b\" as Secondary") && out.contains("1 subnet standalone"), "{out}");
    // The same partner for both: its TLS settings must be the same (one
    // handshake before the relationship is known), and then a warning
    // (RFC 8156 §6.2), still exit 0.
    let same = text.replace("/etc/tandem/tls", dir.to_str().unwrap()).replace("2001:db8:ffff:2::1", "2001:db8:ffff:1::1");
    let o = Command::new(BIN).arg("check-config").arg("--config").arg(tmp("hub-same-tls.toml", &same)).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("failover[1].tls: differs from relationship \"site-a\""), "{}", String::from_utf8_lossy(&o.stderr));
    let same = same.replace("peer-name = \"site-b.example.net\"", "peer-name = \"site-a.example.net\"");
    let o = Command::new(BIN).arg("check-config").arg("--config").arg(tmp("hub-same.toml", &same)).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("failover[1].peer: warning:"), "{}", String::from_utf8_lossy(&o.stderr));
    // Missing certificates name the relationship.
    let p = tmp("hub-nocert.toml", &text.replace("/etc/tandem/tls", "/nonexistent/tls"));
    let o = Command::new(BIN).arg("check-config").arg("--config").arg(&p).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("failover[0].tls.cert"), "{}", String::from_utf8_lossy(&o.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn check_config_reports_bad_options_unknown_classes_and_overlapping_reservations() {
    let text = r#"[[class]]
name = "cpe"
match = { remote-id = "port7" }
[[subnet]]
prefix = "2001:db8::/64"
pools = ["2001:db8::1000-2001:db8::1fff", { range = "2001:db8::2000-2001:db8::2fff", client-classes = ["nosuch"] }]
options = [{ name = "sip-server-addresses", value = ["nope"] }]
reservations = [
  { duid = "000300010200000000aa", address = "2001:db8::77" },
  { duid = "000300010200000000bb", address = "2001:db8::77" },
]
"#;
    let p = tmp("provisioning-bad.toml", text);
    let o = Command::new(BIN).arg("check-config").arg("--config").arg(&p).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    for key in ["subnet[0].options[0].value", "subnet[0].pools[1].client-classes", "overlapping reservations"] {
        assert!(err.lines().any(|l| l.starts_with(&format!("{}: ", p.display())) && l.contains(key)), "no line names {key}:\n{err}");
    }
    assert!(err.contains("\"nope\"") && err.contains("\"nosuch\""), "{err}");
}

#[test]
fn check_config_accepts_the_kea_migration_examples() {
    let mut missing = Vec::new();
    for name in ["kea-a-cable.toml", "kea-b-enterprise.toml", "kea-c-shared-network.toml"] {
        let path = format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"));
        if !std::path::Path::new(&path).exists() {
            missing.push(name);
            continue;
        }
        let o = Command::new(BIN).args(["check-config", "--config", &path]).output().unwrap();
        assert!(o.status.success(), "{name}: {}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains("ok"), "{name}: {}", String::from_utf8_lossy(&o.stdout));
    }
    assert!(missing.is_empty(), "examples missing: {missing:?}");
}
