//! Offline artifacts: files operators load into the coordinator and agents
//! fetch when a step needs one, so hosts never need internet access.
//!
//! Layout under the data directory (beside the sled store, not inside it):
//!
//! ```text
//! <data_dir>/artifacts/sha256/<hex>   the content, named by its sha256 (read-only once in place)
//! <data_dir>/artifacts/index.json     name, version, sha256, size, added_at of every artifact
//! <data_dir>/artifacts/tmp/           uploads in progress (emptied at start)
//! ```
//!
//! Rules:
//! - **Content-addressed.** An upload is written to a temporary file and hashed
//!   while it streams; only a complete upload whose sha256 matches the one the
//!   operator gave (if any) is renamed into `sha256/<hex>` and indexed. Two
//!   names for the same bytes share one file.
//! - **Immutable names.** Loading the same name, version and content again is a
//!   no-op (`existed` in the answer); the same name and version with other
//!   content is refused: a plan that says `artifact:demo@1.0.0` means one thing.
//! - **Durable.** Files and the index are fsynced and renamed into place; the
//!   index is rewritten atomically, so a crash leaves the old index or the new
//!   one. A blob without an index entry (a crash between the two) is harmless
//!   and reused by the next upload of those bytes.
//! - **Who may do what.** `Upload` needs an operator token and `List` a viewer
//!   token (the same check as the operator API, [`crate::operators`]); `Fetch`
//!   needs an agent's enrolled, unrevoked client certificate, checked like an
//!   agent session ([`crate::enrolment::authenticate_agent`]). Any enrolled
//!   agent may fetch any artifact.
//! - **Digests for plans.** An `archive` or `dpkg` step whose source is
//!   `artifact:NAME@VERSION` may leave out its sha256: planning fills it in
//!   from the index ([`ArtifactStore::fill_digests`]), so a stored rollout
//!   always carries the digest the agent checks. Such a step naming an
//!   artifact not loaded, or giving a sha256 other than the index's, is
//!   refused at submit time.
//! - **Fetch** streams [`CHUNK_SIZE`] chunks from a byte `offset`, so an agent
//!   resumes a download cut short. It refuses, before sending anything, an
//!   unknown artifact (NOT_FOUND), an expected sha256 that is not the
//!   artifact's (FAILED_PRECONDITION, naming both), and an offset beyond the
//!   end (INVALID_ARGUMENT). The agent verifies the sha256 itself anyway.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use convoy_common::artifact_ref::artifact_steps;
use convoy_common::model::RolloutSpec;
use convoy_proto::v1 as pb;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::enrolment::authenticate_agent;
use crate::error::CoordinatorError;
use crate::grpc::to_status;
use crate::operators::{OperatorAuth, Role, check_role, peer_label};
use crate::runtime::Clock;
use convoy_common::audit::AuditAction;

/// Bytes per fetched chunk.
pub const CHUNK_SIZE: usize = 256 * 1024;

/// One artifact in the index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactRecord {
    pub name: String,
    pub version: String,
    /// Lower-case hex.
    pub sha256: String,
    pub size: u64,
    pub added_unix_ms: u64,
}

impl ArtifactRecord {
    /// `name@version`, as plans write it after `artifact:`.
    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    pub fn to_wire(&self, existed: bool) -> pb::ArtifactInfo {
        pb::ArtifactInfo {
            name: self.name.clone(),
            version: self.version.clone(),
            sha256: self.sha256.clone(),
            size: self.size,
            added_unix_ms: self.added_unix_ms,
            existed,
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct IndexFile {
    artifacts: Vec<ArtifactRecord>,
}

/// Names and versions are plain tokens: they go in `artifact:NAME@VERSION`.
fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with(['.', '-'])
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | '~'))
}

fn check_token(field: &str, value: &str) -> Result<(), CoordinatorError> {
    if valid_token(value) {
        Ok(())
    } else {
        Err(CoordinatorError::BadRequest {
            field: field.into(),
            message: format!(
                "{value:?} is not a valid artifact {field} (letters, digits, '-', '_', '.', '+', '~'; \
                 not starting with '.' or '-')"
            ),
        })
    }
}

