//! Multi-hop path computation over release catalogs: the Canopsis example
//! (3.38.0 -> 3.39.0 -> 3.39.1 -> 3.40.0 with edition-specific steps), skips,
//! conditions, missing paths, downgrades and version ordering.

use std::collections::BTreeMap;

use convoy_common::catalog::{Catalog, Direction, Hop, HostContext, NoPath, Phase, parse_catalog, path, path_for_host};
use convoy_common::model::InventoryHost;
use convoy_common::plan::parse_plan;
use convoy_common::version::Version;

const CANOPSIS: &str = include_str!("../../examples/catalogs/canopsis.yaml");

fn v(s: &str) -> Version {
    s.parse().unwrap_or_else(|e| panic!("{e}"))
}

fn catalog(src: &str) -> Catalog {
    parse_catalog("catalog.yaml", src).unwrap_or_else(|e| panic!("{e}"))
}

fn canopsis() -> Catalog {
    parse_catalog("canopsis.yaml", CANOPSIS).unwrap_or_else(|e| panic!("{e}"))
}

fn host(id: &str, labels: &[(&str, &str)], installed: &[(&str, &str)]) -> InventoryHost {
    let map = |kv: &[(&str, &str)]| kv.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    InventoryHost { id: id.to_string(), labels: map(labels), installed: map(installed), facts: Default::default() }
}

/// `from->to` of every hop.
fn shape(hops: &[Hop]) -> Vec<String> {
    hops.iter().map(|h| format!("{}->{}", h.from, h.to)).collect()
}

/// The qualified names of every step of a path, in order.
fn names(hops: &[Hop]) -> Vec<String> {
    hops.iter().flat_map(|h| h.steps().map(|s| h.qualified_name(s))).collect()
}

fn host_path(c: &Catalog, h: &InventoryHost, to: &str) -> Vec<Hop> {
    path_for_host(c, &HostContext::from_inventory(h), &v(to)).unwrap_or_else(|e| panic!("{e}"))
}

fn host_err(c: &Catalog, h: &InventoryHost, to: &str) -> String {
    match path_for_host(c, &HostContext::from_inventory(h), &v(to)) {
        Ok(hops) => panic!("expected no path, got {:?}", shape(&hops)),
        Err(e) => e.to_string(),
    }
}

#[test]
fn canopsis_goes_through_every_intermediate_release_in_order() {
    let c = canopsis();
    assert_eq!((c.product.as_str(), c.component.as_str()), ("canopsis", "canopsis"));
    let hops = path(&c, &v("3.38.0"), &v("3.40.0")).unwrap();
    assert_eq!(shape(&hops), ["3.38.0->3.39.0", "3.39.0->3.39.1", "3.39.1->3.40.0"]);
    assert!(hops.iter().all(|h| h.direction == Direction::Upgrade && h.skipped.is_empty()));
    // Each hop runs its phases in order: pre, upgrade, migrate, post, checks.
    let phases: Vec<Phase> = hops[0].phases.iter().map(|(p, _)| *p).collect();
    assert_eq!(phases, [Phase::Pre, Phase::Upgrade, Phase::Migrate, Phase::Post, Phase::Checks]);
    let phases: Vec<Phase> = hops[1].phases.iter().map(|(p, _)| *p).collect();
    assert_eq!(phases, [Phase::Upgrade, Phase::Migrate, Phase::Post, Phase::Checks]);
    assert!(hops[2].phases[4].0.is_check() && !hops[2].phases[3].0.is_check());
}

