//! Package and service steps in plans: `apt`, `dpkg`, `rpm`, `service`, their
//! templates, their errors, and the `pkg_rollback` undo of package steps.

use std::collections::BTreeMap;
use std::time::Duration;

use convoy_common::model::{
    AptSpec, DpkgSpec, ExecSpec, InventoryHost, PkgManager, PkgRollbackSpec, RpmManager, RpmSpec, ServiceAction,
    ServiceManager, ServiceSpec, StepKind,
};
use convoy_common::plan::{PlanError, expand, parse_plan};

const SHA: &str = "ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef0123456789";

fn host(id: &str, installed: &[(&str, &str)]) -> InventoryHost {
    InventoryHost {
        id: id.to_string(),
        labels: BTreeMap::from([("role".to_string(), "db".to_string()), ("port".to_string(), "8080".to_string())]),
        installed: installed.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        facts: BTreeMap::new(),
    }
}

fn plan(steps: &str) -> String {
    format!("name: pkgs\nversion: \"2.0.0\"\ngroups:\n  - name: db\n    select: {{ role: db }}\n    steps:\n{steps}")
}

fn parse_err(steps: &str) -> PlanError {
    parse_plan("plan.yaml", &plan(steps)).expect_err("the plan should not parse")
}

#[test]
fn package_and_service_steps_expand_with_templates() {
    let text = plan(&format!(
        r#"      - apt: {{ package: demo-db, version: "{{{{version}}}}", hold: true, update: true }}
      - dpkg: {{ package: demo-api, version: "{{{{version}}}}", source: "/srv/debs/demo-api_{{{{version}}}}_all.deb", sha256: "{SHA}" }}
      - rpm: {{ package: demo-poll, version: "{{{{version}}}}-1.el9", manager: rpm, source: /srv/p.rpm, sha256: "{SHA}", allow_downgrade: true }}
      - rpm: {{ package: demo-poll, version: "{{{{version}}}}" }}
      - name: restart
        service:
          name: demo-db
          action: restart
          manager: supervised
          command: {{ command: /usr/bin/demo-db, args: ["--port", "{{{{label.port}}}}"] }}
          pidfile: /run/demo-db.pid
          log: /var/log/demo-db.log
          stop_grace: 2s
      - service: {{ name: demo-db, action: status }}
"#
    ));
    let plan = parse_plan("plan.yaml", &text).unwrap();
    let spec = expand(&plan, &[host("db-1", &[("demo-db", "1.0.0")])]).unwrap();
    let h = &spec.hosts[0];
    let names: Vec<&str> = h.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["apt-1", "dpkg-2", "rpm-3", "rpm-4", "restart", "service-6"]);
    assert_eq!(
        h.steps[0].kind,
        StepKind::Apt(AptSpec {
            package: "demo-db".into(),
            version: "2.0.0".into(),
            hold: Some(true),
            allow_downgrade: false,
            update: true
        })
    );
    assert_eq!(
        h.steps[1].kind,
        StepKind::Dpkg(DpkgSpec {
            package: "demo-api".into(),
            version: "2.0.0".into(),
            source: "/srv/debs/demo-api_2.0.0_all.deb".into(),
            sha256: SHA.to_ascii_lowercase(),
            signing: Default::default(),
        })
    );
    assert_eq!(
        h.steps[2].kind,
        StepKind::Rpm(RpmSpec {
            package: "demo-poll".into(),
            version: "2.0.0-1.el9".into(),
            manager: RpmManager::Rpm,
            source: Some("/srv/p.rpm".into()),
            sha256: Some(SHA.to_ascii_lowercase()),
            allow_downgrade: true,
        })
    );
    assert!(matches!(&h.steps[3].kind, StepKind::Rpm(r) if r.manager == RpmManager::Dnf && r.source.is_none()));
    assert_eq!(
        h.steps[4].kind,
        StepKind::Service(ServiceSpec {
            name: "demo-db".into(),
            action: ServiceAction::Restart,
            manager: ServiceManager::Supervised,
            command: Some(ExecSpec {
                command: "/usr/bin/demo-db".into(),
                args: vec!["--port".into(), "8080".into()],
                ..ExecSpec::default()
            }),
            pidfile: Some("/run/demo-db.pid".into()),
            log: Some("/var/log/demo-db.log".into()),
            stop_grace: Some(Duration::from_secs(2)),
        })
    );
    assert!(
        matches!(&h.steps[5].kind, StepKind::Service(s) if s.action == ServiceAction::Status && s.manager == ServiceManager::Auto)
    );

    // Package steps are undone by a pkg_rollback, back to what the inventory
    // reported (else the agent's record); services have no undo.
    let undo: Vec<Option<&StepKind>> = h.undo.iter().map(|u| u.as_ref().map(|s| &s.kind)).collect();
    assert_eq!(
        undo[0],
        Some(&StepKind::PkgRollback(PkgRollbackSpec {
            package: "demo-db".into(),
            manager: PkgManager::Apt,
            to_version: Some("1.0.0".into()),
        }))
    );
    assert_eq!(
        undo[1],
        Some(&StepKind::PkgRollback(PkgRollbackSpec {
            package: "demo-api".into(),
            manager: PkgManager::Dpkg,
            to_version: None,
        }))
    );
    assert!(matches!(undo[2], Some(StepKind::PkgRollback(r)) if r.manager == PkgManager::Rpm));
    assert!(matches!(undo[3], Some(StepKind::PkgRollback(r)) if r.manager == PkgManager::Dnf));
    assert_eq!(undo.get(4).copied().flatten(), None);
    assert_eq!(undo.get(5).copied().flatten(), None);
    assert_eq!(h.undo[0].as_ref().unwrap().name, "rollback-apt-1");
    let rollback: Vec<&str> = h.rollback_plan(2).iter().map(|s| s.kind.kind_name()).collect();
    assert_eq!(rollback, ["pkg_rollback", "pkg_rollback"]);
}

