//! Thin tonic services: turn requests into domain types (through
//! `convoy-wire`, where every message conversion lives), call the runtime,
//! and map domain errors to `tonic::Status` in one place ([`to_status`]).

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use convoy_common::engine::ExecutionId;
use convoy_proto::v1 as pb;
use convoy_wire::agent::{Hello, hello_from_proto, valid_host_id};
use convoy_wire::status::{RolloutMeta, rollout_status};
use pb::agent_message::Kind as Up;
use pb::coordinator_message::Kind as Down;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::audit::{self, Origin};
use crate::enrolment::{self, HostPattern, JoinScope};
use crate::error::CoordinatorError;
use crate::metrics::{Metrics, RefusalReason};
use crate::operators::{Role, peer_label, require};
use crate::runtime::{AgentHello, AgentSnapshot, Clock, RolloutSnapshot, RuntimeHandle, ToAgent};
use crate::store::Store;
use crate::tls::CertificateAuthority;

mod watch;
use convoy_common::audit::AuditAction;

/// The single place where domain errors become gRPC statuses.
pub fn to_status(e: CoordinatorError) -> Status {
    let msg = e.to_string();
    match e {
        CoordinatorError::Plan(_)
        | CoordinatorError::BadRequest { .. }
        | CoordinatorError::ArtifactDigest { .. }
        | CoordinatorError::AgentLacksStepKind(_) => Status::invalid_argument(msg),
        CoordinatorError::UnknownRollout { .. }
        | CoordinatorError::NoRollout
        | CoordinatorError::UnknownArtifact { .. } => Status::not_found(msg),
        CoordinatorError::PermissionDenied { .. } | CoordinatorError::Forbidden { .. } => {
            Status::permission_denied(msg)
        }
        CoordinatorError::Unauthenticated { .. } => Status::unauthenticated(msg),
        CoordinatorError::Conflict { .. } | CoordinatorError::ArtifactRefused { .. } => {
            Status::failed_precondition(msg)
        }
        CoordinatorError::ShuttingDown | CoordinatorError::Deposed { .. } => Status::unavailable(msg),
        CoordinatorError::PlanTooSlow { .. } => Status::resource_exhausted(msg),
        CoordinatorError::Internal { .. } | CoordinatorError::RuntimeDied(_) => Status::internal(msg),
        CoordinatorError::InUse { .. } => Status::unavailable(msg),
        CoordinatorError::Io { .. }
        | CoordinatorError::Store { .. }
        | CoordinatorError::StoreTooNew { .. }
        | CoordinatorError::Tls { .. }
        | CoordinatorError::Bind { .. }
        | CoordinatorError::Transport(_) => Status::internal(msg),
    }
}

/// How long an agent has to send its hello after opening a session.
const HELLO_TIMEOUT: Duration = Duration::from_secs(10);

pub struct AgentSvc {
    pub runtime: RuntimeHandle,
    pub store: Arc<dyn Store>,
    pub ca: Arc<CertificateAuthority>,
    pub clock: Clock,
    pub shutdown: CancellationToken,
    /// Serialises enrolments (see [`enrolment::admit_enrolment`]).
    pub enrol_lock: tokio::sync::Mutex<()>,
    /// Refused sessions and enrolments are counted here.
    pub metrics: Arc<Metrics>,
}

fn hello_from_wire(h: pb::Hello) -> Result<AgentHello, CoordinatorError> {
    let Hello { agent, capabilities, replayed } = hello_from_proto(h)?;
    Ok(AgentHello {
        id: agent.id,
        version: agent.version,
        protocol_version: agent.protocol_version,
        capabilities,
        labels: agent.labels,
        hostname: agent.facts.hostname,
        os: agent.facts.os,
        arch: agent.facts.arch,
        installed: agent.facts.installed,
        facts: agent.facts.custom,
        install_root: agent.facts.install_root,
        replayed,
    })
}

fn rollout_to_wire(s: &RolloutSnapshot) -> pb::RolloutStatus {
    let meta = RolloutMeta {
        id: &s.id,
        plan_name: &s.plan_name,
        target_version: &s.target_version,
        created: s.created,
        updated: s.updated,
    };
    rollout_status(meta, &s.view)
}

fn agent_to_wire(a: &AgentSnapshot) -> pb::AgentInfo {
    convoy_wire::agent::agent_info(a.record.intro(), a.connected, a.record.last_seen)
}

