//! `require_signature: true` on a step or a group: the artifact steps it
//! covers carry the requirement to the agent; on a step that installs no
//! staged artifact it is refused naming the line and field.

use std::collections::BTreeMap;

use convoy_common::model::{InventoryHost, Signing, StepKind};
use convoy_common::plan::{expand, parse_plan};

const SHA: &str = "abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";

fn host() -> InventoryHost {
    InventoryHost {
        id: "web-1".into(),
        labels: BTreeMap::from([("role".to_string(), "web".to_string())]),
        installed: BTreeMap::new(),
        facts: BTreeMap::new(),
    }
}

fn plan(group_extra: &str, steps: &str) -> String {
    format!(
        "name: s\nversion: \"2.0.0\"\ngroups:\n  - name: web\n    select: {{ role: web }}\n{group_extra}    steps:\n{steps}"
    )
}

fn required(kind: &StepKind) -> Option<bool> {
    match kind {
        StepKind::Archive(a) => Some(a.signing.required),
        StepKind::Dpkg(d) => Some(d.signing.required),
        _ => None,
    }
}

#[test]
fn step_and_group_level() {
    let steps = format!(
        r#"      - archive: {{ component: a, version: "1", source: "artifact:a@1" }}
        require_signature: true
      - dpkg: {{ package: b, version: "1", source: /srv/b.deb, sha256: "{SHA}" }}
      - exec: {{ command: "true" }}
"#
    );
    let spec = expand(&parse_plan("p.yaml", &plan("", &steps)).unwrap(), &[host()]).unwrap();
    let got: Vec<_> = spec.hosts[0].steps.iter().map(|s| required(&s.kind)).collect();
    assert_eq!(got, [Some(true), Some(false), None]);
    // Nothing signed yet: the coordinator fills the signature in at submit time.
    match &spec.hosts[0].steps[0].kind {
        StepKind::Archive(a) => assert_eq!(a.signing, Signing { required: true, signature: None }),
        other => panic!("{other:?}"),
    }

    let spec =
        expand(&parse_plan("p.yaml", &plan("    require_signature: true\n", &steps)).unwrap(), &[host()]).unwrap();
    let got: Vec<_> = spec.hosts[0].steps.iter().map(|s| required(&s.kind)).collect();
    assert_eq!(got, [Some(true), Some(true), None]);
}

#[test]
fn refused_on_steps_without_an_artifact() {
    let steps = "      - exec: { command: \"true\" }\n        require_signature: true\n";
    let err = parse_plan("p.yaml", &plan("", steps)).unwrap_err().to_string();
    assert!(err.contains("require_signature") && err.contains("p.yaml:8"), "{err}");
    assert!(err.contains("staged artifact"), "{err}");
}

#[test]
fn unsigned_specs_serialise_as_before() {
    // Specs stored before signatures existed read back, and unsigned steps
    // write no `signing` field (the stored form is unchanged for them).
    let spec = expand(
        &parse_plan(
            "p.yaml",
            &plan("", &format!("      - dpkg: {{ package: b, version: \"1\", source: /b.deb, sha256: \"{SHA}\" }}\n")),
        )
        .unwrap(),
        &[host()],
    )
    .unwrap();
    let json = serde_json::to_string(&spec).unwrap();
    assert!(!json.contains("signing"), "{json}");
}
