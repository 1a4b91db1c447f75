//! Convoy's own Debian packages (`packaging/convoy/convoy-debs.sh`).
//!
//! - [`debs_hold_the_binaries_units_and_scripts`]: builds the three packages
//!   from the debug binaries into a tempdir and reads them back with
//!   `dpkg-deb -c` / `-I` / `-f`.
//! - [`units_pass_systemd_analyze_verify`]: the units, extracted from the
//!   packages, pass `systemd-analyze verify` with no warning.
//! - [`packages_install_and_run_an_upgrade_in_a_container`]: in a fleet-image
//!   container, `dpkg -i` the packages, start coordinator and agent the way
//!   their units do (the containers have no systemd: same binary, user,
//!   environment files, flags and token file, started by hand), run an
//!   upgrade of a demo package through them, then upgrade the Convoy
//!   packages themselves with `dpkg -i` and check configuration survives.
//!
//! A missing `dpkg-deb` or `systemd-analyze` skips (printing SKIPPED) unless
//! `CI=true`; Docker follows `convoy_fleet::docker::image_or_skip`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use convoy_fleet::docker::{docker, docker_raw, image_or_skip, run_with_timeout};
use convoy_fleet::operator;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

fn have(tool: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success())
}

/// `None` (after printing SKIPPED) when `tool` is missing outside CI; a
/// panic on CI.
fn require(test: &str, tool: &str) -> Option<()> {
    if have(tool) {
        return Some(());
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: {tool} is required on CI but missing");
    }
    println!("SKIPPED {test}: {tool} is not installed");
    eprintln!("SKIPPED {test}: {tool} is not installed");
    None
}

/// The debug binaries (`CONVOY_BIN_DIR` if set, else built with
/// `cargo build --workspace --bins`, a no-op when fresh).
fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CONVOY_BIN_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let root = repo_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = run_with_timeout(
        Command::new(cargo).current_dir(&root).args(["build", "--workspace", "--bins"]),
        Duration::from_secs(1200),
    )?;
    anyhow::ensure!(out.ok(), "cargo build --workspace --bins failed: {}", out.stderr);
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
    Ok(target.join("debug"))
}

/// Runs the script into `out` at `version`; the .deb paths it printed.
fn build_debs(out: &Path, version: &str) -> anyhow::Result<Vec<PathBuf>> {
    let script = repo_root().join("packaging/convoy/convoy-debs.sh");
    let bins = bin_dir()?;
    let t = Instant::now();
    let res = run_with_timeout(
        Command::new("bash")
            .arg(&script)
            .arg(out)
            .arg(&bins)
            .env("CONVOY_DEB_VERSION", version)
            .env("CONVOY_DEB_COMPRESSION", "none"),
        Duration::from_secs(300),
    )?;
    anyhow::ensure!(res.ok(), "convoy-debs.sh failed ({:?}): {}", res.code, res.stderr);
    eprintln!("convoy-debs.sh {version}: {:.1}s", t.elapsed().as_secs_f64());
    let debs: Vec<PathBuf> = res.stdout.lines().map(PathBuf::from).collect();
    anyhow::ensure!(debs.len() == 3, "expected 3 .debs, got {debs:?}");
    Ok(debs)
}

fn dpkg_deb(args: &[&str]) -> anyhow::Result<String> {
    let out = run_with_timeout(Command::new("dpkg-deb").args(args), Duration::from_secs(120))?;
    anyhow::ensure!(out.ok(), "dpkg-deb {args:?}: {}", out.stderr);
    Ok(out.stdout)
}

fn deb_of<'a>(debs: &'a [PathBuf], package: &str) -> &'a Path {
    debs.iter()
        .find(|d| d.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("{package}_"))))
        .unwrap_or_else(|| panic!("no {package} in {debs:?}"))
}

