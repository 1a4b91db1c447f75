//! `GET /rollouts/ID/events`: a rollout's changes as server-sent events.
//!
//! It follows the same channel as `convoy status --follow` (the runtime's
//! watch: a full snapshot, then the changes of each committed batch, see
//! `runtime::watch`), keeps the snapshot up to date with them, and sends
//! only what changed since its previous event: the rollout's
//! state or message, the groups whose state (as `convoy status` shows it:
//! `waiting_window` while a group waits for a window), counts or window
//! status moved, the host entries whose state, version, current step or
//! message moved. Only the host entries a change names are compared (the
//! runtime lists the ones its engine touched), so an event costs
//! O(hosts changed + groups), not O(hosts). Changes already waiting are
//! folded into one event. The first
//! event of a stream carries everything, so a page that reconnects (or
//! loaded a moment before the stream opened) is brought up to date.
//!
//! Each event is `event: change` with a JSON `data` line:
//! `{"rollout":{"state","message","done","total"}?, "groups":[{"name","state","done","running","failed","rolled_back","pending","total","window"}], "hosts":[{"key","state","version","step","message"}]}`.
//! The stream ends after the rollout reaches a final state, when the
//! coordinator stops, or when the browser goes away. Comments keep it
//! alive through proxies every 15 s.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::auth::{Answer, require};
use super::{HttpState, Peer};
use crate::operators::Role;
use crate::runtime::{RolloutSnapshot, Watched};
use convoy_common::model::UnixMillis;
use convoy_common::view::HostView;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct RolloutPart {
    state: &'static str,
    message: String,
    done: usize,
    total: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct GroupPart {
    name: String,
    state: &'static str,
    done: usize,
    running: usize,
    failed: usize,
    rolled_back: usize,
    pending: usize,
    total: usize,
    /// The maintenance-window status (`next window … (in …)`, `window
    /// open, closes … (… left)`); empty for a group without windows.
    window: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
struct HostPart {
    key: String,
    state: &'static str,
    version: String,
    step: String,
    message: String,
}

/// One event's payload: only what changed.
#[derive(Debug, Default, Serialize)]
struct Change {
    #[serde(skip_serializing_if = "Option::is_none")]
    rollout: Option<RolloutPart>,
    groups: Vec<GroupPart>,
    hosts: Vec<HostPart>,
}

/// What was last sent, to diff the next snapshot against.
#[derive(Default)]
struct Seen {
    rollout: Option<RolloutPart>,
    groups: HashMap<String, GroupPart>,
    hosts: HashMap<String, HostPart>,
}

impl Seen {
    /// The changes from what was sent to `s`, remembered as sent.
    fn diff(&mut self, s: &RolloutSnapshot, now: UnixMillis) -> Change {
        self.diff_some(s, s.view.hosts.iter(), now)
    }

    /// [`Seen::diff`] comparing only `hosts` (those changes touched) of
    /// `s`'s host entries: the others are as sent.
    fn diff_some<'a>(
        &mut self,
        s: &RolloutSnapshot,
        hosts: impl Iterator<Item = &'a HostView>,
        now: UnixMillis,
    ) -> Change {
        let v = &s.view;
        let mut change = Change::default();
        let rollout = RolloutPart {
            state: v.state.as_str(),
            message: v.message.clone(),
            done: v.groups.iter().map(|g| g.done + g.failed + g.rolled_back).sum(),
            total: v.groups.iter().map(|g| g.total).sum(),
        };
        if self.rollout.as_ref() != Some(&rollout) {
            self.rollout = Some(rollout.clone());
            change.rollout = Some(rollout);
        }
        for g in &v.groups {
            let part = GroupPart {
                name: g.name.clone(),
                // `waiting_window` while it waits for a window.
                state: g.state_str(),
                done: g.done,
                running: g.running,
                failed: g.failed,
                rolled_back: g.rolled_back,
                pending: g.pending,
                total: g.total,
                window: super::render::window_status(g, now).unwrap_or_default(),
            };
            if self.groups.get(&g.name) != Some(&part) {
                self.groups.insert(g.name.clone(), part.clone());
                change.groups.push(part);
            }
        }
        for h in hosts {
            let key = if h.key.is_empty() { h.host.clone() } else { h.key.clone() };
            let part = HostPart {
                key: key.clone(),
                state: h.state.as_str(),
                version: h.version.clone().unwrap_or_default(),
                step: h.current_step.clone().unwrap_or_default(),
                message: h.message.clone(),
            };
            if self.hosts.get(&key) != Some(&part) {
                self.hosts.insert(key, part.clone());
                change.hosts.push(part);
            }
        }
        change
    }
}

impl Change {
    fn is_empty(&self) -> bool {
        self.rollout.is_none() && self.groups.is_empty() && self.hosts.is_empty()
    }
}

pub async fn events(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = require(&state, &headers, peer, Role::Viewer, "following a rollout", Answer::Api) {
        return *r;
    }
    let mut watch = match state.runtime.watch(Some(id)).await {
        Ok(w) => w,
        Err(e) => return (axum::http::StatusCode::NOT_FOUND, e.to_string()).into_response(),
    };
    let (tx, out) = mpsc::channel::<Result<Event, Infallible>>(16);
    let (shutdown, clock) = (state.shutdown.clone(), state.clock);
    tokio::spawn(async move {
        let mut seen = Seen::default();
        let mut snap: Option<RolloutSnapshot> = None;
        let mut n: u64 = 0;
        loop {
            let item = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tx.closed() => break,
                item = watch.next() => item,
            };
            let (s, change) = match item {
                None => break,
                Some(Watched::Full(full)) => {
                    let s = snap.insert(Arc::unwrap_or_clone(full));
                    let change = seen.diff(s, clock.now());
                    (&*s, change)
                }
                Some(Watched::Change(first)) => {
                    // `next` yields a full snapshot before any change.
                    let Some(s) = snap.as_mut() else { continue };
                    let mut touched = Vec::new();
                    let mut next = Some(first);
                    // Fold every change already waiting into one event.
                    while let Some(c) = next.take().or_else(|| watch.try_change()) {
                        s.apply(&c);
                        touched.extend(c.hosts.iter().map(|(i, _)| *i));
                    }
                    touched.sort_unstable();
                    touched.dedup();
                    let change = seen.diff_some(s, touched.iter().filter_map(|&i| s.view.hosts.get(i)), clock.now());
                    (&*s, change)
                }
            };
            if !change.is_empty() {
                n += 1;
                let data = serde_json::to_string(&change).unwrap_or_else(|_| "{}".into());
                if tx.send(Ok(Event::default().event("change").id(n.to_string()).data(data))).await.is_err() {
                    break;
                }
            }
            if s.view.state.is_terminal() {
                break;
            }
        }
    });
    Sse::new(ReceiverStream::new(out)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_common::engine::state::{GroupState, HostState, RolloutState};
    use convoy_common::model::UnixMillis;
    use convoy_common::view::{GroupView, HostView, RolloutView};

    fn snap(host_state: HostState) -> RolloutSnapshot {
        let host = |k: &str, s: HostState| HostView {
            host: k.into(),
            group: "g".into(),
            state: s,
            version: None,
            current_step: None,
            message: String::new(),
            key: k.into(),
            captured: Default::default(),
        };
        RolloutSnapshot {
            id: "r1".into(),
            plan_name: "p".into(),
            target_version: "2".into(),
            created: UnixMillis(0),
            updated: UnixMillis(0),
            view: RolloutView {
                state: RolloutState::Running,
                message: String::new(),
                groups: vec![GroupView {
                    name: "g".into(),
                    state: GroupState::Running,
                    done: 0,
                    running: 0,
                    failed: 0,
                    rolled_back: 0,
                    pending: 2,
                    total: 2,
                    canaries: 0,
                    promote_at: None,
                    window: None,
                }],
                hosts: vec![host("a", HostState::Pending), host("b", host_state)],
                backups: vec![],
            },
        }
    }

    #[test]
    fn only_changes_are_sent_after_the_first_event() {
        let mut seen = Seen::default();
        let first = seen.diff(&snap(HostState::Pending), UnixMillis(0));
        assert!(first.rollout.is_some());
        assert_eq!(first.hosts.len(), 2, "the first event carries everything");
        assert!(seen.diff(&snap(HostState::Pending), UnixMillis(0)).is_empty(), "nothing moved, nothing sent");
        let next = seen.diff(&snap(HostState::Succeeded), UnixMillis(0));
        assert!(next.rollout.is_none() && next.groups.is_empty());
        assert_eq!(next.hosts.len(), 1);
        assert_eq!(next.hosts[0].key, "b");
        assert_eq!(next.hosts[0].state, "succeeded");
    }

    #[test]
    fn a_window_opening_reaches_the_page() {
        use convoy_common::view::WindowView;
        const HOUR: u64 = 3_600_000;
        let with_window = |waiting_until: Option<u64>, closes_at: Option<u64>| {
            let mut s = snap(HostState::Pending);
            s.view.groups[0].window = Some(WindowView {
                windows: vec!["mon,tue,wed,thu,fri,sat,sun 22:00 for 1h".into()],
                timezone: "UTC".into(),
                waiting_until: waiting_until.map(UnixMillis),
                closes_at: closes_at.map(UnixMillis),
                overridden_by: None,
            });
            s
        };
        // 2026-01-07 21:00 UTC: waiting for 22:00.
        let nine_pm = 1_767_819_600_000;
        let mut seen = Seen::default();
        let first = seen.diff(&with_window(Some(nine_pm + HOUR), None), UnixMillis(nine_pm));
        assert_eq!(first.groups[0].state, "waiting_window");
        assert_eq!(first.groups[0].window, "next window 2026-01-07 22:00 UTC (in 1h)");
        // 22:00: the window opened (the engine's GroupState stayed Running):
        // the change carries the group's new state and the time left.
        let open = seen.diff(&with_window(None, Some(nine_pm + 2 * HOUR)), UnixMillis(nine_pm + HOUR));
        assert_eq!(open.groups.len(), 1, "{open:?}");
        assert_eq!(open.groups[0].state, "running");
        assert_eq!(open.groups[0].window, "window open, closes 2026-01-07 23:00 UTC (1h left)");
    }
}
