//! The handlers behind each Lambda: parse the trigger into a fact, load the deployment, let the
//! decision core decide, save, then carry out the decided effects through the ports.

pub mod on_alarm;
pub mod on_ecs_event;
pub mod on_image_push;
pub mod shifter;

use std::future::Future;
use std::pin::Pin;

use tracing::{info, warn};

use crate::deployment::{Colour, Deployment, Effect, Status};
use crate::events::EventError;
use crate::lifecycle::{self, Fact};
use crate::ports::{
    Adapters, Clock, Created, DeploymentStore, EcsControl, Notifier, PortError, TrafficControl,
};

/// Everything a handler talks to. Built once per cold start.
pub struct Ports<S, E, T, N, C> {
    pub store: S,
    pub ecs: E,
    pub traffic: T,
    pub notifier: N,
    pub clock: C,
}

impl<S, E, T, N, C> Adapters for Ports<S, E, T, N, C>
where
    S: DeploymentStore,
    E: EcsControl,
    T: TrafficControl,
    N: Notifier,
    C: Clock,
{
    type Store = S;
    type Ecs = E;
    type Traffic = T;
    type Notifier = N;
    type Clock = C;
    fn store(&self) -> &S {
        &self.store
    }
    fn ecs(&self) -> &E {
        &self.ecs
    }
    fn traffic(&self) -> &T {
        &self.traffic
    }
    fn notifier(&self) -> &N {
        &self.notifier
    }
    fn clock(&self) -> &C {
        &self.clock
    }
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
    #[error("deployment {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Refused(lifecycle::Refusal),
}