/// A sha256 given by a caller, normalised to lower case; empty is `None`.
fn parse_sha(field: &str, value: &str) -> Result<Option<String>, CoordinatorError> {
    let v = value.trim().to_ascii_lowercase();
    if v.is_empty() {
        return Ok(None);
    }
    if v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(Some(v))
    } else {
        Err(CoordinatorError::BadRequest {
            field: field.into(),
            message: format!("{value:?} is not a sha256 (64 hex digits)"),
        })
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> CoordinatorError + '_ {
    move |source| CoordinatorError::Io { path: path.to_path_buf(), source }
}

fn sync_dir(dir: &Path) -> Result<(), CoordinatorError> {
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(io_err(dir))
}

/// The artifact store of one data directory.
#[derive(Debug)]
pub struct ArtifactStore {
    root: PathBuf,
    index: Mutex<Vec<ArtifactRecord>>,
    quota: ArtifactQuota,
}

/// How much the artifact store may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArtifactQuota {
    /// The largest one artifact may be.
    pub max_artifact_bytes: u64,
    /// The most all artifacts together may take (content shared by several
    /// names counts once).
    pub max_total_bytes: u64,
}

impl Default for ArtifactQuota {
    fn default() -> Self {
        ArtifactQuota { max_artifact_bytes: 8 << 30, max_total_bytes: 64 << 30 }
    }
}

/// `<data_dir>/artifacts`.
pub fn artifacts_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("artifacts")
}

impl ArtifactStore {
    /// Opens (creating) the store under `data_dir` with the default quota.
    pub fn open(data_dir: &Path) -> Result<ArtifactStore, CoordinatorError> {
        Self::open_with(data_dir, ArtifactQuota::default())
    }

