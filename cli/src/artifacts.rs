//! `convoy artifact add|list|keygen|sign`: load files into the coordinator's offline
//! artifact store, which agents fetch from when a step's source is
//! `artifact:NAME@VERSION`.
//!
//! `add` hashes the file locally first and sends that sha256 with the upload,
//! so the coordinator refuses anything that arrives damaged; the file then
//! goes up in 256 KiB chunks. Without `--name`/`--version` they come from the
//! file name: `NAME-VERSION.EXT` (the first `-` before a digit splits them,
//! so `demo-service-1.0.0.tar.gz` is `demo-service` `1.0.0`) or Debian's
//! `NAME_VERSION_ARCH.deb`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use convoy_proto::v1 as pb;
use convoy_proto::v1::artifact_service_client::ArtifactServiceClient;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;
use tokio_stream::wrappers::ReceiverStream;

use crate::client::{Target, authenticated_channel};
use crate::commands::Output;
use crate::error::CliError;

/// Bytes per uploaded chunk.
const CHUNK_SIZE: usize = 256 * 1024;

/// Archive and package suffixes taken off a file name before splitting it.
const SUFFIXES: [&str; 12] =
    [".tar.gz", ".tar.xz", ".tar.bz2", ".tar.zst", ".tgz", ".tar", ".deb", ".rpm", ".zip", ".gz", ".bin", ".apk"];

