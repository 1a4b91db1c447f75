//! In-process tests of the issue-13 commands: a real coordinator and fake
//! agents on 127.0.0.1:0 (`convoy_fleet::inprocess`), driven through the
//! same functions the commands call.

use std::time::Duration;

use convoy_common::audit::{AuditAction, AuditOutcome};
use convoy_common::engine::Event;
use convoy_coordinator::operators::{self, Role};
use convoy_coordinator::store::{Store, StoredEvent};
use convoy_fleet::inprocess::{Cluster, fast_runtime};
use convoy_proto::v1 as pb;

use crate::client::{Target, connect};
use crate::ops;

const PLAN: &str = r#"
name: app-upgrade
version: "2.0.0"
component: app
groups:
  - name: db
    select: { tier: db }
    strategy: { max_parallel: 1, max_failures: 0 }
    steps:
      - name: install
        archive: { component: app, version: "{{version}}", source: /x/app.tar.gz, sha256: "0000000000000000000000000000000000000000000000000000000000000000" }
      - name: up
        exec: { command: "true" }
  - name: web
    select: { tier: web }
    after: [db]
    strategy: { max_parallel: 2, max_failures: 0 }
    steps:
      - name: install
        archive: { component: app, version: "{{version}}", source: /x/app.tar.gz, sha256: "0000000000000000000000000000000000000000000000000000000000000000" }
"#;

const WAIT: Duration = Duration::from_secs(60);

async fn fleet() -> Cluster {
    let mut c = Cluster::start(fast_runtime()).await.unwrap();
    for (id, tier) in [("db-1", "db"), ("web-1", "web"), ("web-2", "web"), ("web-3", "web")] {
        c.add_fake_agent(id, &[("tier", tier)], Duration::ZERO).unwrap();
    }
    c.wait_agents(4, WAIT).await.unwrap();
    c
}

