//! Offline artifacts on the agent: a step's `source: artifact:NAME@VERSION`
//! is fetched from the coordinator, verified, cached, and the step then runs
//! on the local file. Hosts need no access to anything but the coordinator.
//!
//! - **Where:** `<state_dir>/cache/<sha256>` (complete, verified files) and
//!   `<sha256>.partial` (a download in progress).
//! - **Resumable:** chunks are appended to the `.partial` file as they arrive;
//!   after a dropped stream or connection the agent asks again from the
//!   partial file's length, with backoff ([`crate::session::Backoff`]), until
//!   the step's deadline (or [`DEFAULT_FETCH_DEADLINE`] when the step has
//!   none). Progress resets the backoff.
//! - **Verified:** the sha256 of the whole file must be the step's before the
//!   file is renamed into the cache; otherwise the download is discarded and
//!   tried once more from zero (a bad resumed fragment), then refused with
//!   [`AgentError::ArtifactMismatch`] naming the artifact and both digests.
//!   Nothing is installed. A cached file is hashed again on every use and
//!   fetched anew if it no longer matches.
//! - **Refusals are final:** an unknown artifact, a sha256 the coordinator's
//!   artifact does not have, or a missing certificate end the step at once
//!   with the coordinator's reason ([`AgentError::Artifact`]).
//! - **Small:** after each download the cache keeps the [`DEFAULT_CACHE_KEEP`]
//!   most recently used files (a use refreshes a file's mtime); partial files
//!   untouched for a day are removed.
//! - **One at a time:** [`CoordinatorArtifacts`] fetches one artifact at a
//!   time, so two steps needing the same file download it once.
//!
//! The seam is [`ArtifactSource`]: [`crate::LocalDriver`] holds an optional
//! one and resolves `artifact:` sources through it
//! ([`crate::LocalDriver::resolve_source`]) before an archive (or dpkg) step
//! touches anything. [`crate::session::run_local`] plugs in
//! [`CoordinatorArtifacts`], which connects with the agent's own certificate.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use convoy_common::model::{DpkgSpec, StepOutcome, StepStatus};
use convoy_proto::v1::FetchRequest;
use convoy_proto::v1::artifact_service_client::ArtifactServiceClient;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::config::AgentConfig;
use crate::driver::LocalDriver;
use crate::driver::pkg::PkgEnv;
use crate::error::AgentError;
use crate::session::Backoff;
use crate::tls;

/// Complete files the cache keeps by default.
pub const DEFAULT_CACHE_KEEP: usize = 5;
/// How long a fetch may take when the step has no timeout.
pub const DEFAULT_FETCH_DEADLINE: Duration = Duration::from_secs(30 * 60);
/// Partial downloads untouched this long are removed when the cache is pruned.
const STALE_PARTIAL: Duration = Duration::from_secs(24 * 3600);

// One parser of `artifact:NAME@VERSION` for the plan, the coordinator and the agent.
pub use convoy_common::artifact_ref::{ArtifactRef, SOURCE_PREFIX, parse_source};

/// `<state_dir>/cache`.
pub fn cache_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("cache")
}

/// Where `artifact:` sources come from: returns a local, verified file.
pub trait ArtifactSource: Send + Sync + std::fmt::Debug + 'static {
    /// Fetches `artifact` (whose content must have `sha256`) into the local
    /// cache, giving up at `deadline` if one is given.
    fn fetch<'a>(
        &'a self,
        artifact: &'a ArtifactRef,
        sha256: &'a str,
        deadline: Option<Instant>,
    ) -> Pin<Box<dyn Future<Output = Result<PathBuf, AgentError>> + Send + 'a>>;
}

// --------------------------------------------------------------------- cache

/// The local artifact cache.
#[derive(Debug, Clone)]
pub struct Cache {
    pub dir: PathBuf,
    /// Complete files kept after a download.
    pub keep: usize,
}

/// sha256 (lower-case hex) of a file. Blocking.
pub(crate) fn sha256_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match f.read(&mut buf)? {
            0 => return Ok(hex::encode(h.finalize())),
            n => h.update(&buf[..n]),
        }
    }
}

async fn sha256_file_async(path: &Path) -> Result<String, AgentError> {
    let p = path.to_path_buf();
    tokio::task::spawn_blocking(move || sha256_file(&p))
        .await
        .map_err(|e| AgentError::Io { path: path.to_path_buf(), source: std::io::Error::other(e.to_string()) })?
        .map_err(AgentError::io(path))
}

