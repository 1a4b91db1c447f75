//! The file step and the checks against real files, sockets and processes.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use convoy_agent::driver::{LocalDriver, step};
use convoy_common::model::{
    CheckPolicy, ExecCheckSpec, ExecSpec, FileCheckSpec, FileSpec, HttpCheckSpec, OutputExpect, StepKind, StepOutcome,
    StepStatus, TcpCheckSpec,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn policy(retries: u32, interval_ms: u64) -> CheckPolicy {
    CheckPolicy {
        retries,
        interval: Duration::from_millis(interval_ms),
        deadline: Duration::from_secs(20),
        ..CheckPolicy::default()
    }
}

async fn run(driver: &LocalDriver, kind: StepKind) -> StepOutcome {
    driver.run_step(&step("check", Duration::from_secs(30), kind)).await
}

#[tokio::test]
async fn file_step_then_file_check() {
    let tmp = tempfile::tempdir().unwrap();
    let driver = LocalDriver::new(tmp.path());
    let path = tmp.path().join("etc/app/app.conf");
    let check = |contains: Option<&str>| {
        StepKind::FileCheck(FileCheckSpec {
            path: path.display().to_string(),
            contains: contains.map(str::to_string),
            policy: policy(1, 10),
        })
    };
    let out = run(&driver, check(None)).await;
    assert_eq!(out.status, StepStatus::Failed);
    assert!(out.message.contains("does not exist") && out.message.contains("2 attempts"), "{}", out.message);

    let out =
        run(&driver, StepKind::File(FileSpec { path: path.display().to_string(), content: "port=8080\n".into() }))
            .await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "port=8080\n");

    assert_eq!(run(&driver, check(Some("port=8080"))).await.status, StepStatus::Succeeded);
    let out = run(&driver, check(Some("port=9090"))).await;
    assert_eq!(out.status, StepStatus::Failed);
    assert!(out.message.contains("does not contain \"port=9090\""), "{}", out.message);

    // Relative paths are resolved against the install root.
    let out = run(&driver, StepKind::File(FileSpec { path: "rel/x.txt".into(), content: "r".into() })).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert_eq!(std::fs::read_to_string(tmp.path().join("rel/x.txt")).unwrap(), "r");
}

#[tokio::test]
async fn file_check_passes_once_the_file_appears() {
    let tmp = tempfile::tempdir().unwrap();
    let driver = LocalDriver::new(tmp.path());
    let path = tmp.path().join("ready");
    let p = path.clone();
    let writer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(150)).await;
        tokio::fs::write(p, "ready").await.unwrap();
    });
    let kind = StepKind::FileCheck(FileCheckSpec {
        path: path.display().to_string(),
        contains: Some("ready".into()),
        policy: policy(100, 20),
    });
    let out = run(&driver, kind).await;
    writer.await.unwrap();
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
}

#[tokio::test]
async fn tcp_check_open_and_closed_ports() {
    let driver = LocalDriver::new("/nonexistent");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = listener.local_addr().unwrap();
    let out = run(&driver, StepKind::TcpCheck(TcpCheckSpec { address: open.to_string(), policy: policy(0, 10) })).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");

    // A port that was just bound and released: nothing listens there.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let out =
        run(&driver, StepKind::TcpCheck(TcpCheckSpec { address: closed.to_string(), policy: policy(2, 10) })).await;
    assert_eq!(out.status, StepStatus::Failed);
    assert!(out.message.contains("3 attempts") && out.message.contains(&closed.to_string()), "{}", out.message);
    assert!(out.message.contains("refused"), "{}", out.message);
}

#[tokio::test]
async fn check_deadline_bounds_retries() {
    let driver = LocalDriver::new("/nonexistent");
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let policy = CheckPolicy {
        retries: 1000,
        interval: Duration::from_millis(50),
        deadline: Duration::from_millis(300),
        ..CheckPolicy::default()
    };
    let started = Instant::now();
    let out = run(&driver, StepKind::TcpCheck(TcpCheckSpec { address: closed.to_string(), policy })).await;
    assert_eq!(out.status, StepStatus::Failed);
    assert!(out.message.contains("deadline"), "{}", out.message);
    assert!(started.elapsed() < Duration::from_secs(5));

    // The step timeout binds before the check's deadline: TimedOut.
    let policy = CheckPolicy {
        retries: 1000,
        interval: Duration::from_millis(50),
        deadline: Duration::from_secs(60),
        ..CheckPolicy::default()
    };
    let kind = StepKind::TcpCheck(TcpCheckSpec { address: closed.to_string(), policy });
    let out = driver.run_step(&step("check", Duration::from_millis(300), kind)).await;
    assert_eq!(out.status, StepStatus::TimedOut, "{out:?}");
}

