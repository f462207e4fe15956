//! End to end: what a server hands out beyond addresses (README "Options",
//! "Client classes", "Reservations", "Shared networks"): configured options
//! as real clients (dhclient -6, dhcpcd) see them, reserved addresses and
//! host names, class-restricted pools behind a relay, a shared network that
//! spills into its second subnet, and a reload that brings new options and
//! classes. The real binary in network namespaces; needs root.

mod common;

use std::net::{Ipv6Addr, SocketAddrV6};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use tandem::wire::*;

/// An option's body (without its code and length), when `opts` holds it.
fn body(opts: &Options, code: u16) -> Option<Vec<u8>> {
    opts.iter().find(|o| o.code() == code).map(|o| {
        let mut v = Vec::new();
        o.encode(&mut v).unwrap();
        v[4..].to_vec()
    })
}

fn codes(opts: &Options) -> Vec<u16> {
    opts.iter().map(|o| o.code()).collect()
}

fn addrs_body(list: &[&str]) -> Vec<u8> {
    list.iter().flat_map(|a| a.parse::<Ipv6Addr>().unwrap().octets()).collect()
}

fn in_range(a: Ipv6Addr, first: &str, last: &str) -> bool {
    a >= first.parse::<Ipv6Addr>().unwrap() && a <= last.parse::<Ipv6Addr>().unwrap()
}

/// A client message from client `n` (the common DUID-EN) with an ORO.
fn client_msg(kind: MessageType, n: u64, xid: u32, oro: &[u16], ia_na: bool, rapid: bool) -> Message {
    let mut o = vec![DhcpOption::ClientId(duid(n)), DhcpOption::ElapsedTime(0)];
    if !oro.is_empty() {
        o.push(DhcpOption::Oro(oro.to_vec()));
    }
    if ia_na {
        o.push(DhcpOption::IaNa(IaNa { iaid: 1, t1: 0, t2: 0, options: Options::new() }));
    }
    if rapid {
        o.push(DhcpOption::RapidCommit);
    }
    Message::Client(ClientMessage { msg_type: kind, transaction_id: xid & 0xff_ffff, options: o.into() })
}

/// Send `m` from the client namespace to ff02::1:2 on the lab link (from
/// port 546) and return the first answer to its transaction.
fn direct(lab: &Lab, m: Message) -> Option<ClientMessage> {
    let ifindex = lab.cli_ifindex();
    in_netns(&lab.cli, move || {
        let Message::Client(c) = &m else { unreachable!() };
        let xid = c.transaction_id;
        let s = client_socket(546);
        let bytes = m.encode().unwrap();
        let mut buf = [0u8; 2048];
        for _ in 0..10 {
            s.send_to(&bytes, all_servers(ifindex)).unwrap();
            let until = Instant::now() + Duration::from_millis(500);
            while Instant::now() < until {
                let Ok((n, _)) = s.recv_from(&mut buf) else { continue };
                if let Ok(Message::Client(r)) = Message::decode(&buf[..n])
                    && r.transaction_id == xid
                {
                    return Some(r);
                }
            }
        }
        None
    })
}

/// Relay `inner` as a relay agent on link 2001:db8:2::1 (sending from the
/// client namespace, 2001:db8:1::99, to the server's global address), with
/// a Remote-ID option (RFC 4649) when given; the inner answer.
fn relayed(lab: &Lab, inner: Message, remote_id: Option<(u32, &[u8])>) -> Option<ClientMessage> {
    let mut options: Vec<DhcpOption> = vec![DhcpOption::InterfaceId(b"ge-0/0/1".to_vec())];
    if let Some((enterprise, id)) = remote_id {
        let mut data = enterprise.to_be_bytes().to_vec();
        data.extend_from_slice(id);
        options.push(DhcpOption::Unknown { code: 37, data });
    }
    options.push(DhcpOption::RelayMsg(Box::new(inner)));
    let relay = Message::Relay(RelayMessage {
        msg_type: MessageType::RelayForw,
        hop_count: 0,
        link_address: "2001:db8:2::1".parse().unwrap(),
        peer_address: "fe80::7".parse().unwrap(),
        options: options.into(),
    });
    in_netns(&lab.cli, move || {
        let s = client_socket(547);
        let to = SocketAddrV6::new("2001:db8:1::1".parse().unwrap(), 547, 0, 0);
        let mut buf = [0u8; 2048];
        for _ in 0..10 {
            s.send_to(&relay.encode().unwrap(), to).unwrap();
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                let Ok(Message::Relay(r)) = Message::decode(&buf[..n]) else { continue };
                if let Some(Message::Client(c)) = r.options.relay_msg() {
                    return Some(c.clone());
                }
            }
        }
        None
    })
}

