//! The web dashboard in a real browser (Debian's `chromium` driven through
//! `chromedriver` by fantoccini), against an in-process cluster:
//! - a viewer signs in, sees a running rollout progress without reloading
//!   (a host's state cell changes from the live events) and sees no buttons;
//! - an operator signs in and pauses: nothing new starts, the page says
//!   paused; resume finishes the rollout; the audit page shows that pause;
//!   a rollout whose group waits for its window shows the next opening.
//!
//! Without `chromium` and `chromedriver` on the PATH the browser test prints
//! `SKIPPED` and passes, unless `CONVOY_REQUIRE_BROWSER=1` (CI sets it).
//! `CONVOY_DASHBOARD_SCREENSHOT=FILE` saves a PNG of the rollout page
//! mid-run (that is how `docs/img/dashboard.png` is made).
//!
//! The other tests need no browser: refusals over plain HTTPS (no token,
//! a viewer acting, a session post without its CSRF token) and the audit
//! page that lists them; a group waiting for its maintenance window.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use convoy_common::model::UnixMillis;
use convoy_coordinator::operators::{self, Role};
use convoy_fleet::https;
use convoy_fleet::inprocess::{Cluster, fast_runtime};
use convoy_fleet::wait::wait_until;
use fantoccini::{Client, ClientBuilder, Locator};

const PLAN: &str = r#"
name: dashboard
version: "2.0.0"
component: svc
groups:
  - name: db
    select: { tier: db }
    strategy: { max_parallel: 1, max_failures: 0 }
    steps:
      - name: migrate
        exec: { command: "true" }
  - name: web
    select: { tier: web }
    after: [db]
    strategy: { max_parallel: 1, max_failures: 0 }
    steps:
      - name: drain
        exec: { command: "true" }
      - name: install
        exec: { command: "true" }
"#;

const STEP_DELAY: Duration = Duration::from_millis(400);

fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

