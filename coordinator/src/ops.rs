//! `OpsService`: the operator tools of issue 13 beside the operator API:
//! a rollout's stored event log in pages (`convoy verify`, `convoy events`,
//! the timeline of `convoy status --output json`), holding hosts out of
//! rollouts, and reading the audit trail. Same tokens and roles as
//! [`crate::grpc::OperatorSvc`] (the same interceptor checks the token).

use std::sync::Arc;

use convoy_common::audit::AuditAction;
use convoy_common::hold::{Hold, check_reason};
use convoy_common::model::UnixMillis;
use convoy_proto::v1 as pb;
use convoy_wire::log::{LogPage, log_page, page_size};
use tonic::{Request, Response, Status};

use crate::audit::{self, Origin};
use crate::error::CoordinatorError;
use crate::grpc::to_status;
use crate::operators::{Role, require};
use crate::runtime::{Clock, RuntimeHandle};
use crate::store::{Store, format::FORMAT_VERSION};

/// Audit entries one call returns when the caller does not say, and at most.
pub const AUDIT_DEFAULT: usize = 1000;
pub const AUDIT_MAX: usize = 10_000;

pub struct OpsSvc {
    pub runtime: RuntimeHandle,
    pub store: Arc<dyn Store>,
    pub clock: Clock,
}

/// Run store work off the runtime's threads.
async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> Result<T, CoordinatorError> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| to_status(CoordinatorError::Internal { what: what.to_string(), message: e.to_string() }))?
        .map_err(to_status)
}

fn check_host(host: &str) -> Result<(), Status> {
    if convoy_wire::agent::valid_host_id(host) {
        Ok(())
    } else {
        Err(to_status(CoordinatorError::BadRequest {
            field: "host_id".into(),
            message: format!("'{}' is not a valid host id", host.escape_debug()),
        }))
    }
}

impl OpsSvc {
    /// Record how an audited call ended and hand its result on.
    fn recorded<T>(
        &self,
        origin: &Origin,
        action: AuditAction,
        target: &str,
        detail: &str,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        audit::finish(self.store.as_ref(), self.clock.now(), origin, action, target, detail, result)
    }
}

#[tonic::async_trait]
impl pb::ops_service_server::OpsService for OpsSvc {
    async fn rollout_log(
        &self,
        req: Request<pb::RolloutLogRequest>,
    ) -> Result<Response<pb::RolloutLogResponse>, Status> {
        require(&req, Role::Viewer, "reading a rollout's log")?;
        let r = req.into_inner();
        let id = (!r.rollout_id.is_empty()).then_some(r.rollout_id);
        let snap = self.runtime.get(id).await.map_err(to_status)?;
        let (store, rollout_id, from, max) = (self.store.clone(), snap.id.clone(), r.from_seq, page_size(r.max_events));
        let page = blocking("reading a rollout's log", move || {
            let spec = if from == 0 {
                let record = store.rollouts()?.into_iter().find(|x| x.id == rollout_id);
                Some(record.ok_or_else(|| CoordinatorError::UnknownRollout { id: rollout_id.clone() })?.spec)
            } else {
                None
            };
            // One more than asked, to know whether there is more.
            let mut events = store.events_page(&rollout_id, from, max as usize + 1)?;
            // A log compacted below its snapshot (`--compact-events`) cannot
            // be replayed from the start: say so rather than hand out a tail
            // that `convoy verify` would misread as a whole rollout.
            // (An empty log with a snapshot was compacted whole.)
            let compacted_below = match events.first() {
                _ if from != 0 => None,
                Some((seq, _)) => Some(*seq).filter(|s| *s > 0),
                None => store.snapshot(&rollout_id).ok().flatten().map(|s| s.seq).filter(|s| *s > 0),
            };
            if let Some(first) = compacted_below {
                return Err(CoordinatorError::Conflict {
                    id: rollout_id.clone(),
                    message: format!(
                        "its event log was compacted below event {first} (--compact-events): \
                         the events before it are only in its snapshot, so it cannot be replayed from the start"
                    ),
                });
            }
            let more = events.len() > max as usize;
            events.truncate(max as usize);
            let next_seq = events.last().map_or(from, |(seq, _)| seq + 1);
            Ok(LogPage {
                rollout_id,
                spec,
                events: events.into_iter().map(|(seq, e)| (seq, e.now, e.event)).collect(),
                next_seq,
                more,
                state: String::new(),
            })
        })
        .await?;
        let page = LogPage { state: snap.view.state.as_str().to_string(), ..page };
        Ok(Response::new(log_page(&page, FORMAT_VERSION).map_err(|e| to_status(e.into()))?))
    }