#[test]
fn debs_hold_the_binaries_units_and_scripts() -> anyhow::Result<()> {
    let test = "debs_hold_the_binaries_units_and_scripts";
    if require(test, "dpkg-deb").is_none() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let debs = build_debs(dir.path(), "0.1.0")?;
    let arch = String::from_utf8(Command::new("dpkg").arg("--print-architecture").output()?.stdout)?;
    for (package, files, depends, scripts) in [
        (
            "convoy-coordinator",
            &[
                "./usr/bin/convoy-coordinator",
                "./usr/lib/systemd/system/convoy-coordinator.service",
                "./etc/default/convoy-coordinator",
                "./usr/share/man/man1/convoy-coordinator.1.gz",
                "./usr/share/man/man1/convoy-coordinator-serve.1.gz",
            ][..],
            "libc6, passwd",
            true,
        ),
        (
            "convoy-agent",
            &[
                "./usr/bin/convoy-agent",
                "./usr/lib/systemd/system/convoy-agent.service",
                "./etc/default/convoy-agent",
                "./usr/share/man/man1/convoy-agent.1.gz",
            ][..],
            "libc6, dpkg",
            true,
        ),
        (
            "convoy",
            &[
                "./usr/bin/convoy",
                "./usr/share/man/man1/convoy.1.gz",
                "./usr/share/bash-completion/completions/convoy",
                "./usr/share/zsh/vendor-completions/_convoy-agent",
            ][..],
            "libc6",
            false,
        ),
    ] {
        let deb = deb_of(&debs, package).display().to_string();
        let listing = dpkg_deb(&["-c", &deb])?;
        for f in files {
            let line = listing
                .lines()
                .find(|l| l.ends_with(&format!(" {f}")))
                .unwrap_or_else(|| panic!("{package} lacks {f}:\n{listing}"));
            assert!(line.contains("root/root"), "{package}: {f} not owned by root: {line}");
            if f.starts_with("./usr/bin/") {
                assert!(line.starts_with("-rwxr-xr-x"), "{package}: {line}");
            }
        }
        // No man page in two packages (they would conflict).
        if package == "convoy" {
            assert!(
                !listing.contains("convoy-agent.1.gz") && !listing.contains("convoy-coordinator.1.gz"),
                "{listing}"
            );
        }
        assert_eq!(dpkg_deb(&["-f", &deb, "Package"])?.trim(), package);
        assert_eq!(dpkg_deb(&["-f", &deb, "Version"])?.trim(), "0.1.0");
        assert_eq!(dpkg_deb(&["-f", &deb, "Architecture"])?.trim(), arch.trim());
        assert_eq!(dpkg_deb(&["-f", &deb, "Depends"])?.trim(), depends, "{package}");
        let info = dpkg_deb(&["-I", &deb])?;
        for s in ["postinst", "prerm", "postrm", "conffiles"] {
            assert_eq!(info.contains(&format!(" {s} ")), scripts, "{package}: {s} in\n{info}");
        }
        if scripts {
            let conffiles = dpkg_deb(&["-I", &deb, "conffiles"])?;
            assert_eq!(conffiles.trim(), format!("/etc/default/{package}"));
        }
    }

    // What the units promise, read back from the packages.
    let agent = dpkg_deb(&["-I", &deb_of(&debs, "convoy-agent").display().to_string(), "postinst"])?;
    assert!(agent.contains("install -m 0600 /dev/null /etc/convoy/join-token"), "{agent}");
    let root = tempfile::tempdir()?;
    for d in &debs {
        dpkg_deb(&["-x", &d.display().to_string(), &root.path().display().to_string()])?;
    }
    let unit = |name: &str| std::fs::read_to_string(root.path().join("usr/lib/systemd/system").join(name));
    let a = unit("convoy-agent.service")?;
    for line in [
        "KillMode=process",
        "Restart=always",
        "StateDirectory=convoy-agent",
        "EnvironmentFile=-/etc/default/convoy-agent",
        "ExecStart=/usr/bin/convoy-agent --join-token-file /etc/convoy/join-token $CONVOY_AGENT_ARGS",
    ] {
        assert!(a.lines().any(|l| l == line), "agent unit lacks {line:?}:\n{a}");
    }
    // The agent installs packages: none of the options that would break dpkg.
    for bad in ["ProtectSystem=", "NoNewPrivileges=yes", "RestrictSUIDSGID=yes", "ReadOnlyPaths=", "PrivateTmp=yes"] {
        assert!(!a.lines().any(|l| l.starts_with(bad)), "agent unit has {bad}:\n{a}");
    }
    let c = unit("convoy-coordinator.service")?;
    for line in [
        "User=convoy",
        "Restart=on-failure",
        "StateDirectory=convoy",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=",
        "EnvironmentFile=-/etc/default/convoy-coordinator",
    ] {
        assert!(c.lines().any(|l| l == line), "coordinator unit lacks {line:?}:\n{c}");
    }
    Ok(())
}