fn is_sha(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Cache {
    pub fn new(dir: impl Into<PathBuf>, keep: usize) -> Cache {
        Cache { dir: dir.into(), keep: keep.max(1) }
    }

    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(sha256)
    }

    pub fn partial(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.partial"))
    }

    /// The cached file for `sha256` if it is there and still matches; a use
    /// refreshes its mtime. A file that no longer matches is removed.
    pub async fn lookup(&self, sha256: &str) -> Result<Option<PathBuf>, AgentError> {
        let path = self.path(sha256);
        if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(None);
        }
        if sha256_file_async(&path).await? != sha256 {
            tracing::warn!(path = %path.display(), "cached artifact no longer matches its sha256; fetching it again");
            let _ = tokio::fs::remove_file(&path).await;
            return Ok(None);
        }
        touch(&path);
        Ok(Some(path))
    }

    /// Keeps the `keep` most recently used complete files (never `current`)
    /// and removes stale partial downloads. Blocking, best effort.
    pub fn prune(&self, current: &str) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else { return };
        let now = SystemTime::now();
        let mut complete = Vec::new();
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(modified) = e.metadata().and_then(|m| m.modified()) else { continue };
            if let Some(sha) = name.strip_suffix(".partial") {
                let stale = now.duration_since(modified).unwrap_or_default() > STALE_PARTIAL;
                if sha != current && stale {
                    let _ = std::fs::remove_file(e.path());
                }
            } else if is_sha(&name) && name != current {
                complete.push((modified, e.path()));
            }
        }
        complete.sort_by_key(|e| std::cmp::Reverse(e.0));
        for (_, path) in complete.into_iter().skip(self.keep.saturating_sub(1)) {
            tracing::debug!(path = %path.display(), "artifact cache: removing");
            let _ = std::fs::remove_file(path);
        }
    }
}

fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().write(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

// --------------------------------------------------------------------- fetch

/// Bounds of one [`fetch`].
#[derive(Debug, Clone)]
pub struct FetchOptions {
    pub deadline: Instant,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl FetchOptions {
    /// The step's deadline, or [`DEFAULT_FETCH_DEADLINE`] from now.
    pub fn until(deadline: Option<Instant>) -> FetchOptions {
        FetchOptions {
            deadline: deadline.unwrap_or_else(|| Instant::now() + DEFAULT_FETCH_DEADLINE),
            backoff_min: Duration::from_millis(200),
            backoff_max: Duration::from_secs(10),
        }
    }
}

/// How one Fetch call ended.
enum Attempt {
    /// The whole artifact is in the partial file.
    Complete,
    /// Worth asking again (from the partial file's length).
    Retry { why: String, progressed: bool },
    /// The coordinator does not accept our offset: start from zero.
    Restart(String),
    /// Asking again cannot help.
    Fatal(AgentError),
}

fn artifact_error(artifact: &ArtifactRef, message: impl Into<String>) -> AgentError {
    AgentError::Artifact { artifact: artifact.to_string(), message: message.into() }
}

/// Fetches `artifact` with content `sha256` through `channel` into `cache`,
/// resuming after dropped streams until `opts.deadline`; returns the cached
/// file. Nothing lands in the cache unless its sha256 is `sha256`.
pub async fn fetch(
    channel: Channel,
    cache: &Cache,
    artifact: &ArtifactRef,
    sha256: &str,
    opts: &FetchOptions,
) -> Result<PathBuf, AgentError> {
    let sha = sha256.trim().to_ascii_lowercase();
    if !is_sha(&sha) {
        return Err(artifact_error(artifact, format!("the step needs its sha256 (64 hex digits), got {sha256:?}")));
    }
    if let Some(path) = cache.lookup(&sha).await? {
        tracing::debug!(%artifact, path = %path.display(), "artifact cache hit");
        return Ok(path);
    }
    tokio::fs::create_dir_all(&cache.dir).await.map_err(AgentError::io(&cache.dir))?;
    let partial = cache.partial(&sha);
    let mut client = ArtifactServiceClient::new(channel);
    let mut backoff = Backoff::new(opts.backoff_min, opts.backoff_max);
    let mut restarted_after_mismatch = false;
    let mut last = String::from("no attempt finished");
    loop {
        let offset = tokio::fs::metadata(&partial).await.map(|m| m.len()).unwrap_or(0);
        if Instant::now() >= opts.deadline {
            return Err(artifact_error(
                artifact,
                format!("not fetched before the deadline ({offset} bytes so far; last problem: {last})"),
            ));
        }
        let req = FetchRequest {
            name: artifact.name.clone(),
            version: artifact.version.clone(),
            sha256: sha.clone(),
            offset,
        };
        let Ok(attempt) = tokio::time::timeout_at(opts.deadline, attempt(&mut client, req, &partial, artifact)).await
        else {
            continue; // the deadline, reported at the top of the loop
        };
        match attempt {
            Attempt::Complete => {
                let actual = sha256_file_async(&partial).await?;
                if actual == sha {
                    let path = cache.path(&sha);
                    tokio::fs::rename(&partial, &path).await.map_err(AgentError::io(&path))?;
                    if let Ok(d) = std::fs::File::open(&cache.dir) {
                        let _ = d.sync_all();
                    }
                    let c = cache.clone();
                    let s = sha.clone();
                    let _ = tokio::task::spawn_blocking(move || c.prune(&s)).await;
                    tracing::info!(%artifact, path = %path.display(), "artifact fetched and verified");
                    return Ok(path);
                }
                let _ = tokio::fs::remove_file(&partial).await;
                if restarted_after_mismatch {
                    return Err(AgentError::ArtifactMismatch { artifact: artifact.to_string(), expected: sha, actual });
                }
                tracing::warn!(%artifact, expected = %sha, %actual, "artifact sha256 mismatch; downloading again from zero");
                restarted_after_mismatch = true;
            }
            Attempt::Fatal(e) => return Err(e),
            Attempt::Restart(why) => {
                tracing::warn!(%artifact, "{why}; downloading again from zero");
                let _ = tokio::fs::remove_file(&partial).await;
                last = why;
            }
            Attempt::Retry { why, progressed } => {
                if progressed {
                    backoff.reset();
                }
                let delay = backoff.next_delay();
                tracing::info!(%artifact, "artifact fetch interrupted ({why}); resuming in {delay:?}");
                last = why;
                tokio::time::sleep_until((Instant::now() + delay).min(opts.deadline)).await;
            }
        }
    }
}

/// One Fetch call from `req.offset`, appending to `partial`.
async fn attempt(
    client: &mut ArtifactServiceClient<Channel>,
    req: FetchRequest,
    partial: &Path,
    artifact: &ArtifactRef,
) -> Attempt {
    let from = req.offset;
    let mut stream = match client.fetch(req).await {
        Ok(r) => r.into_inner(),
        Err(status) => return classify(status, from, false, artifact),
    };
    let mut file = match tokio::fs::OpenOptions::new().create(true).append(true).open(partial).await {
        Ok(f) => f,
        Err(e) => return Attempt::Fatal(AgentError::io(partial)(e)),
    };
    let mut at = from;
    let mut size = None;
    let ended = loop {
        match stream.message().await {
            Ok(Some(chunk)) => {
                if chunk.offset != at {
                    break Attempt::Retry {
                        why: format!("the coordinator sent bytes from {} where {at} was expected", chunk.offset),
                        progressed: at > from,
                    };
                }
                let end = at + chunk.data.len() as u64;
                if end > chunk.size {
                    break Attempt::Restart(format!(
                        "the coordinator sent bytes up to {end} of a {}-byte artifact",
                        chunk.size
                    ));
                }
                if let Err(e) = file.write_all(&chunk.data).await {
                    break Attempt::Fatal(AgentError::io(partial)(e));
                }
                at = end;
                size = Some(chunk.size);
                if at == chunk.size {
                    break Attempt::Complete;
                }
            }
            Ok(None) => {
                break match size {
                    Some(s) if s == at => Attempt::Complete,
                    Some(s) => Attempt::Retry {
                        why: format!("the stream ended after {at} of {s} bytes"),
                        progressed: at > from,
                    },
                    None => Attempt::Retry { why: "the stream ended without data".into(), progressed: false },
                };
            }
            Err(status) => break classify(status, from, at > from, artifact),
        }
    };
    // tokio writes complete in the background: flush so the next attempt
    // sees every byte in the file's length.
    if let Err(e) = file.flush().await.and(file.sync_data().await) {
        return Attempt::Fatal(AgentError::io(partial)(e));
    }
    ended
}

fn classify(status: tonic::Status, offset: u64, progressed: bool, artifact: &ArtifactRef) -> Attempt {
    use tonic::Code;
    let said = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::InvalidArgument if offset > 0 => {
            Attempt::Restart(format!("the coordinator refused offset {offset} ({said})"))
        }
        Code::NotFound
        | Code::FailedPrecondition
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::InvalidArgument => {
            // The coordinator's message names the artifact already.
            let prefix = format!("artifact {artifact}: ");
            let why = status.message().strip_prefix(&prefix).unwrap_or(status.message());
            Attempt::Fatal(artifact_error(artifact, format!("the coordinator refused it ({:?}): {why}", status.code())))
        }
        _ => Attempt::Retry { why: said, progressed },
    }
}

// ------------------------------------------------------- from the coordinator

/// Fetches artifacts from the coordinator the agent is configured for, over
/// mTLS with the agent's own certificate (read from `<state_dir>/tls` when
/// the first fetch happens, by which time the session has enrolled).
#[derive(Debug)]
pub struct CoordinatorArtifacts {
    config: AgentConfig,
    cache: Cache,
    /// The connection, reused across fetches (tonic reconnects it), and the
    /// lock that makes fetches one at a time.
    channel: tokio::sync::Mutex<Option<Channel>>,
}

impl CoordinatorArtifacts {
    pub fn new(config: AgentConfig) -> CoordinatorArtifacts {
        let cache = Cache::new(cache_dir(&config.state_dir), DEFAULT_CACHE_KEEP);
        CoordinatorArtifacts { config, cache, channel: tokio::sync::Mutex::new(None) }
    }

    /// Keep `keep` complete files in the cache instead of [`DEFAULT_CACHE_KEEP`].
    pub fn with_cache_keep(mut self, keep: usize) -> CoordinatorArtifacts {
        self.cache.keep = keep.max(1);
        self
    }

    pub fn cache(&self) -> &Cache {
        &self.cache
    }

    async fn connect(&self) -> Result<Channel, AgentError> {
        let paths = tls::TlsPaths::new(self.config.tls_dir());
        let identity = tls::load_identity(&paths, &self.config.host_id)?.ok_or_else(|| AgentError::Tls {
            what: "artifact fetch".into(),
            message: format!("no agent certificate under {} yet (not enrolled)", paths.dir.display()),
        })?;
        let ca = tls::read_ca(&self.config.ca_file)?;
        tls::connect(&self.config, tls::client_tls(&self.config, &ca, Some(&identity))).await
    }
}

impl ArtifactSource for CoordinatorArtifacts {
    fn fetch<'a>(
        &'a self,
        artifact: &'a ArtifactRef,
        sha256: &'a str,
        deadline: Option<Instant>,
    ) -> Pin<Box<dyn Future<Output = Result<PathBuf, AgentError>> + Send + 'a>> {
        Box::pin(async move {
            let opts = FetchOptions::until(deadline);
            let mut guard = self.channel.lock().await;
            let channel = match guard.as_ref() {
                Some(c) => c.clone(),
                None => {
                    // The coordinator may be briefly away: retry connecting
                    // until the deadline like any other transfer problem.
                    let mut backoff = Backoff::new(opts.backoff_min, opts.backoff_max);
                    let channel = loop {
                        match self.connect().await {
                            Ok(c) => break c,
                            Err(e) if e.is_retryable() && Instant::now() + opts.backoff_min < opts.deadline => {
                                let delay = backoff.next_delay();
                                tracing::info!(%artifact, "artifact fetch: {e}; retrying in {delay:?}");
                                tokio::time::sleep_until((Instant::now() + delay).min(opts.deadline)).await;
                            }
                            Err(e) => return Err(artifact_error(artifact, e.to_string())),
                        }
                    };
                    guard.insert(channel).clone()
                }
            };
            fetch(channel, &self.cache, artifact, sha256, &opts).await
        })
    }
}

