//! A misbehaving agent answers with results of several megabytes: the
//! coordinator caps them on receipt, and status answers stay small at any
//! fleet size.

use std::time::Duration;

use convoy_fleet::inprocess::{Cluster, fast_runtime};
use convoy_proto::v1 as pb;
use prost::Message;

const PLAN: &str = r#"
name: big
version: "2.0.0"
max_failures: "100%"
groups:
  - name: web
    select: { role: web }
    strategy: { max_parallel: "100%", max_failures: "100%" }
    steps:
      - exec: { command: echo, args: [hi] }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_megabyte_results_are_capped_and_status_stays_small() -> anyhow::Result<()> {
    // These hand-made agents send no heartbeats: with the fast runtime's
    // 600 ms liveness they would be declared lost (and their results
    // ignored) whenever encoding 8 large results takes longer on a loaded
    // machine. Liveness is not what this test is about.
    let runtime =
        convoy_coordinator::runtime::RuntimeConfig { agent_timeout: Duration::from_secs(300), ..fast_runtime() };
    let c = Cluster::start(runtime).await?;
    let mut streams = Vec::new();
    let mut senders = Vec::new();
    for i in 0..8 {
        let host = format!("web-{i}");
        let mut client =
            convoy_tests::raw_agent_client(&convoy_tests::raw_agent_config(&c, &host, &host, &c.join_token)).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        tx.send(convoy_tests::hello(&host, &[("role", "web")])).await?;
        let stream = client.session(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
        streams.push(stream);
        senders.push(tx);
    }
    c.wait_agents(8, Duration::from_secs(20)).await?;
    let id = c.submit(PLAN).await?;
    // Every "agent" answers its step with ~3.9 MB of message and output (under the 4 MB message limit).
    let big = "x".repeat(1_300_000);
    for (stream, tx) in streams.iter_mut().zip(&senders) {
        let run = loop {
            let m = tokio::time::timeout(Duration::from_secs(20), stream.message()).await??.expect("open");
            if let Some(pb::coordinator_message::Kind::RunStep(r)) = m.kind {
                break r;
            }
        };
        let result = pb::StepResult {
            execution_id: run.execution_id,
            status: pb::StepStatus::Failed as i32,
            message: big.clone(),
            stdout_tail: big.clone(),
            stderr_tail: big.clone(),
            ..Default::default()
        };
        tx.send(pb::AgentMessage { kind: Some(pb::agent_message::Kind::StepResult(result)) }).await?;
    }
    let s = c.wait_finished(&id, Duration::from_secs(30)).await?;
    assert_eq!(s.hosts.len(), 8);
    for h in &s.hosts {
        assert_eq!(h.state, "failed");
        assert!(h.message.len() <= 2048, "host message of {} bytes", h.message.len());
        assert!(h.message.contains("bytes cut"), "the cut is said");
    }
    let size = s.encoded_len();
    assert!(size < 64 * 1024, "status answer of {size} bytes");
    println!("status answer for 8 hosts with 3.9 MB results each: {size} bytes");
    // The output as received (capped, far more than the status shows) is
    // retrievable per host.
    let mut op = c.operator().await?;
    let out =
        op.host_outputs(pb::HostOutputsRequest { rollout_id: id.clone(), host_id: "web-3".into() }).await?.into_inner();
    assert_eq!(out.outputs.len(), 1, "{:?}", out.outputs.len());
    let o = &out.outputs[0];
    assert!(o.execution_id.contains("web-3"));
    assert!(o.stdout_tail.len() > 8 * 1024 && o.stdout_tail.len() <= 17 * 1024, "{}", o.stdout_tail.len());
    assert!(o.stdout_tail.starts_with("[") && o.stdout_tail.ends_with("xxxx"));
    c.shutdown().await;
    Ok(())
}
