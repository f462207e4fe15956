//! The simulated clients: DHCPv6 clients with RFC 9915 renew/rebind timers,
//! occasional releases, and the first invariant (no address or prefix held
//! by two clients at once), checked on what the clients are told.

use std::net::Ipv6Addr;

use super::{Ev, Sim, T0};
use crate::lease::{LeaseKey, Time};
use crate::pool::Prefix;
use crate::wire::{ClientMessage, DhcpOption, Duid, IaNa, IaPd, IaPrefix, Message, MessageType, Options};

#[derive(Debug, Clone, Default)]
pub(super) struct Client {
    pub duid_n: u64,
    pub generation: u64,
    pub wants_pd: bool,
    /// Address → end of its valid lifetime (true time), and who gave it.
    pub addr: Option<(Ipv6Addr, Time, usize)>,
    pub prefix: Option<(Prefix, Time, usize)>,
    pub t1: Time,
    pub t2: Time,
    /// What the client is doing.
    pub phase: Phase,
    pub xid: u32,
    pub tries: u32,
    pub advertised: Vec<(usize, Duid)>,
    pub active: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Phase {
    #[default]
    Idle,
    Soliciting,
    Requesting(usize),
    Bound,
    Renewing(usize),
    Rebinding,
}

/// The DUID of simulated client `n`.
/// What a Reply left a client holding (with when each ends), and its T1/T2.
pub(super) type Taken = (Vec<(LeaseKey, Time)>, Option<(u32, u32)>);

impl Client {
    /// Take a Reply from server `s`: withdrawn addresses and prefixes
    /// (valid 0) dropped, the others held. Returns what is held now, with
    /// when it ends, in message order (for the duplicate check), and the
    /// T1/T2 to renew by: the last IA_NA's, else the first IA_PD's.
    pub(super) fn take_reply(&mut self, m: &ClientMessage, now: Time, s: usize) -> Taken {
        let mut held = Vec::new();
        let mut t1t2 = None;
        for ia in m.options.ia_nas() {
            for a in ia.options.ia_addrs() {
                if a.valid == 0 {
                    if self.addr.is_some_and(|x| x.0 == a.addr) {
                        self.addr = None;
                    }
                    continue;
                }
                held.push((LeaseKey::Addr(a.addr), now + a.valid as Time));
                self.addr = Some((a.addr, now + a.valid as Time, s));
                t1t2 = Some((ia.t1, ia.t2));
            }
        }
        for ia in m.options.ia_pds() {
            for p in ia.options.ia_prefixes() {
                let Some(pr) = Prefix::new(p.prefix, p.prefix_len) else { continue };
                if p.valid == 0 {
                    if self.prefix.is_some_and(|x| x.0 == pr) {
                        self.prefix = None;
                    }
                    continue;
                }
                held.push((LeaseKey::Prefix(pr), now + p.valid as Time));
                self.prefix = Some((pr, now + p.valid as Time, s));
                t1t2 = t1t2.or(Some((ia.t1, ia.t2)));
            }
        }
        (held, t1t2)
    }
}

pub(crate) fn client_duid(n: u64) -> Duid {
    Duid::en(99, &n.to_be_bytes())
}

impl Sim {
    pub(super) fn client_msg(&mut self, c: usize, t: MessageType, server: Option<usize>) -> Vec<u8> {
        let cl = &self.clients[c];
        let mut o = vec![DhcpOption::ClientId(client_duid(cl.duid_n)), DhcpOption::ElapsedTime(0)];
        if let Some(s) = server {
            o.push(DhcpOption::ServerId(self.servers[s].duid.clone()));
        }
        let addrs: Options = cl
            .addr
            .map(|(a, _, _)| vec![DhcpOption::IaAddr(crate::wire::IaAddr { addr: a, preferred: 0, valid: 0, options: Options::new() })])
            .unwrap_or_default()
            .into();
        o.push(DhcpOption::IaNa(IaNa { iaid: 1, t1: 0, t2: 0, options: addrs }));
        if cl.wants_pd {
            let p: Options = cl
                .prefix
                .map(|(p, _, _)| vec![DhcpOption::IaPrefix(IaPrefix { preferred: 0, valid: 0, prefix_len: p.len, prefix: p.addr, options: Options::new() })])
                .unwrap_or_default()
                .into();
            o.push(DhcpOption::IaPd(IaPd { iaid: 1, t1: 0, t2: 0, options: p }));
        }
        let xid = self.clients[c].xid;
        let m = Message::Client(ClientMessage { msg_type: t, transaction_id: xid, options: o.into() });
        // A third of the clients sit behind a relay whose OPTION_RELAY_ID
        // changes with the transaction (no random draw: seeds replay), so
        // the relay data kept with leases (RFC 8156 §7.4) changes often and
        // the stores must agree on it.
        let m = if c.is_multiple_of(3) {
            Message::Relay(crate::wire::RelayMessage {
                msg_type: MessageType::RelayForw,
                hop_count: 0,
                link_address: "2001:db8:1::1".parse().expect("literal"),
                peer_address: "fe80::c".parse().expect("literal"),
                options: vec![
                    DhcpOption::Unknown { code: crate::wire::opt::RELAY_ID, data: vec![0, 3, 0, 1, (xid % 3) as u8] },
                    DhcpOption::RelayMsg(Box::new(m)),
                ]
                .into(),
            })
        } else {
            m
        };
        m.encode().expect("client message")
    }

