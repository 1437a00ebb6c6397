//! `shifter`: the reconcile loop, every minute. For every deployment that still has work (the
//! sparse active index, never a Scan) it reads what the gates need, decides, and acts once.
//! Deciding is a function of the record and what was read, so a second run in the same minute
//! finds nothing more to do: no extra ELBv2 calls, no extra alerts.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Utc};

use tracing::{info, warn};

use super::{HandlerError, Outcome, apply, start};
use crate::deployment::{Deployment, Hold, State, Status};
use crate::lifecycle::{Fact, NativeView, ServiceObservation, TaskObservation};
use crate::ports::{
    Adapters, AlarmReader, AlarmState, Clock, DeploymentStore, EcsControl, EcsService,
    ImageResolver, MetricsReader, TrafficControl,
};
use crate::registration::target_group_dimension;

pub async fn handle<P: Adapters, A: AlarmReader + MetricsReader>(
    ports: &P,
    alarms: &A,
) -> Result<Outcome, HandlerError> {
    // One deployment's trouble (a read that fails) never holds up the others; the first error
    // is reported when the tick is done.
    let mut first_error: Option<HandlerError> = None;
    let mut deployments = Vec::new();
    for id in ports.store().all_active().await? {
        match ports.store().get(&id).await {
            Ok(Some(d)) => deployments.push(d),
            Ok(None) => {}
            Err(e) => {
                warn!(deployment_id = %id, error = %e, "record unreadable this tick");
                first_error.get_or_insert(e.into());
            }
        }
    }
    // The alarms that gate each deployment in flight: its own list and its registration's as it
    // is now (an alarm added mid-deployment gates it too). One DescribeAlarms for all of them.
    let mut gates: HashMap<String, Vec<String>> = HashMap::new();
    for d in deployments
        .iter()
        .filter(|d| d.in_flight() || d.watch_until().is_some())
    {
        let mut alarms = d.alarms.clone();
        match ports.store().registration(&d.service, &d.environment).await {
            Ok(Some(r)) => alarms.extend(r.spec.gates.alarms),
            Ok(None) => {}
            Err(e) => {
                warn!(deployment_id = %d.id, error = %e, "registration unreadable this tick");
                first_error.get_or_insert(e.into());
            }
        }
        alarms.sort();
        alarms.dedup();
        gates.insert(d.id.clone(), alarms);
    }
    let names: BTreeSet<String> = gates.values().flatten().cloned().collect();
    // The alarm read is a safety net (alarm events roll back at once); when it fails the tick
    // still reconciles every deployment, and reports the failure at the end.
    let states = if names.is_empty() {
        Vec::new()
    } else {
        match alarms.states(&names.into_iter().collect::<Vec<_>>()).await {
            Ok(states) => states,
            Err(e) => {
                warn!(error = %e, "alarm states unreadable this tick; reconciling without them");
                first_error.get_or_insert(e.into());
                Vec::new()
            }
        }
    };
    let firing: HashMap<&str, &AlarmState> = states
        .iter()
        .filter(|s| s.state == "ALARM")
        .map(|s| (s.name.as_str(), s))
        .collect();

    let mut outcome = Outcome::default();
    for d in deployments {
        let gating = gates.get(&d.id).map(Vec::as_slice).unwrap_or_default();
        match reconcile(ports, alarms, &d, gating, &firing).await {
            Ok(after) => {
                if after.status() != d.status() || after.traffic_percent != d.traffic_percent {
                    info!(deployment_id = %d.id, from = %d.status(), to = %after.status(),
                          traffic = after.traffic_percent, "reconciled");
                }
                outcome.deployments.push(after);
            }
            Err(e) => {
                // One deployment's trouble does not hold up the others; the error is reported.
                warn!(deployment_id = %d.id, error = %e, "reconcile failed");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(outcome),
    }
}

async fn reconcile<P: Adapters, M: MetricsReader>(
    ports: &P,
    metrics: &M,
    d: &Deployment,
    gating: &[String],
    firing: &HashMap<&str, &AlarmState>,
) -> Result<Deployment, HandlerError> {
    let id = d.id.as_str();
    let applied = |fact: Fact| async move { apply(ports, id, &fact).await };
    match d.status() {
        Status::Pending => {
            // The vulnerability gate's fallback: the scan result is read here when no scan
            // event brought it.
            // A read that fails holds nothing up: `start` still ends the hold at `wait_minutes`
            // (the `missing` policy), and the failure is reported after it.
            let read = if matches!(d.hold(), Some(Hold::Scan { .. })) {
                read_scan(ports, d).await.map(|_| ())
            } else {
                Ok(())
            };
            let started = start(ports, id).await?;
            read?;
            Ok(started)
        }
        // The watch window: the alarms and the crash loops of the revision, as in flight.
        Status::Succeeded if d.watch_until().is_some() => {
            if let Some(fact) = firing_gate(gating, firing) {
                return Ok(applied(fact).await?.unwrap_or_else(|| d.clone()));
            }
            let looked = count_stopped_failures(ports, d, |s| s == Status::Succeeded).await;
            if let Ok(Some(rolled_back)) = looked {
                return Ok(rolled_back);
            }
            tick_after(applied(Fact::Tick).await?, d, looked.map(|_| ()))
        }
        Status::Deploying | Status::Shifting => {
            if let Some(fact) = firing_gate(gating, firing) {
                return Ok(applied(fact).await?.unwrap_or_else(|| d.clone()));
            }
            // DEPLOYING waits for readiness; SHIFTING needs a look only when a bake ends (its
            // gate: the new colour healthy at its desired count), so holding a step reads nothing.
            let now = ports.clock().now();
            let bake_over = matches!(&d.state, State::Shifting(p) if p.bake_until.is_some_and(|until| now >= until));
            // ecs-native: ECS's word first, so that the judge looks at the step ECS is at now
            // (a look at a step ECS has left would pass it after the fact).
            let mut observed = None;
            let seen = async {
                if d.native.is_some()
                    && let Some(view) = native_view(ports, d).await?
                {
                    observed = applied(Fact::NativeObserved(view)).await?;
                }
                Ok::<_, HandlerError>(())
            }
            .await;
            let current = observed.as_ref().unwrap_or(d);
            // The canary judge, before the look that may end the step's bake. A metrics read
            // that fails passes nothing (the bake ends only on a verdict taken after it) and
            // holds up none of the other reads.
            let judged = async {
                let after = if d.native.is_some() {
                    // Without ECS's word this tick, no look: the record may be a step behind.
                    if seen.is_ok() {
                        judge_native(ports, metrics, current, true).await?
                    } else {
                        None
                    }
                } else if let Some((judgement, step)) = judge(ports, metrics, d).await? {
                    applied(Fact::Judged { judgement, step }).await?
                } else {
                    None
                };
                Ok::<_, HandlerError>(
                    after.filter(|a| !matches!(a.status(), Status::Deploying | Status::Shifting)),
                )
            }
            .await;
            if let Ok(Some(ended)) = judged {
                return Ok(ended);
            }
            let looked = async {
                if d.native.is_some() {
                    seen?;
                } else if (d.status() == Status::Deploying || bake_over)
                    && let Some(seen) = observe(ports, d).await?
                {
                    applied(Fact::ServiceObserved(seen)).await?;
                }
                // Crash loops are counted from what ECS keeps of stopped tasks too, so that
                // lost task events cannot hide one.
                count_stopped_failures(ports, d, |s| {
                    matches!(s, Status::Deploying | Status::Shifting)
                })
                .await
            }
            .await;
            if let Ok(Some(ended)) = looked {
                return Ok(ended);
            }
            let read = judged.and(looked).map(|_| ());
            tick_after(applied(Fact::Tick).await?, d, read)
        }
        Status::RollingBack => {
            let looked = async {
                if d.native.is_some()
                    && let Some(view) = native_view(ports, d).await?
                    && let Some(after) = applied(Fact::NativeObserved(view)).await?
                    && after.status() != Status::RollingBack
                {
                    return Ok(());
                }
                if let Some(seen) = observe(ports, d).await? {
                    applied(Fact::ServiceObserved(seen)).await?;
                } else if let Some(percent) = canary_weight(ports, d).await? {
                    applied(Fact::TrafficObserved { percent }).await?;
                }
                Ok::<_, HandlerError>(())
            }
            .await;
            tick_after(applied(Fact::Tick).await?, d, looked)
        }
        _ => Ok(applied(Fact::Tick).await?.unwrap_or_else(|| d.clone())),
    }
}

/// The gating alarm the reconcile loop's DescribeAlarms found in ALARM, as the fact that rolls
/// the deployment back.
fn firing_gate(gating: &[String], firing: &HashMap<&str, &AlarmState>) -> Option<Fact> {
    let alarm = gating.iter().find_map(|a| firing.get(a.as_str()))?;
    Some(Fact::AlarmFired {
        alarm: alarm.name.clone(),
        reason: alarm.reason.clone(),
        gating: true,
        since: None,
    })
}

/// Failed tasks of the new revision that ECS still lists and the record has not counted yet,
/// applied one by one; the record once one of them ended the phase `watched` holds (a crash
/// loop rolled it back).
async fn count_stopped_failures<P: Adapters>(
    ports: &P,
    d: &Deployment,
    watched: impl Fn(Status) -> bool,
) -> Result<Option<Deployment>, HandlerError> {
    for task in stopped_failures(ports, d).await? {
        if let Some(after) = apply(ports, &d.id, &Fact::Task(task)).await?
            && !watched(after.status())
        {
            return Ok(Some(after));
        }
    }
    Ok(None)
}

/// The image's scan, for a deployment the vulnerability gate holds: read and decided.
pub(crate) async fn read_scan<P: Adapters>(
    ports: &P,
    d: &Deployment,
) -> Result<Option<Deployment>, HandlerError> {
    let repository = d
        .image
        .split_once('/')
        .map(|(_, rest)| rest)
        .and_then(|rest| rest.split_once('@'))
        .map(|(repo, _)| repo)
        .unwrap_or_default();
    let report = ports.images().scan_findings(repository, &d.digest).await?;
    apply(ports, &d.id, &Fact::ScanRead(report)).await
}

/// The canary judge's samples for the step being held (alb-weights with `gates.analysis`, while
/// the stable colour still takes traffic): one GetMetricData call over the minutes since the
/// step's weights were set. `None` when there is nothing to judge now.
async fn judge<P: Adapters, M: MetricsReader>(
    ports: &P,
    metrics: &M,
    d: &Deployment,
) -> Result<Option<(crate::judge::Judgement, usize)>, HandlerError> {
    let (Some(analysis), Some(traffic), State::Shifting(progress)) =
        (&d.gates.analysis, &d.traffic, &d.state)
    else {
        return Ok(None);
    };
    let (Some(stable), Some(canary), Some(until)) =
        (traffic.stable, traffic.canary(), progress.bake_until)
    else {
        return Ok(None);
    };
    if d.traffic_percent == 0 || d.traffic_percent >= 100 {
        return Ok(None);
    }
    let Some(load_balancer) = traffic.listener.load_balancer_dimension() else {
        return Ok(None);
    };
    let now = ports.clock().now();
    let from = until - chrono::Duration::minutes(i64::from(d.bake_minutes));
    if now <= from {
        return Ok(None);
    }
    let groups = (
        traffic.target(canary).target_group_arn.as_str(),
        traffic.target(stable).target_group_arn.as_str(),
    );
    let window = (from, until, now);
    let judgement = look(
        metrics,
        analysis,
        load_balancer,
        groups,
        window,
        d.bake_minutes,
    )
    .await?;
    Ok(Some((judgement, traffic.step)))
}

/// One look of the canary judge at a step: both target groups' per-minute samples from the
/// step's start to now (one GetMetricData), judged as a look during the bake or at its end.
async fn look<M: MetricsReader>(
    metrics: &M,
    analysis: &crate::judge::Analysis,
    load_balancer: &str,
    (canary, stable): (&str, &str),
    (from, until, now): (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>),
    bake_minutes: u32,
) -> Result<crate::judge::Judgement, HandlerError> {
    let samples = metrics
        .alb_minutes(
            load_balancer,
            target_group_dimension(canary),
            target_group_dimension(stable),
            from,
            now,
        )
        .await?;
    let look = if now >= until {
        crate::judge::Look::End
    } else {
        crate::judge::Look::During { bake_minutes }
    };
    Ok(crate::judge::judge_look(analysis, &samples, look))
}

/// The canary judge of an ecs-native rollout (`gates.analysis`), for the reconcile loop and the
/// lifecycle hook alike: the service's production listener rule is read (DescribeServices,
/// DescribeRules) until the new revision's target group is told from the stable one's — before
/// ECS moves production traffic, or mid-shift by the weights — and then, while the new revision
/// takes part of production traffic, one GetMetricData over the minutes since ECS set its
/// current share. So that a step gets no more looks than the judge's error budget is split
/// across (see `judge::Look`): looks during the bake only where `during` (the reconcile loop,
/// once a minute; not the hook), and one look at its end, taken again only while it found no
/// data. The record after what was applied; `None` when nothing was.
pub(super) async fn judge_native<P: Adapters, M: MetricsReader>(
    ports: &P,
    metrics: &M,
    d: &Deployment,
    during: bool,
) -> Result<Option<Deployment>, HandlerError> {
    let (Some(analysis), Some(native)) = (&d.gates.analysis, &d.native) else {
        return Ok(None);
    };
    if !matches!(d.status(), Status::Deploying | Status::Shifting) || d.traffic_percent >= 100 {
        return Ok(None);
    }
    let mut after = None;
    if native.judged_groups.is_none() {
        let service = ports
            .ecs()
            .service(&d.rollout.cluster, &d.rollout.ecs_service)
            .await?;
        // An NLB listener is refused by the judge whatever its weights: not read.
        let rule = service
            .production_listener_rule
            .as_deref()
            .map(crate::deployment::Listener::of_arn);
        let weights = match rule {
            Some(rule @ crate::deployment::Listener::Rule(_)) => {
                ports.traffic().weights(&rule).await?
            }
            _ => Vec::new(),
        };
        let read = Fact::ProductionRuleRead {
            rule: service.production_listener_rule,
            weights,
        };
        after = apply(ports, &d.id, &read).await?;
    }
    let current = after.as_ref().unwrap_or(d);
    let (Some(groups), Some((step, from, until))) = (
        current
            .native
            .as_ref()
            .and_then(|n| n.judged_groups.as_deref()),
        crate::lifecycle::judge_window(current),
    ) else {
        return Ok(after);
    };
    let now = ports.clock().now();
    if now <= from || current.status() != Status::Shifting || (now < until && !during) {
        return Ok(after);
    }
    let ended = current.gates.verdict.as_ref().is_some_and(|v| {
        v.step == step && v.at >= until && v.judgement.verdict != crate::judge::Verdict::NoData
    });
    if ended {
        return Ok(after);
    }
    let judgement = look(
        metrics,
        analysis,
        &groups.load_balancer,
        (&groups.canary, &groups.stable),
        (from, until, now),
        current.bake_minutes,
    )
    .await?;
    let judged = apply(ports, &d.id, &Fact::Judged { judgement, step }).await?;
    Ok(judged.or(after))
}

/// The Tick runs whether or not the reads before it worked: deadlines (the progress deadline,
/// the rollback deadline, an unreadable end of a bake) must not wait for AWS reads to recover.
/// A read that failed is still reported, after the Tick.
fn tick_after(
    ticked: Option<Deployment>,
    d: &Deployment,
    looked: Result<(), HandlerError>,
) -> Result<Deployment, HandlerError> {
    looked?;
    Ok(ticked.unwrap_or_else(|| d.clone()))
}

/// alb-weights: the share of the listener's traffic on the new colour, as the listener says now.
async fn canary_weight<P: Adapters>(ports: &P, d: &Deployment) -> Result<Option<u8>, HandlerError> {
    let Some((traffic, canary)) = d.traffic.as_ref().and_then(|t| t.canary().map(|c| (t, c)))
    else {
        return Ok(None);
    };
    let weights = ports.traffic().weights(&traffic.listener).await?;
    let on_canary = u64::from(traffic.weight_of(&weights, canary));
    let total = on_canary + u64::from(traffic.weight_of(&weights, canary.other()));
    if total == 0 {
        return Ok(None);
    }
    Ok(u8::try_from(on_canary * 100 / total).ok())
}

/// ecs-native: what ECS says of the rollout's service deployment — the one bound to the record,
/// or else the service's current one with the task definition of its target revision (the
/// record binds it only if that is the new revision). `None` when there is none to read.
pub(crate) async fn native_view<P: Adapters>(
    ports: &P,
    d: &Deployment,
) -> Result<Option<NativeView>, HandlerError> {
    let bound = d
        .native
        .as_ref()
        .and_then(|n| n.service_deployment_arn.clone());
    let arn = match bound.clone() {
        Some(arn) => arn,
        None => match ports
            .ecs()
            .service(&d.rollout.cluster, &d.rollout.ecs_service)
            .await?
            .current_service_deployment
        {
            Some(arn) => arn,
            None => return Ok(None),
        },
    };
    let Some(sd) = ports.ecs().service_deployment(&arn).await? else {
        return Ok(None);
    };
    let target_task_definition = match (&bound, &sd.target_revision_arn) {
        (None, Some(revision)) => revision_task_definition(ports, revision).await?,
        _ => None,
    };
    // ECS's word that it is over is checked against the service: what serves now.
    let outcome = match sd.status.as_str() {
        "SUCCESSFUL" => d.rollout.new_task_definition.as_deref(),
        "ROLLBACK_SUCCESSFUL" => d
            .rollback()
            .map(|r| r.to_task_definition.as_str())
            .or(d.rollout.previous_task_definition.as_deref()),
        _ => None,
    };
    let serving = match outcome {
        Some(revision) => {
            let service = ports
                .ecs()
                .service(&d.rollout.cluster, &d.rollout.ecs_service)
                .await?;
            Some(observation(d, &service, revision, None))
        }
        None => None,
    };
    Ok(Some(NativeView {
        arn: sd.arn,
        status: sd.status,
        stage: sd.stage,
        target_task_definition,
        production_percent: sd.production_percent,
        status_reason: sd.status_reason,
        rollback_reason: sd.rollback_reason,
        serving,
    }))
}

/// The task definition a service revision runs (DescribeServiceRevisions); `None` when ECS
/// does not know the revision.
pub(crate) async fn revision_task_definition<P: Adapters>(
    ports: &P,
    revision: &str,
) -> Result<Option<String>, HandlerError> {
    Ok(ports
        .ecs()
        .revision_task_definitions(&[revision.to_string()])
        .await?
        .into_iter()
        .find(|(r, _)| r == revision)
        .map(|(_, td)| td))
}

/// Failed tasks of the new revision that ECS still lists as stopped and the record has not
/// counted yet, as task observations.
pub(crate) async fn stopped_failures<P: Adapters>(
    ports: &P,
    d: &Deployment,
) -> Result<Vec<TaskObservation>, HandlerError> {
    let Some(new) = d.rollout.new_task_definition.as_deref() else {
        return Ok(Vec::new());
    };
    let stopped = ports
        .ecs()
        .stopped_tasks(&d.rollout.cluster, &d.rollout.ecs_service)
        .await?;
    Ok(stopped
        .into_iter()
        .filter(|t| t.task_definition_arn == new && t.stop.is_failure())
        .filter(|t| {
            !d.failed_task_ids
                .iter()
                .any(|id| id == crate::deployment::short_task(&t.task_arn))
        })
        .map(|t| TaskObservation {
            task_arn: t.task_arn,
            task_definition_arn: t.task_definition_arn,
            last_status: "STOPPED".to_string(),
            version: 0,
            stop: Some(t.stop),
        })
        .collect())
}

/// What ECS (and, behind a load balancer, the target group) says of the service that should
/// run the revision the deployment is waiting for: the new one while DEPLOYING, the previous
/// one while a rolling deployment rolls back. `None` when there is nothing to wait for.
pub(crate) async fn observe<P: Adapters>(
    ports: &P,
    d: &Deployment,
) -> Result<Option<ServiceObservation>, HandlerError> {
    let intended = match d.status() {
        Status::Deploying => d.rollout.new_task_definition.as_deref(),
        Status::Shifting if d.traffic.is_some() => d.rollout.new_task_definition.as_deref(),
        // Whether our call's answer came back or not: the service itself says where it is.
        Status::RollingBack if d.traffic.is_none() => {
            d.rollback().map(|r| r.to_task_definition.as_str())
        }
        _ => None,
    };
    let Some(intended) = intended else {
        return Ok(None);
    };
    let service = ports
        .ecs()
        .service(&d.rollout.cluster, &d.rollout.ecs_service)
        .await?;
    let healthy_targets = match d.traffic.as_ref().and_then(|t| t.canary().map(|c| (t, c))) {
        Some((traffic, canary)) if matches!(d.status(), Status::Deploying | Status::Shifting) => {
            Some(
                ports
                    .traffic()
                    .healthy_targets(&traffic.target(canary).target_group_arn)
                    .await?,
            )
        }
        _ => None,
    };
    Ok(Some(observation(d, &service, intended, healthy_targets)))
}

/// The service as the deployment sees it: how many tasks of `intended` run, and whether ECS is
/// done rolling it out.
fn observation(
    d: &Deployment,
    service: &EcsService,
    intended: &str,
    healthy_targets: Option<u32>,
) -> ServiceObservation {
    ServiceObservation {
        service: d.rollout.ecs_service.clone(),
        task_definition: service.task_definition.clone(),
        running: service.running_of(intended),
        desired: service.desired_count,
        steady: service.steady_on(intended),
        healthy_targets,
    }
}
