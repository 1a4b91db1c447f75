//! `convoy example NAME`: run one of the example plans of `examples/` end to
//! end on a small local fleet, then check the end state.
//!
//! Each example reproduces one of the real upgrade procedures of
//! `shared/seeds/` and lives in `examples/NAME/`:
//!
//! - `example.yaml` describes the fleet the plans need (host ids, labels,
//!   component versions already installed, files already on the host),
//!   the archives and offline artifacts to build, the plans to apply in order
//!   (with their release catalogs) and the end state to verify;
//! - the plans themselves (`*.yaml`), and catalogs where the procedure has
//!   release notes per version;
//! - `bin/`: the product's command-line tools, simulated by small shell
//!   scripts (`kubectl`, `helm`, `monqctl`, `rabbitmqctl`…) that keep their
//!   state in files under the host's root. They are copied to `DIR/bin`,
//!   which comes first on the agents' `PATH`, so the plans call `kubectl
//!   scale …` exactly as the procedure says, and the agents run those steps
//!   with their real drivers (exec, archive, file, service, backup, checks,
//!   captures, hooks) — only the product is simulated.
//!
//! Everything stays on 127.0.0.1 under one directory (a temporary one unless
//! `--dir` is given), and what the plans started is stopped at the end.
//!
//! The runner starts a coordinator and one agent process per host (this
//! binary re-executed, as `convoy demo` does) under one directory, applies
//! each plan through the coordinator like `convoy apply` and follows it, keeps
//! every rollout's final status as JSON in `rollouts/`, then runs the end-state
//! checks and prints them as a table. Exit status 0 only if every rollout
//! ended as expected and every check passed.
//!
//! Per host, under `DIR/hosts/ID/`:
//!
//! ```text
//! root/            the host's simulated filesystem root: label `root`, env SIM_ROOT
//! root/opt/        the agent's install root (archives go to opt/COMPONENT/releases/V)
//! agent/           the agent's state (certificate, execution records)
//! ```
//!
//! and `DIR/shared/` (env `SIM_SHARED`) stands for what the hosts share
//! (a cluster's configuration store, a broadcast board). Labels every host
//! gets besides its own: `root`, `shared`, `convoy` (this binary, for
//! `__demo-service`), `artifacts` (where the built archives are) and, for
//! hosts declaring `port: true`, a free `port`. In label values, file
//! contents and checks,
//! `@ROOT@`, `@SHARED@`, `@PORT@`, `@ARTIFACTS@` and `@CONVOY@` are replaced
//! by the host's values; in plans and catalogs `@SHA256:FILE@` is replaced by
//! the sha256 of the built archive or artifact `FILE` (`NAME-VERSION`), the
//! checksum `convoy artifact add` prints, and `@UTC_TIME_IN:DURATION@` by the
//! UTC time of day (`HH:MM:SS`) that much after the plan is submitted — a
//! maintenance window's `start` that opens a few seconds into the run.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use convoy_common::engine::RolloutState;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::client::{Target, connect};
use crate::commands::{Output, dry_run_summary, follow, status_json, summary_text};
use crate::error::CliError;
use convoy_fleet::processes::{AgentSpec, LocalFleet};
use convoy_proto::v1 as pb;

#[derive(Debug, Clone, clap::Args)]
pub struct ExampleArgs {
    /// The example to run (a directory of the examples holding example.yaml).
    /// Without one, list the examples.
    pub name: Option<String>,
    /// Keep the run directory (logs, stores, simulated hosts) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
    /// Use this directory instead of a temporary one (kept afterwards).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Where the examples are (default: ./examples if it exists, else the
    /// source tree's examples/).
    #[arg(long, env = "CONVOY_EXAMPLES_DIR")]
    pub examples_dir: Option<PathBuf>,
    /// Give up on a rollout that has not ended after this long (e.g. 90s, 5m).
    #[arg(long, default_value = "5m", value_parser = parse_timeout)]
    pub rollout_timeout: Duration,
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    convoy_common::plan::parse_duration(s)
}