#[test]
fn explicit_rollback_replaces_the_package_undo() {
    let text = plan(
        r#"      - apt: { package: demo-db, version: "2.0.0" }
        rollback: { command: /usr/local/bin/restore-db }
"#,
    );
    let spec = expand(&parse_plan("plan.yaml", &text).unwrap(), &[host("db-1", &[])]).unwrap();
    assert!(
        matches!(&spec.hosts[0].undo[0].as_ref().unwrap().kind, StepKind::Exec(e) if e.command == "/usr/local/bin/restore-db")
    );
}

#[test]
fn package_step_errors_name_the_field() {
    let e = parse_err("      - apt: { version: \"2.0.0\" }\n");
    assert_eq!(e.field, "groups[0].steps[0].apt.package", "{e}");
    assert!(e.message.contains("missing"), "{e}");
    assert_eq!(e.line, Some(7), "{e}");

    let e = parse_err("      - apt: { package: demo-db, version: \"2.0.0\", hold: maybe }\n");
    assert!(e.field.contains("hold"), "{e}");

    let e = parse_err("      - apt: { package: \"-y\", version: \"2.0.0\" }\n");
    assert_eq!(e.field, "groups[0].steps[0].apt.package", "{e}");
    assert!(e.message.contains("must not start with '-'"), "{e}");

    let e = parse_err("      - apt: { package: demo-db, version: \"2.0.0\", pin: x }\n");
    assert!(e.to_string().contains("pin"), "{e}");

    let e = parse_err("      - dpkg: { package: demo-db, version: \"2.0.0\", source: /x.deb, sha256: abc }\n");
    assert_eq!(e.field, "groups[0].steps[0].dpkg.sha256", "{e}");

    let e = parse_err("      - rpm: { package: p, version: \"1\", manager: zypper }\n");
    assert_eq!(e.field, "groups[0].steps[0].rpm.manager", "{e}");
    assert!(e.message.contains("expected dnf, yum or rpm"), "{e}");

    let e = parse_err("      - rpm: { package: p, version: \"1\", manager: rpm }\n");
    assert_eq!(e.field, "groups[0].steps[0].rpm.source", "{e}");

    let e = parse_err("      - rpm: { package: p, version: \"1\", source: /p.rpm }\n");
    assert_eq!(e.field, "groups[0].steps[0].rpm.sha256", "{e}");

    let e = parse_err("      - service: { name: demo, action: reload }\n");
    assert_eq!(e.field, "groups[0].steps[0].service.action", "{e}");
    assert!(e.message.contains("start, stop, restart or status"), "{e}");

    let e = parse_err("      - service: { name: demo, action: start, manager: supervised }\n");
    assert_eq!(e.field, "groups[0].steps[0].service.command", "{e}");

    let e = parse_err("      - service: { name: demo, action: stop, stop_grace: soon }\n");
    assert_eq!(e.field, "groups[0].steps[0].service.stop_grace", "{e}");

    let e = parse_err(
        "      - apt: { package: demo-db, version: \"2.0.0\" }\n        service: { name: d, action: stop }\n",
    );
    assert!(e.message.contains("more than one kind"), "{e}");

    let e = parse_err("      - apt: { package: demo-db, version: \"{{nope}}\" }\n");
    assert!(e.message.contains("unknown template variable"), "{e}");
}

#[test]
fn templated_package_fields_are_checked_once_rendered() {
    let text = plan("      - apt: { package: \"{{label.role}} x\", version: \"2.0.0\" }\n");
    let e = expand(&parse_plan("plan.yaml", &text).unwrap(), &[host("db-1", &[])]).unwrap_err();
    assert_eq!(e.field, "groups[0].steps[0].apt.package", "{e}");
    assert!(e.message.contains("for host db-1"), "{e}");
}