type SessionStream = Pin<Box<dyn Stream<Item = Result<pb::CoordinatorMessage, Status>> + Send>>;

#[tonic::async_trait]
impl pb::agent_service_server::AgentService for AgentSvc {
    async fn enroll(&self, req: Request<pb::EnrollRequest>) -> Result<Response<pb::EnrollResponse>, Status> {
        let peer = peer_label(req.remote_addr());
        let r = req.into_inner();
        let refused = |e: CoordinatorError| {
            self.metrics.refused(RefusalReason::Enrolment);
            tracing::warn!(host = %r.host_id, %peer, error = %e, "enrolment refused");
            to_status(e)
        };
        if !valid_host_id(&r.host_id) {
            return Err(refused(CoordinatorError::BadRequest {
                field: "host_id".into(),
                message: format!("'{}' is not a valid host id", r.host_id.escape_debug()),
            }));
        }
        let clock = self.clock;
        let enrolment::Granted { admission, certificate_pem: cert, enrolment: e } = enrolment::enrol(
            &self.store,
            &self.enrol_lock,
            &self.ca,
            || clock.now(),
            &r.join_token,
            &r.host_id,
            &r.csr_pem,
        )
        .await
        .map_err(refused)?;
        tracing::info!(host = %r.host_id, %peer, fingerprint = %e.fingerprint, ?admission, "agent enrolled");
        Ok(Response::new(pb::EnrollResponse { certificate_pem: cert, ca_pem: self.ca.ca_pem().to_string() }))
    }

    type SessionStream = SessionStream;

    async fn session(&self, req: Request<Streaming<pb::AgentMessage>>) -> Result<Response<SessionStream>, Status> {
        let peer = peer_label(req.remote_addr());
        let certs = req.peer_certs();
        let cert_host = enrolment::authenticate_agent(
            self.store.as_ref(),
            self.clock.now(),
            certs.as_deref().map(|c| c.as_slice()),
        )
        .map_err(|e| {
            self.metrics.refused(RefusalReason::AgentSession);
            tracing::warn!(%peer, error = %e, "agent session refused");
            to_status(e)
        })?;
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(HELLO_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no hello within 10s"))??;
        let hello = match first.and_then(|m| m.kind) {
            Some(Up::Hello(h)) => hello_from_wire(h).map_err(to_status)?,
            _ => return Err(Status::invalid_argument("the first message of a session must be a hello")),
        };
        if hello.id != cert_host {
            let e = CoordinatorError::PermissionDenied {
                host: cert_host,
                message: format!("certificate is for this host, hello claims '{}'", hello.id),
            };
            self.metrics.refused(RefusalReason::AgentSession);
            tracing::warn!(%peer, error = %e, "agent session refused");
            return Err(to_status(e));
        }
        let host = hello.id.clone();
        let mut agent = self.runtime.connect(hello).await.map_err(|e| {
            self.metrics.refused(RefusalReason::AgentSession);
            tracing::warn!(%host, %peer, error = %e, "agent session refused");
            to_status(e)
        })?;
        let (session, heartbeat) = (agent.id, agent.heartbeat);
        tracing::info!(%host, %peer, session, "agent session open");
        // Boxed messages: the channel allocates a block of 32 up front, per
        // session (about 13 KiB unboxed; 256 bytes boxed).
        let (out_tx, out_rx) = mpsc::channel::<Box<pb::CoordinatorMessage>>(256);
        let welcome = pb::CoordinatorMessage {
            kind: Some(pb::coordinator_message::Kind::Welcome(pb::Welcome {
                coordinator_version: env!("CARGO_PKG_VERSION").to_string(),
                protocol_version: convoy_proto::PROTOCOL_VERSION,
                heartbeat_interval_ms: millis(heartbeat),
                acks_heartbeats: true,
            })),
        };
        let _ = out_tx.send(Box::new(welcome)).await;
        let runtime = self.runtime.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    msg = agent.to_agent.recv() => {
                        let kind = match msg {
                            // The execution id already names the rollout: agents are not sent it apart.
                            Some(ToAgent::RunStep { execution_id, step }) => {
                                Down::RunStep(convoy_wire::step::run_step(&execution_id.to_string(), &step))
                            }
                            Some(ToAgent::Pace { heartbeat }) => {
                                Down::Pace(pb::Pace { heartbeat_interval_ms: millis(heartbeat) })
                            }
                            // The runtime dropped this session (replaced or lost).
                            None => break,
                        };
                        if out_tx.send(Box::new(pb::CoordinatorMessage { kind: Some(kind) })).await.is_err() { break; }
                    }
                    msg = inbound.message() => match msg {
                        Ok(Some(m)) => match m.kind {
                            Some(Up::Heartbeat(h)) => {
                                agent.beats.beat();
                                // Answered here, not by the runtime: the ack says the
                                // coordinator reads this session. A full outbound
                                // buffer skips it (the agent waits two intervals).
                                let ack = Down::HeartbeatAck(pb::HeartbeatAck { sequence: h.sequence });
                                let _ = out_tx.try_send(Box::new(pb::CoordinatorMessage { kind: Some(ack) }));
                            }
                            Some(Up::StepResult(r)) => match convoy_wire::outcome::result_from_proto(r) {
                                Ok((id, outcome)) => { let _ = runtime.step_result(&host, session, id, outcome); }
                                Err(e) => tracing::warn!(%host, error = %e, "malformed step result refused"),
                            },
                            Some(Up::Hello(_)) => tracing::warn!(%host, "second hello in one session ignored"),
                            None => tracing::warn!(%host, "message of a kind this coordinator does not know ignored"),
                        },
                        Ok(None) => break,
                        Err(e) => { tracing::info!(%host, error = %e, "agent stream error"); break; }
                    },
                }
            }
            let _ = runtime.disconnect(&host, session);
        });
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::map(ReceiverStream::new(out_rx), |m| Ok(*m)))))
    }
}