#[test]
fn community_and_pro_hosts_get_their_edition_steps() {
    let c = canopsis();
    let community = host("app-1", &[("edition", "community")], &[("canopsis", "3.38.0")]);
    let pro = host("app-2", &[("edition", "pro")], &[("canopsis", "3.38.0"), ("canopsis-remediation", "1.0")]);
    let got = names(&host_path(&c, &community, "3.40.0"));
    assert_eq!(
        got,
        [
            "3.39.0/review-canopsis-toml",
            "3.39.0/package-update",
            "3.39.0/reconfigure-community",
            "3.39.0/restart-engines-community",
            "3.39.0/engines-up",
            "3.39.1/package-update",
            "3.39.1/reconfigure-community",
            "3.39.1/restart-engines-community",
            "3.39.1/engines-up",
            "3.40.0/package-update",
            "3.40.0/reconfigure-community",
            "3.40.0/daemon-reload",
            "3.40.0/restart-engines-community",
            "3.40.0/engines-up",
        ]
    );
    let got = names(&host_path(&c, &pro, "3.40.0"));
    assert_eq!(
        got,
        [
            "3.39.0/review-canopsis-toml",
            "3.39.0/package-update",
            "3.39.0/reconfigure-pro",
            "3.39.0/restart-engines-pro",
            "3.39.0/engines-up",
            "3.39.1/package-update",
            "3.39.1/reconfigure-pro",
            "3.39.1/migrate-remediation",
            "3.39.1/restart-engines-pro",
            "3.39.1/engines-up",
            "3.40.0/move-webhook-setting",
            "3.40.0/package-update",
            "3.40.0/reconfigure-pro",
            "3.40.0/daemon-reload",
            "3.40.0/restart-engines-pro",
            "3.40.0/engines-up",
        ]
    );
    // A host with no edition label gets neither edition's steps, but still
    // passes through every release.
    let bare = host("app-3", &[], &[("canopsis", "3.38.0")]);
    let hops = host_path(&c, &bare, "3.40.0");
    assert_eq!(hops.len(), 3);
    assert!(names(&hops).iter().all(|n| !n.contains("community") && !n.contains("-pro")), "{:?}", names(&hops));
}

#[test]
fn version_template_is_the_release_of_the_hop() {
    let c = canopsis();
    let h = host("app-1", &[("edition", "pro")], &[("canopsis", "3.39.0")]);
    let hops = host_path(&c, &h, "3.40.0");
    for hop in &hops {
        let update = hop.steps().find(|s| s.name == "package-update").unwrap();
        let text = serde_norway::to_string(&update.raw).unwrap();
        assert!(text.contains(&format!("-> {}", hop.to)), "{text}");
        assert!(!text.contains("{{version}}"), "{text}");
        // Host templates are left for plan expansion.
        assert!(text.contains("{{label.service_root}}"), "{text}");
        // `when` is not part of the raw step handed to the plan parser.
        let reconf = hop.steps().find(|s| s.name == "reconfigure-pro").unwrap();
        assert!(reconf.raw.get("when").is_none());
        assert_eq!(reconf.when.len(), 1);
    }
}

#[test]
fn every_catalog_step_is_a_valid_plan_step_or_check() {
    // The raw steps are meant for the plan's own step grammar: put them in a
    // plan and let parse_plan judge them (names qualified to stay unique).
    let c = canopsis();
    let hops = path(&c, &v("3.38.0"), &v("3.40.0")).unwrap();
    let mut steps = Vec::new();
    let mut checks = Vec::new();
    for hop in &hops {
        for (phase, list) in &hop.phases {
            for s in list {
                let mut raw = s.raw.clone();
                raw.as_mapping_mut().unwrap().insert("name".into(), hop.qualified_name(s).into());
                if phase.is_check() { checks.push(raw) } else { steps.push(raw) }
            }
        }
    }
    assert_eq!(steps.len() + checks.len(), hops.iter().map(|h| h.steps().count()).sum::<usize>());
    let group = serde_norway::to_string(&serde_norway::Value::Sequence(vec![{
        let mut g = serde_norway::Mapping::new();
        g.insert("name".into(), "canopsis".into());
        g.insert("select".into(), serde_norway::to_value(BTreeMap::from([("role", "canopsis")])).unwrap());
        g.insert("steps".into(), serde_norway::Value::Sequence(steps));
        g.insert("checks".into(), serde_norway::Value::Sequence(checks));
        serde_norway::Value::Mapping(g)
    }]))
    .unwrap();
    let indented: String = group.lines().map(|l| format!("  {l}\n")).collect();
    let plan = format!("name: canopsis\nversion: \"3.40.0\"\ncomponent: canopsis\ngroups:\n{indented}");
    parse_plan("plan.yaml", &plan).unwrap_or_else(|e| panic!("{e}\n{plan}"));
}