// ---------------------------------------------------------------------------
// example.yaml

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExampleDef {
    /// One line: what the example does.
    title: String,
    /// The seed procedure it reproduces (`shared/seeds/...`).
    seed: String,
    hosts: Vec<HostDef>,
    /// Files already in the shared directory (`@SHARED@`): path -> content.
    #[serde(default)]
    shared_files: BTreeMap<String, String>,
    /// Versioned tar.gz archives of a small service, built by the runner into
    /// `@ARTIFACTS@/COMPONENT-VERSION.tar.gz` (for `archive` steps).
    #[serde(default)]
    archives: Vec<ArchiveDef>,
    /// Folders of the example packed as tar.gz and loaded into the
    /// coordinator (`convoy artifact add`), for `source: artifact:NAME@VERSION`.
    #[serde(default)]
    artifacts: Vec<ArtifactDef>,
    /// The plans to apply, in order.
    runs: Vec<RunDef>,
    /// End-state checks after the last run.
    #[serde(default)]
    expect: Vec<ExpectDef>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostDef {
    id: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Component -> version the host already runs: `opt/COMPONENT/releases/VERSION`
    /// with `current` pointing at it, which is how the agent reads (and reports)
    /// installed versions.
    #[serde(default)]
    installed: BTreeMap<String, String>,
    /// Files already on the host: path under its root -> content.
    #[serde(default)]
    files: BTreeMap<String, String>,
    /// Give the host a free TCP port (label `port`, env SIM_PORT).
    #[serde(default)]
    port: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArchiveDef {
    component: String,
    version: String,
    /// The release starts but its /health answers 503.
    #[serde(default)]
    broken: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ArtifactDef {
    name: String,
    version: String,
    /// A folder of the example, packed as it is.
    dir: String,
}

fn succeeded() -> RolloutState {
    RolloutState::Succeeded
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunDef {
    /// The plan file, relative to the example.
    plan: String,
    /// What this run shows, printed before it.
    #[serde(default)]
    about: String,
    /// Release catalogs: NAME -> file relative to the example (`--catalog NAME=PATH`).
    #[serde(default)]
    catalogs: BTreeMap<String, String>,
    /// The state the rollout must end in.
    #[serde(default = "succeeded")]
    outcome: RolloutState,
    /// Checks right after this run.
    #[serde(default)]
    expect: Vec<ExpectDef>,
}

/// One end-state check, on one or more hosts (all when none is named): a
/// shell command run as on the host (same PATH, SIM_ROOT, SIM_SHARED as its
/// agent, in its root), an HTTP GET, or a value the last rollout captured on
/// the host; the answer (trimmed) must equal `equals` and/or contain
/// `contains`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExpectDef {
    what: String,
    #[serde(default)]
    hosts: Vec<String>,
    run: Option<String>,
    http: Option<String>,
    captured: Option<String>,
    equals: Option<String>,
    contains: Option<String>,
}

// ---------------------------------------------------------------------------

struct Host {
    id: String,
    root: PathBuf,
    port: Option<u16>,
}

struct Run<'a> {
    dir: &'a Path,
    example_dir: PathBuf,
    bin: PathBuf,
    shared: PathBuf,
    artifacts: PathBuf,
    exe: PathBuf,
    hosts: Vec<Host>,
    shas: BTreeMap<String, String>,
    /// How long one rollout may take before the example gives up.
    rollout_timeout: Duration,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CliError + '_ {
    move |source| CliError::Io { path: path.to_path_buf(), source }
}

fn fail(msg: impl Into<String>) -> CliError {
    CliError::Example(msg.into())
}

/// The examples directory: the flag, `./examples`, or the source tree's.
fn examples_dir(flag: Option<&Path>) -> PathBuf {
    if let Some(d) = flag {
        return d.to_path_buf();
    }
    let local = PathBuf::from("examples");
    if list(&local).is_ok_and(|names| !names.is_empty()) {
        return local;
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("examples")
}

fn load(dir: &Path, name: &str) -> Result<ExampleDef, CliError> {
    let path = dir.join(name).join("example.yaml");
    let text = std::fs::read_to_string(&path).map_err(io(&path))?;
    serde_norway::from_str(&text).map_err(|e| CliError::Invalid(format!("{}: {e}", path.display())))
}

/// The example names (directories holding an example.yaml), sorted.
fn list(dir: &Path) -> Result<Vec<String>, CliError> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .flatten()
        .filter(|e| e.path().join("example.yaml").exists())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    names.sort();
    Ok(names)
}

pub async fn run(args: ExampleArgs) -> Result<(), CliError> {
    let examples = examples_dir(args.examples_dir.as_deref());
    let Some(name) = args.name.clone() else {
        println!("examples in {} (run one with `convoy example NAME`):", examples.display());
        for n in list(&examples)? {
            let def = load(&examples, &n)?;
            println!("  {n:<12} {}  [{}]", def.title, def.seed);
        }
        return Ok(());
    };
    let def = match load(&examples, &name) {
        Ok(d) => d,
        Err(e) => {
            let known = list(&examples).unwrap_or_default().join(", ");
            return Err(CliError::Usage(format!("example '{name}': {e} (examples: {known})")));
        }
    };
    let tmp = match &args.dir {
        Some(_) => None,
        None => Some(
            tempfile::Builder::new()
                .prefix(&format!("convoy-example-{name}-"))
                .tempdir()
                .map_err(io(Path::new("/tmp")))?,
        ),
    };
    let dir = match (&args.dir, &tmp) {
        (Some(d), _) => {
            // Hosts keep their state in files: a second run in the same
            // directory would start from the first one's end state.
            if std::fs::read_dir(d).is_ok_and(|mut e| e.next().is_some()) {
                return Err(CliError::Usage(format!(
                    "--dir {}: not empty; give a new or empty directory",
                    d.display()
                )));
            }
            std::fs::create_dir_all(d).map_err(io(d))?;
            d.clone()
        }
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => unreachable!("a temporary directory exists when no --dir is given"),
    };
    let result = run_in(&dir, &examples.join(&name), &name, &def, args.rollout_timeout).await;
    if args.keep || args.dir.is_some() {
        if let Some(t) = tmp {
            let _ = t.keep();
        }
        println!("example directory kept: {}", dir.display());
    }
    result
}

async fn run_in(
    dir: &Path,
    example_dir: &Path,
    name: &str,
    def: &ExampleDef,
    rollout_timeout: Duration,
) -> Result<(), CliError> {
    let started = Instant::now();
    println!("== example {name}: {}", def.title);
    println!("   reproduces {} (see examples/{name}/ and the README)", def.seed);
    let exe = std::env::current_exe().map_err(io(Path::new("/proc/self/exe")))?;
    let mut run = Run {
        dir,
        example_dir: example_dir.to_path_buf(),
        bin: dir.join("bin"),
        shared: dir.join("shared"),
        artifacts: dir.join("artifacts"),
        exe,
        hosts: Vec::new(),
        shas: BTreeMap::new(),
        rollout_timeout,
    };
    for d in [&run.bin, &run.shared, &run.artifacts] {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }
    for (path, content) in &def.shared_files {
        let p = run.shared.join(path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&p, content).map_err(io(&p))?;
    }
    // The simulated product tools.
    copy_tools(&example_dir.join("bin"), &run.bin)?;

    for a in &def.archives {
        let file = format!("{}-{}", a.component, a.version);
        let sha = crate::demo::build_archive(&run.artifacts.join(format!("{file}.tar.gz")), &a.version, a.broken)?;
        run.shas.insert(file, sha);
    }
    let mut packed = Vec::new();
    for a in &def.artifacts {
        let file = format!("{}-{}", a.name, a.version);
        let out = run.artifacts.join(format!("{file}.tar.gz"));
        let sha = pack_dir(&example_dir.join(&a.dir), &out)?;
        run.shas.insert(file, sha);
        packed.push((a, out));
    }

    let mut fleet = LocalFleet::start_this_binary(dir, 300, true)?;
    let path_var = format!("{}:{}", run.bin.display(), std::env::var("PATH").unwrap_or_default());
    for h in &def.hosts {
        let host_dir = dir.join("hosts").join(&h.id);
        let root = host_dir.join("root");
        let install = root.join("opt");
        std::fs::create_dir_all(&install).map_err(io(&install))?;
        let port = if h.port { Some(convoy_fleet::net::free_port()?) } else { None };
        let host = Host { id: h.id.clone(), root: root.clone(), port };
        for (component, version) in &h.installed {
            seed_install(&install, component, version)?;
        }
        for (path, content) in &h.files {
            let p = root.join(path);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(io(parent))?;
            }
            std::fs::write(&p, run.fill(&host, content)).map_err(io(&p))?;
        }
        let mut labels: BTreeMap<String, String> =
            h.labels.iter().map(|(k, v)| (k.clone(), run.fill(&host, v))).collect();
        labels.insert("root".into(), root.display().to_string());
        labels.insert("convoy".into(), run.exe.display().to_string());
        labels.insert("artifacts".into(), run.artifacts.display().to_string());
        labels.insert("shared".into(), run.shared.display().to_string());
        if let Some(p) = port {
            labels.insert("port".into(), p.to_string());
        }
        let env = run.host_env(&host, &path_var);
        fleet.spawn_agent(AgentSpec::new(&h.id, labels).install_root(&install).env(env))?;
        run.hosts.push(host);
    }
    let result = drive(&mut run, &mut fleet, def, &packed, started).await;
    drop(fleet);
    stop_services(&run.hosts);
    result
}

/// Stop what the plans left running on the hosts: services the agents
/// supervise (`opt/.services/NAME/pid`, each the leader of its own process
/// group) and demo services started with `__demo-service restart`
/// (`opt/COMPONENT/service.pid`).
fn stop_services(hosts: &[Host]) {
    let mut pids = Vec::new();
    for h in hosts {
        let opt = h.root.join("opt");
        let dirs =
            std::fs::read_dir(opt.join(".services")).into_iter().flatten().flatten().map(|e| e.path().join("pid"));
        let demo = std::fs::read_dir(&opt).into_iter().flatten().flatten().map(|e| e.path().join("service.pid"));
        for pidfile in dirs.chain(demo) {
            let Ok(pid) = std::fs::read_to_string(&pidfile) else { continue };
            let pid = pid.trim().to_string();
            if !pid.is_empty() && pid.chars().all(|c| c.is_ascii_digit()) && Path::new("/proc").join(&pid).exists() {
                let _ = std::process::Command::new("kill").args(["--", &format!("-{pid}")]).status();
                let _ = std::process::Command::new("kill").arg(&pid).stderr(std::process::Stdio::null()).status();
                pids.push(pid);
            }
            let _ = std::fs::remove_file(&pidfile);
        }
    }
    // Wait (briefly) for them to go, so their ports are free again.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && pids.iter().any(|p| running(p)) {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` exists and is not a zombie.
fn running(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

async fn drive(
    run: &mut Run<'_>,
    fleet: &mut LocalFleet,
    def: &ExampleDef,
    packed: &[(&ArtifactDef, PathBuf)],
    started: Instant,
) -> Result<(), CliError> {
    let target = Target::from(&*fleet);
    let mut client = connect(&target).await?;
    fleet.wait_connected(def.hosts.len(), Duration::from_secs(60)).await?;
    println!(
        "   {} agents connected after {:.1}s (coordinator {}, logs in {})",
        def.hosts.len(),
        started.elapsed().as_secs_f64(),
        fleet.url,
        run.dir.join("logs").display()
    );
    for (a, file) in packed {
        println!("\n== convoy artifact add {} --name {} --version {}", rel(run, file), a.name, a.version);
        crate::artifacts::add(file, Some(a.name.clone()), Some(a.version.clone()), &target, Output::Text).await?;
    }
    let rollouts = run.dir.join("rollouts");
    std::fs::create_dir_all(&rollouts).map_err(io(&rollouts))?;
    let mut failures = Vec::new();
    let mut table = Vec::new();
    let mut last = None;
    for (n, r) in def.runs.iter().enumerate() {
        let plan_path = run.example_dir.join(&r.plan);
        let plan = run.fill_plan(&std::fs::read_to_string(&plan_path).map_err(io(&plan_path))?);
        let plan = fill_times(&plan, now_utc()).map_err(|m| fail(format!("{}: {m}", r.plan)))?;
        let mut catalogs = std::collections::HashMap::new();
        let mut flags = String::new();
        for (cname, cpath) in &r.catalogs {
            let p = run.example_dir.join(cpath);
            catalogs.insert(cname.clone(), run.fill_plan(&std::fs::read_to_string(&p).map_err(io(&p))?));
            flags.push_str(&format!(" --catalog {cname}={}", display_path(&p)));
        }
        let shown = display_path(&plan_path);
        println!("\n== [{}/{}] convoy apply {shown}{flags}", n + 1, def.runs.len());
        if !r.about.is_empty() {
            println!("   {}", r.about.trim());
        }
        let dry = client
            .submit_plan(pb::SubmitPlanRequest {
                file_name: shown.clone(),
                plan_yaml: plan.clone(),
                dry_run: true,
                catalogs: catalogs.clone(),
            })
            .await?
            .into_inner();
        print!("{}", summary_text(&dry_run_summary(&dry)?));
        let t = Instant::now();
        let created = client
            .submit_plan(pb::SubmitPlanRequest { file_name: shown.clone(), plan_yaml: plan, dry_run: false, catalogs })
            .await?
            .into_inner();
        let followed =
            match tokio::time::timeout(run.rollout_timeout, follow(&mut client, &created.rollout_id, Output::Text))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(fail(format!(
                    "rollout {} had not ended after {} (--rollout-timeout)",
                    created.rollout_id,
                    convoy_common::plan::format_duration(run.rollout_timeout)
                ))),
            };
        let status = client
            .get_rollout(pb::GetRolloutRequest { rollout_id: created.rollout_id.clone(), ..Default::default() })
            .await?
            .into_inner();
        let json_path = rollouts.join(format!("{}-{}.json", n + 1, status.plan_name));
        std::fs::write(&json_path, status_json(&status)).map_err(io(&json_path))?;
        let state: RolloutState = status.state.parse()?;
        println!(
            "   rollout {} ended {state} in {:.1}s (expected {})",
            status.rollout_id,
            t.elapsed().as_secs_f64(),
            r.outcome
        );
        if state != r.outcome {
            let why = followed.err().map(|e| format!(": {e}")).unwrap_or_default();
            failures.push(format!("{}: rollout ended {state}, expected {}{why}", r.plan, r.outcome));
            break;
        }
        check_all(run, Some(&status), &r.expect, &r.plan, &mut table, &mut failures);
        last = Some(status);
    }
    if failures.is_empty() {
        check_all(run, last.as_ref(), &def.expect, "end", &mut table, &mut failures);
    }
    println!("\n== end state, asked each host");
    print!("{}", render_checks(&table));
    let _ = std::io::stdout().flush();
    if !failures.is_empty() {
        return Err(fail(format!("not as expected:\n  {}", failures.join("\n  "))));
    }
    println!(
        "\nexample done: {} run(s), {} check(s) passed on {} hosts in {:.1}s",
        def.runs.len(),
        table.len(),
        run.hosts.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// One row of the end-state table.
struct CheckRow {
    after: String,
    what: String,
    host: String,
    found: String,
    ok: bool,
}

fn check_all(
    run: &Run<'_>,
    last: Option<&pb::RolloutStatus>,
    expect: &[ExpectDef],
    after: &str,
    table: &mut Vec<CheckRow>,
    failures: &mut Vec<String>,
) {
    for e in expect {
        let hosts: Vec<&Host> = if e.hosts.is_empty() {
            run.hosts.iter().collect()
        } else {
            e.hosts.iter().filter_map(|id| run.hosts.iter().find(|h| &h.id == id)).collect()
        };
        let unknown: Vec<&String> = e.hosts.iter().filter(|id| !run.hosts.iter().any(|h| &h.id == *id)).collect();
        if !unknown.is_empty() || hosts.is_empty() {
            failures.push(format!("check '{}': no such host {unknown:?}", e.what));
            continue;
        }
        for h in hosts {
            let found = match (&e.run, &e.http, &e.captured) {
                (Some(cmd), None, None) => run.shell(h, &run.fill(h, cmd)),
                (None, Some(url), None) => http_get(&run.fill(h, url)),
                (None, None, Some(name)) => last
                    .iter()
                    .flat_map(|s| &s.hosts)
                    .filter(|x| x.host_id == h.id)
                    .find_map(|x| x.captured.get(name).cloned())
                    .ok_or_else(|| format!("nothing captured as '{name}'")),
                _ => Err(format!("check '{}' needs exactly one of run/http/captured", e.what)),
            };
            let (found, ok) = match found {
                Ok(out) => {
                    let out = out.trim().to_string();
                    let equals = e.equals.as_ref().is_none_or(|want| out == run.fill(h, want));
                    let contains = e.contains.as_ref().is_none_or(|want| out.contains(&run.fill(h, want)));
                    (out, equals && contains)
                }
                Err(err) => (err, false),
            };
            if !ok {
                let want = match (&e.equals, &e.contains) {
                    (Some(w), _) => format!("'{w}'"),
                    (None, Some(w)) => format!("something containing '{w}'"),
                    (None, None) => "success".into(),
                };
                failures.push(format!("{} on {} (after {after}): expected {want}, found '{found}'", e.what, h.id));
            }
            table.push(CheckRow { after: after.to_string(), what: e.what.clone(), host: h.id.clone(), found, ok });
        }
    }
}

fn render_checks(rows: &[CheckRow]) -> String {
    use std::fmt::Write as _;
    let aw = rows.iter().map(|r| r.after.len()).max().unwrap_or(5).max(5);
    let ww = rows.iter().map(|r| r.what.len()).max().unwrap_or(5).max(5);
    let hw = rows.iter().map(|r| r.host.len()).max().unwrap_or(4).max(4);
    let mut out = String::new();
    let _ = writeln!(out, "  {:<aw$}  {:<ww$}  {:<hw$}  {:<4}  FOUND", "AFTER", "CHECK", "HOST", "OK");
    for r in rows {
        let found: String = r.found.replace('\n', " | ").chars().take(90).collect();
        let ok = if r.ok { "ok" } else { "FAIL" };
        let _ = writeln!(out, "  {:<aw$}  {:<ww$}  {:<hw$}  {ok:<4}  {found}", r.after, r.what, r.host);
    }
    out
}

impl Run<'_> {
    /// Replace the host placeholders of label values, files and checks.
    fn fill(&self, h: &Host, s: &str) -> String {
        s.replace("@ROOT@", &h.root.display().to_string())
            .replace("@SHARED@", &self.shared.display().to_string())
            .replace("@ARTIFACTS@", &self.artifacts.display().to_string())
            .replace("@CONVOY@", &self.exe.display().to_string())
            .replace("@PORT@", &h.port.map(|p| p.to_string()).unwrap_or_default())
    }

    /// Replace `@SHA256:FILE@` in a plan or catalog.
    fn fill_plan(&self, s: &str) -> String {
        let mut out = s.to_string();
        for (file, sha) in &self.shas {
            out = out.replace(&format!("@SHA256:{file}@"), sha);
        }
        out
    }

    fn host_env(&self, h: &Host, path_var: &str) -> Vec<(String, String)> {
        let mut env = vec![
            ("PATH".to_string(), path_var.to_string()),
            ("SIM_ROOT".to_string(), h.root.display().to_string()),
            ("SIM_SHARED".to_string(), self.shared.display().to_string()),
            ("SIM_HOST".to_string(), h.id.clone()),
        ];
        if let Some(p) = h.port {
            env.push(("SIM_PORT".to_string(), p.to_string()));
        }
        env
    }

    /// Run `cmd` with `sh -c` as the host's agent would (its PATH and SIM_*),
    /// in the host's root. Its stdout, or an error with stderr.
    fn shell(&self, h: &Host, cmd: &str) -> Result<String, String> {
        let path_var = format!("{}:{}", self.bin.display(), std::env::var("PATH").unwrap_or_default());
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .envs(self.host_env(h, &path_var))
            .current_dir(&h.root)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("sh: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "exit {}: {}{}",
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }
}

/// The wall clock as a UTC date-time.
fn now_utc() -> chrono::DateTime<chrono::Utc> {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
    convoy_common::schedule::to_utc(u64::try_from(ms).unwrap_or(u64::MAX))
}

/// Replace every `@UTC_TIME_IN:DURATION@` by the UTC time of day
/// `DURATION` (at most 1h) after `now`, as `HH:MM:SS`.
fn fill_times(s: &str, now: chrono::DateTime<chrono::Utc>) -> Result<String, String> {
    const TAG: &str = "@UTC_TIME_IN:";
    let mut out = String::new();
    let mut rest = s;
    while let Some(at) = rest.find(TAG) {
        out.push_str(&rest[..at]);
        let after = &rest[at + TAG.len()..];
        let end = after.find('@').ok_or_else(|| format!("{TAG}... without its closing @"))?;
        let d = convoy_common::plan::parse_duration(&after[..end])?;
        if d > Duration::from_secs(3600) {
            return Err(format!("{TAG}{}@: at most 1h", &after[..end]));
        }
        let t = now + chrono::TimeDelta::from_std(d).map_err(|e| e.to_string())?;
        out.push_str(&t.format("%H:%M:%S").to_string());
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn rel(run: &Run<'_>, p: &Path) -> String {
    p.strip_prefix(run.dir).map(|r| r.display().to_string()).unwrap_or_else(|_| p.display().to_string())
}

/// A path as a user would type it: relative to the current directory when below it.
fn display_path(p: &Path) -> String {
    let p = p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    match std::env::current_dir().ok().and_then(|cwd| p.strip_prefix(cwd).ok().map(Path::to_path_buf)) {
        Some(r) => r.display().to_string(),
        None => p.display().to_string(),
    }
}

/// Copy the files of `from` (if it exists) into `to`, executable, without
/// replacing files already there (the example's own tools win).
fn copy_tools(from: &Path, to: &Path) -> Result<(), CliError> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(entries) = std::fs::read_dir(from) else { return Ok(()) };
    for e in entries.flatten() {
        let src = e.path();
        if !src.is_file() {
            continue;
        }
        let dst = to.join(e.file_name());
        if dst.exists() {
            continue;
        }
        std::fs::copy(&src, &dst).map_err(io(&src))?;
        std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).map_err(io(&dst))?;
    }
    Ok(())
}

/// What the agent reads as "COMPONENT VERSION is installed": a release
/// directory and the `current` link to it, as an `archive` step leaves them.
fn seed_install(install: &Path, component: &str, version: &str) -> Result<(), CliError> {
    let base = install.join(component);
    let release = base.join("releases").join(version);
    std::fs::create_dir_all(&release).map_err(io(&release))?;
    let vfile = release.join("VERSION");
    std::fs::write(&vfile, format!("{version}\n")).map_err(io(&vfile))?;
    let current = base.join("current");
    let _ = std::fs::remove_file(&current);
    std::os::unix::fs::symlink(Path::new("releases").join(version), &current).map_err(io(&current))?;
    Ok(())
}

/// Pack a folder as a deterministic tar.gz (sorted entries, no times or
/// owners); returns its sha256.
fn pack_dir(src: &Path, out: &Path) -> Result<String, CliError> {
    fn walk(dir: &Path, prefix: &Path, files: &mut Vec<(PathBuf, PathBuf)>) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let rel = prefix.join(e.file_name());
            if e.file_type()?.is_dir() {
                walk(&e.path(), &rel, files)?;
            } else {
                files.push((e.path(), rel));
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(src, Path::new(""), &mut files).map_err(io(src))?;
    let file = std::fs::File::create(out).map_err(io(out))?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (path, rel) in files {
        let body = std::fs::read(&path).map_err(io(&path))?;
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_cksum();
        tar.append_data(&mut h, &rel, body.as_slice()).map_err(io(&path))?;
    }
    tar.into_inner().and_then(|gz| gz.finish()).map_err(io(out))?;
    let bytes = std::fs::read(out).map_err(io(out))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// A plain HTTP GET (the checks' own view, not the agent's): the body of a 200.
fn http_get(url: &str) -> Result<String, String> {
    let (status, body) = convoy_fleet::net::http_get(url).map_err(|e| e.to_string())?;
    if status.contains(" 200 ") { Ok(body) } else { Err(format!("{status}: {body}")) }
}

#[cfg(test)]
mod tests {
    use super::fill_times;

    #[test]
    fn time_placeholders_become_utc_times_of_day() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-28T23:59:55Z").unwrap().to_utc();
        let got = fill_times("start: \"@UTC_TIME_IN:10s@\" # @UTC_TIME_IN:0s@", now).unwrap();
        assert_eq!(got, "start: \"00:00:05\" # 23:59:55");
        assert!(fill_times("@UTC_TIME_IN:2h@", now).is_err());
        assert!(fill_times("@UTC_TIME_IN:10s", now).is_err());
    }
}
