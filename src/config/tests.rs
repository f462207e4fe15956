use super::*;

const EXAMPLE: &str = include_str!("../../examples/tandem.toml");

fn problems(text: &str) -> Vec<String> {
    Config::parse(text).unwrap_err().into_iter().map(|p| format!("{}: {}", p.key, p.reason)).collect()
}

#[test]
fn the_example_config_is_valid() {
    let c = Config::parse(EXAMPLE).unwrap();
    assert_eq!(c.subnets.len(), 1);
    let s = &c.subnets[0];
    assert_eq!(s.pools[0].size(), 0xf000);
    assert_eq!(s.pd_pools[0].delegated_length, 56);
    assert_eq!((s.renew_time, s.rebind_time), (1000, 2000));
    assert_eq!(s.domain_search[0].to_string(), "example.net.");
    assert!(c.failover.is_empty());
}

#[test]
fn the_interface_contract_example_parses_with_failover_and_ddns() {
    let text = r#"
data-dir = "/tmp/x"
interfaces = ["eth1"]
unicast-listen = ["2001:db8:ffff::1"]
server-duid = "000100012a2b3c4d001122334455"
[runtime]
shards = 2
cpus = "0-1"
failover-cpu = 2
[[subnet]]
prefix = "2001:db8:1::/64"
interface = "eth1"
relay-links = ["2001:db8:9::1"]
server-unicast = "2001:db8:1::1"
pools = ["2001:db8:1::1000-2001:db8:1::ffff"]
pd-pools = [{ prefix = "2001:db8:100::/40", delegated-length = 56 }]
rapid-commit = true
[failover]
name = "pair-1"
role = "primary"
listen = "[2001:db8:ffff::1]:647"
peer = "[2001:db8:ffff::2]:647"
mclt = 3600
max-unacked-bndupd = 64
keepalive-time = 60
auto-partner-down = 0
pd-secondary-share = 0.5
[failover.tls]
cert = "/etc/tandem/tls/me.pem"
key = "/etc/tandem/tls/me.key"
ca = "/etc/tandem/tls/ca.pem"
peer-name = "tandem-b.example.net"
[ddns]
server = "[::1]:53"
forward-zone = "example.net."
reverse-zone = "1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa."
tsig-name = "tandem-key."
tsig-algorithm = "hmac-sha256"
tsig-secret = "c2VjcmV0"
fqdn-policy = "client"
synthesize-pattern = "dhcp-{addr}"
"#;
    let c = Config::parse(text).unwrap();
    assert_eq!(c.runtime.cpus, Some(vec![0, 1]));
    let f = c.failover.into_iter().next().unwrap();
    assert_eq!(f.role, Role::Primary);
    assert!(matches!(f.tls, Tls::Mutual { peer_name: Some(_), .. }));
    let d = c.ddns.unwrap();
    assert_eq!(d.tsig.unwrap().secret, b"secret");
    assert_eq!(d.qualifying_suffix.to_string(), "example.net.");
    // Defaults: T1 = 0.5 x preferred, T2 = 0.8 x preferred.
    assert_eq!((c.subnets[0].renew_time, c.subnets[0].rebind_time), (1500, 2400));
}

#[test]
fn unknown_keys_are_rejected_with_their_name() {
    let p = problems(&EXAMPLE.replace("rapid-commit = true", "rapid-comit = true"));
    assert_eq!(p.len(), 1);
    assert!(p[0].contains("rapid-comit"), "{p:?}");
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let text = r#"
interfaces = ["eth1"]
[[subnet]]
prefix = "2001:db8:1::/64"
interface = "eth2"
pools = ["2001:db8:2::1-2001:db8:2::9", "nonsense"]
preferred-lifetime = 5000
valid-lifetime = 4000
[failover]
name = "x"
role = "tertiary"
peer = "nowhere"
"#;
    let p = problems(text);
    let keys: Vec<&str> = p.iter().map(|s| s.split(':').next().unwrap()).collect();
    for k in [
        "subnet[0].interface",
        "subnet[0].pools",
        "subnet[0].preferred-lifetime",
        "failover.role",
        "failover.peer",
        "failover.tls",
    ] {
        assert!(keys.contains(&k), "missing {k} in {p:#?}");
    }
}