// ---------------------------------------------------- the hook in the driver

fn refused(message: String, deadline: Option<Instant>) -> StepOutcome {
    let outcome = StepOutcome::failed(format!("{message}; nothing installed"));
    if deadline.is_some_and(|d| Instant::now() >= d) {
        StepOutcome { status: StepStatus::TimedOut, ..outcome }
    } else {
        outcome
    }
}

impl LocalDriver {
    /// A step's `source` made local: an `artifact:NAME@VERSION` is fetched
    /// (checked against `sha256`) and its cached path returned; anything else
    /// is returned as it is. A failure is the step's outcome.
    pub async fn resolve_source(
        &self,
        source: &str,
        sha256: &str,
        deadline: Option<Instant>,
    ) -> Result<String, StepOutcome> {
        let Some(parsed) = parse_source(source) else { return Ok(source.to_string()) };
        let artifact = parsed.map_err(|m| refused(m, None))?;
        let Some(fetcher) = &self.artifacts else {
            return Err(refused(format!("source {source}: this agent has no artifact service to fetch it from"), None));
        };
        match fetcher.fetch(&artifact, sha256, deadline).await {
            Ok(path) => path
                .into_os_string()
                .into_string()
                .map_err(|p| refused(format!("artifact {artifact}: cache path {p:?} is not UTF-8"), None)),
            Err(e) => Err(refused(e.to_string(), deadline)),
        }
    }