    pub(super) fn client_send(&mut self, c: usize, t: MessageType, server: Option<usize>) {
        self.clients[c].xid = (self.clients[c].xid + 1) & 0xff_ffff;
        let bytes = self.client_msg(c, t, server);
        // Multicast: every server on the link hears it.
        for s in 0..2 {
            let d = self.rng.below(2);
            self.at(d, Ev::ToServer(c, s, bytes.clone()));
        }
    }

    pub(super) fn client_timer(&mut self, c: usize, generation: u64) {
        if self.clients[c].generation != generation || !self.clients[c].active {
            return;
        }
        self.clients[c].generation += 1;
        let g = self.clients[c].generation;
        let now = self.now;
        // Lifetimes run out.
        if self.clients[c].addr.is_some_and(|(_, end, _)| end <= now) {
            self.clients[c].addr = None;
        }
        if self.clients[c].prefix.is_some_and(|(_, end, _)| end <= now) {
            self.clients[c].prefix = None;
        }
        let cl = &self.clients[c];
        let has_lease = cl.addr.is_some() || cl.prefix.is_some();
        match cl.phase {
            _ if !has_lease && !matches!(cl.phase, Phase::Soliciting | Phase::Requesting(_) | Phase::Idle) => {
                self.clients[c].phase = Phase::Idle;
                self.at(1, Ev::ClientTimer(c, g));
            }
            Phase::Idle => {
                self.clients[c].phase = Phase::Soliciting;
                self.clients[c].advertised.clear();
                self.client_send(c, MessageType::Solicit, None);
                self.at(2, Ev::ClientTimer(c, g));
            }
            Phase::Soliciting => {
                let adv = self.clients[c].advertised.clone();
                if let Some((s, _)) = adv.first() {
                    let s = *s;
                    self.clients[c].phase = Phase::Requesting(s);
                    self.clients[c].tries = 0;
                    self.client_send(c, MessageType::Request, Some(s));
                    self.at(2, Ev::ClientTimer(c, g));
                } else {
                    self.client_send(c, MessageType::Solicit, None);
                    let d = 3 + self.rng.below(5);
                    self.at(d, Ev::ClientTimer(c, g));
                }
            }
            Phase::Requesting(s) => {
                self.clients[c].tries += 1;
                if self.clients[c].tries > 4 {
                    self.clients[c].phase = Phase::Idle;
                    self.at(1, Ev::ClientTimer(c, g));
                } else {
                    self.client_send(c, MessageType::Request, Some(s));
                    self.at(2, Ev::ClientTimer(c, g));
                }
            }
            Phase::Bound => {
                // Occasionally release and come back later.
                if self.rng.below(25) == 0 {
                    let s = self.clients[c].addr.map(|x| x.2).or(self.clients[c].prefix.map(|x| x.2)).unwrap_or(0);
                    self.client_send(c, MessageType::Release, Some(s));
                    self.log(format!("client {c} releases"));
                    self.clients[c].addr = None;
                    self.clients[c].prefix = None;
                    self.clients[c].phase = Phase::Idle;
                    let d = 5 + self.rng.below(200);
                    self.at(d, Ev::ClientTimer(c, g));
                    return;
                }
                let s = self.clients[c].addr.map(|x| x.2).or(self.clients[c].prefix.map(|x| x.2)).unwrap_or(0);
                self.clients[c].phase = Phase::Renewing(s);
                self.client_send(c, MessageType::Renew, Some(s));
                self.at(10, Ev::ClientTimer(c, g));
            }
            Phase::Renewing(s) => {
                if now >= self.clients[c].t2 {
                    self.clients[c].phase = Phase::Rebinding;
                    self.client_send(c, MessageType::Rebind, None);
                } else {
                    self.client_send(c, MessageType::Renew, Some(s));
                }
                self.at(10, Ev::ClientTimer(c, g));
            }
            Phase::Rebinding => {
                self.client_send(c, MessageType::Rebind, None);
                self.at(10, Ev::ClientTimer(c, g));
            }
        }
    }