pub struct OperatorSvc {
    pub runtime: RuntimeHandle,
    pub store: Arc<dyn Store>,
    pub clock: Clock,
}

fn rollout_arg(id: String) -> Option<String> {
    (!id.is_empty()).then_some(id)
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::RolloutStatus, Status>> + Send>>;

#[tonic::async_trait]
impl pb::operator_service_server::OperatorService for OperatorSvc {
    async fn submit_plan(
        &self,
        req: Request<pb::SubmitPlanRequest>,
    ) -> Result<Response<pb::SubmitPlanResponse>, Status> {
        let r_dry = req.get_ref().dry_run;
        let origin = Origin::of(&req);
        let file =
            if req.get_ref().file_name.is_empty() { "plan.yaml".to_string() } else { req.get_ref().file_name.clone() };
        // A dry run (`convoy plan`) creates nothing: viewers may ask for one,
        // and it is not an action the audit trail records.
        let by = if r_dry {
            require(&req, Role::Viewer, "submitting a plan")?.name
        } else {
            let now = self.clock.now();
            audit::authorize(
                self.store.as_ref(),
                now,
                &origin,
                Role::Operator,
                "submitting a plan",
                AuditAction::Submit,
                &file,
            )?
            .name
        };
        let r = req.into_inner();
        let s = self.runtime.submit(&file, &r.plan_yaml, r.catalogs.into_iter().collect(), r.dry_run, &by).await;
        let s = if r_dry {
            s.map_err(to_status)?
        } else {
            let s = s.map_err(to_status);
            let target = s.as_ref().map(|s| s.rollout_id.clone()).unwrap_or_else(|_| file.clone());
            let detail = format!("plan {file}");
            self.audited(&origin, AuditAction::Submit, &target, &detail, s)?
        };
        Ok(Response::new(pb::SubmitPlanResponse {
            rollout_id: s.rollout_id,
            expansion_json: s.summary.to_string(),
            dot: s.dot,
            held: s.held.iter().map(convoy_wire::ops::held_host).collect(),
        }))
    }

    async fn get_rollout(&self, req: Request<pb::GetRolloutRequest>) -> Result<Response<pb::RolloutStatus>, Status> {
        require(&req, Role::Viewer, "reading a rollout")?;
        let s = self.runtime.get(rollout_arg(req.into_inner().rollout_id)).await.map_err(to_status)?;
        let mut status = rollout_to_wire(&s);
        status.held = held_of(self.store.as_ref(), &s.id);
        Ok(Response::new(status))
    }

    type WatchRolloutStream = WatchStream;

    async fn watch_rollout(&self, req: Request<pb::GetRolloutRequest>) -> Result<Response<WatchStream>, Status> {
        require(&req, Role::Viewer, "watching a rollout")?;
        let r = req.into_inner();
        let watch = self.runtime.watch(rollout_arg(r.rollout_id)).await.map_err(to_status)?;
        let (tx, out) = mpsc::channel(16);
        let held = held_of(self.store.as_ref(), watch.id());
        tokio::spawn(watch::stream(watch, r.changes_only, held, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(out))))
    }

    async fn list_rollouts(
        &self,
        req: Request<pb::ListRolloutsRequest>,
    ) -> Result<Response<pb::ListRolloutsResponse>, Status> {
        require(&req, Role::Viewer, "listing rollouts")?;
        let list = self.runtime.list_rollouts().await.map_err(to_status)?;
        Ok(Response::new(pb::ListRolloutsResponse { rollouts: list.iter().map(rollout_to_wire).collect() }))
    }

    async fn list_agents(
        &self,
        req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        require(&req, Role::Viewer, "listing agents")?;
        let list = self.runtime.list_agents().await.map_err(to_status)?;
        let holds = self.store.holds().map_err(to_status)?;
        let mut agents: Vec<pb::AgentInfo> = list.iter().map(agent_to_wire).collect();
        for a in &mut agents {
            a.hold = holds.iter().find(|h| h.host == a.agent_id).map(convoy_wire::ops::held_host);
        }
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn control(&self, req: Request<pb::ControlRequest>) -> Result<Response<pb::ControlResponse>, Status> {
        let origin = Origin::of(&req);
        let r = req.into_inner();
        let command = convoy_wire::control::command_from_proto(r.action).map_err(|e| to_status(e.into()))?;
        let action = AuditAction::of_command(command);
        let now = self.clock.now();
        let target = if r.rollout_id.is_empty() { "latest".to_string() } else { r.rollout_id.clone() };
        let by = audit::authorize(
            self.store.as_ref(),
            now,
            &origin,
            Role::Operator,
            "controlling a rollout",
            action,
            &target,
        )?
        .name;
        let s = self.runtime.control(rollout_arg(r.rollout_id), command, &by).await.map_err(to_status);
        let detail = match &s {
            Ok(s) if s.id != target => format!("rollout {} is now {}", s.id, s.view.state.as_str()),
            Ok(s) => format!("now {}", s.view.state.as_str()),
            Err(_) => String::new(),
        };
        let s = self.audited(&origin, action, &target, &detail, s)?;
        Ok(Response::new(pb::ControlResponse { state: s.view.state.as_str().to_string(), rollout_id: s.id }))
    }

    async fn create_join_token(
        &self,
        req: Request<pb::CreateJoinTokenRequest>,
    ) -> Result<Response<pb::CreateJoinTokenResponse>, Status> {
        let origin = Origin::of(&req);
        let now = self.clock.now();
        let (action, what) = (AuditAction::JoinTokenCreate, "creating a join token");
        let by = audit::authorize(self.store.as_ref(), now, &origin, Role::Operator, what, action, "")?.name;
        let r = req.into_inner();
        let result = self.join_token(r, &by);
        let detail = match &result {
            Ok(t) => format!("uses {}, hosts '{}', expires {}", t.uses, t.hosts, t.expires_unix_ms),
            Err(_) => String::new(),
        };
        Ok(Response::new(self.audited(&origin, action, "", &detail, result)?))
    }

    async fn revoke_agent(
        &self,
        req: Request<pb::RevokeAgentRequest>,
    ) -> Result<Response<pb::RevokeAgentResponse>, Status> {
        let origin = Origin::of(&req);
        let host = req.get_ref().host_id.clone();
        let (action, what) = (AuditAction::AgentRevoke, "revoking an agent");
        let by =
            audit::authorize(self.store.as_ref(), self.clock.now(), &origin, Role::Operator, what, action, &host)?.name;
        let result = self.revoke(&host, &by);
        let detail = result.as_ref().map(|r| format!("certificate sha256 {}", r.fingerprint)).unwrap_or_default();
        Ok(Response::new(self.audited(&origin, action, &host, &detail, result)?))
    }

    async fn host_outputs(
        &self,
        req: Request<pb::HostOutputsRequest>,
    ) -> Result<Response<pb::HostOutputsResponse>, Status> {
        require(&req, Role::Viewer, "reading a host's outputs")?;
        let r = req.into_inner();
        let (rollout_id, ids) =
            self.runtime.executions_of(rollout_arg(r.rollout_id), &r.host_id).await.map_err(to_status)?;
        // The log is read off the runtime task: a long one costs this call only.
        let (store, id) = (self.store.clone(), rollout_id.clone());
        let events = tokio::task::spawn_blocking(move || store.events(&id))
            .await
            .map_err(|e| {
                to_status(CoordinatorError::Internal { what: "reading the event log".into(), message: e.to_string() })
            })?
            .map_err(to_status)?;
        let wanted: std::collections::HashSet<&ExecutionId> = ids.iter().collect();
        let outputs = events
            .into_iter()
            .filter_map(|e| match e.event {
                convoy_common::engine::Event::StepFinished { execution_id, outcome }
                    if wanted.contains(&execution_id) =>
                {
                    Some(convoy_wire::outcome::host_output(&execution_id.to_string(), &outcome, e.now))
                }
                _ => None,
            })
            .collect();
        Ok(Response::new(pb::HostOutputsResponse { rollout_id, outputs }))
    }

    async fn step_times(&self, req: Request<pb::StepTimesRequest>) -> Result<Response<pb::StepTimesResponse>, Status> {
        require(&req, Role::Viewer, "reading step times")?;
        let plan = req.into_inner().plan_name;
        let steps = crate::timings::measured(self.store.as_ref(), &plan)
            .into_iter()
            .map(|((group, step), m)| pb::StepTime {
                group,
                step,
                median_ms: m.median.as_millis() as u64,
                runs: m.runs,
            })
            .collect();
        Ok(Response::new(pb::StepTimesResponse { steps }))
    }
}

// ------------------------------------------------ audit trail (issue 13)

/// The hosts a rollout's plan skipped because they were held (empty when
/// none, or when they cannot be read: a status answer does not fail on it).
fn held_of(store: &dyn Store, rollout_id: &str) -> Vec<pb::HeldHost> {
    store.rollout_holds(rollout_id).unwrap_or_default().iter().map(convoy_wire::ops::held_host).collect()
}

impl OperatorSvc {
    /// Record how an audited call ended ([`audit::record`]) and hand its result on.
    fn audited<T>(
        &self,
        origin: &Origin,
        action: AuditAction,
        target: &str,
        detail: &str,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        audit::finish(self.store.as_ref(), self.clock.now(), origin, action, target, detail, result)
    }

    fn join_token(&self, r: pb::CreateJoinTokenRequest, by: &str) -> Result<pb::CreateJoinTokenResponse, Status> {
        let scope = JoinScope {
            uses: if r.uses == 0 { 1 } else { r.uses },
            hosts: if r.hosts.is_empty() { None } else { Some(HostPattern::parse(&r.hosts).map_err(to_status)?) },
            ttl: if r.ttl_seconds == 0 {
                enrolment::DEFAULT_JOIN_TTL
            } else {
                Duration::from_secs(r.ttl_seconds.min(u64::MAX / 1000))
            },
        };
        let (token, record) =
            enrolment::issue_join_token(self.store.as_ref(), self.clock.now(), scope, by).map_err(to_status)?;
        tracing::info!(%by, uses = record.uses_left, hosts = ?record.hosts, "join token created");
        Ok(pb::CreateJoinTokenResponse {
            token,
            expires_unix_ms: record.expires.0,
            uses: record.uses_left,
            hosts: record.hosts.map(|h| h.to_string()).unwrap_or_default(),
        })
    }

    fn revoke(&self, host: &str, by: &str) -> Result<pb::RevokeAgentResponse, Status> {
        let e = enrolment::revoke(self.store.as_ref(), self.clock.now(), host, by).map_err(to_status)?;
        // The live session, if any, ends now: the certificate is refused from
        // here on, so it could not open another one.
        self.runtime.revoke(host).map_err(to_status)?;
        tracing::warn!(%host, %by, fingerprint = %e.fingerprint, "agent certificate revoked");
        Ok(pb::RevokeAgentResponse { host_id: host.to_string(), fingerprint: e.fingerprint })
    }
}

/// A duration in whole milliseconds for the wire.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