#[test]
fn units_pass_systemd_analyze_verify() -> anyhow::Result<()> {
    let test = "units_pass_systemd_analyze_verify";
    if require(test, "dpkg-deb").is_none() || require(test, "systemd-analyze").is_none() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let debs = build_debs(dir.path(), "0.1.0")?;
    // A root holding the packages' files (verify checks ExecStart= binaries
    // exist there) plus the host's targets the units refer to.
    let root = dir.path().join("root");
    std::fs::create_dir_all(&root)?;
    for d in &debs {
        dpkg_deb(&["-x", &d.display().to_string(), &root.display().to_string()])?;
    }
    let units = root.join("usr/lib/systemd/system");
    for entry in std::fs::read_dir("/usr/lib/systemd/system")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "target") && path.is_file() {
            let dest = units.join(path.file_name().expect("file name"));
            if !dest.exists() {
                std::fs::copy(&path, dest)?;
            }
        }
    }
    let out = run_with_timeout(
        Command::new("systemd-analyze")
            .arg("verify")
            .arg("--man=no")
            .arg(format!("--root={}", root.display()))
            .args(["convoy-agent.service", "convoy-coordinator.service"]),
        Duration::from_secs(60),
    )?;
    // Unknown or malformed keys are only warnings: any output is a failure.
    assert!(
        out.ok() && out.stderr.trim().is_empty(),
        "systemd-analyze verify ({:?}):\n{}{}",
        out.code,
        out.stdout,
        out.stderr
    );
    Ok(())
}

/// `sh -c SCRIPT` in `container`; must succeed; its stdout.
fn sh(container: &str, script: &str) -> anyhow::Result<String> {
    let out = docker_raw(&["exec", container, "sh", "-c", script], Duration::from_secs(120))?;
    anyhow::ensure!(out.ok(), "in {container}: `{script}` exited {:?}: {}{}", out.code, out.stderr, out.stdout);
    Ok(out.stdout)
}

/// Removes the container when the test ends, however it ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        if std::env::var_os("CONVOY_KEEP_FLEET").is_none() {
            let _ = docker_raw(&["rm", "-f", "-v", &self.0], Duration::from_secs(60));
        }
    }
}

/// How the coordinator's unit starts it (no systemd in the container).
const START_COORDINATOR: &str = "set -a; . /etc/default/convoy-coordinator; CONVOY_DATA_DIR=/var/lib/convoy; set +a; \
     cd /var/lib/convoy && exec runuser -u convoy -- /usr/bin/convoy-coordinator serve $CONVOY_COORDINATOR_ARGS \
     >/var/log/convoy-coordinator.log 2>&1";