    /// The `dpkg` step with its `source` resolved first (an
    /// `artifact:NAME@VERSION` is fetched), then [`crate::driver::dpkg::run_dpkg`].
    pub async fn dpkg_step(&self, spec: &DpkgSpec, env: &PkgEnv, timeout: Duration) -> StepOutcome {
        let what = format!("dpkg {} {} ({})", spec.package, spec.version, spec.source);
        if let Err(refused) = self.trust.check(crate::trust::Need::IfRequired, &spec.signing, &spec.sha256, &what) {
            return StepOutcome::failed(refused);
        }
        if parse_source(&spec.source).is_none() {
            return crate::driver::dpkg::run_dpkg(spec, env, timeout).await;
        }
        let timeout = if timeout.is_zero() { crate::driver::pkg::DEFAULT_TIMEOUT } else { timeout };
        let deadline = Instant::now() + timeout;
        let source = match self.resolve_source(&spec.source, &spec.sha256, Some(deadline)).await {
            Ok(s) => s,
            Err(outcome) => return outcome,
        };
        let spec = DpkgSpec { source, ..spec.clone() };
        let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        crate::driver::dpkg::run_dpkg(&spec, env, left).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use convoy_proto::v1 as pb;
    use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
    use tonic::{Request, Response, Status, Streaming};

    use super::*;

    /// How the fake coordinator misbehaves on one request.
    #[derive(Debug, Clone, Copy)]
    enum Serve {
        /// Every byte from the offset.
        All,
        /// This many bytes, then a transport-like error.
        CutWithError(usize),
        /// This many bytes, then the stream just ends.
        CutQuietly(usize),
        /// Every byte, with the first one flipped.
        Corrupt,
    }

    #[derive(Debug)]
    struct Fake {
        data: Vec<u8>,
        /// Behaviour per request in order; `All` once exhausted.
        plan: Mutex<Vec<Serve>>,
        offsets: Arc<Mutex<Vec<u64>>>,
    }

    type Chunks = Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::ArtifactChunk, Status>> + Send>>;

    #[tonic::async_trait]
    impl pb::artifact_service_server::ArtifactService for Fake {
        async fn upload(&self, _: Request<Streaming<pb::ArtifactChunk>>) -> Result<Response<pb::ArtifactInfo>, Status> {
            Err(Status::unimplemented("fake"))
        }
        async fn list(&self, _: Request<pb::ListArtifactsRequest>) -> Result<Response<pb::ArtifactList>, Status> {
            Err(Status::unimplemented("fake"))
        }
        type FetchStream = Chunks;
        async fn fetch(&self, req: Request<pb::FetchRequest>) -> Result<Response<Chunks>, Status> {
            let r = req.into_inner();
            if r.name != "demo" {
                return Err(Status::not_found(format!("unknown artifact {}@{}", r.name, r.version)));
            }
            self.offsets.lock().unwrap().push(r.offset);
            let serve = {
                let mut plan = self.plan.lock().unwrap();
                if plan.is_empty() { Serve::All } else { plan.remove(0) }
            };
            let size = self.data.len() as u64;
            if r.offset > size {
                return Err(Status::invalid_argument("offset beyond the end"));
            }
            let mut data = self.data[r.offset as usize..].to_vec();
            let mut tail = None;
            match serve {
                Serve::All => {}
                Serve::CutWithError(n) => {
                    data.truncate(n);
                    tail = Some(Status::unavailable("connection reset"));
                }
                Serve::CutQuietly(n) => data.truncate(n),
                Serve::Corrupt => data[0] ^= 0xff,
            }
            let (tx, rx) = tokio::sync::mpsc::channel(64);
            let mut offset = r.offset;
            for part in data.chunks(1000) {
                let chunk = pb::ArtifactChunk { offset, size, data: part.to_vec(), ..Default::default() };
                offset += part.len() as u64;
                tx.send(Ok(chunk)).await.unwrap();
            }
            if let Some(status) = tail {
                tx.send(Err(status)).await.unwrap();
            }
            Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
        }
    }

    async fn serve(fake: Fake) -> Channel {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(pb::artifact_service_server::ArtifactServiceServer::new(fake))
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        tonic::transport::Endpoint::from_shared(format!("http://{addr}")).unwrap().connect().await.unwrap()
    }

    fn content() -> Vec<u8> {
        (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect()
    }

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    fn demo() -> ArtifactRef {
        ArtifactRef { name: "demo".into(), version: "1.0.0".into() }
    }

    fn quick(secs: u64) -> FetchOptions {
        FetchOptions {
            deadline: Instant::now() + Duration::from_secs(secs),
            backoff_min: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
        }
    }

    fn fake(plan: Vec<Serve>) -> (Fake, Arc<Mutex<Vec<u64>>>) {
        let offsets = Arc::new(Mutex::new(Vec::new()));
        (Fake { data: content(), plan: Mutex::new(plan), offsets: offsets.clone() }, offsets)
    }

    #[tokio::test]
    async fn resumes_after_dropped_streams_and_verifies() {
        let (f, offsets) = fake(vec![Serve::CutWithError(3000), Serve::CutQuietly(2500)]);
        let channel = serve(f).await;
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path(), 5);
        let want = sha(&content());
        let path = fetch(channel.clone(), &cache, &demo(), &want, &quick(10)).await.unwrap();
        assert_eq!(path, cache.path(&want));
        assert_eq!(std::fs::read(&path).unwrap(), content());
        assert!(!cache.partial(&want).exists());
        // Each attempt asked from where the partial file ended.
        assert_eq!(*offsets.lock().unwrap(), vec![0, 3000, 5500]);

        // A second fetch is a cache hit: no request.
        fetch(channel, &cache, &demo(), &want, &quick(10)).await.unwrap();
        assert_eq!(offsets.lock().unwrap().len(), 3);
    }

    #[tokio::test]
    async fn corrupted_download_is_refused_and_nothing_is_cached() {
        let (f, offsets) = fake(vec![Serve::Corrupt, Serve::Corrupt]);
        let channel = serve(f).await;
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path(), 5);
        let want = sha(&content());
        let err = fetch(channel, &cache, &demo(), &want, &quick(10)).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, AgentError::ArtifactMismatch { .. }), "{msg}");
        assert!(msg.contains("demo@1.0.0") && msg.contains(&want) && msg.contains("actual"), "{msg}");
        // Tried once more from zero, then refused.
        assert_eq!(*offsets.lock().unwrap(), vec![0, 0]);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "nothing left in the cache");
    }

    #[tokio::test]
    async fn a_partial_file_longer_than_the_artifact_restarts_from_zero() {
        let (f, offsets) = fake(vec![]);
        let channel = serve(f).await;
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path(), 5);
        let want = sha(&content());
        std::fs::write(cache.partial(&want), vec![0u8; 20_000]).unwrap();
        let path = fetch(channel, &cache, &demo(), &want, &quick(10)).await.unwrap();
        assert_eq!(std::fs::read(path).unwrap(), content());
        assert_eq!(*offsets.lock().unwrap(), vec![20_000, 0]);
    }

    #[tokio::test]
    async fn refusals_are_final_and_deadlines_hold() {
        let (f, offsets) = fake(vec![Serve::CutWithError(0); 1000]);
        let channel = serve(f).await;
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path(), 5);
        let want = sha(&content());
        let unknown = ArtifactRef { name: "ghost".into(), version: "1".into() };
        let err = fetch(channel.clone(), &cache, &unknown, &want, &quick(10)).await.unwrap_err().to_string();
        assert!(err.contains("ghost@1") && err.contains("NotFound"), "{err}");

        let err = fetch(channel.clone(), &cache, &demo(), "abc", &quick(10)).await.unwrap_err().to_string();
        assert!(err.contains("sha256"), "{err}");

        let started = std::time::Instant::now();
        let err = fetch(channel, &cache, &demo(), &want, &quick(1)).await.unwrap_err().to_string();
        assert!(err.contains("deadline") && err.contains("connection reset"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(offsets.lock().unwrap().len() > 3, "retried with backoff");
    }

    #[test]
    fn cache_keeps_the_most_recent() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path(), 2);
        let names: Vec<String> = (0..4).map(|i| format!("{i}").repeat(64)).collect();
        for (i, n) in names.iter().enumerate() {
            std::fs::write(cache.path(n), b"x").unwrap();
            let f = std::fs::File::options().write(true).open(cache.path(n)).unwrap();
            f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1000 + i as u64)).unwrap();
        }
        std::fs::write(cache.partial(&names[0]), b"x").unwrap();
        let old = std::fs::File::options().write(true).open(cache.partial(&names[0])).unwrap();
        old.set_modified(SystemTime::UNIX_EPOCH).unwrap();
        // `names[0]` was just fetched: kept, with the most recent other one.
        cache.prune(&names[0]);
        let mut left: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        left.sort();
        assert_eq!(left, vec![names[0].clone(), format!("{}.partial", names[0]), names[3].clone()]);
    }

    #[test]
    fn sources() {
        assert_eq!(parse_source("/srv/a.tar.gz"), None);
        assert_eq!(
            parse_source("artifact:demo-service@1.0.0"),
            Some(Ok(ArtifactRef { name: "demo-service".into(), version: "1.0.0".into() }))
        );
        for bad in ["artifact:demo", "artifact:@1", "artifact:demo@", "artifact:a@b@c"] {
            assert!(matches!(parse_source(bad), Some(Err(_))), "{bad}");
        }
    }

    /// Hands out a fixed local file, or an error.
    #[derive(Debug)]
    struct Stub(Result<PathBuf, String>);

    impl ArtifactSource for Stub {
        fn fetch<'a>(
            &'a self,
            artifact: &'a ArtifactRef,
            _sha256: &'a str,
            _deadline: Option<Instant>,
        ) -> Pin<Box<dyn Future<Output = Result<PathBuf, AgentError>> + Send + 'a>> {
            let r = self.0.clone().map_err(|m| artifact_error(artifact, m));
            Box::pin(async move { r })
        }
    }

    #[tokio::test]
    async fn dpkg_steps_resolve_artifact_sources_first() {
        let dir = tempfile::tempdir().unwrap();
        let deb = dir.path().join("fetched.deb");
        std::fs::write(&deb, b"not a deb").unwrap();
        let spec = DpkgSpec {
            package: "demo".into(),
            version: "1.0.0".into(),
            source: "artifact:demo@1.0.0".into(),
            sha256: "0".repeat(64),
            signing: Default::default(),
        };
        let env = PkgEnv::new(dir.path());
        let refused = LocalDriver::new(dir.path()).with_artifacts(Arc::new(Stub(Err("gone".into()))));
        let o = refused.dpkg_step(&spec, &env, Duration::from_secs(5)).await;
        assert_eq!(o.message, "artifact demo@1.0.0: gone; nothing installed");
        // The fetched file is what dpkg then checks (here: its sha256 fails).
        let fetched = LocalDriver::new(dir.path()).with_artifacts(Arc::new(Stub(Ok(deb.clone()))));
        let o = fetched.dpkg_step(&spec, &env, Duration::from_secs(5)).await;
        assert_eq!(o.status, StepStatus::Failed);
        assert!(o.message.contains("sha256 mismatch for") && o.message.contains("fetched.deb"), "{}", o.message);
    }

    #[tokio::test]
    async fn driver_without_a_source_refuses_artifact_sources() {
        let d = LocalDriver::new("/nonexistent");
        assert_eq!(d.resolve_source("rel/a.tgz", "", None).await.unwrap(), "rel/a.tgz");
        let o = d.resolve_source("artifact:demo@1", &"a".repeat(64), None).await.unwrap_err();
        assert!(o.message.contains("artifact:demo@1") && o.message.contains("nothing installed"), "{}", o.message);
    }
}