/// The addresses granted (valid lifetime > 0) in a reply's IA_NAs.
fn granted(c: &ClientMessage) -> Vec<Ipv6Addr> {
    c.options.ia_nas().flat_map(|ia| ia.options.ia_addrs().filter(|a| a.valid > 0).map(|a| a.addr).collect::<Vec<_>>()).collect()
}

/// The status codes of a reply: top level and in each IA_NA.
fn statuses(c: &ClientMessage) -> Vec<StatusCode> {
    let mut v: Vec<StatusCode> = c.options.status().map(|s| s.code).into_iter().collect();
    v.extend(c.options.ia_nas().filter_map(|ia| ia.options.status().map(|s| s.code)));
    v
}

fn hook_script(lab: &Lab, name: &str, body: &str) -> std::path::PathBuf {
    let p = lab.path(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\nexit 0\n")).unwrap();
    must(&format!("chmod +x {}", p.display()));
    p
}

/// The client interface's MAC address, as "aa:bb:cc:dd:ee:ff".
fn client_mac(lab: &Lab) -> String {
    let out = must(&format!("ip -n {} -o link show {}", lab.cli, lab.cli_if));
    out.split("link/ether ").nth(1).and_then(|s| s.split_whitespace().next()).unwrap_or_else(|| panic!("no MAC in {out}")).to_string()
}

/// `tandem ctl --socket SOCK ARGS…`: (exit code, stdout JSON, stderr).
fn ctl(sock: &std::path::Path, args: &str) -> (i32, serde_json::Value, String) {
    let o = Command::new("sh").arg("-c").arg(format!("{BIN} ctl --socket {} {args}", sock.display())).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let v = serde_json::from_str(&out).unwrap_or(serde_json::Value::Null);
    (o.status.code().unwrap_or(-1), v, String::from_utf8_lossy(&o.stderr).into_owned())
}

const ACS: &str = "http://acs.example.net";
const BOOTFILE: &str = "tftp://[2001:db8:1::1]/boot/grubx64.efi";

#[test]
fn dhclient_asks_for_vendor_bootfile_and_sip_options_and_gets_them() {
    require_root!();
    assert!(tool("dhclient"), "dhclient missing: tests/run.sh installs isc-dhcp-client");
    let mut lab = Lab::new("options");
    // Global: vendor-opts and bootfile-url; subnet: SIP servers, a time
    // zone nobody asks for, and a private option sent to everyone.
    let config = format!(
        "options = [\n  {{ name = \"vendor-opts\", enterprise = 3561, sub = [ {{ code = 1, type = \"string\", value = \"{ACS}\" }} ] }},\n  {{ name = \"bootfile-url\", value = \"{BOOTFILE}\" }},\n]\n{}",
        lab.config(
            "options = [\n  { name = \"sip-server-addresses\", value = [\"2001:db8:1::5060\", \"2001:db8:1::5061\"] },\n  { name = \"new-posix-timezone\", value = \"EST5EDT4,M3.2.0/02:00,M11.1.0/02:00\" },\n  { code = 65001, type = \"string\", value = \"tandem-always\", always-send = true },\n]"
        )
    );
    lab.start_server(&config, &["--shards", "2"]);

    // On the wire: what the ORO asks for, and the always-send option.
    let vendor = {
        let mut v = 3561u32.to_be_bytes().to_vec();
        v.extend_from_slice(&1u16.to_be_bytes());
        v.extend_from_slice(&(ACS.len() as u16).to_be_bytes());
        v.extend_from_slice(ACS.as_bytes());
        v
    };
    let adv = direct(&lab, client_msg(MessageType::Solicit, 1, 0x101, &[17, 22, 59], true, false)).expect("no Advertise");
    assert_eq!(adv.msg_type, MessageType::Advertise);
    assert_eq!(body(&adv.options, 17), Some(vendor.clone()), "vendor-opts: {:?}", codes(&adv.options));
    assert_eq!(body(&adv.options, 59).as_deref(), Some(BOOTFILE.as_bytes()));
    assert_eq!(body(&adv.options, 22), Some(addrs_body(&["2001:db8:1::5060", "2001:db8:1::5061"])));
    assert_eq!(body(&adv.options, 65001).as_deref(), Some(&b"tandem-always"[..]), "always-send: {:?}", codes(&adv.options));
    assert!(!adv.options.has(41), "new-posix-timezone was not requested: {:?}", codes(&adv.options));
    // Without an ORO only the always-send option comes.
    let adv = direct(&lab, client_msg(MessageType::Solicit, 2, 0x102, &[], true, false)).expect("no Advertise");
    let c = codes(&adv.options);
    assert!(c.contains(&65001) && !c.contains(&17) && !c.contains(&59) && !c.contains(&22) && !c.contains(&41), "{c:?}");

    // dhclient asks for the three by name. It knows new-posix-timezone and
    // is told the private option's name without asking for either, so its
    // hook would show them if they came.
    let conf = lab.path("dhclient.conf");
    std::fs::write(
        &conf,
        "option dhcp6.tandem-private code 65001 = string;\n\
         also request dhcp6.vendor-opts, dhcp6.bootfile-url, dhcp6.sip-servers-addresses;\n",
    )
    .unwrap();
    let env = lab.path("bound.env");
    let hook = hook_script(&lab, "hook.sh", &format!("case \"$reason\" in BOUND6|REBOOT6) env > {} ;; esac", env.display()));
    let (lf, pf) = (lab.path("dh.leases"), lab.path("dh.pid"));
    let o = lab.exec(
        &lab.cli,
        &format!(
            "timeout 30 dhclient -6 -1 -v -cf {} -sf {} -lf {} -pf {} {}",
            conf.display(),
            hook.display(),
            lf.display(),
            pf.display(),
            lab.cli_if
        ),
    );
    let _ = lab.exec(&lab.cli, &format!("dhclient -6 -x -pf {}", pf.display()));
    assert!(o.status.success(), "dhclient: {}\nserver: {}", String::from_utf8_lossy(&o.stderr), lab.server_log());
    let text = std::fs::read_to_string(&env).unwrap_or_else(|_| panic!("the hook never ran for BOUND6:\n{}", String::from_utf8_lossy(&o.stderr)));
    let var = |k: &str| text.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).map(|v| v.trim_matches('\'').to_string());
    assert_eq!(var("new_dhcp6_bootfile_url").as_deref(), Some(BOOTFILE), "{text}");
    assert_eq!(var("new_dhcp6_sip_servers_addresses").as_deref(), Some("2001:db8:1::5060 2001:db8:1::5061"), "{text}");
    assert_eq!(var("new_dhcp6_tandem_private").as_deref(), Some("tandem-always"), "{text}");
    assert_eq!(var("new_dhcp6_new_posix_timezone"), None, "{text}");
    // dhclient shows vendor-opts as the option's bytes, colon-separated hex.
    let hex: String = vendor.iter().map(|b| format!("{b:x}")).collect::<Vec<_>>().join(":");
    assert_eq!(var("new_dhcp6_vendor_opts"), Some(hex), "{text}");
    for asked in ["vendor_opts", "bootfile_url", "sip_servers_addresses"] {
        assert_eq!(var(&format!("requested_dhcp6_{asked}")).as_deref(), Some("1"), "dhclient asked for {asked}:\n{text}");
    }
}