/// How the agent's unit starts it.
const START_AGENT: &str = "set -a; CONVOY_STATE_DIR=/var/lib/convoy-agent; CONVOY_CA_FILE=/etc/convoy/ca.pem; \
     . /etc/default/convoy-agent; set +a; \
     exec /usr/bin/convoy-agent --join-token-file /etc/convoy/join-token $CONVOY_AGENT_ARGS \
     >/var/log/convoy-agent.log 2>&1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packages_install_and_run_an_upgrade_in_a_container() -> anyhow::Result<()> {
    let test = "packages_install_and_run_an_upgrade_in_a_container";
    if require(test, "dpkg-deb").is_none() {
        return Ok(());
    }
    let Some(image) = image_or_skip(test) else { return Ok(()) };
    let t = Instant::now();
    let dir = tempfile::tempdir()?;
    let v1 = build_debs(&dir.path().join("v1"), "0.1.0")?;
    let v2 = build_debs(&dir.path().join("v2"), "0.1.1")?;

    let name = format!("convoy-t{}-debs", std::process::id());
    let pid_label = format!("convoy.test.pid={}", std::process::id());
    docker(&[
        "run",
        "-d",
        "--init",
        "--name",
        &name,
        "--hostname",
        "debhost",
        "--label",
        &pid_label,
        "-p",
        "127.0.0.1::7443",
        &image,
        "sleep",
        "infinity",
    ])?;
    let container = Container(name);
    let c = container.0.as_str();
    sh(c, "mkdir -p /root/v1 /root/v2")?;
    for (debs, to) in [(&v1, "/root/v1/"), (&v2, "/root/v2/")] {
        for d in debs {
            docker(&["cp", &d.display().to_string(), &format!("{c}:{to}")])?;
        }
    }

    // Install, as on a Debian host.
    sh(c, "dpkg -i /root/v1/*.deb >/var/log/dpkg-v1.log 2>&1 || { cat /var/log/dpkg-v1.log; exit 1; }")?;
    assert_eq!(sh(c, "stat -c '%U %a' /var/lib/convoy /etc/convoy/join-token")?, "convoy 700\nroot 600\n");
    let init = sh(
        c,
        "runuser -u convoy -- convoy-coordinator init --data-dir /var/lib/convoy --join-token-uses 1 --join-token-hosts debhost 2>&1",
    )?;
    let field = |prefix: &str| {
        init.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_once(": "))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_else(|| panic!("no {prefix:?} in init's output:\n{init}"))
    };
    let (operator_token, join_token) = (field("operator token"), field("join token"));
    sh(
        c,
        &format!(
            "cp /var/lib/convoy/tls/ca.pem /etc/convoy/ca.pem && printf '%s\\n' '{join_token}' > /etc/convoy/join-token && \
             sed -i -e 's|^CONVOY_COORDINATOR=.*|CONVOY_COORDINATOR=https://127.0.0.1:7443|' \
                    -e 's|^#CONVOY_LABELS=.*|CONVOY_LABELS=role=db|' /etc/default/convoy-agent"
        ),
    )?;
    docker(&["exec", "-d", c, "sh", "-c", START_COORDINATOR])?;
    docker(&["exec", "-d", c, "sh", "-c", START_AGENT])?;

    let port = docker(&["port", c, "7443/tcp"])?;
    let addr = port.lines().find(|l| l.starts_with("127.0.0.1:")).ok_or_else(|| anyhow::anyhow!("no port: {port}"))?;
    let url = format!("https://{}", addr.trim());
    let ca = sh(c, "cat /etc/convoy/ca.pem")?;
    let op = convoy_fleet::wait::wait_until(Duration::from_secs(30), "the packaged coordinator", || {
        let (url, ca, token) = (&url, &ca, &operator_token);
        async move { operator::connect_operator(url, ca, token).await.ok() }
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}: {}", sh(c, "cat /var/log/convoy-coordinator.log").unwrap_or_default()))?;
    operator::wait_agents(&op, Duration::from_secs(30), "the packaged agent", |l| {
        l.iter().any(|a| a.agent_id == "debhost" && a.connected)
    })
    .await
    .map_err(|e| anyhow::anyhow!("{e}: {}", sh(c, "cat /var/log/convoy-agent.log").unwrap_or_default()))?;
    // The coordinator runs as convoy, the agent as root.
    let users = sh(c, "ps -o user=,args= -C convoy-coordinator,convoy-agent")?;
    assert!(users.lines().any(|l| l.starts_with("convoy") && l.contains("convoy-coordinator serve")), "{users}");
    assert!(
        users.lines().any(|l| l.starts_with("root") && l.contains("--join-token-file /etc/convoy/join-token")),
        "{users}"
    );

    // An upgrade through the packaged agent: demo db 1.0.0 -> 1.1.0 with apt.
    sh(c, "apt-get install -y -qq convoy-demo-db=1.0.0 >/dev/null 2>&1")?;
    let plan = r#"name: deb-upgrade
version: "1.1.0"
groups:
  - name: db
    select: { role: db }
    steps:
      - name: apt
        apt: { package: convoy-demo-db, version: "{{version}}" }
        timeout: 120s
    checks:
      - name: dpkg
        exec: { command: sh, args: ["-c", "test \"$(dpkg-query -W -f='${Version}' convoy-demo-db)\" = '{{version}}'"] }
"#;
    let id = operator::submit(&op, "deb-upgrade.yaml", plan).await.map_err(|s| anyhow::anyhow!("{}", s.message()))?;
    let status = operator::wait_rollout(&op, &id, Duration::from_secs(60), "the rollout", operator::finished).await?;
    assert_eq!(status.state, "succeeded", "{status:#?}");
    assert_eq!(sh(c, "dpkg-query -W -f='${Version}' convoy-demo-db")?, "1.1.0");

    // Upgrade the Convoy packages themselves: configuration and state stay.
    sh(c, "dpkg -i /root/v2/*.deb >/var/log/dpkg-v2.log 2>&1 || { cat /var/log/dpkg-v2.log; exit 1; }")?;
    assert_eq!(sh(c, "dpkg-query -W -f='${Version}' convoy-agent")?, "0.1.1");
    assert!(sh(c, "cat /etc/default/convoy-agent")?.contains("CONVOY_LABELS=role=db"), "conffile edit lost");
    assert_eq!(sh(c, "cat /etc/convoy/join-token")?.trim(), join_token);
    sh(c, "test -s /var/lib/convoy/tls/ca.pem && test -d /var/lib/convoy-agent")?;
    eprintln!("{test}: {:.1}s", t.elapsed().as_secs_f64());
    Ok(())
}
