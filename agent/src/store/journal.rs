//! The execution journal: every "started" marker and every outcome appended
//! to one file, `<state_dir>/executions/journal.jsonl`, and fsync'd before the
//! call returns.
//!
//! Why one file and not one per record: a record file costs a new inode, a
//! temporary file, a rename and two fsyncs (file and directory); an append
//! costs one `fdatasync`. At two records per step that was most of the
//! agent's own cost per step (see docs/benchmark.md), and a directory that
//! only ever grew.
//!
//! The format is JSON lines, each `{"v":1,"id":…,"at_unix_ms":…,"event":…}`
//! with `"event":"started"` or `"event":"finished","outcome":{…}`. The file is
//! opened with `O_APPEND`, so another process appending at the same time (the
//! self-upgrade watchdog records a revert) does not overwrite a record; this
//! store catches up with what others appended before every lookup (one
//! `fstat`). Lookups go through an index of id → (started, where the outcome
//! line is); outcomes are read back from the file, so memory holds ids, not
//! output tails.
//!
//! A crash in the middle of an append leaves a last line without its newline.
//! Its call never returned, so nothing acted on it: a torn "started" means the
//! step was not spawned, a torn outcome means the result was not reported
//! (the step reads as interrupted). Such a line, and any line that does not
//! parse, is skipped with a warning naming the file and line; the next append
//! starts on a fresh line. A line of a newer format version (an agent rolled
//! back by its watchdog reads what the newer one wrote) counts as "started,
//! outcome unknown", the reading that never runs a step twice.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use convoy_common::model::StepOutcome;
use serde::{Deserialize, Serialize};

use super::{ExecutionStore, legacy};
use crate::error::AgentError;
use crate::fsutil;
use crate::wallclock::now_unix_ms;

/// The journal's file name inside the executions directory.
pub const JOURNAL_FILE: &str = "journal.jsonl";
/// The format version this agent writes.
const VERSION: u32 = 1;
/// Longest line read back: a record holds at most a few KiB of output tails,
/// so anything longer is damage, skipped rather than buffered.
const MAX_LINE: usize = 1 << 20;
/// How much of the file is read at once when catching up.
const CHUNK: usize = 64 * 1024;

/// One line of the journal.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    v: u32,
    id: String,
    at_unix_ms: u64,
    #[serde(flatten)]
    entry: Entry,
}

/// What a line records.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
enum Entry {
    /// The execution is about to be spawned.
    Started,
    /// The execution ended with `outcome`.
    Finished { outcome: StepOutcome },
}

/// The fields every version of a line keeps, read when a line does not
/// parse as this version's.
#[derive(Debug, Deserialize)]
struct Head {
    v: u32,
    id: String,
}

/// Where an outcome line lies in the file.
#[derive(Debug, Clone, Copy)]
struct Span {
    offset: u64,
    len: usize,
}

/// What the journal says about one execution id.
#[derive(Debug, Default)]
struct Slot {
    started: bool,
    finished: Option<Span>,
}

#[derive(Debug)]
struct State {
    file: File,
    index: HashMap<String, Slot>,
    /// Bytes read and indexed: everything up to the last newline seen.
    consumed: u64,
    /// Lines indexed so far, for warnings that name a line.
    lines: u64,
    /// Bytes after `consumed` that are not a whole line yet (a torn append,
    /// or another process's append in progress).
    torn: bool,
}

/// The agent's execution store on disk: the journal, plus the per-record
/// files of earlier agents in the same directory (read only).
#[derive(Debug)]
pub struct FileStore {
    dir: PathBuf,
    path: PathBuf,
    state: Mutex<State>,
}