/// A config that reserves 2001:db8:1::77 and the name "printer" for
/// `who` (a `duid = ...` or `hw-address = ...` key), names answered, no DNS updates.
fn reservation_config(lab: &Lab, who: &str) -> String {
    format!(
        "{}[runtime]\nshards = 1\n[ddns]\nserver = \"[::1]:53\"\nforward-zone = \"example.net.\"\nreverse-zone = \"1.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa.\"\nfqdn-policy = \"none\"\n",
        lab.config(&format!("reservations = [ {{ {who}, address = \"2001:db8:1::77\", hostname = \"printer\" }} ]"))
    )
}

/// dhcpcd with a DUID-LL of the client interface's MAC, asking for an
/// address and sending a host name; its log and the DUID (hex).
fn run_dhcpcd(lab: &Lab, mac: &str) -> (String, String) {
    let duid = format!("00:03:00:01:{mac}");
    let conf = lab.path("dhcpcd.conf");
    std::fs::write(&conf, format!("noipv6rs\nia_na 1\nduid {duid}\nhostname somehost\nfqdn both\n")).unwrap();
    let hook = hook_script(lab, "hook", &format!("[ \"$reason\" = BOUND6 ] && env > {}", lab.path("bound.env").display()));
    let o = lab.exec(&lab.cli, &format!("timeout 40 dhcpcd -6 -1 -d -B -t 30 -f {} -c {} {}", conf.display(), hook.display(), lab.cli_if));
    let log = String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "dhcpcd failed:\n{log}\nserver:\n{}", lab.server_log());
    (log, duid.replace(':', ""))
}