#[tokio::test]
async fn exec_check_retries_until_exit_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let driver = LocalDriver::new(tmp.path());
    let counter = tmp.path().join("count");
    // Fails twice, then succeeds.
    let script = format!(
        "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; echo try $n; [ $n -ge 3 ]",
        c = counter.display()
    );
    let exec = ExecSpec { command: "sh".into(), args: vec!["-c".into(), script], ..ExecSpec::default() };
    let out = run(
        &driver,
        StepKind::ExecCheck(ExecCheckSpec { exec: exec.clone(), policy: policy(5, 10), output: Default::default() }),
    )
    .await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert!(out.message.contains("3 attempts"), "{}", out.message);
    assert_eq!(out.stdout_tail, "try 3\n");

    std::fs::remove_file(&counter).unwrap();
    let out =
        run(&driver, StepKind::ExecCheck(ExecCheckSpec { exec, policy: policy(1, 10), output: Default::default() }))
            .await;
    assert_eq!(out.status, StepStatus::Failed);
    assert_eq!(out.exit_code, Some(1));
    assert!(out.message.contains("exited with code 1") && out.message.contains("2 attempts"), "{}", out.message);
}

/// A tiny HTTP server: answers the n-th request with `responses[min(n, len-1)]`.
async fn serve(responses: Vec<(u16, &'static str)>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else { return };
            let n = counter.fetch_add(1, Ordering::SeqCst);
            let (status, body) = responses[n.min(responses.len() - 1)];
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&got);
                assert!(head.starts_with("GET /health HTTP/1.1\r\n"), "{head}");
                assert!(head.contains("Connection: close"), "{head}");
                let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                let _ = sock.write_all(reply.as_bytes()).await;
                // Keep the connection open: the client must stop at Content-Length.
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    (format!("http://{addr}/health"), hits)
}