fn target(c: &Cluster, token: &str) -> Target {
    Target {
        url: c.url.clone(),
        ca_pem: std::fs::read_to_string(&c.ca_file).unwrap(),
        token: token.to_string(),
        server_name: convoy_coordinator::tls::DEFAULT_SERVER_NAME.to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_passes_a_finished_rollout_and_names_what_a_tampered_log_breaks() {
    let mut c = fleet().await;
    let id = c.submit(PLAN).await.unwrap();
    assert_eq!(c.wait_finished(&id, WAIT).await.unwrap().state, "succeeded");
    let t = target(&c, &c.operator_token);

    let mut client = ops::ops_client(&t).await.unwrap();
    let log = ops::fetch_log(&mut client, "").await.unwrap();
    assert_eq!(log.id, id, "empty names the latest");
    let v = ops::verify_log(&log).unwrap_or_else(|e| panic!("{e}"));
    assert!(v.final_checks && v.finished.as_deref() == Some("succeeded"), "{v:?}");
    assert_eq!(v.hosts, 4);
    assert_eq!(v.executions, 5, "db-1: 2 steps, web: 1 each");
    let text = ops::verified_text(&log, &v);
    assert!(text.contains("ok: the stored log keeps every invariant\n"), "{text}");
    assert!(text.contains("hosts ended: succeeded 4"), "{text}");
    ops::verify_cmd(&t, &id, crate::commands::Output::Json).await.unwrap();

    // The timeline: each host's steps in order with their outcome.
    let tl = convoy_common::timeline::build(&log.spec, &log.log);
    let db = tl.hosts.iter().find(|h| h.host == "db-1").unwrap();
    let steps: Vec<(&str, Option<&str>)> = db.runs.iter().map(|r| (r.step.as_str(), r.outcome.as_deref())).collect();
    assert_eq!(steps, [("install", Some("succeeded")), ("up", Some("succeeded"))]);
    assert!(db.runs[0].ended <= Some(db.runs[1].started), "in order");
    let web_start = tl.hosts.iter().find(|h| h.host == "web-1").unwrap().runs[0].started;
    assert!(db.ends[0].0 <= web_start, "web after db");
    let text = ops::timeline_text(&id, &tl);
    assert!(text.contains("host web-2 (group web)") && text.contains("ended succeeded"), "{text}");

    // Tamper with the stored log: db-1's install no longer reports the
    // version it installed. The coordinator still says "succeeded"; verify
    // names the host that has no version recorded.
    c.stop_coordinator().await.unwrap();
    {
        let store = convoy_coordinator::server::open_store(&c.data_dir).unwrap();
        let events = store.events(&id).unwrap();
        let (seq, forged) = events
            .iter()
            .enumerate()
            .find_map(|(i, e)| match &e.event {
                Event::StepFinished { execution_id, outcome }
                    if execution_id.entry() == "db-1" && outcome.installed.is_some() =>
                {
                    let mut outcome = outcome.clone();
                    outcome.installed = None;
                    let event = Event::StepFinished { execution_id: execution_id.clone(), outcome };
                    Some((i as u64, StoredEvent { now: e.now, event }))
                }
                _ => None,
            })
            .expect("db-1's install result");
        store.append_events(&id, seq, &[forged]).unwrap();
        store.flush().unwrap();
    }
    c.start_coordinator(fast_runtime()).await.unwrap();
    let t = target(&c, &c.operator_token);
    let mut client = ops::ops_client(&t).await.unwrap();
    let log = ops::fetch_log(&mut client, &id).await.unwrap();
    assert_eq!(log.state, "succeeded");
    let e = ops::verify_log(&log).unwrap_err();
    assert!(e.first.contains("db-1") && e.first.contains("no version of app recorded"), "{e}");
    let err = ops::verify_cmd(&t, &id, crate::commands::Output::Text).await.unwrap_err();
    assert_eq!(err.exit_code(), 3);
    assert!(err.to_string().contains("db-1"), "{err}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_hosts_are_left_out_with_their_reason_in_plan_status_and_agents() {
    let c = fleet().await;
    let t = target(&c, &c.operator_token);
    let mut opsc = ops::ops_client(&t).await.unwrap();
    let bad = opsc.hold_host(pb::HoldHostRequest { host_id: "web-2".into(), reason: " ".into() }).await.unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad}");
    ops::hold_cmd(&t, "web-2", "disk replacement, ticket 42").await.unwrap();

    let mut op = connect(&t).await.unwrap();
    let dry = pb::SubmitPlanRequest {
        file_name: "p.yaml".into(),
        plan_yaml: PLAN.into(),
        dry_run: true,
        ..Default::default()
    };
    let r = op.submit_plan(dry.clone()).await.unwrap().into_inner();
    assert_eq!(r.held.len(), 1);
    assert_eq!((r.held[0].host_id.as_str(), r.held[0].reason.as_str()), ("web-2", "disk replacement, ticket 42"));
    let summary = crate::commands::dry_run_summary(&r).unwrap();
    assert!(summary.groups.iter().all(|g| !g.hosts.contains(&"web-2".to_string())), "expanded without it");

    let id = c.submit(PLAN).await.unwrap();
    let s = c.wait_finished(&id, WAIT).await.unwrap();
    assert_eq!(s.state, "succeeded");
    assert!(!s.hosts.iter().any(|h| h.host_id == "web-2"), "web-2 was not part of it");
    assert_eq!(s.held.iter().map(|h| h.host_id.as_str()).collect::<Vec<_>>(), ["web-2"]);
    assert!(crate::render::held(&s.held, "held").contains("web-2  disk replacement, ticket 42 (held by admin)"));

    let agents = op.list_agents(pb::ListAgentsRequest {}).await.unwrap().into_inner().agents;
    let table = crate::render::agents(&agents);
    let web2 = table.lines().find(|l| l.starts_with("web-2")).unwrap();
    assert!(web2.ends_with("held: disk replacement, ticket 42 (admin)"), "{table}");
    assert!(table.lines().next().unwrap().contains("AGENT VERSION"), "{table}");

    ops::unhold_cmd(&t, "web-2").await.unwrap();
    let r = op.submit_plan(dry).await.unwrap().into_inner();
    assert!(r.held.is_empty());
    let err = ops::unhold_cmd(&t, "web-2").await.unwrap_err();
    assert!(err.to_string().contains("not held"), "{err}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_trail_lists_actions_and_refusals_by_name_in_order_across_a_restart() {
    let mut c = fleet().await;
    let admin = target(&c, &c.operator_token);
    let now = convoy_coordinator::runtime::Clock::system().now();
    let bob_token = operators::create(&c.data_dir, "bob", Role::Viewer, now, None).unwrap();
    let bob = target(&c, &bob_token);

    let id = c.submit(PLAN).await.unwrap();
    c.wait_finished(&id, WAIT).await.unwrap();
    // A viewer may not pause: refused, and recorded under bob's name.
    let mut bob_op = connect(&bob).await.unwrap();
    let refused = bob_op
        .control(pb::ControlRequest {
            rollout_id: id.clone(),
            action: pb::ControlAction::Pause as i32,
            reason: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    // A token nobody issued: refused before the call is read.
    let stranger = target(&c, "not-a-token");
    assert!(connect(&stranger).await.unwrap().list_agents(pb::ListAgentsRequest {}).await.is_err());
    crate::commands::control_out(&admin, &id, pb::ControlAction::Rollback, crate::commands::Output::Text)
        .await
        .unwrap();
    ops::hold_cmd(&admin, "web-3", "flaky disk").await.unwrap();
    crate::commands::join_token_out(&admin, 60, 1, String::new(), crate::commands::Output::Json).await.unwrap();
    // A token command on the data directory, while the coordinator runs.
    let args = <convoy_coordinator::cli::CoordinatorArgs as clap::Parser>::try_parse_from([
        "convoy-coordinator",
        "token",
        "revoke",
        "--data-dir",
        c.data_dir.to_str().unwrap(),
        "bob",
    ])
    .unwrap();
    convoy_coordinator::cli::run(args, tokio_util::sync::CancellationToken::new()).await.unwrap();

    c.stop_coordinator().await.unwrap();
    c.start_coordinator(fast_runtime()).await.unwrap();
    let admin = target(&c, &c.operator_token);
    let mut opsc = ops::ops_client(&admin).await.unwrap();
    let entries: Vec<_> = opsc
        .audit(pb::AuditRequest::default())
        .await
        .unwrap()
        .into_inner()
        .entries
        .into_iter()
        .map(|e| convoy_wire::ops::audit_entry_from_proto(e).unwrap())
        .collect();
    let got: Vec<(&str, AuditAction, AuditOutcome)> =
        entries.iter().map(|e| (e.who.as_str(), e.action, e.outcome)).collect();
    assert_eq!(
        got,
        [
            ("admin", AuditAction::Submit, AuditOutcome::Ok),
            ("bob", AuditAction::Pause, AuditOutcome::Refused),
            ("", AuditAction::Call, AuditOutcome::Refused),
            ("admin", AuditAction::Rollback, AuditOutcome::Ok),
            ("admin", AuditAction::Hold, AuditOutcome::Ok),
            ("admin", AuditAction::JoinTokenCreate, AuditOutcome::Ok),
            (convoy_coordinator::audit::local_user().as_str(), AuditAction::TokenRevoke, AuditOutcome::Ok),
        ],
        "{entries:#?}"
    );
    assert_eq!(entries[0].target, id);
    assert!(entries[1].detail.contains("operator role") && entries[1].role == "viewer", "{:?}", entries[1]);
    assert!(entries[1].peer.starts_with("127.0.0.1:"), "{:?}", entries[1]);
    assert_eq!((entries[4].target.as_str(), entries[4].detail.as_str()), ("web-3", "flaky disk"));
    assert!(entries.windows(2).all(|w| w[0].at <= w[1].at));
    let text = ops::audit_text(&entries);
    assert!(text.lines().nth(2).unwrap().contains("bob") && text.contains("refused"), "{text}");
    // --since in the future: nothing.
    let none = opsc
        .audit(pb::AuditRequest { since_unix_ms: crate::timefmt::now_ms() + 3_600_000, limit: 0 })
        .await
        .unwrap()
        .into_inner();
    assert!(none.entries.is_empty());
    c.shutdown().await;
}
