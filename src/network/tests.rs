//! Setup, release and reconcile over the fake host: what is claimed, recorded, made and
//! removed, in which order, without root.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::host::FakeHost;
use super::*;

struct Env {
    _t: tempfile::TempDir,
    cfg: NetConfig,
    fifo_root: PathBuf,
}

fn env() -> Env {
    let t = tempfile::tempdir().unwrap();
    let cfg = NetConfig {
        netns_root: t.path().join("netns"),
        claims: t.path().join("claims"),
        range: "10.199.0.0/24".parse().unwrap(),
        groups: t.path().join("groups"),
    };
    let fifo_root = t.path().join("fifo");
    std::fs::create_dir_all(&fifo_root).unwrap();
    Env {
        _t: t,
        cfg,
        fifo_root,
    }
}

fn run_dir(e: &Env, id: &str) -> PathBuf {
    let d = e.fifo_root.join(id);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn egress(host: &FakeHost, e: &Env, id: &str) -> Result<Attached, NetworkError> {
    setup(
        host,
        &e.cfg,
        id,
        &run_dir(e, id),
        NetworkMode::Egress,
        &NetworkRules::default(),
    )
}

#[test]
fn setup_records_first_then_makes_the_namespace_the_rules_and_the_veth() {
    let e = env();
    let host = FakeHost::default();
    let a = egress(&host, &e, "stk-a").unwrap();
    assert!(e.cfg.range.contains(a.address) && e.cfg.range.contains(a.gateway));
    let calls = host.calls.lock().unwrap().clone();
    let ops: Vec<&str> = calls.iter().map(|c| c.split(' ').next().unwrap()).collect();
    assert_eq!(
        ops,
        ["delete_link", "create_netns", "apply_nft", "add_veth"]
    );
    let r = read_record(&e.fifo_root.join("stk-a")).unwrap().unwrap();
    assert_eq!(r.netns, e.cfg.netns_path("stk-a"));
    assert_eq!(r.sandbox_addr, a.address);
    // The table applied before the veth existed already had the sandbox's chain.
    let table = host.table().unwrap();
    assert!(table.contains(&format!("\"{}\" : jump sandbox_{}", a.veth, a.veth)));
    assert!(table.contains(&format!("ip saddr != {} drop", a.address)));
}

#[test]
fn concurrent_sandboxes_get_distinct_addresses_and_one_table_with_all_of_them() {
    let e = env();
    let host = FakeHost::default();
    let ids: Vec<String> = (0..16).map(|i| format!("stk-{i}")).collect();
    std::thread::scope(|s| {
        for id in &ids {
            let (host, e) = (&host, &e);
            s.spawn(move || egress(host, e, id).unwrap());
        }
    });
    let mut addrs: Vec<_> = ids
        .iter()
        .map(|id| {
            read_record(&e.fifo_root.join(id))
                .unwrap()
                .unwrap()
                .sandbox_addr
        })
        .collect();
    addrs.sort();
    addrs.dedup();
    assert_eq!(addrs.len(), 16);
    // Applied under the lock: the last table names every sandbox.
    let table = host.table().unwrap();
    assert_eq!(table.matches(": jump sandbox_").count(), 16, "{table}");
}

#[test]
fn release_removes_everything_and_the_sandbox_leaves_the_table() {
    let e = env();
    let host = FakeHost::default();
    let a = egress(&host, &e, "stk-a").unwrap();
    let b = egress(&host, &e, "stk-b").unwrap();
    let dir = e.fifo_root.join("stk-a");
    release_with(&host, &dir).unwrap();
    assert!(!dir.join(RECORD_FILE).exists());
    assert_eq!(*host.links.lock().unwrap(), vec![b.veth.clone()]);
    assert_eq!(*host.netns.lock().unwrap(), vec![e.cfg.netns_path("stk-b")]);
    let table = host.table().unwrap();
    assert!(!table.contains(&format!("sandbox_{} ", a.veth)), "{table}");
    assert!(table.contains(&format!("sandbox_{} ", b.veth)));
    assert_eq!(slots::claims(&e.cfg.claims).len(), 1);
    // Again: nothing recorded, nothing to do.
    let n = host.calls.lock().unwrap().len();
    release_with(&host, &dir).unwrap();
    assert_eq!(host.calls.lock().unwrap().len(), n);
}

#[test]
fn a_failed_setup_is_removed_by_release_whatever_step_failed() {
    for step in ["create_netns", "apply_nft", "add_veth"] {
        let e = env();
        let host = FakeHost {
            fail_on: Some(step),
            ..FakeHost::default()
        };
        let err = egress(&host, &e, "stk-f").unwrap_err();
        assert!(!err.to_string().contains('\n'));
        let ok = FakeHost::default();
        release_with(&ok, &e.fifo_root.join("stk-f")).unwrap();
        assert!(slots::claims(&e.cfg.claims).is_empty(), "{step}");
        assert!(ok
            .calls
            .lock()
            .unwrap()
            .iter()
            .any(|c| c.starts_with("remove_netns")));
    }
}

#[test]
fn reconcile_removes_what_a_crash_left_and_keeps_live_sandboxes() {
    let e = env();
    let host = FakeHost::default();
    let live = egress(&host, &e, "stk-live").unwrap();
    let dead = egress(&host, &e, "stk-dead").unwrap();
    // The crash: the dead run's directory is gone, its veth, namespace file and claim stay.
    std::fs::remove_dir_all(e.fifo_root.join("stk-dead")).unwrap();
    std::fs::create_dir_all(&e.cfg.netns_root).unwrap();
    std::fs::write(e.cfg.netns_path("stk-dead"), "").unwrap();
    host.links.lock().unwrap().push("stkv-not-ours".into());
    // A live sandbox of a runner with another run directory keeps its namespace file.
    let elsewhere = e
        .fifo_root
        .parent()
        .unwrap()
        .join("other-fifo/stk-elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    setup(
        &host,
        &e.cfg,
        "stk-elsewhere",
        &elsewhere,
        NetworkMode::Egress,
        &NetworkRules::default(),
    )
    .unwrap();
    std::fs::write(e.cfg.netns_path("stk-elsewhere"), "").unwrap();
    let done = reconcile_with(&host, &e.cfg, &e.fifo_root, Duration::ZERO).unwrap();
    assert_eq!(done.links, vec![dead.veth.clone()]);
    assert_eq!(done.netns, vec![e.cfg.netns_path("stk-dead")]);
    assert!(e.cfg.netns_path("stk-elsewhere").exists());
    assert_eq!(done.claims.len(), 1);
    let links = host.links.lock().unwrap().clone();
    assert!(links.contains(&live.veth) && links.contains(&"stkv-not-ours".to_string()));
    let table = host.table().unwrap();
    assert!(table.contains(&format!("sandbox_{} ", live.veth)));
    assert!(!table.contains(&format!("sandbox_{} ", dead.veth)));
    // A young claim of a missing run directory is left for its run to finish.
    let young = egress(&host, &e, "stk-young").unwrap();
    std::fs::remove_dir_all(e.fifo_root.join("stk-young")).unwrap();
    let done = reconcile_with(&host, &e.cfg, &e.fifo_root, Duration::from_secs(3600)).unwrap();
    assert!(done.claims.is_empty());
    assert!(host.links.lock().unwrap().contains(&young.veth));
}

#[test]
fn allow_entries_parse_for_egress_only_and_refuse_what_is_not_supported_yet() {
    let v = |s: &[&str]| {
        s.iter()
            .map(std::string::ToString::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        parse_allow(
            NetworkMode::Egress,
            &v(&["198.18.0.0/15", "198.18.0.0/15", "10.1.2.3"])
        )
        .unwrap()
        .len(),
        2
    );
    let cases: &[(NetworkMode, &str, &str)] = &[
        (
            NetworkMode::None,
            "198.18.0.0/15",
            "need a network mode that reaches out",
        ),
        (
            NetworkMode::Loopback,
            "198.18.0.0/15",
            "the mode is loopback",
        ),
        (
            NetworkMode::Egress,
            "example.com",
            "host names need --network allowlist",
        ),
        (
            NetworkMode::Egress,
            "198.18.0.1:80",
            "ports need --network allowlist",
        ),
        (NetworkMode::Egress, "198.18.0.1/15", "did you mean"),
    ];
    for (mode, entry, want) in cases {
        let e = parse_allow(*mode, &v(&[entry])).unwrap_err();
        assert!(e.contains(want), "{entry}: {e}");
    }
}

#[test]
fn the_spec_joins_the_namespace_file_and_nothing_else_changes() {
    let policy = crate::policy::Policy::from_toml("[network]\nmode = \"egress\"", "p.toml")
        .unwrap()
        .validate(
            Some("p.toml"),
            &Default::default(),
            &crate::policy::HostPolicyEnv,
        )
        .unwrap();
    let args = vec!["true".to_string()];
    let mut spec = crate::spec::build(
        &policy,
        &crate::host::HostFacts::hybrid_no_apparmor(),
        &crate::spec::SpecRequest {
            id: "stk-x",
            args: &args,
            terminal: false,
        },
    )
    .unwrap()
    .spec;
    let before = spec.clone();
    join_netns(&mut spec, Path::new("/run/stockade/netns/stk-x"));
    let ns = spec.linux().as_ref().unwrap().namespaces().clone().unwrap();
    let net: Vec<_> = ns
        .iter()
        .filter(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
        .collect();
    assert_eq!(net.len(), 1);
    assert_eq!(
        net[0].path().as_deref(),
        Some(Path::new("/run/stockade/netns/stk-x"))
    );
    assert_eq!(
        ns.len(),
        before
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .as_ref()
            .unwrap()
            .len()
    );
}

fn member(host: &FakeHost, e: &Env, id: &str, g: &str) -> Result<Attached, NetworkError> {
    setup(
        host,
        &e.cfg,
        id,
        &run_dir(e, id),
        NetworkMode::Group,
        &NetworkRules {
            group: Some(g.into()),
            ..Default::default()
        },
    )
}

#[test]
fn group_members_share_a_hosts_file_and_a_forward_rule_while_they_live() {
    let e = env();
    let host = FakeHost::default();
    // No such group: refused before anything is claimed or made.
    let err = member(&host, &e, "stk-x", "team").unwrap_err().to_string();
    assert!(err.contains("network team: no such network"), "{err}");
    assert!(host.calls.lock().unwrap().is_empty());
    assert!(slots::claims(&e.cfg.claims).is_empty());

    group::create(&e.cfg.groups, "team").unwrap();
    // A session name links to its id: the member is known by both.
    std::fs::create_dir_all(e.fifo_root.join("names")).unwrap();
    std::os::unix::fs::symlink("stk-b", e.fifo_root.join("names/web")).unwrap();
    let a = member(&host, &e, "stk-a", "team").unwrap();
    let hosts = group::hosts_path(&e.cfg.groups, "team");
    assert_eq!(
        std::fs::read_to_string(&hosts).unwrap(),
        format!("127.0.0.1\tlocalhost\n{}\tstk-a\n", a.address)
    );
    // The later member is added to the file the earlier one already has mounted.
    let b = member(&host, &e, "stk-b", "team").unwrap();
    let text = std::fs::read_to_string(&hosts).unwrap();
    assert!(text.contains(&format!("{}\tstk-a\n", a.address)), "{text}");
    assert!(
        text.contains(&format!("{}\tstk-b web\n", b.address)),
        "{text}"
    );
    let table = host.table().unwrap();
    let accept = table
        .lines()
        .find(|l| l.contains("ip daddr {") && l.ends_with("accept"))
        .unwrap_or_else(|| panic!("no member rule: {table}"));
    assert!(
        accept.contains(&a.address.to_string()) && accept.contains(&b.address.to_string()),
        "{accept}"
    );
    assert!(table.contains(" jump from_sandbox"), "{table}");
    let rec = read_record(&e.fifo_root.join("stk-a")).unwrap().unwrap();
    assert_eq!(rec.hosts.as_deref(), Some(hosts.as_path()));
    assert_eq!(rec.group.as_deref(), Some("team"));

    // While members live the group cannot go.
    let live = live_records(&e.cfg.claims);
    assert!(group::remove(&e.cfg.groups, "team", &live)
        .unwrap_err()
        .to_string()
        .contains("has active endpoints"));
    release_with(&host, &e.fifo_root.join("stk-b")).unwrap();
    let text = std::fs::read_to_string(&hosts).unwrap();
    assert!(!text.contains("stk-b"), "{text}");
    release_with(&host, &e.fifo_root.join("stk-a")).unwrap();
    assert_eq!(
        std::fs::read_to_string(&hosts).unwrap(),
        "127.0.0.1\tlocalhost\n"
    );
    assert!(host.table().unwrap().contains("delete table"));
    group::remove(&e.cfg.groups, "team", &live_records(&e.cfg.claims)).unwrap();
}

#[test]
fn a_claim_whose_record_cannot_be_read_keeps_the_table_closed_not_removed() {
    let e = env();
    let host = FakeHost::default();
    let a = egress(&host, &e, "stk-a").unwrap();
    // The record becomes unreadable (damaged, or another version's): the sandbox's chain
    // cannot be rendered, but its veth must not be left with no table at all.
    let dir = e.fifo_root.join("stk-a");
    std::fs::write(dir.join(RECORD_FILE), b"{\"mode\": \"warp\"}").unwrap();
    apply_table(&host, &e.cfg.claims, &e.cfg.range).unwrap();
    let table = host.table().unwrap();
    assert!(table.contains("table inet stockade {"), "{table}");
    assert!(
        !table.contains(&format!("jump sandbox_{}", a.veth)),
        "{table}"
    );
    assert!(table.contains("iifname \"stkv*\" drop"), "{table}");
    // With no claim left at all the table goes.
    std::fs::remove_dir_all(&dir).unwrap();
    for (slot, _) in slots::claims(&e.cfg.claims) {
        std::fs::remove_file(e.cfg.claims.join(slot.to_string())).unwrap();
    }
    apply_table(&host, &e.cfg.claims, &e.cfg.range).unwrap();
    assert_eq!(
        host.table().unwrap(),
        "table inet stockade\ndelete table inet stockade\n"
    );
}