impl FileStore {
    /// Opens (creating it if needed) the store in `dir`, usually
    /// [`crate::config::AgentConfig::executions_dir`], and indexes its
    /// journal.
    pub fn open(dir: impl Into<PathBuf>) -> Result<FileStore, AgentError> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir).map_err(AgentError::io(&dir))?;
        let path = dir.join(JOURNAL_FILE);
        let existed = path.exists();
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .map_err(AgentError::io(&path))?;
        if !existed {
            fsutil::sync_dir(&dir).map_err(AgentError::io(&dir))?;
        }
        let state = State { file, index: HashMap::new(), consumed: 0, lines: 0, torn: false };
        let store = FileStore { dir, path, state: Mutex::new(state) };
        {
            let mut st = store.state.lock().unwrap_or_else(|p| p.into_inner());
            store.catch_up(&mut st).map_err(AgentError::io(&store.path))?;
        }
        Ok(store)
    }

    /// The directory the journal (and earlier agents' records) live in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The journal file.
    pub fn journal_path(&self) -> &Path {
        &self.path
    }

    fn err(&self, execution_id: &str, message: impl ToString) -> AgentError {
        AgentError::Store {
            path: self.path.clone(),
            execution_id: execution_id.to_string(),
            message: message.to_string(),
        }
    }

    /// Runs `f` on the state under the lock, mapping I/O errors to a store
    /// error about `execution_id`.
    fn locked<T>(
        &self,
        execution_id: &str,
        f: impl FnOnce(&FileStore, &mut State) -> std::io::Result<T>,
    ) -> Result<T, AgentError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(self, &mut st).map_err(|e| self.err(execution_id, e))
    }

    /// Indexes whatever was appended (by anyone) since the last call.
    fn catch_up(&self, st: &mut State) -> std::io::Result<()> {
        let len = st.file.metadata()?.len();
        if len < st.consumed {
            // Truncated or pruned under us: index it afresh.
            tracing::warn!(path = %self.path.display(), "execution journal shrank; indexing it again");
            st.index.clear();
            st.consumed = 0;
            st.lines = 0;
        }
        let mut buf = vec![0u8; CHUNK.min((len - st.consumed) as usize)];
        // The line being assembled across chunks: its bytes (dropped once it
        // is too long to be a record) and its length.
        let mut pending: Vec<u8> = Vec::new();
        let mut pending_len = 0usize;
        let mut line_start = st.consumed;
        let mut pos = st.consumed;
        while pos < len {
            let want = CHUNK.min((len - pos) as usize);
            let n = st.file.read_at(&mut buf[..want], pos)?;
            if n == 0 {
                break;
            }
            let mut chunk = &buf[..n];
            while let Some(nl) = chunk.iter().position(|&b| b == b'\n') {
                let line_len = pending_len + nl;
                if line_len > MAX_LINE {
                    st.lines += 1;
                    tracing::error!(path = %self.path.display(), line = st.lines, bytes = line_len,
                        "execution journal: line too long to be a record; skipped");
                } else {
                    pending.extend_from_slice(&chunk[..nl]);
                    self.apply(st, line_start, &pending);
                }
                line_start += line_len as u64 + 1;
                pending.clear();
                pending_len = 0;
                chunk = &chunk[nl + 1..];
            }
            pending_len += chunk.len();
            if pending_len <= MAX_LINE {
                pending.extend_from_slice(chunk);
            } else {
                pending = Vec::new();
            }
            pos += n as u64;
        }
        st.consumed = line_start;
        st.torn = line_start < len;
        Ok(())
    }

    /// Indexes one whole line found at `offset`.
    fn apply(&self, st: &mut State, offset: u64, bytes: &[u8]) {
        st.lines += 1;
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return;
        }
        match serde_json::from_slice::<Line>(bytes) {
            Ok(line) if line.v == VERSION => {
                let slot = st.index.entry(line.id).or_default();
                slot.started = true;
                if let Entry::Finished { .. } = line.entry {
                    slot.finished = Some(Span { offset, len: bytes.len() });
                }
            }
            parsed => match serde_json::from_slice::<Head>(bytes) {
                Ok(head) if head.v > VERSION => {
                    tracing::warn!(path = %self.path.display(), line = st.lines, version = head.v, execution_id = %head.id,
                        "execution journal: record of a newer agent; its execution counts as started, outcome unknown");
                    st.index.entry(head.id).or_default().started = true;
                }
                _ => {
                    let why = parsed.err().map(|e| e.to_string()).unwrap_or_else(|| "unknown version".into());
                    tracing::warn!(path = %self.path.display(), line = st.lines, error = %why,
                        "execution journal: unreadable line (an append cut short by a crash, or damage); skipped");
                }
            },
        }
    }

    /// Appends `entry` for `execution_id` and makes it durable.
    fn append(&self, execution_id: &str, entry: Entry) -> Result<(), AgentError> {
        let line = Line { v: VERSION, id: execution_id.to_string(), at_unix_ms: now_unix_ms(), entry };
        let json = serde_json::to_vec(&line).map_err(|e| self.err(execution_id, e))?;
        self.locked(execution_id, |s, st| {
            s.catch_up(st)?;
            let mut bytes = Vec::with_capacity(json.len() + 2);
            if st.torn {
                // Leave the torn tail on a line of its own.
                bytes.push(b'\n');
            }
            bytes.extend_from_slice(&json);
            bytes.push(b'\n');
            // One write on an O_APPEND file: it lands whole, after whatever
            // another process appended.
            (&st.file).write_all(&bytes)?;
            st.file.sync_data()?;
            s.catch_up(st)
        })
    }

    /// The outcome line at `span`, read back and checked to be `execution_id`'s.
    fn read_outcome(&self, st: &State, execution_id: &str, span: Span) -> Result<StepOutcome, AgentError> {
        let mut bytes = vec![0u8; span.len];
        st.file.read_exact_at(&mut bytes, span.offset).map_err(|e| self.err(execution_id, e))?;
        match serde_json::from_slice::<Line>(&bytes) {
            Ok(Line { id, entry: Entry::Finished { outcome }, .. }) if id == execution_id => Ok(outcome),
            Ok(_) => {
                Err(self
                    .err(execution_id, format!("journal line at byte {} is not this execution's outcome", span.offset)))
            }
            Err(e) => Err(self.err(execution_id, format!("corrupt record at byte {}: {e}", span.offset))),
        }
    }
}