    async fn hold_host(&self, req: Request<pb::HoldHostRequest>) -> Result<Response<pb::HeldHost>, Status> {
        let origin = Origin::of(&req);
        let r = req.into_inner();
        let now = self.clock.now();
        let caller = audit::authorize(
            self.store.as_ref(),
            now,
            &origin,
            Role::Operator,
            "holding a host",
            AuditAction::Hold,
            &r.host_id,
        )?;
        let result = (|| {
            check_host(&r.host_id)?;
            let reason = check_reason(&r.reason)
                .map_err(|message| to_status(CoordinatorError::BadRequest { field: "reason".into(), message }))?;
            let hold = Hold { host: r.host_id.clone(), reason, by: caller.name.clone(), since: now };
            self.store.put_hold(&hold).map_err(to_status)?;
            Ok(hold)
        })();
        let detail = result.as_ref().map(|h| h.reason.clone()).unwrap_or_default();
        let hold = self.recorded(&origin, AuditAction::Hold, &r.host_id, &detail, result)?;
        tracing::info!(host = %hold.host, by = %hold.by, reason = %hold.reason, "host held out of rollouts");
        Ok(Response::new(convoy_wire::ops::held_host(&hold)))
    }

    async fn unhold_host(&self, req: Request<pb::UnholdHostRequest>) -> Result<Response<pb::HeldHost>, Status> {
        let origin = Origin::of(&req);
        let host = req.into_inner().host_id;
        let now = self.clock.now();
        audit::authorize(
            self.store.as_ref(),
            now,
            &origin,
            Role::Operator,
            "releasing a hold",
            AuditAction::Unhold,
            &host,
        )?;
        let result = (|| {
            check_host(&host)?;
            self.store.remove_hold(&host).map_err(to_status)?.ok_or_else(|| {
                to_status(CoordinatorError::BadRequest {
                    field: "host_id".into(),
                    message: format!("host {host} is not held"),
                })
            })
        })();
        let detail = result.as_ref().map(|h| format!("was held since {} by {}: {}", h.since.0, h.by, h.reason));
        let detail = detail.unwrap_or_default();
        let hold = self.recorded(&origin, AuditAction::Unhold, &host, &detail, result)?;
        tracing::info!(%host, "hold released");
        Ok(Response::new(convoy_wire::ops::held_host(&hold)))
    }

    async fn list_holds(&self, req: Request<pb::ListHoldsRequest>) -> Result<Response<pb::ListHoldsResponse>, Status> {
        require(&req, Role::Viewer, "listing holds")?;
        let holds = self.store.holds().map_err(to_status)?;
        Ok(Response::new(pb::ListHoldsResponse { holds: holds.iter().map(convoy_wire::ops::held_host).collect() }))
    }

    async fn audit(&self, req: Request<pb::AuditRequest>) -> Result<Response<pb::AuditResponse>, Status> {
        require(&req, Role::Viewer, "reading the audit trail")?;
        let r = req.into_inner();
        let limit = match r.limit as usize {
            0 => AUDIT_DEFAULT,
            n => n.min(AUDIT_MAX),
        };
        let store = self.store.clone();
        let entries =
            blocking("reading the audit trail", move || store.audit(UnixMillis(r.since_unix_ms), limit)).await?;
        Ok(Response::new(pb::AuditResponse { entries: entries.iter().map(convoy_wire::ops::audit_entry).collect() }))
    }
}