#[test]
fn hosts_start_from_different_versions() {
    let c = canopsis();
    let at = |ver: &str| host("h", &[("edition", "community")], &[("canopsis", ver)]);
    assert_eq!(shape(&host_path(&c, &at("3.39.0"), "3.40.0")), ["3.39.0->3.39.1", "3.39.1->3.40.0"]);
    assert_eq!(shape(&host_path(&c, &at("3.39.1"), "3.40.0")), ["3.39.1->3.40.0"]);
    assert!(host_path(&c, &at("3.40.0"), "3.40.0").is_empty());
    // Equal by ordering is equal: 3.40.00 is 3.40.0.
    assert!(host_path(&c, &at("3.40.00"), "3.40.0").is_empty());
    // A version between two releases (a hotfix build) starts at the next one.
    assert_eq!(shape(&host_path(&c, &at("3.39.0+hotfix1"), "3.40.0")), ["3.39.0+hotfix1->3.39.1", "3.39.1->3.40.0"]);
    // A target in the middle stops there.
    assert_eq!(shape(&host_path(&c, &at("3.38.0"), "3.39.1")), ["3.38.0->3.39.0", "3.39.0->3.39.1"]);
}

const SKIPS: &str = "\
product: demo
component: demo
releases:
  - version: 1.0.0
  - version: 1.0.1
    skippable: true
    steps:
      upgrade: [{ name: install, exec: { command: install, args: ['{{version}}'] } }]
  - version: 1.0.2
    skippable: true
  - version: 1.1.0
    steps:
      upgrade: [{ name: install, exec: { command: install, args: ['{{version}}'] } }]
  - version: 1.1.1
    skippable: true
";

#[test]
fn skippable_releases_are_jumped_over_unless_they_are_the_target() {
    let c = catalog(SKIPS);
    let hops = path(&c, &v("1.0.0"), &v("1.1.0")).unwrap();
    assert_eq!(shape(&hops), ["1.0.0->1.1.0"]);
    assert_eq!(hops[0].skipped, [v("1.0.1"), v("1.0.2")]);
    // Only the landing release's steps run.
    assert_eq!(names(&hops), ["1.1.0/install"]);
    // A skippable target is visited, with its steps.
    let hops = path(&c, &v("1.0.0"), &v("1.0.1")).unwrap();
    assert_eq!(shape(&hops), ["1.0.0->1.0.1"]);
    assert_eq!(names(&hops), ["1.0.1/install"]);
    let hops = path(&c, &v("1.0.0"), &v("1.1.1")).unwrap();
    assert_eq!(shape(&hops), ["1.0.0->1.1.0", "1.1.0->1.1.1"]);
    assert!(hops[1].phases.is_empty());
}

#[test]
fn skippable_by_default_stops_only_at_required_releases() {
    let c = catalog(
        "\
product: demo
component: demo
skippable_by_default: true
releases:
  - version: '1.0'
  - version: '1.1'
  - version: '1.2'
    required: true
  - version: '1.3'
  - version: '1.4'
    skippable: false
  - version: '1.5'
",
    );
    assert_eq!(shape(&path(&c, &v("1.0"), &v("1.5")).unwrap()), ["1.0->1.2", "1.2->1.4", "1.4->1.5"]);
    assert_eq!(shape(&path(&c, &v("1.2"), &v("1.3")).unwrap()), ["1.2->1.3"]);
}

#[test]
fn steps_conditioned_on_installed_modules_and_facts() {
    let c = catalog(
        "\
product: monq
component: monq
releases:
  - version: 6.0.0
  - version: 6.1.0
    when: { role: app }
    steps:
      upgrade:
        - { name: core, exec: { command: up } }
        - { name: sm, when: { installed: sm-module }, exec: { command: up-sm } }
        - { name: both, when: { installed: [sm-module, pl-module] }, exec: { command: up-both } }
        - { name: el8, when: { facts: { os: [rhel8, rocky8] } }, exec: { command: up-el8 } }
        - { name: long, when: { labels: { tier: gold }, installed: [pl-module] }, exec: { command: x } }
",
    );
    let to = v("6.1.0");
    let run = |labels: &[(&str, &str)], installed: &[(&str, &str)], facts: &[(&str, &str)]| {
        let h = host("m-1", labels, installed);
        let facts: BTreeMap<String, String> = facts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let ctx = HostContext { facts: &facts, ..HostContext::from_inventory(&h) };
        let hops = path_for_host(&c, &ctx, &to).unwrap();
        hops.iter().flat_map(|h| h.steps().map(|s| s.name.clone())).collect::<Vec<_>>()
    };
    assert_eq!(run(&[("role", "app")], &[("monq", "6.0.0")], &[]), ["core"]);
    assert_eq!(run(&[("role", "app")], &[("monq", "6.0.0"), ("sm-module", "1")], &[]), ["core", "sm"]);
    assert_eq!(
        run(&[("role", "app"), ("tier", "gold")], &[("monq", "6.0.0"), ("sm-module", "1"), ("pl-module", "2")], &[]),
        ["core", "sm", "both", "long"]
    );
    assert_eq!(run(&[("role", "app")], &[("monq", "6.0.0")], &[("os", "rocky8")]), ["core", "el8"]);
    assert_eq!(run(&[("role", "app")], &[("monq", "6.0.0")], &[("os", "debian12")]), ["core"]);
    // The release's own `when` applies to all its steps; the hop remains.
    let h = host("m-2", &[("role", "db")], &[("monq", "6.0.0"), ("sm-module", "1")]);
    let hops = host_path(&c, &h, "6.1.0");
    assert_eq!(shape(&hops), ["6.0.0->6.1.0"]);
    assert!(hops[0].phases.is_empty());
    // Unfiltered, the path has everything.
    assert_eq!(path(&c, &v("6.0.0"), &to).unwrap()[0].steps().count(), 5);
}

