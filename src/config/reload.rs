//! What a reload may change (README "Reload"): the keys that shape what
//! clients get apply live; the keys that shape the process (its store,
//! identity, cores, user, failover relationship) are fixed until a restart,
//! and a reload that changes one of them is refused whole, naming it.

use super::{Config, Problem};

/// Compare the running configuration with a newly read one (both with the
/// command line's overrides applied): the keys that changed, or the fixed
/// keys that did (then nothing is applied).
pub fn changes(running: &Config, new: &Config) -> Result<Vec<String>, Vec<Problem>> {
    let mut changed = Vec::new();
    let mut refused = Vec::new();
    let mut fixed = |key: &str, differs: bool| {
        if differs {
            refused.push(Problem { key: key.to_string(), reason: "cannot change while running (restart to apply); the running configuration is kept".into() });
        }
    };
    fixed("data-dir", running.data_dir != new.data_dir);
    fixed("server-duid", running.server_duid != new.server_duid);
    fixed("runtime.shards", running.runtime.shards != new.runtime.shards);
    fixed("runtime.cpus", running.runtime.cpus != new.runtime.cpus);
    fixed("runtime.failover-cpu", running.runtime.failover_cpu != new.runtime.failover_cpu);
    fixed("user", running.user != new.user);
    // Relationships are fixed (README "Several relationships"): their
    // count, names, roles, partners and subnets; keys name the first as
    // `failover.…` in the single form, `failover[i].…` with several.
    if running.failover.len() != new.failover.len() {
        fixed("failover", true);
    }
    let several = running.failover.len() > 1;
    for (i, (a, b)) in running.failover.iter().zip(&new.failover).enumerate() {
        let p = if several { format!("failover[{i}]") } else { "failover".to_string() };
        let mut fixed = |k: &str, differs: bool| fixed(&format!("{p}.{k}"), differs);
        fixed("name", a.name != b.name);
        fixed("role", a.role != b.role);
        fixed("listen", a.listen != b.listen);
        fixed("peer", a.peer != b.peer);
        fixed("subnets", a.subnets != b.subnets);
        fixed("mclt", a.mclt != b.mclt);
        fixed("max-unacked-bndupd", a.max_unacked_bndupd != b.max_unacked_bndupd);
        fixed("keepalive-time", a.keepalive_time != b.keepalive_time);
        fixed("startup-time", a.startup_time != b.startup_time);
        fixed("startup-partner-down", a.startup_partner_down != b.startup_partner_down);
        fixed("updreq-timeout", a.updreq_timeout != b.updreq_timeout);
        fixed("connect-retry", a.connect_retry != b.connect_retry);
        fixed("tls.insecure", matches!(a.tls, super::Tls::Insecure) != matches!(b.tls, super::Tls::Insecure));
        for (key, differs) in [
            ("auto-partner-down", a.auto_partner_down != b.auto_partner_down),
            ("pd-secondary-share", a.pd_secondary_share != b.pd_secondary_share),
            ("pd-secondary-max", a.pd_secondary_max != b.pd_secondary_max),
            ("tls", a.tls != b.tls),
        ] {
            if differs {
                changed.push(format!("{p}.{key}"));
            }
        }
    }
    if !refused.is_empty() {
        return Err(refused);
    }
    if running.interfaces != new.interfaces {
        changed.push("interfaces".into());
    }
    if running.unicast_listen != new.unicast_listen {
        changed.push("unicast-listen".into());
    }
    if running.limits != new.limits {
        changed.push("limits".into());
    }
    if running.ddns != new.ddns {
        changed.push("ddns".into());
    }
    if running.leasequery != new.leasequery {
        changed.push("leasequery".into());
    }
    if running.log_level != new.log_level {
        changed.push("log-level".into());
    }
    if running.provisioning.options != new.provisioning.options {
        changed.push("options".into());
    }
    if running.provisioning.classes != new.provisioning.classes {
        changed.push("class".into());
    }
    for s in &new.subnets {
        match running.subnets.iter().find(|o| o.prefix == s.prefix) {
            None => changed.push(format!("subnet[{}] (added)", s.prefix)),
            Some(o) if o != s => changed.push(format!("subnet[{}]", s.prefix)),
            Some(_) => {}
        }
    }
    for o in &running.subnets {
        if !new.subnets.iter().any(|s| s.prefix == o.prefix) {
            changed.push(format!("subnet[{}] (removed)", o.prefix));
        }
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = "data-dir = \"/tmp/x\"\ninterfaces = []\n[[subnet]]\nprefix = \"2001:db8:1::/64\"\npools = [\"2001:db8:1::100-2001:db8:1::1ff\"]\n";

    fn cfg(extra: &str) -> Config {
        Config::parse(&format!("{BASE}{extra}")).unwrap()
    }

    #[test]
    fn live_keys_are_listed_and_fixed_keys_refuse_the_reload() {
        let a = cfg("");
        assert_eq!(changes(&a, &a).unwrap(), Vec::<String>::new());
        let b = cfg("[[subnet]]\nprefix = \"2001:db8:2::/64\"\npools = [\"2001:db8:2::100-2001:db8:2::1ff\"]\n");
        assert_eq!(changes(&a, &b).unwrap(), vec!["subnet[2001:db8:2::/64] (added)".to_string()]);
        assert_eq!(changes(&b, &a).unwrap(), vec!["subnet[2001:db8:2::/64] (removed)".to_string()]);
        let c = Config::parse(&BASE.replace("1ff\"]", "2ff\"]\nvalid-lifetime = 7200")).unwrap();
        assert_eq!(changes(&a, &c).unwrap(), vec!["subnet[2001:db8:1::/64]".to_string()]);
        let d = cfg("[runtime]\nshards = 3\n");
        let e = changes(&a, &d).unwrap_err();
        assert_eq!(e.iter().map(|p| p.key.as_str()).collect::<Vec<_>>(), ["runtime.shards"]);
        let f = Config::parse(&BASE.replace("/tmp/x", "/tmp/y")).unwrap();
        assert_eq!(changes(&a, &f).unwrap_err()[0].key, "data-dir");
        let g = Config::parse(&format!("user = \"nobody\"\n{BASE}")).unwrap();
        assert_eq!(changes(&a, &g).unwrap_err()[0].key, "user");
        let h = cfg("[limits]\nleases-per-client = 4\n");
        assert_eq!(changes(&a, &h).unwrap(), vec!["limits".to_string()]);
    }

    #[test]
    fn a_failover_relationship_keeps_its_identity_and_tunes_the_rest() {
        let fo = |extra: &str| cfg(&format!("[failover]\nname = \"r\"\nrole = \"primary\"\nlisten = \"[::1]:647\"\npeer = \"[::1]:648\"\ntls = {{ insecure = true }}\n{extra}"));
        let a = fo("");
        assert_eq!(changes(&a, &fo("auto-partner-down = 60\n")).unwrap(), vec!["failover.auto-partner-down".to_string()]);
        assert_eq!(changes(&a, &fo("mclt = 600\n")).unwrap_err()[0].key, "failover.mclt");
        assert_eq!(changes(&a, &cfg("")).unwrap_err()[0].key, "failover");
    }

    #[test]
    fn several_relationships_are_fixed_but_their_tunables_apply_live() {
        let two = |sub: &str, apd: u32| {
            cfg(&format!(
                "[[subnet]]\nprefix = \"2001:db8:2::/64\"\npools = [\"2001:db8:2::100-2001:db8:2::1ff\"]\n\
                 [[subnet]]\nprefix = \"2001:db8:3::/64\"\npools = [\"2001:db8:3::100-2001:db8:3::1ff\"]\n\
                 [[failover]]\nname = \"a\"\nrole = \"secondary\"\nlisten = \"[::1]:647\"\npeer = \"[::2]:647\"\nsubnets = [\"2001:db8:1::/64\"]\ntls = {{ insecure = true }}\n\
                 [[failover]]\nname = \"b\"\nrole = \"secondary\"\nlisten = \"[::1]:647\"\npeer = \"[::3]:647\"\nsubnets = [{sub}]\nauto-partner-down = {apd}\ntls = {{ insecure = true }}\n"
            ))
        };
        let a = two("\"2001:db8:2::/64\"", 0);
        assert_eq!(changes(&a, &two("\"2001:db8:2::/64\"", 60)).unwrap(), vec!["failover[1].auto-partner-down".to_string()]);
        let moved = changes(&a, &two("\"2001:db8:2::/64\", \"2001:db8:3::/64\"", 0)).unwrap_err();
        assert_eq!(moved[0].key, "failover[1].subnets", "a subnet joining a relationship needs a restart");
        assert_eq!(changes(&a, &cfg("")).unwrap_err()[0].key, "failover", "removing relationships");
    }
}