fn assert_reserved_lease(lab: &Lab, log: &str, duid_hex: &str) {
    assert!(log.contains("adding address 2001:db8:1::77"), "dhcpcd did not configure the reserved address:\n{log}\nserver:\n{}", lab.server_log());
    let dump = lab.leases_json();
    let na: Vec<_> = dump.as_array().unwrap().iter().filter(|l| l["type"] == "na").collect();
    assert_eq!(na.len(), 1, "{dump:#}");
    assert_eq!(na[0]["lease"], "2001:db8:1::77", "{dump:#}");
    assert_eq!(na[0]["duid"].as_str().unwrap().to_lowercase(), duid_hex.to_lowercase(), "{dump:#}");
    let name = na[0]["dns-name"].as_str().unwrap_or_else(|| panic!("no dns-name: {dump:#}"));
    assert_eq!(name.trim_end_matches('.'), "printer.example.net", "{dump:#}");
    let shown = must(&format!("ip -n {} -6 addr show dev {}", lab.cli, lab.cli_if));
    assert!(shown.contains("2001:db8:1::77"), "{shown}");
    // dhcpcd sent its own name ("somehost"); the answer is the reserved
    // one, with N = 1 (fqdn-policy "none": nobody updates the DNS).
    let env = std::fs::read_to_string(lab.path("bound.env")).unwrap_or_else(|_| panic!("the hook never ran for BOUND6:\n{log}"));
    assert!(env.lines().any(|l| l == "new_dhcp6_fqdn=printer.example.net"), "{env}");
    assert!(env.lines().any(|l| l == "new_dhcp6_fqdn_flags=N"), "{env}");
}

#[test]
fn dhcpcd_gets_its_reserved_address_and_host_name() {
    require_root!();
    assert!(tool("dhcpcd"), "dhcpcd missing: tests/run.sh installs dhcpcd-base");
    // By DUID.
    {
        let mut lab = Lab::new("resv-duid");
        let mac = client_mac(&lab);
        let duid_hex = format!("00030001{}", mac.replace(':', ""));
        lab.start_server(&reservation_config(&lab, &format!("duid = \"{duid_hex}\"")), &[]);
        let (log, duid) = run_dhcpcd(&lab, &mac);
        assert_eq!(duid, duid_hex);
        assert_reserved_lease(&lab, &log, &duid);
    }
    // By hardware address (the DUID-LL's link-layer address; one shard).
    let mut lab = Lab::new("resv-hw");
    let mac = client_mac(&lab);
    lab.start_server(&reservation_config(&lab, &format!("hw-address = \"{mac}\"")), &[]);
    let (log, duid) = run_dhcpcd(&lab, &mac);
    assert_reserved_lease(&lab, &log, &duid);
    // Another client never gets the reserved address.
    let ifindex = lab.cli_ifindex();
    let (g, _) = in_netns(&lab.cli, move || {
        let s = client_socket(546);
        rapid_commit_load(&s, all_servers(ifindex), 0, 20, 4, Instant::now() + Duration::from_secs(15))
    });
    assert_eq!(g.len(), 20);
    assert!(g.iter().all(|x| x.addr != "2001:db8:1::77".parse::<Ipv6Addr>().unwrap()));
}

const POOL_A: (&str, &str) = ("2001:db8:2::a000", "2001:db8:2::a0ff");
const POOL_B: (&str, &str) = ("2001:db8:2::b000", "2001:db8:2::b0ff");

