//! Offline artifacts end to end: a real coordinator over mTLS, real agent
//! sessions with the real `LocalDriver`, archives loaded into the coordinator
//! and installed by plans that name them `artifact:NAME@VERSION`.

use std::path::Path;
use std::time::Duration;

use convoy_agent::fetch::{ArtifactRef, Cache, FetchOptions};
use convoy_fleet::FleetError;
use convoy_fleet::inprocess::{Cluster, fast_runtime};
use convoy_fleet::operator::Bearer;
use convoy_proto::v1 as pb;
use convoy_proto::v1::artifact_service_client::ArtifactServiceClient;
use sha2::{Digest, Sha256};
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

fn sha(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A tar.gz with `bin/hello` (saying `text`) and some filler so that it
/// spans several 256 KiB chunks.
fn archive(text: &str) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::none());
    let mut b = tar::Builder::new(gz);
    let mut add = |path: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        h.set_size(data.len() as u64);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, path, data).unwrap();
    };
    add("bin/hello", text.as_bytes());
    let filler: Vec<u8> = (0..700_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    add("share/filler", &filler);
    b.into_inner().unwrap().finish().unwrap()
}

/// A TLS channel to the cluster's coordinator, with a client certificate or not.
async fn channel(c: &Cluster, identity: Option<&Path>) -> anyhow::Result<Channel> {
    let ca = std::fs::read_to_string(&c.ca_file)?;
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(convoy_coordinator::tls::DEFAULT_SERVER_NAME);
    if let Some(state) = identity {
        let cert = std::fs::read_to_string(state.join("tls/agent.pem"))?;
        let key = std::fs::read_to_string(state.join("tls/agent.key"))?;
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Ok(Channel::from_shared(c.url.clone())?.tls_config(tls)?.connect().await?)
}

type Artifacts = ArtifactServiceClient<tonic::service::interceptor::InterceptedService<Channel, Bearer>>;

async fn operator_artifacts(c: &Cluster, token: &str) -> anyhow::Result<Artifacts> {
    Ok(ArtifactServiceClient::with_interceptor(channel(c, None).await?, Bearer::new(token)?))
}

/// Uploads `data` in chunks of 100 000 bytes.
async fn upload(
    client: &mut Artifacts,
    name: &str,
    version: &str,
    expected: &str,
    data: &[u8],
) -> Result<pb::ArtifactInfo, tonic::Status> {
    let mut chunks: Vec<pb::ArtifactChunk> =
        data.chunks(100_000).map(|d| pb::ArtifactChunk { data: d.to_vec(), ..Default::default() }).collect();
    if chunks.is_empty() {
        chunks.push(pb::ArtifactChunk::default());
    }
    chunks[0].name = name.into();
    chunks[0].version = version.into();
    chunks[0].sha256 = expected.into();
    client.upload(tokio_stream::iter(chunks)).await.map(|r| r.into_inner())
}

/// A plan installing `source`, with `sha256` or leaving it to the artifact store.
fn plan(source: &str, sha256: Option<&str>) -> String {
    let sha256 = sha256.map(|s| format!(", sha256: \"{s}\"")).unwrap_or_default();
    format!(
        r#"
name: offline
version: "1.0.0"
component: demo
groups:
  - name: web
    select: {{ role: web }}
    steps:
      - name: install
        archive: {{ component: demo, version: "1.0.0", source: "{source}"{sha256} }}
        timeout: 30s
"#
    )
}

fn cached(state: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(state.join("cache"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_installs_an_uploaded_artifact_and_a_wrong_sha_installs_nothing() -> anyhow::Result<()> {
    let mut c = Cluster::start(fast_runtime()).await?;
    let web1 = c.add_local_agent("web-1", &[("role", "web")])?;
    c.wait_agents(1, Duration::from_secs(30)).await?;

    let data = archive("hello 1.0.0\n");
    let want = sha(&data);
    let mut ops = operator_artifacts(&c, &c.operator_token).await?;
    let info = upload(&mut ops, "demo", "1.0.0", &want, &data).await?;
    assert_eq!((info.sha256.as_str(), info.size, info.existed), (want.as_str(), data.len() as u64, false));
    // The same content again is a no-op; other content under the same name is refused.
    assert!(upload(&mut ops, "demo", "1.0.0", "", &data).await?.existed);
    let other = archive("hello 6.6.6\n");
    let err = upload(&mut ops, "demo", "1.0.0", "", &other).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("demo@1.0.0") && err.message().contains(&want), "{}", err.message());
    // Damaged in transit (the expected sha does not match what arrived): nothing stored.
    let err = upload(&mut ops, "demo", "1.0.1", &sha(&other), &data).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let listed = ops.list(pb::ListArtifactsRequest {}).await?.into_inner().artifacts;
    assert_eq!(listed.iter().map(|a| format!("{}@{}", a.name, a.version)).collect::<Vec<_>>(), ["demo@1.0.0"]);

    // A plan naming the artifact with the wrong sha256: refused when submitted
    // (the coordinator knows the loaded artifact's), naming both; nothing installed.
    let bad = sha(b"not the archive");
    let err = c.submit(&plan("artifact:demo@1.0.0", Some(&bad))).await.unwrap_err();
    let FleetError::Rpc(status) = &err else { panic!("{err:?}") };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let msg = status.message();
    assert!(msg.contains("demo@1.0.0") && msg.contains(&bad) && msg.contains(&want), "{msg}");
    assert!(msg.contains("host web-1") && msg.contains("'install'"), "{msg}");
    assert!(!web1.join("install/demo").exists());
    assert!(cached(&web1).iter().all(|f| !f.starts_with(&want) || f.ends_with(".partial")), "{:?}", cached(&web1));

    // An artifact the coordinator does not have: refused clearly too.
    let id = c.submit(&plan("artifact:ghost@9.9.9", Some(&want))).await?;
    let status = c.wait_finished(&id, Duration::from_secs(60)).await?;
    assert_eq!(status.state, "failed", "{status:?}");
    assert!(status.hosts[0].message.contains("unknown artifact ghost@9.9.9"), "{}", status.hosts[0].message);

    // The right sha256: fetched, verified, cached and installed.
    let id = c.submit(&plan("artifact:demo@1.0.0", Some(&want))).await?;
    let status = c.wait_finished(&id, Duration::from_secs(60)).await?;
    assert_eq!(status.state, "succeeded", "{status:?}");
    assert_eq!(status.hosts[0].version, "1.0.0");
    assert_eq!(std::fs::read_to_string(web1.join("install/demo/current/bin/hello"))?, "hello 1.0.0\n");
    assert_eq!(cached(&web1), vec![want.clone()]);
    assert_eq!(std::fs::read(web1.join("cache").join(&want))?, data);

    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_without_sha256_gets_the_loaded_artifacts_and_the_agent_checks_it() -> anyhow::Result<()> {
    let mut c = Cluster::start(fast_runtime()).await?;
    let web1 = c.add_local_agent("web-1", &[("role", "web")])?;
    c.wait_agents(1, Duration::from_secs(30)).await?;

    // Not loaded yet: refused when submitted, naming host, step and artifact.
    let err = c.submit(&plan("artifact:demo@1.0.0", None)).await.unwrap_err();
    let FleetError::Rpc(status) = &err else { panic!("{err:?}") };
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let msg = status.message();
    assert!(msg.contains("host web-1") && msg.contains("'install'") && msg.contains("demo@1.0.0"), "{msg}");

    let data = archive("hello 1.0.0\n");
    let want = sha(&data);
    let mut ops = operator_artifacts(&c, &c.operator_token).await?;
    upload(&mut ops, "demo", "1.0.0", "", &data).await?;
    let id = c.submit(&plan("artifact:demo@1.0.0", None)).await?;
    let status = c.wait_finished(&id, Duration::from_secs(60)).await?;
    assert_eq!(status.state, "succeeded", "{status:?}");
    assert_eq!(std::fs::read_to_string(web1.join("install/demo/current/bin/hello"))?, "hello 1.0.0\n");
    // The agent got the digest with the step: it verified the download
    // against it before caching it under that name.
    assert_eq!(cached(&web1), vec![want.clone()]);

    // The stored rollout carries the digest.
    let (spec, _) = c.event_log(&id).await?;
    match &spec.hosts[0].steps[0].kind {
        convoy_common::model::StepKind::Archive(a) => assert_eq!(a.sha256, want),
        other => panic!("{other:?}"),
    }
    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_operators_upload_and_only_agents_fetch() -> anyhow::Result<()> {
    let mut c = Cluster::start(fast_runtime()).await?;
    let web1 = c.add_local_agent("web-1", &[("role", "web")])?;
    c.wait_agents(1, Duration::from_secs(30)).await?;
    let data = archive("x");
    let want = sha(&data);

    // No token, or a wrong one: no upload, no list.
    for token in ["", "wrong"] {
        let mut anon = operator_artifacts(&c, token).await?;
        let err = upload(&mut anon, "demo", "1.0.0", "", &data).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
        let err = anon.list(pb::ListArtifactsRequest {}).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    }
    // An agent's certificate is not an operator token either.
    let agent_channel = channel(&c, Some(&web1)).await?;
    let mut agent = ArtifactServiceClient::new(agent_channel.clone());
    let chunk =
        pb::ArtifactChunk { name: "demo".into(), version: "1.0.0".into(), data: data.clone(), ..Default::default() };
    let err = agent.upload(tokio_stream::iter([chunk])).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");

    let mut ops = operator_artifacts(&c, &c.operator_token).await?;
    upload(&mut ops, "demo", "1.0.0", &want, &data).await?;

    // Without a client certificate (an operator, or an agent not enrolled): no fetch.
    let req = pb::FetchRequest { name: "demo".into(), version: "1.0.0".into(), sha256: want.clone(), offset: 0 };
    let err = ops.fetch(req.clone()).await.unwrap_err();
    assert_eq!(err.code(), Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("certificate"), "{}", err.message());

    // With one: chunks of 256 KiB, from any offset; bad offsets and unknown names are refused.
    let mut stream = agent.fetch(req.clone()).await?.into_inner();
    let mut got = Vec::new();
    let mut sizes = Vec::new();
    while let Some(chunk) = stream.message().await? {
        assert_eq!(chunk.offset, got.len() as u64);
        sizes.push(chunk.data.len());
        got.extend_from_slice(&chunk.data);
    }
    assert_eq!(got, data);
    assert!(sizes.len() > 1 && sizes[0] == 256 * 1024, "{sizes:?}");
    let tail_from = data.len() as u64 - 10;
    let mut stream = agent.fetch(pb::FetchRequest { offset: tail_from, ..req.clone() }).await?.into_inner();
    let first = stream.message().await?.unwrap();
    assert_eq!((first.offset, first.data.as_slice()), (tail_from, &data[data.len() - 10..]));
    let err = agent.fetch(pb::FetchRequest { offset: data.len() as u64 + 1, ..req.clone() }).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    let err = agent.fetch(pb::FetchRequest { name: "ghost".into(), ..req.clone() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    let err = agent.fetch(pb::FetchRequest { sha256: sha(b"other"), ..req }).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    c.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fetcher_resumes_a_partial_download_from_the_real_coordinator() -> anyhow::Result<()> {
    let mut c = Cluster::start(fast_runtime()).await?;
    let web1 = c.add_local_agent("web-1", &[("role", "web")])?;
    c.wait_agents(1, Duration::from_secs(30)).await?;
    let data = archive("resume");
    let want = sha(&data);
    let mut ops = operator_artifacts(&c, &c.operator_token).await?;
    upload(&mut ops, "demo", "1.0.0", &want, &data).await?;
    let demo = ArtifactRef { name: "demo".into(), version: "1.0.0".into() };
    let opts = || FetchOptions::until(Some(tokio::time::Instant::now() + Duration::from_secs(20)));

    // A download cut off after 300 000 bytes (what a dropped connection leaves).
    let dir = tempfile::tempdir()?;
    let cache = Cache::new(dir.path(), 5);
    std::fs::write(cache.partial(&want), &data[..300_000])?;
    let path = convoy_agent::fetch::fetch(channel(&c, Some(&web1)).await?, &cache, &demo, &want, &opts()).await?;
    assert_eq!(std::fs::read(&path)?, data);
    assert!(!cache.partial(&want).exists());

    // A partial file with damaged bytes: the whole is refused once, fetched
    // again from zero, and only then verified and kept.
    let dir = tempfile::tempdir()?;
    let cache = Cache::new(dir.path(), 5);
    let mut damaged = data[..300_000].to_vec();
    damaged[1000] ^= 0xff;
    std::fs::write(cache.partial(&want), &damaged)?;
    let path = convoy_agent::fetch::fetch(channel(&c, Some(&web1)).await?, &cache, &demo, &want, &opts()).await?;
    assert_eq!(std::fs::read(&path)?, data);

    c.shutdown().await;
    Ok(())
}
