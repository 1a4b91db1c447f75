//! `archive` and `dpkg` steps whose source is `artifact:NAME@VERSION` may
//! leave `sha256` to the coordinator's artifact store; other sources must
//! give it.

use std::collections::BTreeMap;

use convoy_common::artifact_ref::{ArtifactRef, artifact_steps};
use convoy_common::model::{InventoryHost, StepKind};
use convoy_common::plan::{PlanError, expand, parse_plan};

const SHA: &str = "ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789";

fn host(id: &str) -> InventoryHost {
    InventoryHost {
        id: id.to_string(),
        labels: BTreeMap::from([("role".to_string(), "web".to_string())]),
        installed: BTreeMap::new(),
        facts: BTreeMap::new(),
    }
}

fn plan(steps: &str) -> String {
    format!(
        "name: digests\nversion: \"2.0.0\"\ngroups:\n  - name: web\n    select: {{ role: web }}\n    steps:\n{steps}"
    )
}

fn parse_err(steps: &str) -> PlanError {
    parse_plan("plan.yaml", &plan(steps)).expect_err("the plan should not parse")
}

#[test]
fn artifact_sources_may_leave_the_sha256_to_the_store() {
    let text = plan(&format!(
        r#"      - archive: {{ component: demo, version: "{{{{version}}}}", source: "artifact:demo@{{{{version}}}}" }}
      - dpkg: {{ package: demo-db, version: "{{{{version}}}}", source: "artifact:demo-db@{{{{version}}}}" }}
      - archive: {{ component: other, version: "1", source: "artifact:other@1", sha256: "{SHA}" }}
      - archive: {{ component: path, version: "1", source: /srv/path.tar.gz, sha256: "{SHA}" }}
"#
    ));
    let mut spec = expand(&parse_plan("plan.yaml", &text).unwrap(), &[host("web-1")]).unwrap();
    let h = &mut spec.hosts[0];
    match (&h.steps[0].kind, &h.steps[1].kind) {
        (StepKind::Archive(a), StepKind::Dpkg(d)) => {
            assert_eq!((a.source.as_str(), a.sha256.as_str()), ("artifact:demo@2.0.0", ""));
            assert_eq!((d.source.as_str(), d.sha256.as_str()), ("artifact:demo-db@2.0.0", ""));
        }
        other => panic!("{other:?}"),
    }
    // What the coordinator fills in: the artifact steps, with what the plan gave.
    let found: Vec<(String, Result<ArtifactRef, String>, String)> =
        artifact_steps(h).into_iter().map(|s| (s.step.to_string(), s.artifact, s.sha256.clone())).collect();
    let art = |name: &str, version: &str| Ok(ArtifactRef { name: name.into(), version: version.into() });
    assert_eq!(
        found,
        [
            ("archive-1".to_string(), art("demo", "2.0.0"), String::new()),
            ("dpkg-2".to_string(), art("demo-db", "2.0.0"), String::new()),
            ("archive-3".to_string(), art("other", "1"), SHA.to_ascii_lowercase()),
        ]
    );
}

#[test]
fn other_sources_still_need_their_sha256() {
    let e = parse_err("      - archive: { component: demo, version: \"1\", source: /srv/demo.tar.gz }\n");
    assert_eq!(e.field, "groups[0].steps[0].archive.sha256", "{e}");
    assert_eq!(e.line, Some(7), "{e}");
    assert!(e.message.contains("missing required field 'sha256'") && e.message.contains("artifact:"), "{e}");

    let e = parse_err("      - dpkg: { package: demo-db, version: \"1\", source: /srv/demo.deb }\n");
    assert_eq!(e.field, "groups[0].steps[0].dpkg.sha256", "{e}");
    assert!(e.message.contains("missing required field 'sha256'"), "{e}");

    // A templated source is not known to name an artifact until rendered.
    let e = parse_err("      - archive: { component: demo, version: \"1\", source: \"{{label.src}}\" }\n");
    assert_eq!(e.field, "groups[0].steps[0].archive.sha256", "{e}");

    // A sha256 written for an artifact is still checked, and empty is not "left out".
    let e =
        parse_err("      - archive: { component: demo, version: \"1\", source: \"artifact:demo@1\", sha256: abc }\n");
    assert_eq!(e.field, "groups[0].steps[0].archive.sha256", "{e}");
    let e =
        parse_err("      - dpkg: { package: demo-db, version: \"1\", source: \"artifact:demo-db@1\", sha256: \"\" }\n");
    assert_eq!(e.field, "groups[0].steps[0].dpkg.sha256", "{e}");

    // A templated sha256 that renders empty is refused, not left to the store.
    let text = plan(
        "      - archive: { component: demo, version: \"1\", source: \"artifact:demo@1\", sha256: \"{{label.empty}}\" }\n",
    );
    let mut h = host("web-1");
    h.labels.insert("empty".into(), String::new());
    let e = expand(&parse_plan("plan.yaml", &text).unwrap(), &[h]).unwrap_err();
    assert_eq!(e.field, "groups[0].steps[0].archive.sha256", "{e}");
    assert!(e.message.contains("64 hexadecimal"), "{e}");

    // rpm sources are paths: their sha256 stays required with a source.
    let e = parse_err("      - rpm: { package: p, version: \"1\", manager: rpm, source: \"artifact:p@1\" }\n");
    assert_eq!(e.field, "groups[0].steps[0].rpm.sha256", "{e}");
}