#[test]
fn relayed_clients_land_in_their_class_pools_by_remote_id() {
    require_root!();
    let mut lab = Lab::new("classes");
    let config = format!(
        r#"data-dir = "{data}"
interfaces = ["{si}"]
[[class]]
name = "a"
match = {{ remote-id = "portA" }}
options = [{{ code = 65002, type = "string", value = "class-a", always-send = true }}]
[[class]]
name = "b"
match = {{ remote-id = {{ enterprise = 9, id = "portB" }} }}
[[subnet]]
prefix = "2001:db8:1::/64"
interface = "{si}"
pools = ["2001:db8:1::1000-2001:db8:1::1fff"]
[[subnet]]
prefix = "2001:db8:2::/64"
relay-links = ["2001:db8:2::1"]
pools = [
  {{ range = "{a0}-{a1}", client-classes = ["a"] }},
  {{ range = "{b0}-{b1}", client-classes = ["b"] }},
]
"#,
        data = lab.path("data").display(),
        si = lab.srv_if,
        a0 = POOL_A.0,
        a1 = POOL_A.1,
        b0 = POOL_B.0,
        b1 = POOL_B.1,
    );
    lab.start_server(&config, &["--shards", "2"]);
    must(&format!("ip -n {} addr add 2001:db8:1::99/64 dev {} nodad", lab.cli, lab.cli_if));
    std::thread::sleep(Duration::from_millis(300));

    let ask = |n: u64, rid: Option<(u32, &[u8])>| {
        let c = relayed(&lab, client_msg(MessageType::Solicit, n, 0x300 + n as u32, &[], true, false), rid)
            .unwrap_or_else(|| panic!("client {n}: no Relay-reply\n{}", lab.server_log()));
        assert_eq!(c.msg_type, MessageType::Advertise, "{c:?}");
        c
    };
    // Class "a" matches the id after any enterprise number.
    for (n, ent) in [(1u64, 9u32), (2, 4491)] {
        let c = ask(n, Some((ent, b"portA")));
        let g = granted(&c);
        assert!(g.len() == 1 && in_range(g[0], POOL_A.0, POOL_A.1), "portA client {n}: {g:?}");
        assert_eq!(body(&c.options, 65002).as_deref(), Some(&b"class-a"[..]), "class a's option: {:?}", codes(&c.options));
    }
    let c = ask(3, Some((9, b"portB")));
    let g = granted(&c);
    assert!(g.len() == 1 && in_range(g[0], POOL_B.0, POOL_B.1), "portB client: {g:?}");
    assert!(!c.options.has(65002), "class a's option went to a class b client: {:?}", codes(&c.options));
    // Neither class (no Remote-ID; "portB" under another enterprise; another
    // port): no pool is open to them.
    for (n, rid) in [(4u64, None), (5, Some((10u32, &b"portB"[..]))), (6, Some((9, &b"portC"[..])))] {
        let c = ask(n, rid);
        assert!(granted(&c).is_empty(), "client {n} ({rid:?}) is in no class: {c:?}");
        assert!(statuses(&c).contains(&StatusCode::NO_ADDRS_AVAIL), "client {n}: {c:?}");
        assert!(!c.options.has(65002), "{:?}", codes(&c.options));
    }
}

#[test]
fn a_shared_network_spills_into_its_second_subnet() {
    require_root!();
    let mut lab = Lab::new("shared");
    let config = format!(
        r#"data-dir = "{data}"
interfaces = ["{si}"]
[runtime]
shards = 1
[[subnet]]
prefix = "2001:db8:1::/64"
interface = "{si}"
shared-network = "lan"
pools = ["2001:db8:1::1000-2001:db8:1::1001"]
preferred-lifetime = 3000
valid-lifetime = 4000
rapid-commit = true
[[subnet]]
prefix = "2001:db8:3::/64"
shared-network = "lan"
pools = ["2001:db8:3::1000-2001:db8:3::10ff"]
preferred-lifetime = 5000
valid-lifetime = 6000
rapid-commit = true
"#,
        data = lab.path("data").display(),
        si = lab.srv_if,
    );
    lab.start_server(&config, &[]);
    let ifindex = lab.cli_ifindex();
    // One client at a time, so "first" means first.
    let (g, dups) = in_netns(&lab.cli, move || {
        let s = client_socket(546);
        rapid_commit_load(&s, all_servers(ifindex), 0, 4, 1, Instant::now() + Duration::from_secs(20))
    });
    assert_eq!(dups, 0);
    assert_eq!(g.len(), 4, "every client is answered: {g:?}\n{}", lab.server_log());
    for (i, x) in g.iter().enumerate() {
        assert_eq!(x.client, i as u64);
        if i < 2 {
            assert!(in_range(x.addr, "2001:db8:1::1000", "2001:db8:1::1001"), "client {i}: {x:?}");
            assert_eq!(x.valid, 4000, "the first subnet's lifetimes: {x:?}");
        } else {
            assert!(in_range(x.addr, "2001:db8:3::1000", "2001:db8:3::10ff"), "client {i}: {x:?}");
            assert_eq!(x.valid, 6000, "the second subnet's lifetimes: {x:?}");
        }
    }
    // A renewal finds the lease in the second subnet.
    let server_duid = {
        let (_, st, _) = ctl(&lab.path("data").join("control.sock"), "status");
        Duid::from_hex(st["server-duid"].as_str().unwrap_or_else(|| panic!("{st}"))).unwrap()
    };
    let held = g[3].addr;
    let mut renew = client_msg(MessageType::Renew, 3, 0x401, &[], false, false);
    if let Message::Client(c) = &mut renew {
        c.options.push(DhcpOption::ServerId(server_duid));
        let ia = IaAddr { addr: held, preferred: 0, valid: 0, options: Options::new() };
        c.options.push(DhcpOption::IaNa(IaNa { iaid: 1, t1: 0, t2: 0, options: vec![DhcpOption::IaAddr(ia)].into() }));
    }
    let r = direct(&lab, renew).expect("no Reply to the Renew");
    assert_eq!(r.msg_type, MessageType::Reply);
    let kept: Vec<_> = r.options.ia_nas().flat_map(|ia| ia.options.ia_addrs().map(|a| (a.addr, a.valid)).collect::<Vec<_>>()).collect();
    assert_eq!(kept, [(held, 6000)], "{r:?}");
}