/// chromedriver, stopped (by its own pid) when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_chromedriver(exe: &Path, log: &Path) -> anyhow::Result<Driver> {
    // A free port: bind 0, read it, let chromedriver take it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let child = Command::new(exe)
        .arg(format!("--port={port}"))
        .arg(format!("--log-path={}", log.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let driver = Driver { child, url: format!("http://127.0.0.1:{port}") };
    // Its /status answers 200 once it listens (it keeps the connection
    // open, so only the status line is read).
    wait_until(Duration::from_secs(30), "chromedriver to answer /status", || async move {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        let req = format!("GET /status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
        tokio::io::AsyncWriteExt::write_all(&mut s, req.as_bytes()).await.ok()?;
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(Duration::from_secs(2), tokio::io::AsyncReadExt::read(&mut s, &mut buf))
            .await
            .ok()?
            .ok()?;
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200").then_some(())
    })
    .await?;
    Ok(driver)
}

async fn browser(driver: &Driver, chromium: &Path, profile: &Path) -> anyhow::Result<Client> {
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), "chrome".into());
    caps.insert("acceptInsecureCerts".into(), true.into());
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": chromium.display().to_string(),
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--ignore-certificate-errors", "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = tokio::time::timeout(
        Duration::from_secs(60),
        ClientBuilder::new(connector).capabilities(caps).connect(&driver.url),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no browser session within 60s"))??;
    Ok(client)
}

/// Load `url` and wait for the element `id` on it. A navigation that lands
/// on an error page (the browser's own, e.g. a connection refused or reset
/// while the machine is loaded) is retried until `LOAD_DEADLINE`; the error
/// then says where the browser ended up and what the page said.
async fn load(b: &Client, url: &str, id: &str) -> anyhow::Result<fantoccini::elements::Element> {
    let deadline = std::time::Instant::now() + LOAD_DEADLINE;
    loop {
        let nav = b.goto(url).await;
        let found = match &nav {
            Ok(()) => b.wait().at_most(Duration::from_secs(10)).for_element(Locator::Id(id)).await.ok(),
            Err(_) => None,
        };
        if let Some(e) = found {
            return Ok(e);
        }
        if std::time::Instant::now() > deadline {
            let at = b.current_url().await.map(|u| u.to_string()).unwrap_or_else(|e| format!("? ({e})"));
            let body = b.source().await.unwrap_or_else(|e| format!("? ({e})"));
            let body: String = body.chars().take(2000).collect();
            anyhow::bail!(
                "no #{id} on {url} within {LOAD_DEADLINE:?} (navigation: {nav:?}); the browser is at {at}, showing:\n{body}"
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

const LOAD_DEADLINE: Duration = Duration::from_secs(60);

async fn sign_in(b: &Client, base: &str, token: &str) -> anyhow::Result<()> {
    load(b, &format!("{base}/login"), "token").await?.send_keys(token).await?;
    b.find(Locator::Id("sign-in")).await?.click().await?;
    b.wait().at_most(Duration::from_secs(10)).for_element(Locator::Id("who")).await?;
    Ok(())
}

async fn text_of(b: &Client, css: &str) -> anyhow::Result<String> {
    Ok(b.find(Locator::Css(css)).await?.text().await?.trim().to_string())
}

async fn fleet() -> anyhow::Result<Cluster> {
    let mut c = Cluster::start(fast_runtime()).await?;
    c.add_fake_agent("db-1", &[("tier", "db")], STEP_DELAY)?;
    for i in 1..=8 {
        c.add_fake_agent(&format!("web-{i}"), &[("tier", "web")], STEP_DELAY)?;
    }
    c.wait_agents(9, Duration::from_secs(30)).await?;
    Ok(c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_a_browser_shows_progress_and_pauses() -> anyhow::Result<()> {
    let required = std::env::var("CONVOY_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    let (chromium, chromedriver) = match (on_path("chromium"), on_path("chromedriver")) {
        (Some(c), Some(d)) => (c, d),
        _ if required => anyhow::bail!("CONVOY_REQUIRE_BROWSER=1 but chromium or chromedriver is not on the PATH"),
        _ => {
            println!("SKIPPED: chromium and chromedriver are needed (apt-get install chromium chromium-driver)");
            return Ok(());
        }
    };
    let mut c = fleet().await?;
    let scratch = tempfile::tempdir()?;
    let driver = start_chromedriver(&chromedriver, &scratch.path().join("chromedriver.log")).await?;
    let b = browser(&driver, &chromium, &scratch.path().join("profile")).await?;
    let result = browse(&mut c, &b).await;
    let _ = b.close().await;
    drop(driver);
    c.shutdown().await;
    result
}

async fn browse(c: &mut Cluster, b: &Client) -> anyhow::Result<()> {
    let base = c.http_url.clone();
    let viewer = operators::create(&c.data_dir, "vera", Role::Viewer, UnixMillis(1), None)?;

    // A viewer: rollouts list, then the running rollout, live.
    sign_in(b, &base, &viewer).await?;
    assert_eq!(text_of(b, "#who").await?.split_whitespace().next(), Some("vera"));
    let id = c.submit(PLAN).await?;
    load(b, &format!("{base}/"), "rollouts").await?;
    let row = text_of(b, &format!("tr[data-rollout=\"{id}\"]")).await?;
    assert!(row.contains("admin"), "the list names who started it: {row}");
    load(b, &format!("{base}/rollouts/{id}"), "hosts").await?;
    assert!(b.find_all(Locator::Css("#actions")).await?.is_empty(), "a viewer sees no buttons");
    assert!(b.find_all(Locator::Css("form.action button")).await?.is_empty());
    assert_eq!(b.find_all(Locator::Css("svg.dag g.node")).await?.len(), 2, "both groups drawn");
    // Marks the page: a reload would lose it.
    b.execute("window.convoyMarker = 42; return null;", vec![]).await?;
    // A host still pending now must change state on the page by itself.
    // Its key and its cell are read in one script, from one state of the
    // page: the page may update between two calls.
    let found = b
        .execute(
            "var r = document.querySelector('#hosts tr[data-phase=\"pending\"]'); \
             return r ? [r.getAttribute('data-key'), r.querySelector('.h-state').textContent.trim()] : null;",
            vec![],
        )
        .await?;
    let (pending, shown) = match found.as_array().map(Vec::as_slice) {
        Some([key, text]) => {
            (key.as_str().unwrap_or_default().to_string(), text.as_str().unwrap_or_default().to_string())
        }
        _ => anyhow::bail!("no pending host when the page loaded: {found}"),
    };
    assert_eq!(shown, "pending", "the row of {pending} says pending in its state cell");
    let cell = format!("#hosts tr[data-key=\"{pending}\"] .h-state");
    let changed = wait_until(Duration::from_secs(60), "a host's state cell to change live", || {
        let cell = cell.clone();
        async move { text_of(b, &cell).await.ok().filter(|t| t != "pending") }
    })
    .await?;
    assert!(["running", "succeeded"].contains(&changed.as_str()), "{pending} became {changed}");
    let marker = b.execute("return window.convoyMarker || null;", vec![]).await?;
    assert_eq!(marker, serde_json::json!(42), "the page was not reloaded");
    let live = b.execute("return document.body.getAttribute('data-live-events');", vec![]).await?;
    assert!(live.as_str().and_then(|n| n.parse::<u32>().ok()).unwrap_or(0) >= 1, "{live}");

    // An operator: buttons, and pause stops new hosts.
    b.find(Locator::Css("nav button.link")).await?.click().await?;
    b.wait().at_most(Duration::from_secs(10)).for_element(Locator::Id("token")).await?;
    sign_in(b, &base, &c.operator_token).await?;
    load(b, &format!("{base}/rollouts/{id}"), "hosts").await?;
    for action in ["pause", "resume", "approve", "abort", "rollback"] {
        b.find(Locator::Id(&format!("btn-{action}"))).await?;
    }
    if let Some(path) = std::env::var_os("CONVOY_DASHBOARD_SCREENSHOT") {
        std::fs::write(path, b.screenshot().await?)?;
    }
    let op = c.operator().await?;
    let before = convoy_fleet::operator::status(&op, &id).await?;
    anyhow::ensure!(before.state == "running", "the rollout ended before the pause: {before:?}");
    b.find(Locator::Id("btn-pause")).await?.click().await?;
    b.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css("#rollout-state .s-paused")).await?;
    // Paused: in-flight hosts finish and nothing new starts. A dispatch
    // follows a finish in the same batch, so "no host in flight" while
    // hosts are pending shows the pause held.
    let settled = wait_until(Duration::from_secs(30), "in-flight hosts to finish while paused", || {
        let op = &op;
        let id = &id;
        async move {
            let s = convoy_fleet::operator::status(op, id).await.ok()?;
            s.hosts.iter().all(|h| h.state != "running" && h.state != "soaking").then_some(s)
        }
    })
    .await?;
    assert_eq!(settled.state, "paused");
    let pending = settled.hosts.iter().filter(|h| h.state == "pending").count();
    assert!(pending > 0, "hosts were left to start: {settled:?}");
    let started = distinct_hosts(c);
    // Twice a step's time later, still nothing new started.
    let later = tokio::time::Instant::now() + STEP_DELAY * 3;
    wait_until(Duration::from_secs(10), "three step times to pass", || async move {
        (tokio::time::Instant::now() >= later).then_some(())
    })
    .await?;
    assert_eq!(distinct_hosts(c), started, "a host started while paused");
    // The page shows the paused state and the pending hosts as they are.
    load(b, &format!("{base}/rollouts/{id}"), "hosts").await?;
    assert_eq!(text_of(b, "#rollout-state").await?, "paused");
    let shown = b.find_all(Locator::Css("#hosts tr[data-phase=\"pending\"]")).await?.len();
    assert_eq!(shown, pending);

    // Resume from the page; the rollout finishes.
    b.find(Locator::Id("btn-resume")).await?.click().await?;
    let done = c.wait_finished(&id, Duration::from_secs(60)).await?;
    assert_eq!(done.state, "succeeded", "{done:?}");
    load(b, &format!("{base}/agents"), "agents-summary").await?;
    assert!(text_of(b, "#agents-summary").await?.starts_with("9 of 9 connected"));

    // The audit page, from the nav: the pause taken from the page, under
    // the operator token's name.
    b.find(Locator::Css("nav a[href=\"/audit\"]")).await?.click().await?;
    b.wait().at_most(Duration::from_secs(10)).for_element(Locator::Id("audit")).await?;
    let pause = text_of(b, "#audit tr[data-action=\"pause\"][data-outcome=\"ok\"]").await?;
    assert!(pause.contains("admin") && pause.contains(&id), "{pause}");

    // A rollout whose group waits for its window: the state and the next
    // opening, in the table and the DAG.
    let (plan, next) = closed_window_plan(now_ms());
    let windowed = c.submit(&plan).await?;
    let row = "#groups tr[data-group=\"web\"]";
    let url = format!("{base}/rollouts/{windowed}");
    let state = wait_until(Duration::from_secs(90), "the windowed group to wait for its window", || {
        let url = url.clone();
        async move {
            load(b, &url, "groups").await.ok()?;
            text_of(b, &format!("{row} .g-state")).await.ok().filter(|t| t == "waiting_window")
        }
    })
    .await?;
    assert_eq!(state, "waiting_window");
    let opening = format!("next window {} UTC", convoy_common::schedule::to_utc(next).format("%Y-%m-%d %H:%M"));
    let status = text_of(b, &format!("{row} .g-window .w-status")).await?;
    assert!(status.starts_with(&opening), "expected {opening:?}, the page says {status:?}");
    assert_eq!(text_of(b, "svg.dag g[data-group=\"web\"] .g-state").await?, "waiting_window");
    Ok(())
}

fn distinct_hosts(c: &Cluster) -> usize {
    let runs = c.runs.lock().unwrap();
    runs.iter().map(|r| r.host.clone()).collect::<std::collections::BTreeSet<_>>().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_refuses_strangers_viewers_acting_and_posts_without_csrf() -> anyhow::Result<()> {
    let mut c = Cluster::start(fast_runtime()).await?;
    c.add_fake_agent("db-1", &[("tier", "db")], Duration::from_secs(5))?;
    c.add_fake_agent("web-1", &[("tier", "web")], Duration::from_secs(5))?;
    c.wait_agents(2, Duration::from_secs(30)).await?;
    let ca = std::fs::read_to_string(&c.ca_file)?;
    let id = c.submit(PLAN).await?;
    let base = c.http_url.clone();
    let viewer = operators::create(&c.data_dir, "vera", Role::Viewer, UnixMillis(1), None)?;

    // No credentials: pages send to the login form, streams answer 401.
    let page = https::request("GET", &format!("{base}/rollouts/{id}"), &ca, &[], "").await?;
    assert_eq!((page.status, page.header("location")), (303, Some("/login")), "{page:?}");
    let events = https::request("GET", &format!("{base}/rollouts/{id}/events"), &ca, &[], "").await?;
    assert_eq!(events.status, 401);
    let bad = https::request("POST", &format!("{base}/login"), &ca, &[form()], "token=wrong").await?;
    assert_eq!(bad.status, 401);
    assert!(bad.header("set-cookie").is_none());

    // A viewer's bearer token reads but cannot act.
    let vb = format!("Bearer {viewer}");
    let read = https::request("GET", &format!("{base}/rollouts/{id}"), &ca, &[("Authorization", &vb)], "").await?;
    assert_eq!(read.status, 200);
    assert!(read.body.contains("data-key=\"web-1\"") && !read.body.contains("btn-pause"));
    assert!(read.header("content-security-policy").is_some_and(|p| p.contains("frame-ancestors 'none'")));
    let act =
        https::request("POST", &format!("{base}/rollouts/{id}/pause"), &ca, &[("Authorization", &vb), form()], "")
            .await?;
    assert_eq!(act.status, 403, "{act:?}");

    // An operator's session: the cookie is HttpOnly, Secure, SameSite=Strict;
    // a post without the CSRF token is refused, with it the pause works.
    let login =
        https::request("POST", &format!("{base}/login"), &ca, &[form()], &format!("token={}", c.operator_token))
            .await?;
    assert_eq!(login.status, 303);
    let set = login.header("set-cookie").unwrap_or_default().to_string();
    for attr in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(set.contains(attr), "{set}");
    }
    let cookie = set.split(';').next().unwrap_or_default().to_string();
    let page = https::request("GET", &format!("{base}/rollouts/{id}"), &ca, &[("Cookie", &cookie)], "").await?;
    assert!(page.body.contains("btn-pause"), "an operator sees the buttons");
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .ok_or_else(|| anyhow::anyhow!("no csrf field"))?
        .to_string();
    let pause = format!("{base}/rollouts/{id}/pause");
    let no_csrf = https::request("POST", &pause, &ca, &[("Cookie", &cookie), form()], "csrf=nope").await?;
    assert_eq!(no_csrf.status, 403);
    let op = c.operator().await?;
    assert_ne!(convoy_fleet::operator::status(&op, &id).await?.state, "paused");
    let ok = https::request("POST", &pause, &ca, &[("Cookie", &cookie), form()], &format!("csrf={csrf}")).await?;
    assert_eq!((ok.status, ok.header("location")), (303, Some(format!("/rollouts/{id}").as_str())), "{ok:?}");
    assert_eq!(convoy_fleet::operator::status(&op, &id).await?.state, "paused");
    // The pause is in the audit trail like the CLI's, under the token's name.
    let trail = c.ops().await?.audit(convoy_proto::v1::AuditRequest::default()).await?.into_inner().entries;
    // (The refused posts before it are in the trail too; see `/audit` below.)
    let paused = trail
        .iter()
        .find(|e| e.action == "pause" && e.target == id && e.outcome == "ok")
        .expect("the pause is audited");
    assert_eq!((paused.who.as_str(), paused.outcome.as_str()), ("admin", "ok"), "{paused:?}");
    assert!(paused.detail.contains("dashboard") && paused.peer.starts_with("127.0.0.1"), "{paused:?}");
    // The audit page: a viewer reads the trail, newest first: the pause
    // under the operator token's name, the refusals before it (the viewer's
    // post, the post without its CSRF token) with their outcome.
    let audit = format!("{base}/audit");
    let stranger = https::request("GET", &audit, &ca, &[], "").await?;
    assert_eq!((stranger.status, stranger.header("location")), (303, Some("/login")), "{stranger:?}");
    let page = https::request("GET", &audit, &ca, &[("Authorization", &vb)], "").await?;
    assert_eq!(page.status, 200, "{page:?}");
    assert!(page.body.contains("href=\"/audit\""), "the nav links the audit page");
    let rows = audit_rows(&page.body);
    let pauses: Vec<&String> = rows.iter().filter(|r| r.starts_with("\"pause\"")).collect();
    assert_eq!(pauses.len(), 3, "{rows:#?}");
    let cell = |row: &str, class: &str| -> String {
        row.split(&format!("class=\"{class}"))
            .nth(1)
            .and_then(|r| r.split_once('>'))
            .map_or("", |(_, r)| r.split("</td>").next().unwrap_or(""))
            .to_string()
    };
    assert_eq!(
        (cell(pauses[0], "a-who"), cell(pauses[0], "a-outcome")),
        ("admin".into(), "ok".into()),
        "{:?}",
        pauses[0]
    );
    assert!(
        pauses[0].contains(&format!("href=\"/rollouts/{id}\"")) && pauses[0].contains("127.0.0.1"),
        "{}",
        pauses[0]
    );
    assert_eq!(
        (cell(pauses[1], "a-who"), cell(pauses[1], "a-outcome")),
        ("admin".into(), "refused".into()),
        "{}",
        pauses[1]
    );
    assert!(cell(pauses[1], "a-detail").contains("CSRF"), "{}", pauses[1]);
    assert_eq!(
        (cell(pauses[2], "a-who"), cell(pauses[2], "a-outcome")),
        ("vera".into(), "refused".into()),
        "{}",
        pauses[2]
    );
    assert!(rows.iter().any(|r| r.starts_with("\"submit\" data-outcome=\"ok\"")), "{rows:#?}");
    // Bounded: `limit` keeps the newest; `since` filters; a bad one is a 400.
    let one = https::request("GET", &format!("{audit}?limit=1"), &ca, &[("Authorization", &vb)], "").await?;
    assert_eq!(audit_rows(&one.body), vec![pauses[0].clone()]);
    let recent = https::request("GET", &format!("{audit}?since=1h"), &ca, &[("Authorization", &vb)], "").await?;
    assert_eq!(audit_rows(&recent.body).len(), rows.len());
    let future =
        https::request("GET", &format!("{audit}?since=2999-01-01"), &ca, &[("Authorization", &vb)], "").await?;
    assert!(audit_rows(&future.body).is_empty() && future.body.contains("No entry."), "{}", future.body);
    let bad = https::request("GET", &format!("{audit}?since=soon"), &ca, &[("Authorization", &vb)], "").await?;
    assert_eq!(bad.status, 400, "{bad:?}");

    // Abort asks for a confirmation first.
    let abort = format!("{base}/rollouts/{id}/abort");
    let ask = https::request("POST", &abort, &ca, &[("Cookie", &cookie), form()], &format!("csrf={csrf}")).await?;
    assert_eq!(ask.status, 200);
    assert!(ask.body.contains("name=\"confirmed\" value=\"yes\""));
    assert_eq!(convoy_fleet::operator::status(&op, &id).await?.state, "paused");

    let metrics = https::request("GET", &format!("{base}/metrics"), &ca, &[("Authorization", &vb)], "").await?;
    assert!(metrics.body.contains("convoy_requests_refused_total{reason=\"csrf\"} 1"), "{}", metrics.body);
    assert!(metrics.body.contains("convoy_requests_refused_total{reason=\"role\"} 1"), "{}", metrics.body);
    c.shutdown().await;
    Ok(())
}

/// The rows of the audit page's table, in page order.
fn audit_rows(body: &str) -> Vec<String> {
    let table = body.split("id=\"audit\"").nth(1).unwrap_or("");
    table.split("<tr data-action=").skip(1).map(|r| r.split("</tr>").next().unwrap_or("").to_string()).collect()
}

/// A plan whose only window opened an hour ago for one minute (UTC): the
/// group waits for tomorrow's opening, at the same minute.
fn closed_window_plan(now_ms: u64) -> (String, u64) {
    const MINUTE: u64 = 60_000;
    let opened = (now_ms - 3_600_000) / MINUTE * MINUTE;
    let start = convoy_common::schedule::to_utc(opened).format("%H:%M").to_string();
    let plan = format!(
        r#"
name: windowed
version: "3.0.0"
component: svc
windows:
  timezone: UTC
  open:
    - start: "{start}"
      duration: 1m
groups:
  - name: web
    select: {{ tier: web }}
    strategy: {{ max_parallel: 1, max_failures: 0 }}
    steps:
      - name: install
        exec: {{ command: "true" }}
        estimate: 5s
"#
    );
    (plan, opened + 86_400_000)
}

fn now_ms() -> u64 {
    u64::try_from(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis())
        .unwrap_or(u64::MAX)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_a_group_waiting_for_its_window_with_the_next_opening() -> anyhow::Result<()> {
    let mut c = Cluster::start(fast_runtime()).await?;
    c.add_fake_agent("web-1", &[("tier", "web")], STEP_DELAY)?;
    c.wait_agents(1, Duration::from_secs(30)).await?;
    let ca = std::fs::read_to_string(&c.ca_file)?;
    let (plan, next) = closed_window_plan(now_ms());
    let id = c.submit(&plan).await?;
    let viewer = operators::create(&c.data_dir, "vera", Role::Viewer, UnixMillis(1), None)?;
    let vb = format!("Bearer {viewer}");
    let url = format!("{}/rollouts/{id}", c.http_url);
    let page = wait_until(Duration::from_secs(30), "the group to show as waiting for its window", || {
        let (url, ca, vb) = (&url, &ca, &vb);
        async move {
            let p = https::request("GET", url, ca, &[("Authorization", vb)], "").await.ok()?;
            p.body.contains("s-waiting_window").then_some(p)
        }
    })
    .await?;
    let row = page.body.split("<tr data-group=\"web\">").nth(1).and_then(|r| r.split("</tr>").next()).unwrap_or("");
    assert!(row.contains("<span class=\"badge s-waiting_window\">waiting_window</span>"), "{row}");
    let opening = format!("next window {} UTC (in ", convoy_common::schedule::to_utc(next).format("%Y-%m-%d %H:%M"));
    assert!(row.contains(&opening), "expected {opening:?} in {row}");
    assert!(row.contains("for 1m (UTC)"), "the window's rule is shown: {row}");
    assert!(page.body.contains("<g class=\"node s-waiting_window\""), "the DAG node too");
    // Nothing ran: the window is closed.
    assert!(c.runs.lock().unwrap().is_empty());
    c.shutdown().await;
    Ok(())
}

fn form() -> (&'static str, &'static str) {
    ("Content-Type", "application/x-www-form-urlencoded")
}