#[test]
fn no_path_errors_name_the_host_and_versions() {
    let c = canopsis();
    let at = |ver: &str| host("app-3", &[("edition", "pro")], &[("canopsis", ver)]);
    assert_eq!(
        host_err(&c, &at("3.37.0"), "3.40.0"),
        "host app-3: no path from 3.37.0 to 3.40.0: 3.37.0 is below the oldest release 3.38.0"
    );
    assert_eq!(
        host_err(&c, &at("3.38.0"), "3.41.0"),
        "host app-3: no path from 3.38.0 to 3.41.0: 3.41.0 is not a release of the catalog"
    );
    // An unknown target is refused even for a host already on it.
    assert!(host_err(&c, &at("3.39.2"), "3.39.2").contains("3.39.2 is not a release of the catalog"));
    assert_eq!(
        host_err(&c, &host("app-4", &[], &[]), "3.40.0"),
        "host app-4: no path to 3.40.0: canopsis is not installed, so the start of the path is unknown"
    );
    assert!(
        host_err(&c, &at("bogus"), "3.40.0")
            .starts_with("host app-3: no path to 3.40.0: installed canopsis: invalid version 'bogus'")
    );
    let e = path(&c, &v("3.37.0"), &v("3.40.0")).unwrap_err();
    assert_eq!((e.host.as_deref(), e.reason.clone()), (None, NoPath::BelowOldest { oldest: "3.38.0".into() }));
    assert!(e.to_string().starts_with("no path from 3.37.0 to 3.40.0: "), "{e}");
}

#[test]
fn downgrades_are_refused_unless_declared() {
    let c = canopsis();
    let e = path(&c, &v("3.40.0"), &v("3.39.1")).unwrap_err();
    assert_eq!(e.reason, NoPath::DowngradeRefused);
    assert_eq!(
        e.to_string(),
        "no path from 3.40.0 to 3.39.1: downgrades are refused: the catalog declares no downgrades"
    );

    let c = catalog(
        "\
product: p
component: p
releases:
  - version: '1.0'
  - version: '1.1'
  - version: '1.2'
  - version: '1.3'
downgrades:
  - { from: '1.3', to: '1.2', steps: { upgrade: [{ name: back, exec: { command: install, args: ['{{version}}'] } }] } }
  - { from: '1.2', to: '1.1', steps: { pre: [{ name: dump, exec: { command: dump } }] } }
  - { from: '1.3', to: '1.1', steps: { upgrade: [{ name: back, exec: { command: install } }] } }
",
    );
    // Fewest edges: the direct 1.3 -> 1.1 edge.
    let hops = path(&c, &v("1.3"), &v("1.1")).unwrap();
    assert_eq!(shape(&hops), ["1.3->1.1"]);
    assert_eq!(names(&hops), ["1.3->1.1/back"]);
    // Edge steps see `{{version}}` as the edge's target.
    let hops = path(&c, &v("1.3"), &v("1.2")).unwrap();
    assert_eq!(shape(&hops), ["1.3->1.2"]);
    assert!(serde_norway::to_string(&hops[0].steps().next().unwrap().raw).unwrap().contains("'1.2'"));
    let hops = path(&c, &v("1.2"), &v("1.1")).unwrap();
    assert_eq!((shape(&hops), hops[0].direction), (vec!["1.2->1.1".to_string()], Direction::Downgrade));
    // No chain reaches 1.0; and upgrades are unaffected by the edges.
    let e = path(&c, &v("1.3"), &v("1.0")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no path from 1.3 to 1.0: downgrades are refused: no chain of declared downgrades leads from 1.3 to 1.0 \
         (declared: 1.3 -> 1.2, 1.2 -> 1.1, 1.3 -> 1.1)"
    );
    assert_eq!(shape(&path(&c, &v("1.0"), &v("1.3")).unwrap()), ["1.0->1.1", "1.1->1.2", "1.2->1.3"]);
}

