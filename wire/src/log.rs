//! A rollout's stored event log on the wire (`OpsService.RolloutLog`): the
//! rollout's spec and its events in the serde form the coordinator's store
//! keeps them in, stamped with that store format so a reader refuses a
//! format newer than it knows instead of misreading it.
//!
//! The log is the record `convoy verify` checks and `convoy events` shows:
//! it is sent as stored, not re-described, so the reader replays exactly
//! what the coordinator replays.

use convoy_common::engine::Event;
use convoy_common::model::{RolloutSpec, UnixMillis};
use convoy_proto::v1 as pb;

use crate::error::WireError;

/// Events per page when the caller does not say.
pub const DEFAULT_PAGE: u32 = 1000;
/// The most events one page carries.
pub const MAX_PAGE: u32 = 10_000;

/// One page of a rollout's log, as domain types.
#[derive(Debug, Clone, PartialEq)]
pub struct LogPage {
    pub rollout_id: String,
    /// The spec (first page only).
    pub spec: Option<RolloutSpec>,
    /// `(sequence, handled at, event)`, in order.
    pub events: Vec<(u64, UnixMillis, Event)>,
    pub next_seq: u64,
    pub more: bool,
    /// The rollout's state as the coordinator reported it.
    pub state: String,
}

/// The page size a request asks for, bounded.
pub fn page_size(max_events: u32) -> u32 {
    match max_events {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    }
}

/// The `RolloutLogResponse` of one page; `format` is the store format the
/// JSON is written in.
pub fn log_page(page: &LogPage, format: u32) -> Result<pb::RolloutLogResponse, WireError> {
    let json = |field: &'static str, r: Result<String, serde_json::Error>| {
        r.map_err(|e| WireError::invalid(field, e.to_string()))
    };
    let spec_json = match &page.spec {
        Some(s) => json("spec_json", serde_json::to_string(s))?,
        None => String::new(),
    };
    let events = page
        .events
        .iter()
        .map(|(seq, at, e)| {
            Ok(pb::LoggedEvent {
                seq: *seq,
                unix_ms: at.0,
                event_json: json("events.event_json", serde_json::to_string(e))?,
            })
        })
        .collect::<Result<_, WireError>>()?;
    Ok(pb::RolloutLogResponse {
        rollout_id: page.rollout_id.clone(),
        format,
        spec_json,
        events,
        next_seq: page.next_seq,
        more: page.more,
        state: page.state.clone(),
    })
}

/// A page as domain types; a format newer than `known` is refused.
pub fn log_page_from_proto(r: pb::RolloutLogResponse, known: u32) -> Result<LogPage, WireError> {
    if r.format > known {
        return Err(WireError::invalid(
            "format",
            format!("the log is in store format {}, newer than this build reads ({known}); upgrade the CLI", r.format),
        ));
    }
    let spec = if r.spec_json.is_empty() {
        None
    } else {
        Some(serde_json::from_str(&r.spec_json).map_err(|e| WireError::invalid("spec_json", e.to_string()))?)
    };
    let events = r
        .events
        .into_iter()
        .map(|e| {
            let event: Event = serde_json::from_str(&e.event_json)
                .map_err(|err| WireError::invalid("events.event_json", format!("event {}: {err}", e.seq)))?;
            Ok((e.seq, UnixMillis(e.unix_ms), event))
        })
        .collect::<Result<_, WireError>>()?;
    Ok(LogPage { rollout_id: r.rollout_id, spec, events, next_seq: r.next_seq, more: r.more, state: r.state })
}

#[cfg(test)]
mod tests {
    use super::*;
    use convoy_common::engine::OperatorCommand;

    #[test]
    fn a_page_round_trips_and_a_newer_format_is_refused() {
        let page = LogPage {
            rollout_id: "r1".into(),
            spec: None,
            events: vec![
                (0, UnixMillis(5), Event::Started),
                (1, UnixMillis(6), Event::Operator { command: OperatorCommand::Pause, by: "alice".into() }),
            ],
            next_seq: 2,
            more: false,
            state: "paused".into(),
        };
        let pb = log_page(&page, 2).unwrap();
        assert_eq!(log_page_from_proto(pb.clone(), 2).unwrap(), page);
        let err = log_page_from_proto(pb::RolloutLogResponse { format: 3, ..pb }, 2).unwrap_err();
        assert_eq!(err.field, "format");
        assert!(err.to_string().contains("newer than this build reads (2)"), "{err}");
        assert_eq!(page_size(0), DEFAULT_PAGE);
        assert_eq!(page_size(1_000_000), MAX_PAGE);
    }
}