impl ExecutionStore for FileStore {
    fn get(&self, execution_id: &str) -> Result<Option<StepOutcome>, AgentError> {
        let st = &mut *self.state.lock().unwrap_or_else(|p| p.into_inner());
        self.catch_up(st).map_err(|e| self.err(execution_id, e))?;
        match st.index.get(execution_id).and_then(|slot| slot.finished) {
            Some(span) => self.read_outcome(st, execution_id, span).map(Some),
            None => legacy::outcome(&self.dir, execution_id),
        }
    }

    fn put(&self, execution_id: &str, outcome: &StepOutcome) -> Result<(), AgentError> {
        self.append(execution_id, Entry::Finished { outcome: outcome.clone() })
    }

    fn mark_started(&self, execution_id: &str) -> Result<(), AgentError> {
        self.append(execution_id, Entry::Started)
    }

    fn was_started(&self, execution_id: &str) -> Result<bool, AgentError> {
        let started = self.locked(execution_id, |s, st| {
            s.catch_up(st)?;
            Ok(st.index.get(execution_id).is_some_and(|slot| slot.started))
        })?;
        if started { Ok(true) } else { legacy::was_started(&self.dir, execution_id) }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use convoy_common::model::StepStatus;

    use super::*;

    fn sample_outcome() -> StepOutcome {
        let mut outcome = StepOutcome::failed("exit 3");
        outcome.exit_code = Some(3);
        outcome.stdout_tail = "out\nwith \"quotes\" and a newline".into();
        outcome.installed = Some(("app".into(), "1.2.3".into()));
        outcome
    }

    fn append_raw(store: &FileStore, bytes: &[u8]) {
        let mut f = OpenOptions::new().append(true).open(store.journal_path()).unwrap();
        f.write_all(bytes).unwrap();
    }

    #[test]
    fn records_survive_a_reopen_in_one_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let outcome = sample_outcome();
        {
            let store = FileStore::open(dir.path().join("executions")).unwrap();
            assert_eq!(store.get("ex/1").unwrap(), None);
            assert!(!store.was_started("ex/1").unwrap());
            store.mark_started("ex/1").unwrap();
            assert!(store.was_started("ex/1").unwrap());
            assert_eq!(store.get("ex/1").unwrap(), None, "started is not finished");
            store.put("ex/1", &outcome).unwrap();
            store.mark_started("ex-2").unwrap();
            store.put("ex-2", &StepOutcome::ok()).unwrap();
            store.mark_started("ex-3").unwrap();
        }
        let store = FileStore::open(dir.path().join("executions")).unwrap();
        assert_eq!(store.get("ex/1").unwrap(), Some(outcome));
        assert_eq!(store.get("ex-2").unwrap().unwrap().status, StepStatus::Succeeded);
        assert!(store.was_started("ex-3").unwrap() && store.get("ex-3").unwrap().is_none());
        assert!(!store.was_started("ex-4").unwrap());
        let names: Vec<_> = std::fs::read_dir(store.dir()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![JOURNAL_FILE], "one file, no temporaries");
        let mode = std::fs::metadata(store.journal_path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "output tails may hold secrets");
        let text = std::fs::read_to_string(store.journal_path()).unwrap();
        assert_eq!(text.lines().count(), 5);
        assert!(text.lines().all(|l| l.starts_with("{\"v\":1,\"id\":")), "{text}");
    }