#[test]
fn downgrade_chains_go_through_several_edges() {
    let c = catalog(
        "\
product: p
component: p
releases:
  - version: '1.0'
  - version: '1.1'
  - version: '1.2'
downgrades:
  - { from: '1.2', to: '1.1' }
  - { from: '1.1', to: '1.0' }
",
    );
    let hops = path(&c, &v("1.2"), &v("1.0")).unwrap();
    assert_eq!(shape(&hops), ["1.2->1.1", "1.1->1.0"]);
    // A host between releases has no declared edge to start from.
    assert!(matches!(path(&c, &v("1.1.5"), &v("1.0")).unwrap_err().reason, NoPath::NoDowngradeChain { .. }));
}

#[test]
fn version_ordering_edge_cases() {
    // 1.10 > 1.9: listed in that order, the path goes 1.9 -> 1.10.
    let c = catalog("product: p\ncomponent: p\nreleases:\n  - version: 1.9\n  - version: 1.10\n  - version: 1.11\n");
    assert_eq!(shape(&path(&c, &v("1.9"), &v("1.11")).unwrap()), ["1.9->1.10", "1.10->1.11"]);
    let e = parse_catalog("c.yaml", "product: p\ncomponent: p\nreleases:\n  - version: 1.10\n  - version: 1.9\n")
        .unwrap_err();
    assert_eq!((e.line, e.field.as_str()), (Some(5), "releases[1].version"));
    assert!(e.message.contains("ascending order: 1.9 comes after 1.10"), "{e}");

    // Pre-releases come before their release.
    let c = catalog(
        "product: p\ncomponent: p\nreleases:\n  - version: 1.9.0\n  - version: 2.0.0-rc1\n  - version: 2.0.0-rc2\n  - version: 2.0.0\n",
    );
    assert_eq!(
        shape(&path(&c, &v("1.9.0"), &v("2.0.0")).unwrap()),
        ["1.9.0->2.0.0-rc1", "2.0.0-rc1->2.0.0-rc2", "2.0.0-rc2->2.0.0"]
    );
    assert_eq!(
        shape(&path(&c, &v("2.0.0-beta"), &v("2.0.0")).unwrap()),
        ["2.0.0-beta->2.0.0-rc1", "2.0.0-rc1->2.0.0-rc2", "2.0.0-rc2->2.0.0"]
    );
    assert!(
        parse_catalog("c.yaml", "product: p\ncomponent: p\nreleases:\n  - version: 2.0.0\n  - version: 2.0.0-rc1\n")
            .is_err()
    );

    // Debian epochs and revisions, as an apt host reports them.
    let c = catalog(
        "product: p\ncomponent: p\nreleases:\n  - version: 2.4.1-1\n  - version: 2.4.1-2\n  - version: 2.4.10-1\n  - version: '1:0.9-1'\n",
    );
    assert_eq!(
        shape(&path(&c, &v("2.4.1-1"), &v("1:0.9-1")).unwrap()),
        ["2.4.1-1->2.4.1-2", "2.4.1-2->2.4.10-1", "2.4.10-1->1:0.9-1"]
    );
    // 0:2.4.1-2 is 2.4.1-2; 2.4.1-1ubuntu1 sits between -1 and -2.
    assert_eq!(shape(&path(&c, &v("0:2.4.1-2"), &v("2.4.10-1")).unwrap()), ["0:2.4.1-2->2.4.10-1"]);
    assert_eq!(shape(&path(&c, &v("2.4.1-1ubuntu1"), &v("2.4.1-2")).unwrap()), ["2.4.1-1ubuntu1->2.4.1-2"]);
    // Going from the epoch release back to 2.4.10-1 is a downgrade.
    assert_eq!(path(&c, &v("1:0.9-1"), &v("2.4.10-1")).unwrap_err().reason, NoPath::DowngradeRefused);
    let e = parse_catalog("c.yaml", "product: p\ncomponent: p\nreleases:\n  - version: '1:0.1'\n  - version: 9.9\n")
        .unwrap_err();
    assert!(e.message.contains("9.9 comes after 1:0.1"), "{e}");
}
