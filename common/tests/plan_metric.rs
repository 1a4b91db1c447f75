//! The `metric` check in plans: parsing, templates and errors.

use convoy_common::metric::MetricFormat;
use convoy_common::model::{InventoryHost, MetricSource, StepKind, Threshold};
use convoy_common::plan::{expand, parse_plan};

fn plan(check: &str) -> String {
    format!(
        "name: p\nversion: \"1\"\ngroups:\n  - name: g\n    select: {{ role: mq }}\n    steps:\n      - exec: {{ command: \"true\" }}\n    checks:\n{check}"
    )
}

fn inventory() -> Vec<InventoryHost> {
    vec![InventoryHost {
        id: "mq-1".into(),
        labels: [("role".to_string(), "mq".to_string()), ("port".to_string(), "15692".to_string())].into(),
        installed: Default::default(),
        facts: Default::default(),
    }]
}

#[test]
fn metric_checks_parse_with_templates_and_policies() {
    let src = plan(
        "      - name: backlog\n        metric:\n          url: \"http://127.0.0.1:{{label.port}}/metrics\"\n          prometheus: rabbitmq_queue_messages\n          labels: { vhost: canopsis }\n          below: 1000\n        retries: 60\n        interval: 5s\n        deadline: 10m\n",
    );
    let spec = expand(&parse_plan("p.yaml", &src).unwrap(), &inventory()).unwrap();
    let check = spec.hosts[0].steps.last().unwrap();
    assert_eq!(check.name, "backlog");
    let StepKind::MetricCheck(m) = &check.kind else { panic!("{check:?}") };
    assert_eq!(m.source, MetricSource::Http { url: "http://127.0.0.1:15692/metrics".into() });
    assert_eq!(
        m.format,
        MetricFormat::Prometheus {
            name: "rabbitmq_queue_messages".into(),
            labels: [("vhost".into(), "canopsis".into())].into()
        }
    );
    assert_eq!(m.below, Some(Threshold(1000.0)));
    assert_eq!(m.policy.retries, 60);
    assert_eq!(check.kind.kind_name(), "metric");
}

#[test]
fn metric_check_errors_name_line_and_field() {
    let cases = [
        ("      - metric: { prometheus: q, below: 1 }\n", "groups[0].checks[0].metric", "needs a 'url' or a 'command'"),
        (
            "      - metric: { url: \"http://x/\", prometheus: q }\n",
            "groups[0].checks[0].metric",
            "'below' and/or 'above'",
        ),
        (
            "      - metric: { url: \"http://x/\", json: a.b, prometheus: q, below: 1 }\n",
            "groups[0].checks[0].metric.json",
            "either 'prometheus' or 'json'",
        ),
        (
            "      - metric: { url: \"http://x/\", below: 1, above: 5 }\n",
            "groups[0].checks[0].metric.above",
            "no value is above 5 and below 1",
        ),
        (
            "      - metric: { url: \"http://x/\", labels: { a: b }, below: 1 }\n",
            "groups[0].checks[0].metric.labels",
            "add 'prometheus: NAME'",
        ),
    ];
    for (check, field, message) in cases {
        let e = parse_plan("p.yaml", &plan(check)).expect_err(check);
        assert_eq!(e.field, field, "{e}");
        assert!(e.message.contains(message), "{e}");
        assert_eq!(e.line, Some(9), "{e}");
    }
}

#[test]
fn http_checks_can_require_a_json_field() {
    let src = plan(
        "      - http:\n          url: \"http://127.0.0.1:{{label.port}}/status\"\n          json: { path: components.db, equals: \"{{version}}\" }\n",
    );
    let spec = expand(&parse_plan("p.yaml", &src).unwrap(), &inventory()).unwrap();
    let StepKind::HttpCheck(h) = &spec.hosts[0].steps.last().unwrap().kind else { panic!() };
    let j = h.json.as_ref().expect("json expectation");
    assert_eq!((j.path.as_str(), j.equals.as_str()), ("components.db", "1"));
    let e = parse_plan("p.yaml", &plan("      - http: { url: \"http://x/\", json: { path: a.b } }\n")).unwrap_err();
    assert_eq!(e.field, "groups[0].checks[0].http.json.equals", "{e}");
}