    #[test]
    fn records_of_earlier_agents_are_still_answered() {
        let dir = tempfile::tempdir().unwrap();
        // Exactly what agents before the journal wrote.
        let outcome = sample_outcome();
        let record = serde_json::json!({ "execution_id": "old/1", "recorded_unix_ms": 5, "outcome": outcome });
        std::fs::write(legacy::outcome_path(dir.path(), "old/1"), serde_json::to_vec_pretty(&record).unwrap()).unwrap();
        std::fs::write(legacy::started_path(dir.path(), "old/1"), br#"{"execution_id":"old/1","started_unix_ms":4}"#)
            .unwrap();
        std::fs::write(legacy::started_path(dir.path(), "old/2"), br#"{"execution_id":"old/2","started_unix_ms":4}"#)
            .unwrap();
        std::fs::write(legacy::outcome_path(dir.path(), "bad"), b"{not json").unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        assert_eq!(store.get("old/1").unwrap(), Some(outcome));
        assert!(store.was_started("old/1").unwrap());
        assert!(store.was_started("old/2").unwrap() && store.get("old/2").unwrap().is_none());
        let err = store.get("bad").unwrap_err().to_string();
        assert!(err.contains("execution bad") && err.contains("corrupt"), "{err}");
    }

    #[test]
    fn a_torn_last_line_is_skipped_and_the_next_record_starts_afresh() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = FileStore::open(dir.path()).unwrap();
            store.mark_started("a").unwrap();
            store.put("a", &StepOutcome::ok()).unwrap();
            // A crash in the middle of an append: no newline.
            append_raw(&store, br#"{"v":1,"id":"b","at_unix_ms":1,"event":"sta"#);
        }
        let store = FileStore::open(dir.path()).unwrap();
        assert!(store.get("a").unwrap().is_some());
        assert!(!store.was_started("b").unwrap(), "the torn marker never returned: b was not spawned");
        store.mark_started("c").unwrap();
        drop(store);
        let store = FileStore::open(dir.path()).unwrap();
        assert!(store.was_started("c").unwrap(), "c's line is whole despite the torn one before it");
        assert!(store.get("a").unwrap().is_some());
        let text = std::fs::read_to_string(store.journal_path()).unwrap();
        assert_eq!(text.lines().count(), 4, "{text}");
    }

    #[test]
    fn damaged_lines_are_skipped_and_newer_versions_count_as_started() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        store.put("a", &StepOutcome::ok()).unwrap();
        append_raw(&store, b"garbage\n\n");
        append_raw(&store, br#"{"v":2,"id":"future","event":"something-new"}"#);
        append_raw(&store, b"\n");
        append_raw(&store, &vec![b'x'; MAX_LINE + CHUNK + 7]);
        append_raw(&store, b"\n");
        store.put("z", &StepOutcome::failed("no")).unwrap();
        for store in [store, FileStore::open(dir.path()).unwrap()] {
            assert_eq!(store.get("a").unwrap().unwrap().status, StepStatus::Succeeded);
            assert_eq!(store.get("z").unwrap().unwrap().status, StepStatus::Failed);
            assert!(store.was_started("future").unwrap(), "a newer agent's record is never run again");
            assert_eq!(store.get("future").unwrap(), None);
        }
    }

    #[test]
    fn another_process_appends_are_seen_and_a_shrunk_journal_is_reindexed() {
        let dir = tempfile::tempdir().unwrap();
        let (one, two) = (FileStore::open(dir.path()).unwrap(), FileStore::open(dir.path()).unwrap());
        one.mark_started("x").unwrap();
        two.put("y", &StepOutcome::ok()).unwrap();
        assert!(two.was_started("x").unwrap());
        assert!(one.get("y").unwrap().is_some());
        one.put("x", &sample_outcome()).unwrap();
        assert_eq!(two.get("x").unwrap(), Some(sample_outcome()));
        // An operator prunes the journal (to nothing but one record) while
        // the agent runs.
        let first = std::fs::read_to_string(one.journal_path()).unwrap().lines().next().unwrap().to_string();
        std::fs::write(one.journal_path(), format!("{first}\n")).unwrap();
        assert!(one.was_started("x").unwrap());
        assert_eq!(one.get("y").unwrap(), None);
    }
}