    pub(super) fn client_receive(&mut self, c: usize, bytes: &[u8]) {
        let m = match Message::decode(bytes) {
            Ok(Message::Client(m)) => m,
            // A relayed client: its relay hands it the inner message.
            Ok(Message::Relay(r)) if matches!(r.options.relay_msg(), Some(Message::Client(_))) => {
                let Some(Message::Client(m)) = r.options.relay_msg() else { unreachable!() };
                m.clone()
            }
            _ => {
                self.violate(format!("client {c} got an undecodable reply"));
                return;
            }
        };
        if m.transaction_id != self.clients[c].xid {
            return; // a late answer to an earlier transmission
        }
        let Some(sid) = m.options.server_id().cloned() else { return };
        let Some(s) = self.servers.iter().position(|x| x.duid == sid) else { return };
        match m.msg_type {
            MessageType::Advertise
                if self.clients[c].phase == Phase::Soliciting => {
                    self.clients[c].advertised.push((s, sid));
                }
            MessageType::Reply => {
                if !matches!(self.clients[c].phase, Phase::Requesting(_) | Phase::Renewing(_) | Phase::Rebinding) {
                    return;
                }
                let now = self.now;
                let (held, t1t2) = self.clients[c].take_reply(&m, now, s);
                for &(key, until) in &held {
                    self.claim(c, key, until, s);
                }
                let got = !held.is_empty();
                if got && self.sc.vanish {
                    // Gone without a word: the lease runs out on its own.
                    self.clients[c].active = false;
                    self.log(format!("client {c} vanishes"));
                } else if got {
                    let renew_now = self.sc.relay_renew && c.is_multiple_of(3) && matches!(self.clients[c].phase, Phase::Requesting(_));
                    let (t1, t2) = t1t2.unwrap_or((100, 160));
                    let (t1, t2) = (t1.max(5) as Time, t2.max(6) as Time);
                    self.clients[c].t1 = now + t1;
                    self.clients[c].t2 = now + t2;
                    self.clients[c].phase = Phase::Bound;
                    self.clients[c].generation += 1;
                    let g = self.clients[c].generation;
                    self.at(t1, Ev::ClientTimer(c, g));
                    if renew_now {
                        // Its answer is not waited for (the client stays Bound).
                        self.client_send(c, MessageType::Renew, Some(s));
                    }
                } else if matches!(self.clients[c].phase, Phase::Requesting(_)) {
                    self.clients[c].phase = Phase::Idle;
                }
            }
            _ => {}
        }
    }

    /// Invariant 1: no address or prefix is held by two clients at once.
    pub(super) fn claim(&mut self, c: usize, key: LeaseKey, until: Time, s: usize) {
        let now = self.now;
        let st = self.state(s).map(|x| x.name()).unwrap_or("-");
        self.log(format!("client {c} holds {key} from server {s} ({st}) until t+{}", until - T0));
        let clashes: Vec<usize> = (0..self.clients.len())
            .filter(|o| *o != c)
            .filter(|o| {
                let other = &self.clients[*o];
                match key {
                    LeaseKey::Addr(a) => other.addr.is_some_and(|(x, end, _)| x == a && end > now),
                    LeaseKey::Prefix(p) => other.prefix.is_some_and(|(x, end, _)| x == p && end > now),
                }
            })
            .collect();
        if self.misconfigured {
            return;
        }
        if self.mismatched.contains(&key) && !clashes.is_empty() {
            self.log(format!("server {s} gave {key} to client {c} while client {} holds it: the servers' reservations differ", clashes[0]));
            return;
        }
        if self.phantom.get(&key).is_some_and(|end| *end > now) {
            self.violate(format!("duplicate: server {s} gave {key} to client {c} while a preloaded client holds it"));
        }
        for o in clashes {
            self.violate(format!("duplicate: server {s} gave {key} to client {c} while client {o} holds it"));
        }
    }

}
