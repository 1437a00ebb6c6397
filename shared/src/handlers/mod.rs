//! The handlers behind each Lambda: parse the trigger into a fact, load the deployment, let the
//! decision core decide, save, then carry out the decided effects through the ports.

pub mod on_ecs_event;
pub mod on_image_push;

use crate::deployment::{Deployment, Effect};
use crate::events::EventError;
use crate::lifecycle::{self, Fact};
use crate::ports::{Clock, DeploymentStore, EcsControl, Notifier, PortError};

/// Everything a handler talks to. Built once per cold start.
pub struct Ports<S, E, N, C> {
    pub store: S,
    pub ecs: E,
    pub notifier: N,
    pub clock: C,
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error(transparent)]
    Port(#[from] PortError),
    #[error("event {event_id}: deployment {deployment_id} is still starting; retry later")]
    StillStarting {
        event_id: String,
        deployment_id: String,
    },
    #[error("deployment {0}: gave up after {MAX_ATTEMPTS} conflicting concurrent writes")]
    Contended(String),
}

impl HandlerError {
    /// The name Lambda reports as the error type.
    pub fn kind(&self) -> &'static str {
        match self {
            HandlerError::Event(EventError::NotEventBridge { .. }) => "NotEventBridge",
            HandlerError::Event(EventError::Malformed { .. }) => "MalformedEvent",
            HandlerError::Port(PortError::Conflict) => "Conflict",
            HandlerError::Port(PortError::Remote { .. }) => "RemoteCallFailed",
            HandlerError::Port(PortError::Corrupt { .. }) => "CorruptRecord",
            HandlerError::StillStarting { .. } => "StillStarting",
            HandlerError::Contended(_) => "Contended",
        }
    }
}

#[cfg(feature = "lambda")]
impl From<HandlerError> for lambda_runtime::Diagnostic {
    fn from(error: HandlerError) -> Self {
        lambda_runtime::Diagnostic {
            error_type: error.kind().to_string(),
            error_message: error.to_string(),
        }
    }
}

/// What a handler did, for its log line and for tests.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    /// Deployments as they stand after handling, in the order they were touched.
    pub deployments: Vec<Deployment>,
    /// Why the event was skipped, when it was.
    pub skipped: Option<String>,
}

impl Outcome {
    pub fn skipped(reason: impl Into<String>) -> Outcome {
        Outcome {
            deployments: Vec::new(),
            skipped: Some(reason.into()),
        }
    }
}

const MAX_ATTEMPTS: usize = 8;

/// How long a claimed effect is left to the invocation that claimed it (Lambda timeouts are shorter).
const CLAIM_LEASE: chrono::Duration = chrono::Duration::minutes(2);

impl<S, E, N, C> Ports<S, E, N, C>
where
    S: DeploymentStore,
    E: EcsControl,
    N: Notifier,
    C: Clock,
{
    /// Decides `fact` for deployment `id` and carries out what was decided. Lost races reload and
    /// decide again; effects left over from an earlier, interrupted run are carried out too.
    pub async fn apply(&self, id: &str, fact: &Fact) -> Result<Option<Deployment>, HandlerError> {
        for _ in 0..MAX_ATTEMPTS {
            let Some(current) = self.store.get(id).await? else {
                return Ok(None);
            };
            let decision = lifecycle::decide(&current, fact, self.clock.now());
            let mut next = decision.deployment;
            if decision.changed {
                match self.store.save(&mut next).await {
                    Ok(()) => {}
                    Err(PortError::Conflict) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            return self.carry_out(next).await.map(Some);
        }
        Err(HandlerError::Contended(id.to_string()))
    }

    /// Carries out the outbox one effect at a time. Each effect is claimed by a conditional save
    /// before it is carried out, so two invocations racing on one record never both send it; a
    /// claim older than `CLAIM_LEASE` belongs to an invocation that died and is taken over.
    async fn carry_out(&self, mut d: Deployment) -> Result<Deployment, HandlerError> {
        for _ in 0..MAX_ATTEMPTS * 4 {
            let now = self.clock.now();
            let Some(index) = d.outbox.iter().position(|e| e.claimable(now, CLAIM_LEASE)) else {
                return Ok(d);
            };
            d.outbox[index].claimed_at = Some(now);
            match self.store.save(&mut d).await {
                Ok(()) => {}
                Err(PortError::Conflict) => {
                    d = match self.store.get(&d.id).await? {
                        Some(fresh) => fresh,
                        None => return Ok(d),
                    };
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            let pending = d.outbox[index].clone();
            let follow_up = match &pending.effect {
                Effect::Alert(alert) => {
                    self.notifier.publish(alert).await?;
                    None
                }
                Effect::RollBack { to_task_definition } => {
                    let ecs_deployment_id = self
                        .ecs
                        .update_service(
                            &d.rollout.cluster,
                            &d.rollout.ecs_service,
                            to_task_definition,
                        )
                        .await?;
                    Some(Fact::RollbackIssued { ecs_deployment_id })
                }
            };
            d = self.record_done(d, pending.seq, follow_up).await?;
        }
        Err(HandlerError::Contended(d.id))
    }

    async fn record_done(
        &self,
        mut d: Deployment,
        seq: u32,
        follow_up: Option<Fact>,
    ) -> Result<Deployment, HandlerError> {
        for _ in 0..MAX_ATTEMPTS {
            lifecycle::effects_done(&mut d, &[seq]);
            if let Some(fact) = &follow_up {
                d = lifecycle::decide(&d, fact, self.clock.now()).deployment;
            }
            match self.store.save(&mut d).await {
                Ok(()) => return Ok(d),
                Err(PortError::Conflict) => {
                    d = match self.store.get(&d.id).await? {
                        Some(fresh) => fresh,
                        None => return Ok(d),
                    };
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(HandlerError::Contended(d.id))
    }
}