#[tokio::test]
async fn http_check_passes_on_retry() {
    let driver = LocalDriver::new("/nonexistent");
    let (url, hits) = serve(vec![(503, "starting"), (200, "{\"status\":\"ok\"}")]).await;
    let kind = StepKind::HttpCheck(HttpCheckSpec {
        url,
        expect_status: 200,
        body_contains: Some("\"ok\"".into()),
        json: None,
        policy: policy(3, 20),
    });
    let out = run(&driver, kind).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert!(out.message.contains("2 attempts"), "{}", out.message);
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn http_check_body_mismatch_and_bad_status_fail() {
    let driver = LocalDriver::new("/nonexistent");
    let (url, _) = serve(vec![(200, "degraded")]).await;
    let kind = StepKind::HttpCheck(HttpCheckSpec {
        url: url.clone(),
        expect_status: 200,
        body_contains: Some("healthy".into()),
        json: None,
        policy: policy(1, 10),
    });
    let out = run(&driver, kind).await;
    assert_eq!(out.status, StepStatus::Failed);
    assert!(out.message.contains(&format!("{url}: status 200, body \"degraded\"")), "{}", out.message);
    assert!(out.message.contains("2 attempts"), "{}", out.message);

    let (url, _) = serve(vec![(503, "down")]).await;
    let kind = StepKind::HttpCheck(HttpCheckSpec {
        url: url.clone(),
        expect_status: 200,
        body_contains: None,
        json: None,
        policy: policy(0, 10),
    });
    let out = run(&driver, kind).await;
    assert_eq!(out.status, StepStatus::Failed);
    assert!(out.message.contains(&format!("{url}: status 503, body \"down\"")), "{}", out.message);

    let kind = StepKind::HttpCheck(HttpCheckSpec {
        url: "https://127.0.0.1:1/".into(),
        expect_status: 200,
        body_contains: None,
        json: None,
        policy: policy(0, 10),
    });
    let out = run(&driver, kind).await;
    assert_eq!(out.status, StepStatus::Failed);
    assert!(out.message.contains("only http://"), "{}", out.message);
}

#[tokio::test]
async fn http_check_json_field_must_hold_the_value() {
    use convoy_common::model::JsonExpect;
    let driver = LocalDriver::new("/nonexistent");
    let (url, hits) = serve(vec![
        (200, r#"{"status":{"db":"migrating"},"version":"2.0.0"}"#),
        (200, r#"{"status":{"db":"up"},"version":"2.0.0"}"#),
    ])
    .await;
    let spec = |url: String, retries| {
        StepKind::HttpCheck(HttpCheckSpec {
            url,
            expect_status: 200,
            body_contains: None,
            json: Some(JsonExpect { path: "status.db".into(), equals: "up".into() }),
            policy: policy(retries, 10),
        })
    };
    let out = run(&driver, spec(url, 3)).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert_eq!(hits.load(Ordering::SeqCst), 2);
    let (url, _) = serve(vec![(200, r#"{"status":{"db":"migrating"}}"#)]).await;
    let out = run(&driver, spec(url, 0)).await;
    assert_eq!(out.status, StepStatus::Failed);
    assert!(out.message.contains(r#"expected status.db = "up", found "migrating""#), "{}", out.message);
    let (url, _) = serve(vec![(200, "not json")]).await;
    let out = run(&driver, spec(url, 0)).await;
    assert!(out.message.contains("not JSON"), "{}", out.message);
}

/// `min_healthy`: a check must keep passing for that long; a failed poll in
/// between restarts the clock. Paused tokio time makes the timeline exact.
#[tokio::test(start_paused = true)]
async fn min_healthy_time_restarts_after_a_failed_poll() {
    let tmp = tempfile::tempdir().unwrap();
    let driver = LocalDriver::new(tmp.path());
    let path = tmp.path().join("health");
    std::fs::write(&path, "ok").unwrap();
    let flapper = {
        let path = path.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            std::fs::write(&path, "bad").unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
            std::fs::write(&path, "ok").unwrap();
        })
    };
    let kind = StepKind::FileCheck(FileCheckSpec {
        path: path.display().to_string(),
        contains: Some("ok".into()),
        // ~5 failed polls while it is bad: within the retries.
        policy: CheckPolicy { min_healthy: Duration::from_secs(2), ..policy(50, 100) },
    });
    let start = tokio::time::Instant::now();
    let out = run(&driver, kind).await;
    let took = start.elapsed();
    flapper.await.unwrap();
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    // Healthy again from ~1.5s, so it passes at ~3.5s, not at 2s.
    assert!(took >= Duration::from_millis(3400), "passed after {took:?}");
    assert!(took < Duration::from_millis(4000), "passed after {took:?}");
    assert!(out.message.contains("healthy for"), "{}", out.message);

    // Never healthy long enough before the deadline: it fails.
    let kind = StepKind::FileCheck(FileCheckSpec {
        path: path.display().to_string(),
        contains: Some("ok".into()),
        policy: CheckPolicy { min_healthy: Duration::from_secs(5), deadline: Duration::from_secs(3), ..policy(5, 100) },
    });
    let out = run(&driver, kind).await;
    assert_eq!(out.status, StepStatus::Failed, "{out:?}");
}

/// The Canopsis gate: after consumers restart, wait until the broker's
/// backlog (summed over the queues) falls below 1,000.
#[tokio::test]
async fn metric_check_waits_for_the_backlog_to_drain() {
    use convoy_common::metric::MetricFormat;
    use convoy_common::model::{MetricCheckSpec, MetricSource, Threshold};
    let driver = LocalDriver::new("/nonexistent");
    let (url, hits) = serve(vec![
        (200, "# TYPE q gauge\nq{queue=\"a\"} 1500\nq{queue=\"b\"} 200\n"),
        (200, "q{queue=\"a\"} 900\nq{queue=\"b\"} 200\n"),
        (200, "q{queue=\"a\"} 700\nq{queue=\"b\"} 200\n"),
    ])
    .await;
    let spec = |url: String, retries| {
        StepKind::MetricCheck(MetricCheckSpec {
            source: MetricSource::Http { url },
            format: MetricFormat::Prometheus { name: "q".into(), labels: Default::default() },
            below: Some(Threshold(1000.0)),
            above: None,
            policy: policy(retries, 10),
        })
    };
    let out = run(&driver, spec(url, 5)).await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
    assert!(out.message.contains("value 900"), "{}", out.message);
    assert_eq!(hits.load(Ordering::SeqCst), 3, "1700, then 1100, then 900");

    // Never drains within the retries: fails, saying what it last saw.
    let (url, _) = serve(vec![(200, "q 5000\n")]).await;
    let out = run(&driver, spec(url, 2)).await;
    assert_eq!(out.status, StepStatus::Failed, "{out:?}");
    assert!(out.message.contains("value 5000 (wanted below 1000)"), "{}", out.message);

    // A command as the source, JSON as the format.
    let out = run(
        &driver,
        StepKind::MetricCheck(MetricCheckSpec {
            source: MetricSource::Command(ExecSpec {
                command: "echo".into(),
                args: vec![r#"{"queues":[{"messages":3}]}"#.into()],
                ..ExecSpec::default()
            }),
            format: MetricFormat::Json { path: "queues.0.messages".into() },
            below: Some(Threshold(10.0)),
            above: None,
            policy: policy(0, 10),
        }),
    )
    .await;
    assert_eq!(out.status, StepStatus::Succeeded, "{out:?}");
}

#[tokio::test]
async fn exec_check_compares_the_output() {
    let tmp = tempfile::tempdir().unwrap();
    let driver = LocalDriver::new(tmp.path());
    let check = |script: &str, output: OutputExpect| {
        let exec = ExecSpec { command: "sh".into(), args: vec!["-c".into(), script.into()], ..ExecSpec::default() };
        StepKind::ExecCheck(ExecCheckSpec { exec, policy: policy(1, 10), output })
    };
    let equals = |t: &str| OutputExpect { equals: Some(t.into()), ..OutputExpect::default() };
    let contains = |t: &str| OutputExpect { contains: Some(t.into()), ..OutputExpect::default() };
    let matches = |t: &str| OutputExpect { matches: Some(t.into()), ..OutputExpect::default() };

    // Passes: the trailing newline of `echo` does not count.
    for output in [equals("t"), contains("t"), matches("^t$"), OutputExpect::default()] {
        let out = run(&driver, check("echo t", output.clone())).await;
        assert_eq!(out.status, StepStatus::Succeeded, "{output:?}: {out:?}");
        assert!(out.message.contains("1 attempt"), "{}", out.message);
    }
    let all = OutputExpect {
        equals: Some("role=primary".into()),
        contains: Some("primary".into()),
        matches: Some(r"^role=\w+$".into()),
    };
    assert_eq!(run(&driver, check("echo role=primary", all.clone())).await.status, StepStatus::Succeeded);

    // Fails, after its retries, saying what was expected and what was seen.
    let out = run(&driver, check("echo f", equals("t"))).await;
    assert_eq!(out.status, StepStatus::Failed, "{out:?}");
    assert_eq!(out.exit_code, Some(0));
    assert!(out.message.contains("2 attempts"), "{}", out.message);
    assert!(out.message.contains(r#"expected stdout to equal "t"; stdout ends with: f"#), "{}", out.message);
    assert_eq!(out.stdout_tail, "f\n");

    let out = run(&driver, check("echo t", contains("primary"))).await;
    assert_eq!(out.status, StepStatus::Failed, "{out:?}");
    assert!(out.message.contains(r#"expected stdout to contain "primary"; stdout ends with: t"#), "{}", out.message);

    let out = run(&driver, check("echo tt", matches("^t$"))).await;
    assert_eq!(out.status, StepStatus::Failed, "{out:?}");
    assert!(out.message.contains(r#"expected stdout to match "^t$"; stdout ends with: tt"#), "{}", out.message);

    // One condition failing fails the whole check.
    let out = run(&driver, check("echo role=replica", all)).await;
    assert_eq!(out.status, StepStatus::Failed, "{out:?}");

    // The exit code still counts: the right output from a failing command fails.
    let out = run(&driver, check("echo t; exit 3", equals("t"))).await;
    assert_eq!(out.status, StepStatus::Failed, "{out:?}");
    assert!(out.message.contains("exited with code 3"), "{}", out.message);

    // What is seen is capped: a long output shows only its end.
    let out = run(&driver, check("i=0; while [ $i -lt 2000 ]; do echo line $i; i=$((i+1)); done", equals("t"))).await;
    assert_eq!(out.status, StepStatus::Failed, "{out:?}");
    let seen = out.message.split("stdout ends with: ").nth(1).unwrap();
    assert!(seen.len() < 400 && seen.starts_with("...") && seen.contains("line 1999"), "{}", out.message);
}
