//! `tandem demo` (the README's first command) runs to completion, shows
//! real clients getting addresses and prefixes from a failover pair, the
//! secondary taking over, the primary recovering, and leaves nothing behind.

mod common;

use std::process::Command;

#[test]
fn demo_runs_to_completion_and_cleans_up() {
    require_root!();
    let before = common::must("ip netns list");
    let o = Command::new(common::BIN).arg("demo").output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "demo failed:\n{out}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("the primary's lease table"), "{out}");
    assert!(out.contains("the secondary's lease table"), "{out}");
    assert!(out.contains("secondary PARTNER-DOWN"), "the secondary took over:\n{out}");
    assert!(out.contains("identical on both servers"), "{out}");
    assert!(out.contains("-> RECOVER"), "the restarted primary recovered:\n{out}");
    let rows = out.lines().filter(|l| l.contains("ACTIVE")).count();
    assert!(rows >= 4, "expected 2 addresses and 2 prefixes:\n{out}");
    assert!(out.contains("adding address 2001:db8:1::"), "dhcpcd configured an address:\n{out}");
    assert!(out.contains("IAPREFIX 2001:db8:"), "dhclient -P got a prefix:\n{out}");
    assert!(out.contains("cleaned up"), "{out}");
    let after = common::must("ip netns list");
    assert!(!after.lines().any(|l| l.starts_with("tdemo-")), "demo namespaces left behind:\n{after}");
    assert_eq!(before.lines().filter(|l| l.starts_with("tdemo-")).count(), 0);
}