#[test]
fn failover_without_tls_needs_explicit_insecure() {
    let base = "interfaces=[]\n[[subnet]]\nprefix=\"2001:db8::/64\"\npools=[\"2001:db8::/120\"]\n[failover]\nname=\"p\"\nrole=\"secondary\"\nlisten=\"[::1]:647\"\npeer=\"[::1]:648\"\n";
    assert!(problems(base).iter().any(|p| p.starts_with("failover.tls")));
    let ok = Config::parse(&format!("{base}[failover.tls]\ninsecure = true\n")).unwrap();
    assert_eq!(ok.failover[0].tls, Tls::Insecure);
}

#[test]
fn overlapping_pools_are_rejected() {
    let text = "[[subnet]]\nprefix=\"2001:db8::/64\"\npools=[\"2001:db8::/120\", \"2001:db8::80-2001:db8::1ff\"]\n";
    assert!(problems(text).iter().any(|p| p.contains("overlaps")));
}

#[test]
fn cpu_lists() {
    assert_eq!(parse_cpu_list("0-3").unwrap(), vec![0, 1, 2, 3]);
    assert_eq!(parse_cpu_list("0,2").unwrap(), vec![0, 2]);
    assert!(parse_cpu_list("3-1").is_err());
    assert!(parse_cpu_list("x").is_err());
}

#[test]
fn the_bndupd_window_defaults_to_1024_and_is_bounded() {
    let base = "interfaces=[]\n[[subnet]]\nprefix=\"2001:db8::/64\"\npools=[\"2001:db8::/120\"]\n[failover]\nname=\"p\"\nrole=\"secondary\"\nlisten=\"[::1]:647\"\npeer=\"[::1]:648\"\n[failover.tls]\ninsecure = true\n";
    assert_eq!(Config::parse(base).unwrap().failover[0].max_unacked_bndupd, 1024);
    for bad in [0, 65_537] {
        let text = base.replace("[failover.tls]", &format!("max-unacked-bndupd = {bad}\n[failover.tls]"));
        assert!(problems(&text).iter().any(|p| p.starts_with("failover.max-unacked-bndupd")), "{bad} accepted");
    }
    let text = base.replace("[failover.tls]", "max-unacked-bndupd = 65536\n[failover.tls]");
    assert_eq!(Config::parse(&text).unwrap().failover[0].max_unacked_bndupd, 65_536);
}

#[test]
fn limits_default_to_values_a_normal_client_never_reaches_and_zero_turns_one_off() {
    let base = "[[subnet]]\nprefix = \"2001:db8::/64\"\npools = [\"2001:db8::10-2001:db8::ff\"]\n";
    let c = Config::parse(base).unwrap();
    assert_eq!(c.limits, crate::server::limits::Limits { leases_per_client: 16, declines_per_client_per_hour: 8 });
    let c = Config::parse(&format!("{base}[limits]\nleases-per-client = 4\ndeclines-per-client-per-hour = 0\n")).unwrap();
    assert_eq!(c.limits, crate::server::limits::Limits { leases_per_client: 4, declines_per_client_per_hour: 0 });
    assert!(problems(&format!("{base}[limits]\nleases = 4\n"))[0].contains("leases"));
}

const BASE: &str = "interfaces = [\"eth1\"]\n[[subnet]]\nprefix = \"2001:db8:1::/64\"\npools = [\"2001:db8:1::1000-2001:db8:1::1fff\"]\npd-pools = [{ prefix = \"2001:db8:100::/48\", delegated-length = 56 }]\n";

fn has(problems: &[String], key: &str, why: &str) -> bool {
    problems.iter().any(|p| p.starts_with(&format!("{key}: ")) && p.contains(why))
}