#[derive(Debug, clap::Subcommand)]
pub enum ArtifactCmd {
    /// Load a file into the coordinator (content-addressed by sha256); prints its sha256.
    Add {
        file: PathBuf,
        /// Artifact name (default: from the file name, NAME-VERSION.EXT).
        #[arg(long)]
        name: Option<String>,
        /// Artifact version (default: from the file name, NAME-VERSION.EXT).
        #[arg(long)]
        version: Option<String>,
        /// The artifact's signature file (default: FILE.sig when it exists).
        #[arg(long)]
        signature: Option<PathBuf>,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Make a release owner's ed25519 key pair: KEY (secret, keep it off the
    /// coordinator) and KEY.pub (give it to agents with --trusted-key).
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// Sign FILE with a secret key: writes FILE.sig, which `artifact add`
    /// loads with FILE.
    Sign {
        #[arg(long)]
        key: PathBuf,
        file: PathBuf,
    },
    /// List the artifacts the coordinator holds.
    List {
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

/// `(name, version)` from a file name such as `demo-service-1.0.0.tar.gz` or
/// `demo_1.0.0_amd64.deb`.
pub fn name_version_from_file(file_name: &str) -> Option<(String, String)> {
    let stem = SUFFIXES.iter().find_map(|s| file_name.strip_suffix(s)).unwrap_or(file_name);
    if file_name.ends_with(".deb")
        && let Some((name, rest)) = stem.split_once('_')
    {
        let version = rest.split('_').next().unwrap_or(rest);
        return (!name.is_empty() && !version.is_empty()).then(|| (name.to_string(), version.to_string()));
    }
    let bytes = stem.as_bytes();
    let split = (1..bytes.len()).find(|&i| bytes[i - 1] == b'-' && bytes[i].is_ascii_digit())?;
    let (name, version) = (&stem[..split - 1], &stem[split..]);
    (!name.is_empty()).then(|| (name.to_string(), version.to_string()))
}

/// `keygen` and `sign` work offline: `target` is only asked for by the
/// commands that talk to the coordinator.
pub async fn run(cmd: ArtifactCmd, target: impl FnOnce() -> Result<Target, CliError>) -> Result<(), CliError> {
    match cmd {
        ArtifactCmd::Add { file, name, version, signature, output } => {
            let signature = match signature {
                Some(path) => Some(crate::signing::read_small(&path)?),
                None => {
                    let beside = crate::signing::signature_path(&file);
                    if beside.exists() { Some(crate::signing::read_small(&beside)?) } else { None }
                }
            };
            add_signed(&file, name, version, signature, &target()?, output).await
        }
        ArtifactCmd::Keygen { out } => {
            let id = crate::signing::keygen(&out)?;
            println!("secret key {} (keep it off the coordinator)", out.display());
            println!("public key {} (give it to agents: --trusted-key)", crate::signing::public_path(&out).display());
            println!("key id {id}");
            Ok(())
        }
        ArtifactCmd::Sign { key, file } => {
            let path = file.clone();
            let (sha256, _) = tokio::task::spawn_blocking(move || sha256_file(&path))
                .await
                .map_err(|e| CliError::Io { path: file.clone(), source: std::io::Error::other(e.to_string()) })??;
            let (sig, id) = crate::signing::sign(&key, &file, &sha256)?;
            println!("signed {} (sha256 {sha256}) with key {id}: {}", file.display(), sig.display());
            Ok(())
        }
        ArtifactCmd::List { output } => list(&target()?, output).await,
    }
}

pub(crate) fn sha256_file(path: &Path) -> Result<(String, u64), CliError> {
    let io = |source| CliError::Io { path: path.to_path_buf(), source };
    let mut f = std::fs::File::open(path).map_err(io)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut size = 0u64;
    loop {
        match std::io::Read::read(&mut f, &mut buf).map_err(io)? {
            0 => return Ok((hex::encode(h.finalize()), size)),
            n => {
                h.update(&buf[..n]);
                size += n as u64;
            }
        }
    }
}

pub(crate) async fn add(
    file: &Path,
    name: Option<String>,
    version: Option<String>,
    target: &Target,
    output: Output,
) -> Result<(), CliError> {
    add_signed(file, name, version, None, target, output).await
}

/// [`add`] with the artifact's signature file's text.
pub(crate) async fn add_signed(
    file: &Path,
    name: Option<String>,
    version: Option<String>,
    signature: Option<String>,
    target: &Target,
    output: Output,
) -> Result<(), CliError> {
    let guessed = file.file_name().and_then(|n| n.to_str()).and_then(name_version_from_file);
    let (name, version) = match (name, version, guessed) {
        (Some(n), Some(v), _) => (n, v),
        (n, v, Some((gn, gv))) => (n.unwrap_or(gn), v.unwrap_or(gv)),
        _ => {
            return Err(CliError::Usage(format!(
                "cannot tell the name and version from {:?} (expected NAME-VERSION.EXT); pass --name and --version",
                file.display().to_string()
            )));
        }
    };
    let path = file.to_path_buf();
    let (sha256, size) = tokio::task::spawn_blocking(move || sha256_file(&path))
        .await
        .map_err(|e| CliError::Io { path: file.to_path_buf(), source: std::io::Error::other(e.to_string()) })??;

    let (channel, auth) = authenticated_channel(target).await?;
    let mut client = ArtifactServiceClient::with_interceptor(channel, auth);
    let mut reader =
        tokio::fs::File::open(file).await.map_err(|source| CliError::Io { path: file.to_path_buf(), source })?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let (first_name, first_version, first_sha) = (name.clone(), version.clone(), sha256.clone());
    let mut first_signature = signature;
    let sender = tokio::spawn(async move {
        let mut offset = 0u64;
        let mut first = true;
        loop {
            let mut data = vec![0u8; CHUNK_SIZE];
            let mut filled = 0;
            while filled < CHUNK_SIZE {
                match reader.read(&mut data[filled..]).await? {
                    0 => break,
                    n => filled += n,
                }
            }
            data.truncate(filled);
            if filled == 0 && !first {
                return Ok::<(), std::io::Error>(());
            }
            let chunk = pb::ArtifactChunk {
                name: if first { first_name.clone() } else { String::new() },
                version: if first { first_version.clone() } else { String::new() },
                sha256: if first { first_sha.clone() } else { String::new() },
                offset,
                data,
                size: 0,
                signature: if first { first_signature.take().unwrap_or_default() } else { String::new() },
            };
            offset += filled as u64;
            first = false;
            if tx.send(chunk).await.is_err() || filled < CHUNK_SIZE {
                return Ok(());
            }
        }
    });
    let answer = client.upload(ReceiverStream::new(rx)).await;
    let read = sender.await;
    if let Ok(Err(source)) = read {
        return Err(CliError::Io { path: file.to_path_buf(), source });
    }
    let info = answer?.into_inner();
    match output {
        Output::Json => println!("{}", info_json(&info)),
        Output::Text => {
            let what = if info.existed { "already loaded" } else { "loaded" };
            println!("{what} {}@{} ({} bytes)", info.name, info.version, info.size);
            println!("sha256 {}", info.sha256);
            if !info.signed_by.is_empty() {
                println!("signed by key {}", info.signed_by);
            }
            println!(
                "use it in a plan as  source: artifact:{}@{}  with  sha256: {}",
                info.name, info.version, info.sha256
            );
        }
    }
    if info.sha256 != sha256 || info.size != size {
        return Err(CliError::Rpc(format!(
            "the coordinator stored sha256 {} ({} bytes) but the file has {sha256} ({size} bytes)",
            info.sha256, info.size
        )));
    }
    Ok(())
}

fn info_json(i: &pb::ArtifactInfo) -> serde_json::Value {
    serde_json::json!({
        "name": i.name,
        "version": i.version,
        "sha256": i.sha256,
        "size": i.size,
        "added_unix_ms": i.added_unix_ms,
        "existed": i.existed,
        "signed_by": i.signed_by,
    })
}

async fn list(target: &Target, output: Output) -> Result<(), CliError> {
    let (channel, auth) = authenticated_channel(target).await?;
    let mut client = ArtifactServiceClient::with_interceptor(channel, auth);
    let list = client.list(pb::ListArtifactsRequest {}).await?.into_inner().artifacts;
    match output {
        Output::Json => {
            let v: Vec<_> = list.iter().map(info_json).collect();
            println!("{}", serde_json::Value::Array(v));
        }
        Output::Text => print!("{}", table(&list)),
    }
    Ok(())
}

fn table(list: &[pb::ArtifactInfo]) -> String {
    let wn = list.iter().map(|a| a.name.len()).max().unwrap_or(4).max(4);
    let wv = list.iter().map(|a| a.version.len()).max().unwrap_or(7).max(7);
    let mut out = String::new();
    let _ = writeln!(out, "{:<wn$}  {:<wv$}  {:>12}  {:<16}  SHA256", "NAME", "VERSION", "SIZE", "SIGNED BY");
    for a in list {
        let by = if a.signed_by.is_empty() { "-" } else { a.signed_by.as_str() };
        let _ = writeln!(out, "{:<wn$}  {:<wv$}  {:>12}  {by:<16}  {}", a.name, a.version, a.size, a.sha256);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_versions_from_file_names() {
        let nv = |s: &str| name_version_from_file(s).map(|(n, v)| format!("{n} {v}"));
        assert_eq!(nv("demo-1.0.0.tar.gz").as_deref(), Some("demo 1.0.0"));
        assert_eq!(nv("demo-service-2.0.0-rc1.tgz").as_deref(), Some("demo-service 2.0.0-rc1"));
        assert_eq!(nv("convoy-agent-0.2.0").as_deref(), Some("convoy-agent 0.2.0"));
        assert_eq!(nv("demo-db_1.1.0_amd64.deb").as_deref(), Some("demo-db 1.1.0"));
        assert_eq!(nv("demo-db-1.1.0.deb").as_deref(), Some("demo-db 1.1.0"));
        assert_eq!(nv("notes.txt"), None);
        assert_eq!(nv("-1.0.tar.gz"), None);
    }
}