fn reload_config(lab: &Lab, top: &str, subnet: &str, tables: &str) -> String {
    format!(
        r#"{top}data-dir = "{data}"
interfaces = ["{si}"]
{tables}[[subnet]]
prefix = "2001:db8:1::/64"
interface = "{si}"
pools = ["2001:db8:1::1000-2001:db8:1::1fff"]
rapid-commit = true
{subnet}
"#,
        data = lab.path("data").display(),
        si = lab.srv_if,
    )
}

#[test]
fn a_reload_applies_new_options_and_classes() {
    require_root!();
    let mut lab = Lab::new("reload-opts");
    let a = reload_config(&lab, "", "", "");
    lab.start_server(&a, &[]);
    let sock = lab.path("data").join("control.sock");
    let info = |xid: u32| {
        let r = direct(&lab, client_msg(MessageType::InformationRequest, 1, xid, &[22, 59], false, false)).expect("no Reply to the Information-request");
        assert_eq!(r.msg_type, MessageType::Reply);
        r
    };
    let r = info(0x501);
    let c = codes(&r.options);
    assert!(!c.contains(&59) && !c.contains(&22) && !c.contains(&65003), "nothing configured yet: {c:?}");

    let b = reload_config(
        &lab,
        &format!("options = [{{ name = \"bootfile-url\", value = \"{BOOTFILE}\" }}]\n"),
        "options = [{ name = \"sip-server-addresses\", value = [\"2001:db8:1::5060\"] }]",
        &format!(
            "[[class]]\nname = \"local\"\nmatch = {{ interface = \"{}\" }}\noptions = [{{ code = 65003, type = \"u16\", value = 515, always-send = true }}]\n",
            lab.srv_if
        ),
    );
    std::fs::write(lab.path("tandem.toml"), &b).unwrap();
    let (code, r, err) = ctl(&sock, "reload");
    assert_eq!(code, 0, "{r} {err}\n{}", lab.server_log());
    assert_eq!(r["result"], "applied", "{r}");
    let changed: Vec<&str> = r["changed"].as_array().unwrap_or_else(|| panic!("{r}")).iter().filter_map(|c| c.as_str()).collect();
    for key in ["options", "class", "subnet[2001:db8:1::/64]"] {
        assert!(changed.contains(&key), "`changed` lacks {key}: {r}");
    }
    let r = info(0x502);
    assert_eq!(body(&r.options, 59).as_deref(), Some(BOOTFILE.as_bytes()), "{:?}", codes(&r.options));
    assert_eq!(body(&r.options, 22), Some(addrs_body(&["2001:db8:1::5060"])), "{:?}", codes(&r.options));
    assert_eq!(body(&r.options, 65003), Some(515u16.to_be_bytes().to_vec()), "{:?}", codes(&r.options));

    // And back: the options go away again.
    std::fs::write(lab.path("tandem.toml"), &a).unwrap();
    let (code, r, _) = ctl(&sock, "reload");
    assert_eq!((code, &r["result"]), (0, &serde_json::json!("applied")), "{r}");
    let r = info(0x503);
    let c = codes(&r.options);
    assert!(!c.contains(&59) && !c.contains(&22) && !c.contains(&65003), "removed by the reload: {c:?}");
}
