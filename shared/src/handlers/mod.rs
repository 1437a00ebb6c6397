//! The handlers behind each Lambda: parse the trigger into a fact, load the deployment, let the
//! decision core decide, save, then carry out the decided effects through the ports.

pub mod ecs_hook;
pub mod on_alarm;
pub mod on_ecs_event;
pub mod on_image_push;
pub mod shifter;

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use crate::deployment::{Colour, Deployment, Effect, PendingEffect, ScaleLock, Stage, Status};
use crate::events::EventError;
use crate::lifecycle::{self, Fact};
use crate::outbox::{self, CLAIM_LEASE, Finished};
use crate::ports::{
    Adapters, Clock, Created, DeploymentStore, EcsControl, ImageResolver, Notifier, PortError,
    TrafficControl,
};

/// Everything a handler talks to. Built once per cold start.
pub struct Ports<S, E, T, N, C, I> {
    pub store: S,
    pub ecs: E,
    pub traffic: T,
    pub notifier: N,
    pub clock: C,
    pub images: I,
}

impl<S, E, T, N, C, I> Adapters for Ports<S, E, T, N, C, I>
where
    S: DeploymentStore,
    E: EcsControl,
    T: TrafficControl,
    N: Notifier,
    C: Clock,
    I: ImageResolver,
{
    type Store = S;
    type Ecs = E;
    type Traffic = T;
    type Notifier = N;
    type Clock = C;
    type Images = I;
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
    fn images(&self) -> &I {
        &self.images
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error(transparent)]
    Port(#[from] PortError),
    #[error("deployment {0}: gave up after {MAX_ATTEMPTS} conflicting concurrent writes")]
    Contended(String),
    #[error("deployment {0} not found")]
    NotFound(String),
    #[error("{0}")]
    Refused(lifecycle::Refusal),
    /// The call must wait for another one in flight (a scale lock): it is tried again shortly,
    /// and the wait is no failed attempt.
    #[error("waiting: {0}")]
    Waiting(String),
}

impl HandlerError {
    /// The name Lambda reports as the error type.
    pub fn kind(&self) -> &'static str {
        match self {
            HandlerError::Event(EventError::NotEventBridge { .. }) => "NotEventBridge",
            HandlerError::Event(EventError::Malformed { .. }) => "MalformedEvent",
            HandlerError::Port(PortError::Conflict) => "Conflict",
            HandlerError::Port(PortError::BadCursor) => "BadCursor",
            HandlerError::Port(PortError::Taken(_)) => "Taken",
            HandlerError::Port(PortError::Remote { .. }) => "RemoteCallFailed",
            HandlerError::Port(PortError::Corrupt { .. }) => "CorruptRecord",
            HandlerError::Contended(_) => "Contended",
            HandlerError::NotFound(_) => "NotFound",
            HandlerError::Refused(_) => "Refused",
            HandlerError::Waiting(_) => "Waiting",
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

/// A token naming one handler invocation, for the claims it puts on effects: unique per process
/// (a random base) and per call (a counter).
pub fn invocation_token() -> String {
    static BASE: OnceLock<u64> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let base = *BASE.get_or_init(|| {
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        h.write_u32(std::process::id());
        h.finish()
    });
    format!("{base:016x}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

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
            return carry_out(ports, next, &invocation_token()).await.map(Some);
        }
        Err(HandlerError::Contended(id.to_string()))
    })
}

/// Saves `d`; on a conflict (or an error that may hide a write that landed) returns the record
/// as it is stored now instead, for the caller to look at again.
async fn save_or_reload<P: Adapters>(
    ports: &P,
    mut d: Deployment,
) -> Result<(Deployment, bool), HandlerError> {
    match ports.store().save(&mut d).await {
        Ok(()) => Ok((d, true)),
        Err(PortError::Conflict) => match ports.store().get(&d.id).await? {
            Some(fresh) => Ok((fresh, false)),
            None => Err(HandlerError::NotFound(d.id)),
        },
        Err(e) => match ports.store().get(&d.id).await {
            Ok(Some(fresh)) => Ok((fresh, false)),
            _ => Err(e.into()),
        },
    }
}

/// Carries out the outbox (see `outbox`): each effect is claimed with this invocation's token by
/// a conditional save before it runs, its result is recorded by another, and a failure releases
/// the claim and backs off. A conflict on a claim that turns out to be our own (the answer of a
/// write that landed was lost) is ours: the effect is carried out at once.
async fn carry_out<P: Adapters>(
    ports: &P,
    mut d: Deployment,
    token: &str,
) -> Result<Deployment, HandlerError> {
    for _ in 0..MAX_ATTEMPTS * 4 {
        let now = ports.clock().now();
        if outbox::drop_abandoned(&mut d, token, now) {
            d = save_or_reload(ports, d).await?.0;
            continue;
        }
        let Some(seq) = outbox::next(&d, token, now) else {
            return Ok(d);
        };
        if outbox::abandoned(&d, seq, token, now) {
            warn!(deployment_id = %d.id, seq, "an effect's claimant never reported back");
            if outbox::failed(&mut d, seq, outbox::LEASE_LAPSED, now).is_some() {
                let fact = Fact::EffectGaveUp {
                    seq,
                    error: outbox::LEASE_LAPSED.to_string(),
                };
                d = lifecycle::decide(&d, &fact, now).deployment;
            }
            d = save_or_reload(ports, d).await?.0;
            continue;
        }
        if !outbox::claimed_by(&d, seq, token) {
            outbox::claim(&mut d, seq, token, now);
            let (fresh, saved) = save_or_reload(ports, d).await?;
            d = fresh;
            if !saved && !outbox::claimed_by(&d, seq, token) {
                continue;
            }
        }
        let Some(pending) = d.outbox.iter().find(|e| e.seq == seq).cloned() else {
            continue;
        };
        // Boxed: an effect may start another deployment (a promotion), nesting these futures.
        d = match Box::pin(effect(ports, &d, &pending, token)).await {
            Ok(follow_up) => record_done(ports, d, seq, follow_up).await?,
            Err(e) => {
                let waiting = matches!(e, HandlerError::Waiting(_));
                warn!(deployment_id = %d.id, effect = %pending.effect.describe(), error = %e,
                      "effect failed or must wait; it is retried");
                record_failed(ports, d, seq, &e.to_string(), token, waiting).await?
            }
        };
    }
    Err(HandlerError::Contended(d.id))
}

/// Carries out one effect; returns the fact that records its result, if any.
async fn effect<P: Adapters>(
    ports: &P,
    d: &Deployment,
    pending: &PendingEffect,
    token: &str,
) -> Result<Option<Fact>, HandlerError> {
    match &pending.effect {
        Effect::Alert(alert) => {
            ports.notifier().publish(alert).await?;
            Ok(None)
        }
        Effect::Measure { metrics } => {
            let now = ports.clock().now();
            for document in crate::emf::documents(&d.service, &d.environment, &d.id, metrics, now) {
                // Straight to stdout, one JSON object a line: CloudWatch Logs extracts it.
                println!("{document}");
            }
            Ok(None)
        }
        Effect::Tally => {
            if let Some(tally) = crate::ports::Tally::of(d) {
                ports.store().tally(&tally).await?;
            }
            Ok(None)
        }
        // An earlier attempt (failed, deferred, or whose claimant died) may have registered it.
        Effect::RegisterRevision => Ok(Some(
            register_revision(ports, d, pending.last_error.is_some()).await?,
        )),
        Effect::Deploy {
            service,
            task_definition,
            strategy: Some(strategy),
            ..
        } => {
            watch_handed_over(ports, d, pending).await?;
            // An earlier attempt whose answer was lost may have started it: the service
            // deployment is known already (the hook or the reconcile loop bound it), or it is
            // the service's current one, rolling out this revision. Started once only.
            let bound = d
                .native
                .as_ref()
                .and_then(|n| n.service_deployment_arn.clone());
            if bound.is_some() {
                return Ok(Some(Fact::RolloutStarted {
                    ecs_deployment_id: bound,
                }));
            }
            if pending.last_error.is_some()
                && let Some(view) = shifter::native_view(ports, d).await?
                && view.target_task_definition.as_deref() == Some(task_definition.as_str())
            {
                return Ok(Some(Fact::RolloutStarted {
                    ecs_deployment_id: Some(view.arn),
                }));
            }
            let service_deployment = ports
                .ecs()
                .update_service_native(&d.rollout.cluster, service, task_definition, strategy)
                .await?;
            Ok(Some(Fact::RolloutStarted {
                ecs_deployment_id: service_deployment,
            }))
        }
        Effect::Deploy {
            service,
            task_definition,
            desired_count,
            strategy: None,
        } => {
            watch_handed_over(ports, d, pending).await?;
            if let Some(moved) = live_colour_moved(ports, d).await? {
                return Ok(Some(moved));
            }
            take_idle_colour(ports, d).await?;
            let ecs_deployment_id = ports
                .ecs()
                .update_service(&d.rollout.cluster, service, task_definition, *desired_count)
                .await?;
            Ok(Some(Fact::RolloutStarted { ecs_deployment_id }))
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
        Effect::StopRollout { to_task_definition } => {
            stop_rollout(ports, d, to_task_definition).await
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
            // Traffic only ever goes to a colour whose targets are healthy at its desired count,
            // read right before the step.
            if *percent > 0
                && d.status() == Status::Shifting
                && let Some(canary) = traffic.canary()
            {
                let needed = d.rollout.desired_count.unwrap_or(1);
                let healthy = ports
                    .traffic()
                    .healthy_targets(&traffic.target(canary).target_group_arn)
                    .await?;
                if healthy < needed {
                    return Ok(Some(Fact::NotHealthy {
                        percent: *percent,
                        healthy,
                        needed,
                    }));
                }
            }
            ports
                .traffic()
                .set_weights(&traffic.listener, &weights)
                .await?;
            Ok(Some(Fact::WeightsSet { percent: *percent }))
        }
        Effect::Scale {
            service,
            desired_count,
            colour: None,
            ..
        } => {
            ports
                .ecs()
                .scale(&d.rollout.cluster, service, *desired_count)
                .await?;
            Ok(None)
        }
        Effect::Scale {
            service,
            desired_count,
            colour: Some(colour),
            owner,
        } => {
            scale_colour(
                ports,
                d,
                service,
                *desired_count,
                *colour,
                owner.as_deref(),
                token,
            )
            .await
        }
        Effect::Promote { environment } => Ok(Some(promote(ports, d, environment).await?)),
    }
}

/// ecs-native's rollback, from what ECS says of the rollout now: a service deployment in
/// progress is stopped with ROLLBACK; one ECS is rolling back (or has) needs no call; one that
/// completed (or none at all) is undone by UpdateService back to the previous task definition,
/// blue/green without a bake (all traffic back at once: a rollback is not rolled out by the
/// registration's steps and bakes, which could outlast the rollback's deadline). Whichever it
/// was, the outcome is confirmed from ECS later.
async fn stop_rollout<P: Adapters>(
    ports: &P,
    d: &Deployment,
    previous: &str,
) -> Result<Option<Fact>, HandlerError> {
    let Some(native) = d.native.as_ref() else {
        let why = format!("deployment {} is not an ecs-native rollout", d.id);
        return Err(HandlerError::Refused(lifecycle::Refusal::WrongState(why)));
    };
    let (cluster, service) = (&d.rollout.cluster, &d.rollout.ecs_service);
    let ours = |view: &lifecycle::NativeView| {
        native.service_deployment_arn.as_deref() == Some(view.arn.as_str())
            || (view.target_task_definition.is_some()
                && view.target_task_definition == d.rollout.new_task_definition)
    };
    if let Some(view) = shifter::native_view(ports, d).await?.filter(ours) {
        match view.status.as_str() {
            "PENDING" | "IN_PROGRESS" => {
                ports.ecs().stop_service_deployment(&view.arn).await?;
                return Ok(Some(Fact::RollbackIssued {
                    ecs_deployment_id: Some(view.arn),
                }));
            }
            "SUCCESSFUL" => {}
            _ => {
                return Ok(Some(Fact::RollbackIssued {
                    ecs_deployment_id: Some(view.arn),
                }));
            }
        }
    }
    let now_on = ports.ecs().service(cluster, service).await?;
    let mut back = None;
    if now_on.task_definition != previous {
        let at_once = crate::native::NativeStrategy::BlueGreen { bake_minutes: 0 };
        back = ports
            .ecs()
            .update_service_native(cluster, service, previous, &at_once)
            .await?;
    }
    // The service deployment that puts the previous revision back is the rollback's: the hook
    // lets it through as such.
    Ok(Some(Fact::RollbackIssued {
        ecs_deployment_id: back,
    }))
}

/// Scales a colour of an `alb-weights` pair, only while the stage item still names `owner` as
/// the deployment that last put its revision on it. The stage item's scale lock keeps a start
/// from taking the colour while the call is in flight (see `register_revision`).
#[allow(clippy::too_many_arguments)]
async fn scale_colour<P: Adapters>(
    ports: &P,
    d: &Deployment,
    service: &str,
    desired_count: u32,
    colour: Colour,
    owner: Option<&str>,
    token: &str,
) -> Result<Option<Fact>, HandlerError> {
    let (svc, env) = (d.service.as_str(), d.environment.as_str());
    let still_owned = update_stage(ports, svc, env, |stage, now| {
        if stage.owner(colour) != owner {
            return Ok(StageEdit::Keep(false));
        }
        if let Some(lock) = &stage.scaling
            && lock.token != token
            && !expired(lock.at, now)
        {
            return Err(busy(format!(
                "ECS service {service} is being scaled by another invocation"
            )));
        }
        stage.scaling = Some(ScaleLock {
            colour,
            token: token.to_string(),
            at: now,
        });
        Ok(StageEdit::Save(true))
    })
    .await?;
    if !still_owned {
        return Ok(Some(Fact::ScaledDown {
            service: service.to_string(),
            done: false,
        }));
    }
    let scaled = ports
        .ecs()
        .scale(&d.rollout.cluster, service, desired_count)
        .await;
    // The lock is released whatever the call did; a lock left behind by a dead invocation
    // expires after the claim lease.
    update_stage(ports, svc, env, |stage, _| {
        if stage.scaling.as_ref().is_none_or(|l| l.token != token) {
            return Ok(StageEdit::Keep(()));
        }
        stage.scaling = None;
        Ok(StageEdit::Save(()))
    })
    .await?;
    scaled?;
    Ok(Some(Fact::ScaledDown {
        service: service.to_string(),
        done: desired_count == 0,
    }))
}

/// What an edit of the stage item decided: save it (and answer `T`), or leave it as it is.
enum StageEdit<T> {
    Save(T),
    Keep(T),
}

/// Reads the stage item of a service and environment, lets `edit` decide on it, and saves it
/// with a conditional write; when another invocation changed it first, reads it and decides
/// again.
async fn update_stage<P: Adapters, T>(
    ports: &P,
    service: &str,
    environment: &str,
    mut edit: impl FnMut(&mut Stage, DateTime<Utc>) -> Result<StageEdit<T>, HandlerError>,
) -> Result<T, HandlerError> {
    for _ in 0..MAX_ATTEMPTS {
        let mut stage = ports.store().stage(service, environment).await?;
        match edit(&mut stage, ports.clock().now())? {
            StageEdit::Keep(answer) => return Ok(answer),
            StageEdit::Save(answer) => {
                match ports
                    .store()
                    .save_stage(service, environment, &mut stage)
                    .await
                {
                    Ok(()) => return Ok(answer),
                    Err(PortError::Conflict) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Err(HandlerError::Contended(format!(
        "stage of {service} in {environment}"
    )))
}

fn expired(at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    now - at >= CLAIM_LEASE
}

/// A call that must wait for another one to finish; retried with backoff.
fn busy(why: String) -> HandlerError {
    HandlerError::Waiting(why)
}

/// Removes a carried-out effect and applies its result, unless the effect was cancelled while it
/// ran (its result is stale then).
async fn record_done<P: Adapters>(
    ports: &P,
    mut d: Deployment,
    seq: u32,
    follow_up: Option<Fact>,
) -> Result<Deployment, HandlerError> {
    for _ in 0..MAX_ATTEMPTS {
        let finished = outbox::done(&mut d, seq);
        if finished == Finished::Gone {
            return Ok(d);
        }
        if let (Finished::Done, Some(fact)) = (&finished, &follow_up) {
            d = lifecycle::decide(&d, fact, ports.clock().now()).deployment;
        }
        // A failed save may hide one that landed: look at the record again either way.
        if ports.store().save(&mut d).await.is_ok() {
            return Ok(d);
        }
        d = match ports.store().get(&d.id).await? {
            Some(fresh) => fresh,
            None => return Ok(d),
        };
    }
    Err(HandlerError::Contended(d.id))
}

/// Releases a failed effect's claim and backs it off; past the attempt limit the lifecycle
/// decides what giving up means. An effect that only has to wait (`waiting`) is deferred
/// without counting an attempt.
async fn record_failed<P: Adapters>(
    ports: &P,
    mut d: Deployment,
    seq: u32,
    error: &str,
    token: &str,
    waiting: bool,
) -> Result<Deployment, HandlerError> {
    for _ in 0..MAX_ATTEMPTS {
        let now = ports.clock().now();
        // Released already (an earlier save of this landed), or taken over: nothing to record.
        // A cancelled effect is still ours to drop, so that it stops holding its lane.
        if !outbox::held_by(&d, seq, token) {
            return Ok(d);
        }
        if waiting {
            outbox::deferred(&mut d, seq, error, now);
        } else if outbox::failed(&mut d, seq, error, now).is_some() {
            let fact = Fact::EffectGaveUp {
                seq,
                error: error.to_string(),
            };
            d = lifecycle::decide(&d, &fact, now).deployment;
        }
        if ports.store().save(&mut d).await.is_ok() {
            return Ok(d);
        }
        d = match ports.store().get(&d.id).await? {
            Some(fresh) => fresh,
            None => return Ok(d),
        };
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
        // A redelivery, or a concurrent delivery starting it right now: take it as far as it
        // can go (starting it is safe from any number of invocations; see `start`).
        info!(deployment_id = %id, "deployment exists already");
        return start(ports, &id).await;
    }
    start(ports, &id).await
}

/// Takes a PENDING deployment as far as it can go: queue behind one in flight, wait for
/// approval, or take the slot and decide the start. Safe to call again, from any number of
/// invocations at once: the slot is taken by a conditional write, and the start itself is an
/// outbox effect that one invocation claims.
pub fn start<'a, P: Adapters>(
    ports: &'a P,
    id: &'a str,
) -> Pin<Box<dyn Future<Output = Result<Deployment, HandlerError>> + Send + 'a>> {
    Box::pin(async move {
        let mut d = ports
            .store()
            .get(id)
            .await?
            .ok_or_else(|| HandlerError::NotFound(id.to_string()))?;
        if d.status() != Status::Pending || d.starting() {
            // Finish whatever is owed (a start in the outbox, alerts).
            return Ok(apply(ports, id, &Fact::Resume).await?.unwrap_or(d));
        }
        let (service, environment) = (d.service.clone(), d.environment.clone());
        let (service, environment) = (service.as_str(), environment.as_str());
        // One deployment per service and environment goes ahead, the newest: an older push
        // never deploys after a newer one, however their invocations interleave. A newer
        // deployment makes this one moot; this one makes the older ones still waiting moot.
        for other in ports.store().active(service, environment).await? {
            if other == id {
                continue;
            }
            let Some(o) = ports.store().get(&other).await? else {
                continue;
            };
            if o.created_at > d.created_at && o.status().is_active() {
                let fact = Fact::Superseded { by: o.id };
                return Ok(apply(ports, id, &fact).await?.unwrap_or(d));
            }
            if o.waiting() && o.created_at <= d.created_at {
                apply(ports, &other, &Fact::Superseded { by: id.to_string() }).await?;
            }
        }
        for _ in 0..MAX_ATTEMPTS {
            let mut stage = ports.store().stage(service, environment).await?;
            // The holder blocks while it starts or is in flight, and after it ended while a
            // call of a phase it left is still in flight (it may yet move ECS or the listener).
            if let Some(h) = stage.holder.as_deref().filter(|h| *h != id)
                && let Some(o) = ports.store().get(h).await?
                && ((o.status().is_active() && !o.waiting()) || o.stale_call_in_flight())
            {
                let fact = Fact::Queued { behind: o.id };
                return Ok(apply(ports, id, &fact).await?.unwrap_or(d));
            }
            if d.queued_behind().is_some() {
                apply(ports, id, &Fact::Unblocked).await?;
            }
            if lifecycle::approval_before_start(&d) {
                return Ok(apply(ports, id, &Fact::ApprovalNeeded).await?.unwrap_or(d));
            }
            // A gate that holds it before anything changes (the scan, a freeze) holds it here,
            // before it takes the slot: a push held or failed by a gate never ends the watch of
            // the release before it.
            if lifecycle::held_before_start(&d, ports.clock().now()) {
                let after = apply(ports, id, &Fact::CheckGates).await?.unwrap_or(d);
                if after.status() != Status::Pending || after.hold().is_some() {
                    return Ok(after);
                }
                d = after;
            }
            if stage.holder.as_deref() != Some(id) {
                stage.holder = Some(id.to_string());
                match ports
                    .store()
                    .save_stage(service, environment, &mut stage)
                    .await
                {
                    Ok(()) => {}
                    // Another start changed the stage first: look again.
                    Err(PortError::Conflict) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            return Ok(apply(ports, id, &Fact::SlotTaken).await?.unwrap_or(d));
        }
        Err(HandlerError::Contended(format!(
            "stage of {service} in {environment}"
        )))
    })
}

/// The start's first call: read what serves now and register the new revision (after an
/// earlier attempt, `retry`, finding the one it may have registered).
async fn register_revision<P: Adapters>(
    ports: &P,
    d: &Deployment,
    retry: bool,
) -> Result<Fact, HandlerError> {
    let rollout = &d.rollout;
    let Some(traffic) = &d.traffic else {
        // rolling: the service itself takes the new revision.
        let service = ports
            .ecs()
            .service(&rollout.cluster, &rollout.ecs_service)
            .await?;
        let new_task_definition = ports
            .ecs()
            .register_revision(
                &service.task_definition,
                &rollout.container,
                &d.image,
                &d.id,
                retry,
            )
            .await?;
        return Ok(Fact::RevisionRegistered {
            previous_task_definition: service.task_definition,
            new_task_definition,
            desired_count: service.desired_count,
            stable: None,
            stable_owner: None,
        });
    };
    // alb-weights: the live colour is the one the listener sends traffic to.
    let weights = ports.traffic().weights(&traffic.listener).await?;
    let (blue, green) = (
        traffic.weight_of(&weights, Colour::Blue),
        traffic.weight_of(&weights, Colour::Green),
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
            }
            .into());
        }
    };
    let live = ports
        .ecs()
        .service(&rollout.cluster, &traffic.target(stable).service)
        .await?;
    let new_task_definition = ports
        .ecs()
        .register_revision(
            &live.task_definition,
            &rollout.container,
            &d.image,
            &d.id,
            retry,
        )
        .await?;
    // Who put the revision on the stable colour: the one whose delayed scale-down of it this
    // deployment will owe after success. Only one deployment of the service and environment
    // starts at a time, so it cannot change before the Deploy effect takes the idle colour.
    let stable_owner = ports
        .store()
        .stage(&d.service, &d.environment)
        .await?
        .owner(stable)
        .map(str::to_string);
    Ok(Fact::RevisionRegistered {
        previous_task_definition: live.task_definition,
        new_task_definition,
        desired_count: live.desired_count.max(1),
        stable: Some(stable),
        stable_owner,
    })
}

/// alb-weights: right before its UpdateService, the deployment takes the idle colour on the
/// stage item: a scale-down of it still owed to an earlier deployment becomes moot, and one in
/// flight right now is waited for. Taken by the Deploy effect itself, which is fenced by the
/// deployment's phase, so a start stopped before it (failed, aborted, superseded) never takes
/// the colour and leaves the earlier deployment's scale-down owed.
/// alb-weights, right before the rollout call: whether the listener sends all traffic to the
/// colour the new revision was planned for (a watch rollback of the release before put it back
/// there after this deployment read the listener), as the fact that moves the plan to the other
/// colour, with the live colour's task definition and desired count read again.
async fn live_colour_moved<P: Adapters>(
    ports: &P,
    d: &Deployment,
) -> Result<Option<Fact>, HandlerError> {
    let Some((traffic, planned)) = d.traffic.as_ref().and_then(|t| t.canary().map(|c| (t, c)))
    else {
        return Ok(None);
    };
    let weights = ports.traffic().weights(&traffic.listener).await?;
    if traffic.weight_of(&weights, planned) == 0 {
        return Ok(None);
    }
    if traffic.weight_of(&weights, planned.other()) > 0 {
        return Err(busy(format!(
            "the listener splits traffic between both colours ({weights:?}); the rollout call \
             waits until one carries it all"
        )));
    }
    let live = ports
        .ecs()
        .service(&d.rollout.cluster, &traffic.target(planned).service)
        .await?;
    let stable_owner = ports
        .store()
        .stage(&d.service, &d.environment)
        .await?
        .owner(planned)
        .map(str::to_string);
    Ok(Some(Fact::LiveColourMoved {
        live: planned,
        previous_task_definition: live.task_definition,
        desired_count: live.desired_count,
        stable_owner,
    }))
}

async fn take_idle_colour<P: Adapters>(ports: &P, d: &Deployment) -> Result<(), HandlerError> {
    let Some((traffic, idle)) = d.traffic.as_ref().and_then(|t| t.canary().map(|c| (t, c))) else {
        return Ok(());
    };
    let (svc, env) = (d.service.as_str(), d.environment.as_str());
    update_stage(ports, svc, env, |stage, now| {
        if stage.owner(idle) == Some(d.id.as_str()) {
            return Ok(StageEdit::Keep(()));
        }
        if let Some(lock) = &stage.scaling
            && lock.colour == idle
            && !expired(lock.at, now)
        {
            return Err(busy(format!(
                "the idle colour's ECS service {} is being scaled down; the start waits for it",
                traffic.target(idle).service
            )));
        }
        stage.set_owner(idle, &d.id);
        Ok(StageEdit::Save(()))
    })
    .await
}

/// Right before the rollout call: a release of the same service and environment still in its
/// watch window is watched no longer (its watch rollback would undo this rollout). The watch's
/// end is a conditional write on its record, so either it rolled back first — then this call
/// waits until that rollback has ended — or it never will. Done here, at the last step before
/// ECS is told anything, so that a push held or failed before it (a gate, a freeze that began
/// while its revision registered) leaves the release before it watched.
async fn watch_handed_over<P: Adapters>(
    ports: &P,
    d: &Deployment,
    pending: &PendingEffect,
) -> Result<(), HandlerError> {
    let (touched, rolling_back) = end_watches(ports, d).await?;
    if let Some(rolling_back) = rolling_back {
        return Err(busy(format!(
            "deployment {rolling_back} of {} is rolling back (its post-deployment watch); the \
             rollout waits for it",
            d.environment
        )));
    }
    // Time passed while other records were read and written: the call goes out only while this
    // deployment still owes it (not cancelled by a phase it has moved to meanwhile).
    if touched {
        let owed = ports.store().get(&d.id).await?.is_some_and(|fresh| {
            fresh
                .outbox
                .iter()
                .any(|e| e.seq == pending.seq && !e.cancelled)
        });
        if !owed {
            let why = format!(
                "deployment {}: the rollout call was cancelled while the watch before it ended",
                d.id
            );
            return Err(HandlerError::Refused(lifecycle::Refusal::WrongState(why)));
        }
    }
    Ok(())
}

/// Ends the watch of every other deployment of `d`'s service and environment still in its
/// watch window. Whether another record was read, and the id of one that is in flight instead
/// (a watch rollback decided first).
pub(crate) async fn end_watches<P: Adapters>(
    ports: &P,
    d: &Deployment,
) -> Result<(bool, Option<String>), HandlerError> {
    let mut touched = false;
    for other in ports.store().active(&d.service, &d.environment).await? {
        if other == d.id {
            continue;
        }
        touched = true;
        let Some(o) = ports.store().get(&other).await? else {
            continue;
        };
        let after = if o.watch_until().is_some() {
            let fact = Fact::WatchEnded { by: d.id.clone() };
            apply(ports, &other, &fact).await?
        } else {
            Some(o)
        };
        if let Some(after) = after.filter(|a| a.in_flight() && a.created_at <= d.created_at) {
            return Ok((touched, Some(after.id)));
        }
    }
    Ok((touched, None))
}

/// Success in one environment starts the same digest in the next.
async fn promote<P: Adapters>(
    ports: &P,
    from: &Deployment,
    environment: &str,
) -> Result<Fact, HandlerError> {
    let Some(next) = ports
        .store()
        .registration(&from.service, environment)
        .await?
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
    let promoted = Deployment::promotion_of(from, &next, ports.clock().now());
    let promoted_id = promoted.id.clone();
    // The promotion is done once the record exists (a retry finds it); starting it is the
    // reconcile loop's too, so a start that fails now does not make the promotion fail.
    ports.store().create(&promoted).await?;
    let reason = match start(ports, &promoted_id).await {
        Ok(d) => format!(
            "promoted to {environment} as {promoted_id} ({})",
            d.status()
        ),
        Err(e) => {
            warn!(deployment_id = %from.id, promoted = %promoted_id, error = %e,
                  "promoted; its start is left to the reconcile loop");
            format!(
                "promoted to {environment} as {promoted_id} (PENDING; its start is retried by \
                 the reconcile loop: {e})"
            )
        }
    };
    Ok(Fact::Noted {
        reason,
        actor: "flightdeck".to_string(),
    })
}

/// Approves a deployment waiting for approval and starts it. The approver must be a different
/// principal from every one that started it or the promotion chain it came from.
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