#[test]
fn the_interface_contract_example_of_options_classes_and_reservations_parses() {
    let text = r#"
interfaces = ["eth1"]
options = [ { name = "sip-server-addresses", value = ["2001:db8::5"] },
            { name = "bootfile-url", value = "http://[2001:db8::1]/boot.efi" },
            { code = 65000, type = "string", value = "hello", always-send = true },
            { name = "vendor-opts", enterprise = 4491, sub = [ { code = 1, type = "string", value = "x" } ] } ]
[runtime]
shards = 1
[[class]]
name = "cpe"
match = { vendor-class = { enterprise = 3561 } }
options = [ { name = "dns-servers", value = ["2001:db8::53"] } ]
[[subnet]]
prefix = "2001:db8:1::/64"
pools = ["2001:db8:1::1000-2001:db8:1::1fff", { range = "2001:db8:1::2000-2001:db8:1::2fff", client-classes = ["cpe"] }]
reservations = [ { duid = "00030001020000000005", address = "2001:db8:1::5", hostname = "printer", options = [ { name = "bootfile-url", value = "x" } ] },
                 { hw-address = "02:00:5e:00:00:10", prefix = "2001:db8:200::/56" } ]
pd-pools = [{ prefix = "2001:db8:100::/40", delegated-length = 56, client-classes = ["cpe"] }]
shared-network = "lan-a"
"#;
    let c = Config::parse(text).unwrap_or_else(|p| panic!("{p:?}"));
    assert_eq!(c.provisioning.options.len(), 4);
    assert_eq!(c.provisioning.classes[0].name, "cpe");
    let s = &c.subnets[0];
    assert_eq!(s.pool_scopes[1].client_classes, vec!["cpe".to_string()]);
    assert_eq!(s.pd_pool_scopes[0].client_classes, vec!["cpe".to_string()]);
    assert_eq!(s.reservations.len(), 2);
    assert_eq!(s.reservations[0].hostname.as_ref().unwrap().to_string(), "printer");
    assert_eq!(s.reservations[1].client, ReservedFor::HwAddress(vec![2, 0, 0x5e, 0, 0, 0x10]));
    assert_eq!(s.shared_network.as_deref(), Some("lan-a"));
}

#[test]
fn bad_options_classes_and_reservations_are_reported_by_key() {
    let p = problems(&BASE.replace(
        "pd-pools",
        "options = [{ name = \"dns-servers\", value = [\"2001:db8::53\"] }, { code = 65000, type = \"u16\", value = -1 }]\ndns-servers = [\"2001:db8::1\"]\npd-pools",
    ));
    assert!(has(&p, "subnet[0].options", "also set by the subnet's `dns-servers` key"), "{p:?}");
    assert!(has(&p, "subnet[0].options[1].value", "0 to 65535"), "{p:?}");
    let p = problems(&BASE.replace("pools = [\"2001:db8:1::1000-2001:db8:1::1fff\"]", "pools = [{ range = \"2001:db8:1::1000-2001:db8:1::1fff\", client-classes = [\"nope\"] }]"));
    assert!(has(&p, "subnet[0].pools[0].client-classes", "unknown class \"nope\""), "{p:?}");
    let two = format!("{BASE}[[subnet]]\nprefix = \"2001:db8:2::/64\"\nreservations = [{{ duid = \"000a0b01\", address = \"2001:db8:2::5\" }}, {{ duid = \"000a0c01\", addresses = [\"2001:db8:2::5\"] }}]\n");
    assert!(has(&problems(&two), "subnet[1].reservations[1]", "overlapping reservations"), "{:?}", problems(&two));
    let bad = format!("{BASE}reservations = [{{ duid = \"000a0b01\", hw-address = \"02:00:00:00:00:01\", address = \"2001:db8:1::5\" }}, {{ duid = \"000a0c01\", prefix = \"2001:db8:100::/60\" }}, {{ duid = \"000a0d01\" }}, {{ hw-address = \"02:00:00:00:00:02\", address = \"2001:db8:1::6\" }}, {{ duid = \"000a0e01\", address = \"2001:db8:9::1\" }}]\n");
    let p = problems(&bad);
    assert!(has(&p, "subnet[0].reservations[0]", "duid or by hw-address"), "{p:?}");
    assert!(has(&p, "subnet[0].reservations[1].prefix", "not one of its /56 delegations"), "{p:?}");
    assert!(has(&p, "subnet[0].reservations[2]", "needs an address"), "{p:?}");
    assert!(!has(&p, "subnet[0].reservations[1]", "needs an address"), "{p:?}: the prefix is wrong, not missing");
    assert!(has(&p, "subnet[0].reservations[3].hw-address", "runtime.shards = 1"), "{p:?}");
    assert!(!has(&p, "subnet[0].reservations[4]", "needs an address"), "{p:?}: the address is wrong, not missing");
    assert!(has(&p, "subnet[0].reservations[4].address", "not inside"), "{p:?}");
    let classes = BASE.replacen("[[subnet]]", "[[class]]\nname = \"a\"\nmatch = {}\n[[class]]\nname = \"a\"\nmatch = { interface = \"eth9\", duid-type = \"weird\", hw-address = \"zz\" }\n[[subnet]]", 1);
    let p = problems(&classes);
    assert!(has(&p, "class[0].match", "at least one match key"), "{p:?}");
    assert!(has(&p, "class[1].name", "defined twice"), "{p:?}");
    assert!(has(&p, "class[1].match.interface", "not listed"), "{p:?}");
    assert!(has(&p, "class[1].match.duid-type", "one of"), "{p:?}");
    assert!(has(&p, "class[1].match.hw-address", "link-layer address"), "{p:?}");
    let net = "interfaces = [\"eth1\", \"eth2\"]\n[[subnet]]\nprefix = \"2001:db8:1::/64\"\ninterface = \"eth1\"\nshared-network = \"n\"\npools = [\"2001:db8:1::1000-2001:db8:1::1fff\"]\n[[subnet]]\nprefix = \"2001:db8:2::/64\"\ninterface = \"eth2\"\nshared-network = \"n\"\npools = [\"2001:db8:2::1000-2001:db8:2::1fff\"]\n";
    assert!(has(&problems(net), "subnet[1].interface", "is one link"), "{:?}", problems(net));
}