impl HandlerError {
    /// The name Lambda reports as the error type.
    pub fn kind(&self) -> &'static str {
        match self {
            HandlerError::Event(EventError::NotEventBridge { .. }) => "NotEventBridge",
            HandlerError::Event(EventError::Malformed { .. }) => "MalformedEvent",
            HandlerError::Port(PortError::Conflict) => "Conflict",
            HandlerError::Port(PortError::BadCursor) => "BadCursor",
            HandlerError::Port(PortError::Remote { .. }) => "RemoteCallFailed",
            HandlerError::Port(PortError::Corrupt { .. }) => "CorruptRecord",
            HandlerError::StillStarting { .. } => "StillStarting",
            HandlerError::Contended(_) => "Contended",
            HandlerError::NotFound(_) => "NotFound",
            HandlerError::Refused(_) => "Refused",
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

/// Decides `fact` for deployment `id` and carries out what was decided. Lost races reload and
/// decide again; effects left over from an earlier, interrupted run are carried out too.
pub fn apply<'a, P: Adapters>(
    ports: &'a P,
    id: &'a str,
    fact: &'a Fact,
) -> Pin<Box<dyn Future<Output = Result<Option<Deployment>, HandlerError>> + Send + 'a>> {
    // Boxed: carrying out a promotion starts another deployment, which comes back through here.
    Box::pin(async move {
        for _ in 0..MAX_ATTEMPTS {
            let Some(current) = ports.store().get(id).await? else {
                return Ok(None);
            };
            let decision = lifecycle::decide(&current, fact, ports.clock().now());
            if let Some(refusal) = decision.refusal {
                return Err(HandlerError::Refused(refusal));
            }
            let mut next = decision.deployment;
            if decision.changed {
                match ports.store().save(&mut next).await {
                    Ok(()) => {}
                    Err(PortError::Conflict) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            return carry_out(ports, next).await.map(Some);
        }
        Err(HandlerError::Contended(id.to_string()))
    })
}

/// Carries out the outbox one effect at a time. Each effect is claimed by a conditional save
/// before it is carried out, so two invocations racing on one record never both send it; a
/// claim older than `CLAIM_LEASE` belongs to an invocation that died and is taken over.
async fn carry_out<P: Adapters>(ports: &P, mut d: Deployment) -> Result<Deployment, HandlerError> {
    for _ in 0..MAX_ATTEMPTS * 4 {
        let now = ports.clock().now();
        let Some(index) = d.outbox.iter().position(|e| e.claimable(now, CLAIM_LEASE)) else {
            return Ok(d);
        };
        d.outbox[index].claimed_at = Some(now);
        match ports.store().save(&mut d).await {
            Ok(()) => {}
            Err(PortError::Conflict) => {
                d = match ports.store().get(&d.id).await? {
                    Some(fresh) => fresh,
                    None => return Ok(d),
                };
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        let pending = d.outbox[index].clone();
        let follow_up = effect(ports, &d, &pending.effect).await?;
        d = record_done(ports, d, pending.seq, follow_up).await?;
    }
    Err(HandlerError::Contended(d.id))
}

/// Carries out one effect; returns the fact that records its result, if any.
async fn effect<P: Adapters>(
    ports: &P,
    d: &Deployment,
    effect: &Effect,
) -> Result<Option<Fact>, HandlerError> {
    match effect {
        Effect::Alert(alert) => {
            ports.notifier().publish(alert).await?;
            Ok(None)
        }
        Effect::RollBack { to_task_definition } => {
            let ecs_deployment_id = ports
                .ecs()
                .update_service(
                    &d.rollout.cluster,
                    &d.rollout.ecs_service,
                    to_task_definition,
                    None,
                )
                .await?;
            Ok(Some(Fact::RollbackIssued { ecs_deployment_id }))
        }
        Effect::SetWeights { percent } => {
            let wrong = |why: String| HandlerError::Refused(lifecycle::Refusal::WrongState(why));
            let traffic = d
                .traffic
                .as_ref()
                .ok_or_else(|| wrong(format!("deployment {} has no listener to shift", d.id)))?;
            let weights = traffic
                .weights(*percent)
                .ok_or_else(|| wrong(format!("deployment {} has no stable colour yet", d.id)))?;
            ports
                .traffic()
                .set_weights(&traffic.listener, &weights)
                .await?;
            Ok(Some(Fact::WeightsSet { percent: *percent }))
        }
        Effect::Scale {
            service,
            desired_count,
        } => {
            ports
                .ecs()
                .scale(&d.rollout.cluster, service, *desired_count)
                .await?;
            Ok((*desired_count == 0).then(|| Fact::ScaledDown {
                service: service.clone(),
            }))
        }
        Effect::Promote { environment } => Ok(Some(promote(ports, d, environment).await?)),
    }
}

async fn record_done<P: Adapters>(
    ports: &P,
    mut d: Deployment,
    seq: u32,
    follow_up: Option<Fact>,
) -> Result<Deployment, HandlerError> {
    for _ in 0..MAX_ATTEMPTS {
        lifecycle::effects_done(&mut d, &[seq]);
        if let Some(fact) = &follow_up {
            d = lifecycle::decide(&d, fact, ports.clock().now()).deployment;
        }
        match ports.store().save(&mut d).await {
            Ok(()) => return Ok(d),
            Err(PortError::Conflict) => {
                d = match ports.store().get(&d.id).await? {
                    Some(fresh) => fresh,
                    None => return Ok(d),
                };
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(HandlerError::Contended(d.id))
}

/// Creates `deployment` (once: the id decides) and takes it as far as it can go now.
pub async fn create_and_start<P: Adapters>(
    ports: &P,
    deployment: Deployment,
) -> Result<Deployment, HandlerError> {
    let id = deployment.id.clone();
    if ports.store().create(&deployment).await? == Created::AlreadyExists {
        // A redelivery, or a concurrent delivery starting it right now: the deployment is someone
        // else's to start. Only finish what an earlier, interrupted run left undone.
        info!(deployment_id = %id, "deployment exists already; nothing to start");
        return Ok(apply(ports, &id, &Fact::Tick).await?.unwrap_or(deployment));
    }
    // A newer deployment supersedes the ones still waiting (queued or awaiting approval).
    for other in ports
        .store()
        .active(&deployment.service, &deployment.environment)
        .await?
    {
        if other != id
            && let Some(old) = ports.store().get(&other).await?
            && old.waiting()
            && old.created_at <= deployment.created_at
        {
            apply(ports, &other, &Fact::Superseded { by: id.clone() }).await?;
        }
    }
    start(ports, &id).await
}

/// Takes a PENDING deployment as far as it can go: queue behind one in flight, wait for
/// approval, or start the rollout. Safe to call again at any time.
pub fn start<'a, P: Adapters>(
    ports: &'a P,
    id: &'a str,
) -> Pin<Box<dyn Future<Output = Result<Deployment, HandlerError>> + Send + 'a>> {
    Box::pin(async move {
        let d = ports
            .store()
            .get(id)
            .await?
            .ok_or_else(|| HandlerError::NotFound(id.to_string()))?;
        if d.status != Status::Pending {
            return Ok(d);
        }
        // One deployment in flight per service and environment: a slot item names it, read
        // consistently and taken by a conditional write, so two starts racing cannot both win.
        let (service, environment) = (d.service.as_str(), d.environment.as_str());
        let holder = ports.store().slot_holder(service, environment).await?;
        // The holder blocks while it starts (PENDING, not queued) or is in flight; one that
        // was abandoned mid-start is failed by the reconcile loop after START_TIMEOUT.
        if let Some(h) = holder.as_deref().filter(|h| *h != id)
            && let Some(o) = ports.store().get(h).await?
            && o.status.is_active()
            && !o.waiting()
        {
            let fact = Fact::Queued { behind: o.id };
            return Ok(apply(ports, id, &fact).await?.unwrap_or(d));
        }
        if d.queued_behind.is_some() {
            apply(ports, id, &Fact::Unblocked).await?;
        }
        if d.approval_required && d.approved_by.is_none() {
            return Ok(apply(ports, id, &Fact::ApprovalNeeded).await?.unwrap_or(d));
        }
        if holder.as_deref() != Some(id)
            && !ports
                .store()
                .claim_slot(service, environment, id, holder.as_deref())
                .await?
        {
            // Another start took the slot between our read and our claim: wait behind it.
            let winner = ports.store().slot_holder(service, environment).await?;
            let fact = Fact::Queued {
                behind: winner.unwrap_or_default(),
            };
            return Ok(apply(ports, id, &fact).await?.unwrap_or(d));
        }
        let fact = match roll_out(ports, &d).await {
            Ok(fact) => fact,
            Err(e) => Fact::StartFailed {
                reason: format!("the rollout could not be started: {e}"),
            },
        };
        Ok(apply(ports, id, &fact).await?.unwrap_or(d))
    })
}

/// The engine's first move: register the new revision and put it on ECS.
async fn roll_out<P: Adapters>(ports: &P, d: &Deployment) -> Result<Fact, PortError> {
    let rollout = &d.rollout;
    let Some(traffic) = &d.traffic else {
        // rolling: the service itself takes the new revision.
        let service = ports
            .ecs()
            .service(&rollout.cluster, &rollout.ecs_service)
            .await?;
        let new_task_definition = ports
            .ecs()
            .register_revision(&service.task_definition, &rollout.container, &d.image)
            .await?;
        let ecs_deployment_id = ports
            .ecs()
            .update_service(
                &rollout.cluster,
                &rollout.ecs_service,
                &new_task_definition,
                None,
            )
            .await?;
        return Ok(Fact::RolloutStarted {
            previous_task_definition: service.task_definition,
            new_task_definition,
            ecs_deployment_id,
            desired_count: service.desired_count,
            stable: None,
        });
    };
    // alb-weights: the live colour is the one the listener sends traffic to.
    let weights = ports.traffic().weights(&traffic.listener).await?;
    let weight_of = |tg: &str| {
        weights
            .iter()
            .filter(|(arn, _)| arn == tg)
            .map(|(_, w)| *w)
            .sum::<u32>()
    };
    let (blue, green) = (
        weight_of(&traffic.blue.target_group_arn),
        weight_of(&traffic.green.target_group_arn),
    );
    let stable = match (blue, green) {
        (b, 0) if b > 0 => Colour::Blue,
        (0, g) if g > 0 => Colour::Green,
        _ => {
            return Err(PortError::Remote {
                operation: "ELBv2 weights",
                message: format!(
                    "the listener's weights are blue {blue} / green {green}; one colour must carry all \
                     traffic before a deployment starts"
                ),
            });
        }
    };
    let live = ports
        .ecs()
        .service(&rollout.cluster, &traffic.target(stable).service)
        .await?;
    let idle = &traffic.target(stable.other()).service;
    let new_task_definition = ports
        .ecs()
        .register_revision(&live.task_definition, &rollout.container, &d.image)
        .await?;
    let desired = live.desired_count.max(1);
    let ecs_deployment_id = ports
        .ecs()
        .update_service(&rollout.cluster, idle, &new_task_definition, Some(desired))
        .await?;
    Ok(Fact::RolloutStarted {
        previous_task_definition: live.task_definition,
        new_task_definition,
        ecs_deployment_id,
        desired_count: desired,
        stable: Some(stable),
    })
}

/// Success in one environment starts the same digest in the next.
async fn promote<P: Adapters>(
    ports: &P,
    from: &Deployment,
    environment: &str,
) -> Result<Fact, HandlerError> {
    let registrations = ports.store().registrations().await?;
    let Some(next) = registrations
        .iter()
        .find(|r| r.service == from.service && r.environment == environment)
    else {
        warn!(deployment_id = %from.id, environment, "promotion target is not registered");
        return Ok(Fact::Noted {
            reason: format!(
                "not promoted: {} has no registration in {environment}",
                from.service
            ),
            actor: "flightdeck".to_string(),
        });
    };
    let promoted = Deployment::promotion_of(from, next, ports.clock().now());
    let promoted_id = promoted.id.clone();
    let d = create_and_start(ports, promoted).await?;
    Ok(Fact::Noted {
        reason: format!("promoted to {environment} as {promoted_id} ({})", d.status),
        actor: "flightdeck".to_string(),
    })
}

/// Approves a deployment waiting for approval and starts it. The approver must not be the
/// principal that started it.
pub async fn approve<P: Adapters>(
    ports: &P,
    id: &str,
    approver: &str,
) -> Result<Deployment, HandlerError> {
    apply(
        ports,
        id,
        &Fact::Approved {
            by: approver.to_string(),
        },
    )
    .await?
    .ok_or_else(|| HandlerError::NotFound(id.to_string()))?;
    start(ports, id).await
}
