//! What the endpoint keeps in stable storage (§8.1, §8.2), and its binary form.

use crate::lease::Time;
use crate::wire::ServerState;

/// The store's meta keys a relationship's state is written under, the one
/// to read first first: `failover-state/NAME`, and with a single
/// relationship also the historic `failover-state` (what earlier versions
/// wrote and read). So a relationship finds its own state by name when a
/// server goes from one relationship to several or back, and one that
/// never had a state of its own starts with none (RECOVER: it asks its
/// partner for everything), never with another relationship's.
pub fn meta_keys(name: &str, several: bool) -> Vec<String> {
    use crate::lease::store::meta::FAILOVER_STATE;
    let own = format!("{FAILOVER_STATE}/{name}");
    if several { vec![own] } else { vec![own, FAILOVER_STATE.to_string()] }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persistent {
    pub state: ServerState,
    pub start_time: Time,
    pub partner_state: Option<ServerState>,
    pub partner_start_time: Time,
    /// When the last message from the partner arrived.
    pub last_contact: Time,
    /// The last time this server was known to be operating (TIME-OF-FAILURE, §8.3.2).
    pub last_operating: Time,
    /// When we entered PARTNER-DOWN (kept across restarts, §8.4, §6.3).
    pub partner_down_time: Time,
    /// When the partner entered PARTNER-DOWN, as its STATE said (0 when it
    /// is not in PARTNER-DOWN, §6.4).
    pub partner_pd_time: Time,
    /// When the partner last asked for everything (UPDREQALL: it lost its
    /// store, §8.5.2). Grants it made before then may be forgotten on its
    /// side: its EXPIRED for a lease last seen before then is not trusted
    /// before the MCLT past what we acked to it (§4.4).
    pub partner_lost_store_at: Time,
    /// We have communicated with the partner at some time (F_SERVER_FLAGS C).
    pub communicated: bool,
    pub mclt: u32,
    /// The store was lost and a full UPDREQALL has not yet completed: ask
    /// for everything again after any restart (§8.5.2).
    pub need_all: bool,
}

impl Persistent {
    /// Version 3: flags, five times, the MCLT, then the partner's
    /// PARTNER-DOWN time and when it lost its store (version 2 lacked both
    /// and is still read).
    pub fn encode(&self) -> Vec<u8> {
        let mut o = vec![3u8, self.state as u8, self.partner_state.map(|s| s as u8).unwrap_or(0), self.communicated as u8 | (self.need_all as u8) << 1];
        for t in [self.start_time, self.partner_start_time, self.last_contact, self.last_operating, self.partner_down_time] {
            o.extend_from_slice(&t.to_be_bytes());
        }
        o.extend_from_slice(&self.mclt.to_be_bytes());
        o.extend_from_slice(&self.partner_pd_time.to_be_bytes());
        o.extend_from_slice(&self.partner_lost_store_at.to_be_bytes());
        o
    }

    pub fn decode(b: &[u8]) -> Option<Persistent> {
        let v2 = b.len() == 48 && b.first() == Some(&2);
        let v3 = b.len() == 64 && b.first() == Some(&3);
        if !v2 && !v3 {
            return None;
        }
        let t = |i: usize| -> Option<u64> { Some(u64::from_be_bytes(b.get(4 + i * 8..12 + i * 8)?.try_into().ok()?)) };
        Some(Persistent {
            state: ServerState::from_code(b[1])?,
            partner_state: ServerState::from_code(b[2]),
            communicated: b[3] & 1 != 0,
            need_all: b[3] & 2 != 0,
            start_time: t(0)?,
            partner_start_time: t(1)?,
            last_contact: t(2)?,
            last_operating: t(3)?,
            partner_down_time: t(4)?,
            mclt: u32::from_be_bytes(b.get(44..48)?.try_into().ok()?),
            partner_pd_time: if v3 { u64::from_be_bytes(b.get(48..56)?.try_into().ok()?) } else { 0 },
            partner_lost_store_at: if v3 { u64::from_be_bytes(b.get(56..64)?.try_into().ok()?) } else { 0 },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let p = Persistent {
            state: ServerState::PartnerDown,
            start_time: 1,
            partner_state: Some(ServerState::Recover),
            partner_start_time: 2,
            last_contact: 3,
            last_operating: 4,
            partner_down_time: 5,
            partner_pd_time: 6,
            partner_lost_store_at: 7,
            communicated: true,
            mclt: 3600,
            need_all: true,
        };
        assert_eq!(Persistent::decode(&p.encode()), Some(p.clone()));
        assert_eq!(Persistent::decode(&[1, 2]), None);
        // A version-2 record (before the partner's PARTNER-DOWN time was kept) still reads.
        let mut v2 = p.encode()[..48].to_vec();
        v2[0] = 2;
        assert_eq!(Persistent::decode(&v2), Some(Persistent { partner_pd_time: 0, partner_lost_store_at: 0, ..p }));
    }
}