#[test]
fn leasequery_section_defaults_allow_list_and_refusals() {
    const S: &str = "[[subnet]]\nprefix = \"2001:db8:1::/64\"\npools = [\"2001:db8:1::100-2001:db8:1::1ff\"]\n";
    assert_eq!(Config::parse(S).unwrap().leasequery, None, "absent: no leasequery");
    let c = Config::parse(&format!("{S}[leasequery]\nallowed = [\"2001:db8:ffff::/64\", \"::1\"]\n")).unwrap();
    let l = c.leasequery.unwrap();
    assert!(l.bulk && l.bulk_max_connections == 10 && l.bulk_data_timeout == 300 && l.sensitive_options.is_empty());
    assert!(l.allows("2001:db8:ffff::9".parse().unwrap()) && l.allows("::1".parse().unwrap()));
    assert!(!l.allows("2001:db8:fffe::9".parse().unwrap()) && !l.allows("::2".parse().unwrap()));
    let c = Config::parse(&format!("{S}[leasequery]\nbulk = false\nsensitive-options = [47, 39]\n")).unwrap();
    let l = c.leasequery.unwrap();
    assert!(!l.bulk && l.allowed.is_empty() && l.sensitive_options == [47, 39]);
    let p = problems(&format!(
        "{S}[leasequery]\nallowed = [\"fe80::1\", \"nope\", \"2001:db8::/129\"]\nbulk-max-connections = 0\nbulk-data-timeout = 0\nsensitive-options = [1]\n"
    ));
    for want in [
        "leasequery.allowed[0]: \"fe80::1\" is link-local",
        "leasequery.allowed[1]: \"nope\" is not an IPv6 address",
        "leasequery.allowed[2]",
        "leasequery.bulk-max-connections: must be at least 1",
        "leasequery.bulk-data-timeout: must be at least 1 s",
        "leasequery.sensitive-options: option 1 is part of every answer",
    ] {
        assert!(p.iter().any(|x| x.starts_with(want)), "{want} not in {p:#?}");
    }
    assert!(problems(&format!("{S}[leasequery]\nallow = []\n"))[0].contains("unknown field"));
    // A reload applies it live.
    let a = Config::parse(S).unwrap();
    let b = Config::parse(&format!("{S}[leasequery]\n")).unwrap();
    assert_eq!(reload::changes(&a, &b).unwrap(), vec!["leasequery".to_string()]);
}

/// A hub: secondary of two relationships on one listen address, a third
/// subnet standalone.
const HUB: &str = r#"interfaces = ["eth1", "eth2", "eth3"]
[[subnet]]
prefix = "2001:db8:1::/64"
interface = "eth1"
pools = ["2001:db8:1::1000-2001:db8:1::1fff"]
pd-pools = [{ prefix = "2001:db8:100::/48", delegated-length = 56 }]
[[subnet]]
prefix = "2001:db8:2::/64"
interface = "eth2"
pools = ["2001:db8:2::1000-2001:db8:2::1fff"]
[[subnet]]
prefix = "2001:db8:3::/64"
interface = "eth3"
pools = ["2001:db8:3::1000-2001:db8:3::1fff"]
[[failover]]
name = "site-a"
role = "secondary"
listen = "[::]:647"
peer = "[2001:db8:ffff:1::1]:647"
subnets = ["2001:db8:1::/64"]
[failover.tls]
insecure = true
[[failover]]
name = "site-b"
role = "secondary"
listen = "[::]:647"
peer = "[2001:db8:ffff:2::1]:647"
mclt = 600
subnets = ["2001:db8:2::/64"]
[failover.tls]
insecure = true
"#;