    /// Opens (creating) the store under `data_dir` and clears unfinished uploads.
    pub fn open_with(data_dir: &Path, quota: ArtifactQuota) -> Result<ArtifactStore, CoordinatorError> {
        let root = artifacts_dir(data_dir);
        for d in [root.join("sha256"), root.join("tmp")] {
            std::fs::create_dir_all(&d).map_err(io_err(&d))?;
        }
        let tmp = root.join("tmp");
        for entry in std::fs::read_dir(&tmp).map_err(io_err(&tmp))?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        let index_path = root.join("index.json");
        let index = match std::fs::read(&index_path) {
            Ok(bytes) => {
                serde_json::from_slice::<IndexFile>(&bytes)
                    .map_err(|e| CoordinatorError::Store {
                        op: "read artifact index",
                        message: format!("{}: {e}", index_path.display()),
                    })?
                    .artifacts
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(CoordinatorError::Io { path: index_path, source: e }),
        };
        Ok(ArtifactStore { root, index: Mutex::new(index), quota })
    }

    fn lock(&self) -> MutexGuard<'_, Vec<ArtifactRecord>> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the content with this sha256 lives.
    pub fn blob_path(&self, sha256: &str) -> PathBuf {
        self.root.join("sha256").join(sha256)
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Every artifact, by name then version.
    pub fn list(&self) -> Vec<ArtifactRecord> {
        let mut v = self.lock().clone();
        v.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        v
    }

    pub fn find(&self, name: &str, version: &str) -> Option<ArtifactRecord> {
        self.lock().iter().find(|r| r.name == name && r.version == version).cloned()
    }

    pub fn find_sha(&self, sha256: &str) -> Option<ArtifactRecord> {
        self.lock().iter().find(|r| r.sha256 == sha256).cloned()
    }

    /// Gives every `archive` and `dpkg` step of `spec` whose source names an
    /// artifact and whose plan left out the sha256 the digest recorded when
    /// the artifact was loaded. Refuses such a step naming an artifact that is
    /// not loaded, and any artifact step whose written sha256 is not the
    /// loaded artifact's (an artifact the plan gives a sha256 for may still be
    /// loaded before its step runs: the agent refuses it if it is not).
    pub fn fill_digests(&self, spec: &mut RolloutSpec) -> Result<(), CoordinatorError> {
        for plan in &mut spec.hosts {
            let host = plan.key().to_string();
            for s in artifact_steps(plan) {
                let refused = |message: String| CoordinatorError::ArtifactDigest {
                    host: host.clone(),
                    step: s.step.to_string(),
                    message,
                };
                let given = !s.sha256.is_empty();
                let artifact = match s.artifact {
                    Ok(a) => a,
                    Err(why) if !given => return Err(refused(format!("{why}, so its sha256 cannot be looked up"))),
                    Err(_) => continue,
                };
                match self.find(&artifact.name, &artifact.version) {
                    Some(r) if !given => *s.sha256 = r.sha256,
                    Some(r) if *s.sha256 != r.sha256 => {
                        return Err(refused(format!(
                            "the plan gives sha256 {} for artifact {artifact}, but the coordinator loaded it with \
                             sha256 {}: fix the plan's sha256, or leave it out to use the artifact store's",
                            s.sha256, r.sha256
                        )));
                    }
                    Some(_) => {}
                    None if !given => {
                        return Err(refused(format!(
                            "artifact {artifact} is not loaded in the coordinator, and the plan gives no sha256 \
                             for it: load it first (`convoy artifact add`)"
                        )));
                    }
                    None => {}
                }
            }
        }
        Ok(())
    }

    /// Bytes the stored contents take (each content once).
    pub fn used_bytes(&self) -> u64 {
        let index = self.lock();
        let mut seen = std::collections::HashSet::new();
        index.iter().filter(|r| seen.insert(r.sha256.as_str())).map(|r| r.size).sum()
    }

    /// A new temporary file for the upload of `what`, refused as it grows
    /// past the per-artifact limit or the room left in the quota.
    pub async fn begin_upload(&self, what: &str) -> Result<Upload, CoordinatorError> {
        let room = self.quota.max_total_bytes.saturating_sub(self.used_bytes());
        let (limit, why) = if room < self.quota.max_artifact_bytes {
            (room, format!("the artifact store has {room} bytes left of its {} byte quota", self.quota.max_total_bytes))
        } else {
            let max = self.quota.max_artifact_bytes;
            (max, format!("an artifact may be at most {max} bytes (--artifact-max-bytes)"))
        };
        let path = self.root.join("tmp").join(format!("upload-{}", crate::tls::random_token()));
        let file =
            tokio::fs::OpenOptions::new().write(true).create_new(true).open(&path).await.map_err(io_err(&path))?;
        Ok(Upload {
            staged: Staged { path, sha256: String::new(), size: 0 },
            file,
            hasher: Sha256::new(),
            limit,
            what: what.to_string(),
            why,
        })
    }

    fn write_index(&self, records: &[ArtifactRecord]) -> Result<(), CoordinatorError> {
        let path = self.index_path();
        let tmp = self.root.join("tmp").join(format!("index-{}", crate::tls::random_token()));
        let body = serde_json::to_vec_pretty(&IndexFile { artifacts: records.to_vec() })
            .map_err(|e| CoordinatorError::Store { op: "write artifact index", message: e.to_string() })?;
        let result = (|| {
            let mut f = std::fs::File::create(&tmp).map_err(io_err(&tmp))?;
            f.write_all(&body).and_then(|()| f.sync_all()).map_err(io_err(&tmp))?;
            std::fs::rename(&tmp, &path).map_err(io_err(&path))?;
            sync_dir(&self.root)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Puts a finished upload in place as `name@version` (blocking: call it
    /// from `spawn_blocking`). Returns the record and whether it already existed.
    pub fn commit(
        &self,
        name: &str,
        version: &str,
        expected: Option<&str>,
        staged: Staged,
        added_unix_ms: u64,
    ) -> Result<(ArtifactRecord, bool), CoordinatorError> {
        let what = format!("{name}@{version}");
        if let Some(want) = expected
            && want != staged.sha256
        {
            return Err(CoordinatorError::BadRequest {
                field: "sha256".into(),
                message: format!(
                    "upload of {what} has sha256 {} but {want} was expected (corrupted or truncated in transit); \
                     nothing stored",
                    staged.sha256
                ),
            });
        }
        let mut index = self.lock();
        if let Some(existing) = index.iter().find(|r| r.name == name && r.version == version) {
            if existing.sha256 == staged.sha256 {
                // Loading it again also repairs a damaged or missing file.
                let blob = self.blob_path(&staged.sha256);
                if std::fs::metadata(&blob).map(|m| m.len()).ok() != Some(staged.size) {
                    std::fs::rename(&staged.path, &blob).map_err(io_err(&blob))?;
                    sync_dir(&self.root.join("sha256"))?;
                }
                return Ok((existing.clone(), true));
            }
            return Err(refused_other_content(existing, &staged.sha256));
        }
        let blob = self.blob_path(&staged.sha256);
        // Uploads running side by side each fit alone: the total is checked
        // again here, under the index lock.
        let mut seen = std::collections::HashSet::new();
        let used: u64 = index.iter().filter(|r| seen.insert(r.sha256.as_str())).map(|r| r.size).sum();
        if !seen.contains(staged.sha256.as_str()) && used.saturating_add(staged.size) > self.quota.max_total_bytes {
            return Err(CoordinatorError::ArtifactRefused {
                what,
                message: format!(
                    "the artifact store would hold {} bytes, more than its {} byte quota (--artifact-quota-bytes)",
                    used.saturating_add(staged.size),
                    self.quota.max_total_bytes
                ),
            });
        }
        if !blob.exists() {
            std::fs::rename(&staged.path, &blob).map_err(io_err(&blob))?;
            // Read-only from now on: content-addressed files never change.
            let _ = std::fs::set_permissions(&blob, std::os::unix::fs::PermissionsExt::from_mode(0o444));
            sync_dir(&self.root.join("sha256"))?;
        }
        let record = ArtifactRecord {
            name: name.to_string(),
            version: version.to_string(),
            sha256: staged.sha256.clone(),
            size: staged.size,
            added_unix_ms,
        };
        let mut next = index.clone();
        next.push(record.clone());
        self.write_index(&next)?;
        *index = next;
        Ok((record, false))
    }
}

fn refused_other_content(existing: &ArtifactRecord, other_sha: &str) -> CoordinatorError {
    CoordinatorError::ArtifactRefused {
        what: existing.label(),
        message: format!(
            "already loaded with sha256 {}; refusing other content (sha256 {other_sha}) under the same name and \
             version: load it as a new version",
            existing.sha256
        ),
    }
}

/// A complete upload in its temporary file; removed when dropped unless
/// [`ArtifactStore::commit`] moved it into place.
#[derive(Debug)]
pub struct Staged {
    path: PathBuf,
    pub sha256: String,
    pub size: u64,
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// An upload being written and hashed.
#[derive(Debug)]
pub struct Upload {
    staged: Staged,
    file: tokio::fs::File,
    hasher: Sha256,
    limit: u64,
    what: String,
    why: String,
}

impl Upload {
    pub async fn write(&mut self, data: &[u8]) -> Result<(), CoordinatorError> {
        if self.staged.size.saturating_add(data.len() as u64) > self.limit {
            return Err(CoordinatorError::ArtifactRefused {
                what: self.what.clone(),
                message: format!("too large: {}", self.why),
            });
        }
        self.file.write_all(data).await.map_err(io_err(&self.staged.path))?;
        self.hasher.update(data);
        self.staged.size += data.len() as u64;
        Ok(())
    }

    /// Flushes and fsyncs the file; the upload is complete.
    pub async fn finish(mut self) -> Result<Staged, CoordinatorError> {
        self.file.flush().await.map_err(io_err(&self.staged.path))?;
        self.file.sync_all().await.map_err(io_err(&self.staged.path))?;
        self.staged.sha256 = hex::encode(self.hasher.finalize());
        Ok(self.staged)
    }
}

// -------------------------------------------------------------------- gRPC

/// The `ArtifactService`.
pub struct ArtifactSvc {
    pub store: Arc<ArtifactStore>,
    /// The operator API's token check, applied to `Upload` and `List`.
    pub auth: OperatorAuth,
    /// The enrolment records `Fetch` checks agents' certificates against.
    pub enrolments: Arc<dyn crate::store::Store>,
    pub clock: Clock,
    /// Ends fetch streams when the server stops.
    pub shutdown: CancellationToken,
}

impl ArtifactSvc {
    fn require<T>(&self, req: &Request<T>, needed: Role, what: &str) -> Result<(), Status> {
        let caller = self.auth.check_metadata(req.metadata(), req.remote_addr())?;
        check_role(caller, req.remote_addr(), needed, what).map(|_| ())
    }
}

impl ArtifactSvc {
    /// Receive an upload's chunks and commit it; `label` is set to
    /// `NAME@VERSION` once the first chunk named it (for the audit trail).
    async fn receive(
        &self,
        mut inbound: Streaming<pb::ArtifactChunk>,
        label: &mut String,
    ) -> Result<pb::ArtifactInfo, Status> {
        let first = inbound.message().await?.ok_or_else(|| {
            to_status(CoordinatorError::BadRequest { field: "chunks".into(), message: "empty upload".into() })
        })?;
        check_token("name", &first.name).map_err(to_status)?;
        check_token("version", &first.version).map_err(to_status)?;
        let expected = parse_sha("sha256", &first.sha256).map_err(to_status)?;
        let (name, version) = (first.name.clone(), first.version.clone());
        *label = format!("{name}@{version}");
        // Refuse a known conflict before receiving the bytes.
        if let (Some(existing), Some(want)) = (self.store.find(&name, &version), &expected)
            && existing.sha256 != *want
        {
            return Err(to_status(refused_other_content(&existing, want)));
        }
        let mut upload = self.store.begin_upload(&format!("{name}@{version}")).await.map_err(to_status)?;
        upload.write(&first.data).await.map_err(to_status)?;
        while let Some(chunk) = inbound.message().await? {
            upload.write(&chunk.data).await.map_err(to_status)?;
        }
        let staged = upload.finish().await.map_err(to_status)?;
        let (size, store, now) = (staged.size, self.store.clone(), self.clock.now().0);
        let (n, v) = (name.clone(), version.clone());
        let (record, existed) =
            tokio::task::spawn_blocking(move || store.commit(&n, &v, expected.as_deref(), staged, now))
                .await
                .map_err(task_failed)?
                .map_err(to_status)?;
        tracing::info!(artifact = %record.label(), sha256 = %record.sha256, size, existed, "artifact loaded");
        Ok(record.to_wire(existed))
    }
}

type FetchStream = Pin<Box<dyn Stream<Item = Result<pb::ArtifactChunk, Status>> + Send>>;

fn task_failed(e: tokio::task::JoinError) -> Status {
    to_status(CoordinatorError::Store { op: "artifact commit", message: e.to_string() })
}

#[tonic::async_trait]
impl pb::artifact_service_server::ArtifactService for ArtifactSvc {
    async fn upload(&self, req: Request<Streaming<pb::ArtifactChunk>>) -> Result<Response<pb::ArtifactInfo>, Status> {
        // Audited (issue 13): a refusal, and how the upload ended, go to the trail.
        let caller = self.auth.check_metadata(req.metadata(), req.remote_addr())?;
        let origin = crate::audit::Origin::new(Some(caller), req.remote_addr());
        let (store, now, action) = (self.enrolments.as_ref(), self.clock.now(), AuditAction::ArtifactAdd);
        crate::audit::authorize(store, now, &origin, Role::Operator, "uploading an artifact", action, "")?;
        let mut label = String::new();
        let result = self.receive(req.into_inner(), &mut label).await;
        let detail = result.as_ref().map(|r| format!("sha256 {}, {} bytes, existed {}", r.sha256, r.size, r.existed));
        let detail = detail.unwrap_or_default();
        Ok(Response::new(crate::audit::finish(store, self.clock.now(), &origin, action, &label, &detail, result)?))
    }

    async fn list(&self, req: Request<pb::ListArtifactsRequest>) -> Result<Response<pb::ArtifactList>, Status> {
        self.require(&req, Role::Viewer, "listing artifacts")?;
        let artifacts = self.store.list().iter().map(|r| r.to_wire(false)).collect();
        Ok(Response::new(pb::ArtifactList { artifacts }))
    }

    type FetchStream = FetchStream;

    async fn fetch(&self, req: Request<pb::FetchRequest>) -> Result<Response<FetchStream>, Status> {
        let peer = peer_label(req.remote_addr());
        let certs = req.peer_certs();
        let host =
            authenticate_agent(self.enrolments.as_ref(), self.clock.now(), certs.as_deref().map(|c| c.as_slice()))
                .map_err(|e| {
                    tracing::warn!(%peer, error = %e, "artifact fetch refused");
                    to_status(e)
                })?;
        let r = req.into_inner();
        let want = parse_sha("sha256", &r.sha256).map_err(to_status)?;
        let record = if r.name.is_empty() && r.version.is_empty() {
            let sha = want.clone().ok_or_else(|| {
                to_status(CoordinatorError::BadRequest {
                    field: "name".into(),
                    message: "name and version, or a sha256, are required".into(),
                })
            })?;
            self.store.find_sha(&sha).ok_or_else(|| to_status(CoordinatorError::UnknownArtifact { what: sha }))?
        } else {
            let what = format!("{}@{}", r.name, r.version);
            let record = self
                .store
                .find(&r.name, &r.version)
                .ok_or_else(|| to_status(CoordinatorError::UnknownArtifact { what: what.clone() }))?;
            if let Some(want) = &want
                && *want != record.sha256
            {
                return Err(to_status(CoordinatorError::ArtifactRefused {
                    what,
                    message: format!(
                        "sha256 mismatch: expected {want}, the coordinator has {}; check the plan's sha256",
                        record.sha256
                    ),
                }));
            }
            record
        };
        if r.offset > record.size {
            return Err(to_status(CoordinatorError::BadRequest {
                field: "offset".into(),
                message: format!("offset {} is beyond the end of {} ({} bytes)", r.offset, record.label(), record.size),
            }));
        }
        let path = self.store.blob_path(&record.sha256);
        let mut file = tokio::fs::File::open(&path).await.map_err(|e| to_status(io_err(&path)(e)))?;
        let on_disk = file.metadata().await.map_err(|e| to_status(io_err(&path)(e)))?.len();
        if on_disk != record.size {
            return Err(to_status(CoordinatorError::ArtifactRefused {
                what: record.label(),
                message: format!(
                    "the coordinator's copy is damaged ({on_disk} bytes on disk, {} expected); load it again",
                    record.size
                ),
            }));
        }
        file.seek(std::io::SeekFrom::Start(r.offset)).await.map_err(|e| to_status(io_err(&path)(e)))?;
        tracing::info!(%host, artifact = %record.label(), offset = r.offset, size = record.size, "artifact fetch");

        let (tx, rx) = mpsc::channel(4);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut offset = r.offset;
            let mut first = true;
            loop {
                let mut data = vec![0u8; CHUNK_SIZE.min((record.size - offset) as usize)];
                if let Err(e) = file.read_exact(&mut data).await {
                    let _ = tx.send(Err(to_status(io_err(&path)(e)))).await;
                    return;
                }
                let chunk = pb::ArtifactChunk {
                    name: if first { record.name.clone() } else { String::new() },
                    version: if first { record.version.clone() } else { String::new() },
                    sha256: if first { record.sha256.clone() } else { String::new() },
                    offset,
                    size: record.size,
                    data,
                };
                offset += chunk.data.len() as u64;
                first = false;
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    sent = tx.send(Ok(chunk)) => if sent.is_err() { return },
                }
                if offset >= record.size {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    async fn stage(store: &ArtifactStore, data: &[u8]) -> Staged {
        let mut up = store.begin_upload("test@1").await.unwrap();
        for part in data.chunks(3) {
            up.write(part).await.unwrap();
        }
        up.finish().await.unwrap()
    }

    #[tokio::test]
    async fn uploads_past_the_artifact_limit_or_the_quota_are_refused_and_leave_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let quota = ArtifactQuota { max_artifact_bytes: 10, max_total_bytes: 15 };
        let store = ArtifactStore::open_with(dir.path(), quota).unwrap();
        let mut big = store.begin_upload("big@1").await.unwrap();
        let err = big.write(&[0u8; 11]).await.unwrap_err().to_string();
        assert!(err.contains("big@1") && err.contains("at most 10 bytes"), "{err}");
        drop(big);
        let first = stage(&store, b"0123456789").await;
        store.commit("a", "1", None, first, 1).unwrap();
        // 5 bytes left: the next upload may not grow past them.
        let mut up = store.begin_upload("b@1").await.unwrap();
        let err = up.write(b"abcdef").await.unwrap_err().to_string();
        assert!(err.contains("left of its 15 byte quota"), "{err}");
        drop(up);
        assert_eq!(store.used_bytes(), 10);
        assert_eq!(std::fs::read_dir(dir.path().join("artifacts/tmp")).unwrap().count(), 0, "nothing left behind");
    }

    #[tokio::test]
    async fn content_addressed_idempotent_and_immutable_names() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(dir.path()).unwrap();
        let staged = stage(&store, b"hello world").await;
        assert_eq!(staged.sha256, sha(b"hello world"));
        let (rec, existed) = store.commit("demo", "1.0.0", None, staged, 7).unwrap();
        assert!(!existed);
        assert_eq!(rec.size, 11);
        assert_eq!(std::fs::read(store.blob_path(&rec.sha256)).unwrap(), b"hello world");

        // Same content again: a no-op.
        let staged = stage(&store, b"hello world").await;
        let (again, existed) = store.commit("demo", "1.0.0", Some(&rec.sha256), staged, 9).unwrap();
        assert!(existed);
        assert_eq!(again, rec);

        // Other content under the same name and version: refused, nothing changes.
        let staged = stage(&store, b"other").await;
        let err = store.commit("demo", "1.0.0", None, staged, 9).unwrap_err();
        assert!(matches!(err, CoordinatorError::ArtifactRefused { .. }), "{err}");
        assert!(err.to_string().contains(&rec.sha256), "{err}");

        // A wrong expected sha: refused, the temporary file is gone.
        let staged = stage(&store, b"v2").await;
        let err = store.commit("demo", "2.0.0", Some(&sha(b"v3")), staged, 9).unwrap_err();
        assert!(err.to_string().contains("nothing stored"), "{err}");
        assert_eq!(std::fs::read_dir(dir.path().join("artifacts/tmp")).unwrap().count(), 0);

        // Same bytes under another name share the file.
        let staged = stage(&store, b"hello world").await;
        store.commit("alias", "1", None, staged, 10).unwrap();
        assert_eq!(std::fs::read_dir(dir.path().join("artifacts/sha256")).unwrap().count(), 1);

        // The index survives a reopen.
        drop(store);
        let store = ArtifactStore::open(dir.path()).unwrap();
        let names: Vec<_> = store.list().iter().map(ArtifactRecord::label).collect();
        assert_eq!(names, ["alias@1", "demo@1.0.0"]);
        assert_eq!(store.find_sha(&rec.sha256).map(|r| r.sha256), Some(rec.sha256));
    }

    fn spec(steps: &str) -> RolloutSpec {
        let text = format!(
            "name: d\nversion: \"1.0.0\"\ngroups:\n  - name: web\n    select: {{ role: web }}\n    steps:\n{steps}"
        );
        let host = convoy_common::model::InventoryHost {
            id: "web-1".into(),
            labels: [("role".to_string(), "web".to_string())].into(),
            installed: Default::default(),
            facts: Default::default(),
        };
        let plan = convoy_common::plan::parse_plan("plan.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
        convoy_common::plan::expand(&plan, &[host]).unwrap_or_else(|e| panic!("{e}"))
    }

    fn digests(spec: &mut RolloutSpec) -> Vec<String> {
        artifact_steps(&mut spec.hosts[0]).into_iter().map(|s| s.sha256.clone()).collect()
    }

    #[tokio::test]
    async fn plans_get_the_digests_of_loaded_artifacts() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(dir.path()).unwrap();
        let (tar, deb) = (sha(b"demo tar"), sha(b"demo deb"));
        store.commit("demo", "1.0.0", None, stage(&store, b"demo tar").await, 1).unwrap();
        store.commit("demo-db", "1.0.0", None, stage(&store, b"demo deb").await, 1).unwrap();

        // Left out: filled in from the store; written and equal: kept.
        let mut s = spec(&format!(
            "      - archive: {{ component: demo, version: \"{{{{version}}}}\", source: \"artifact:demo@{{{{version}}}}\" }}
      - dpkg: {{ package: demo-db, version: \"1.0.0\", source: \"artifact:demo-db@1.0.0\" }}
      - archive: {{ component: again, version: \"1\", source: \"artifact:demo@1.0.0\", sha256: \"{}\" }}
",
            tar.to_ascii_uppercase()
        ));
        assert_eq!(digests(&mut s), ["", "", tar.as_str()]);
        store.fill_digests(&mut s).unwrap();
        assert_eq!(digests(&mut s), [tar.as_str(), deb.as_str(), tar.as_str()]);

        // Left out for an artifact not loaded: refused, naming host, step and artifact.
        let mut s = spec(
            "      - name: install
        archive: { component: ghost, version: \"1\", source: \"artifact:ghost@9.9.9\" }
",
        );
        let err = store.fill_digests(&mut s).unwrap_err();
        assert!(matches!(err, CoordinatorError::ArtifactDigest { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("host web-1") && msg.contains("'install'") && msg.contains("ghost@9.9.9"), "{msg}");
        assert!(msg.contains("not loaded"), "{msg}");
        assert_eq!(to_status(err).code(), tonic::Code::InvalidArgument);

        // Written but other than the store's: refused, naming both.
        let wrong = sha(b"not the archive");
        let mut s = spec(&format!(
            "      - archive: {{ component: demo, version: \"1.0.0\", source: \"artifact:demo@1.0.0\", sha256: \"{wrong}\" }}\n"
        ));
        let msg = store.fill_digests(&mut s).unwrap_err().to_string();
        assert!(msg.contains("archive-1") && msg.contains(&wrong) && msg.contains(&tar), "{msg}");

        // Written for an artifact not loaded (yet): left to the agent, as before.
        let mut s = spec(&format!(
            "      - archive: {{ component: later, version: \"1\", source: \"artifact:later@1\", sha256: \"{wrong}\" }}\n"
        ));
        store.fill_digests(&mut s).unwrap();
        assert_eq!(digests(&mut s), [wrong.as_str()]);
    }

    #[test]
    fn names_and_shas() {
        for ok in ["demo", "demo-service", "1.0.0", "2.0.0~rc1", "a+b_c"] {
            assert!(valid_token(ok), "{ok}");
        }
        for bad in ["", ".x", "-x", "a/b", "a@b", "a b", "../x"] {
            assert!(!valid_token(bad), "{bad}");
        }
        assert_eq!(parse_sha("s", "").unwrap(), None);
        assert_eq!(parse_sha("s", &"AB".repeat(32)).unwrap(), Some("ab".repeat(32)));
        assert!(parse_sha("s", "abc").is_err());
    }
}