#[test]
fn several_relationships_each_cover_their_subnets_and_the_rest_is_standalone() {
    let c = Config::parse(HUB).unwrap();
    assert_eq!(c.failover.len(), 2);
    assert_eq!((c.failover[0].name.as_str(), c.failover[1].name.as_str()), ("site-a", "site-b"));
    assert_eq!(c.failover[1].mclt, 600);
    assert_eq!(c.failover[0].tls, Tls::Insecure, "[failover.tls] belongs to the [[failover]] above it");
    assert_eq!(c.subnets.iter().map(|s| s.relationship).collect::<Vec<_>>(), vec![Some(0), Some(1), None]);
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
    // The single form covers every subnet, as before.
    let one = Config::parse(&format!("{BASE}[failover]\nname = \"p\"\nrole = \"primary\"\npeer = \"[::1]:647\"\n[failover.tls]\ninsecure = true\n")).unwrap();
    assert_eq!(one.failover.len(), 1);
    assert!(one.subnets.iter().all(|s| s.relationship == Some(0)));
    assert_eq!(one.failover[0].subnets, None);
}

#[test]
fn relationships_are_checked_against_each_other() {
    // Several need their subnets; a subnet in two; unknown prefixes; names.
    let p = problems(&HUB.replace("subnets = [\"2001:db8:2::/64\"]\n", ""));
    assert!(has(&p, "failover[1].subnets", "required with several"), "{p:?}");
    let p = problems(&HUB.replace("subnets = [\"2001:db8:2::/64\"]", "subnets = [\"2001:db8:1::/64\"]"));
    assert!(has(&p, "failover[1].subnets", "belongs to relationship \"site-a\""), "{p:?}");
    let p = problems(&HUB.replace("subnets = [\"2001:db8:2::/64\"]", "subnets = [\"2001:db8:9::/64\"]"));
    assert!(has(&p, "failover[1].subnets", "is not the prefix of a [[subnet]]"), "{p:?}");
    let p = problems(&HUB.replace("name = \"site-b\"", "name = \"site-a\""));
    assert!(has(&p, "failover[1].name", "must be unique"), "{p:?}");
    let p = problems(&HUB.replace("subnets = [\"2001:db8:2::/64\"]", "subnets = []"));
    assert!(has(&p, "failover[1].subnets", "names no subnet"), "{p:?}");
    // Errors inside one element name it.
    let p = problems(&HUB.replace("mclt = 600", "mclt = 1"));
    assert!(has(&p, "failover[1].mclt", "below"), "{p:?}");
    // One partner, one set of TLS settings; and a warning (RFC 8156 §6.2).
    let same_peer = HUB.replace("[2001:db8:ffff:2::1]:647", "[2001:db8:ffff:1::1]:647");
    let c = Config::parse(&same_peer).unwrap();
    assert!(c.warnings().iter().any(|w| w.key == "failover[1].peer" && w.reason.contains("SHOULD have one relationship")), "{:?}", c.warnings());
    let tls = "[failover.tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\nca = \"/ca.pem\"\n";
    let i = same_peer.rfind("[failover.tls]\ninsecure = true\n").unwrap();
    let differing = format!("{}{tls}", &same_peer[..i]);
    let p = problems(&differing);
    assert!(has(&p, "failover[1].tls", "one partner, one set of TLS settings"), "{p:?}");
}

#[test]
fn a_shared_network_stays_in_one_relationship() {
    let text = HUB.replace("interface = \"eth2\"", "interface = \"eth1\"\nshared-network = \"n\"").replace(
        "interface = \"eth1\"\npools = [\"2001:db8:1::1000",
        "interface = \"eth1\"\nshared-network = \"n\"\npools = [\"2001:db8:1::1000",
    );
    let p = problems(&text);
    assert!(has(&p, "subnet[1].shared-network", "must be in one failover relationship"), "{p:?}");
}

#[test]
fn a_reservation_in_another_relationships_pool_and_clashing_listeners_are_refused() {
    let text = HUB.replace(
        "interface = \"eth2\"\n",
        "interface = \"eth2\"\nreservations = [{ duid = \"000300010200000000aa\", prefix = \"2001:db8:100:4200::/56\" }]\n",
    );
    let p = problems(&text);
    assert!(has(&p, "subnet[1].reservations", "in another failover relationship"), "{p:?}");
    let p = problems(&HUB.replacen("listen = \"[::]:647\"", "listen = \"[2001:db8:ffff::10]:647\"", 1));
    assert!(has(&p, "failover[1].listen", "cannot both be bound"), "{p:?}");
}
