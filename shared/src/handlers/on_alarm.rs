//! `on-alarm`: an alarm in ALARM that gates a deployment in flight rolls it back within this
//! invocation; an alarm on a managed service that gates nothing is forwarded as `alarm.fired`
//! naming the suspect deployment. Leaving ALARM is recorded, not alerted.

use serde_json::Value;
use tracing::info;

use super::{HandlerError, Outcome, apply};
use crate::alarm_events::{self, AlarmChange};
use crate::alerts::Alert;
use crate::lifecycle::Fact;
use crate::ports::{Adapters, Clock, Created, DeploymentStore, Notifier};
use crate::registration::{Engine, LookupKey, Registration, target_group_dimension};

pub async fn handle<P: Adapters>(ports: &P, event: Value) -> Result<Outcome, HandlerError> {
    let change = alarm_events::parse(&event)?;
    let event_id = change.event_id.clone();
    let key = LookupKey::Alarm(change.alarm.clone());
    let gating_registrations = ports.store().registrations_by(&key).await?;
    let gating: Vec<&Registration> = gating_registrations
        .iter()
        .filter(|r| r.spec.gates.alarms.contains(&change.alarm))
        .collect();

    let mut outcome = Outcome::default();
    let fact = if change.state == "ALARM" {
        Fact::AlarmFired {
            alarm: change.alarm.clone(),
            reason: change.reason.clone(),
            gating: true,
            since: change.at,
        }
    } else {
        Fact::AlarmCleared {
            alarm: change.alarm.clone(),
            state: change.state.clone(),
            at: change.at,
        }
    };
    let mut rolled_back = false;
    for registration in &gating {
        for id in ports
            .store()
            .active(&registration.service, &registration.environment)
            .await?
        {
            let Some(current) = ports.store().get(&id).await? else {
                continue;
            };
            // In flight, or in its watch window after success.
            if !current.in_flight() && current.watch_until().is_none() {
                continue;
            }
            if let Some(d) = apply(ports, &id, &fact).await? {
                info!(event_id, deployment_id = %d.id, status = %d.status(), alarm = %change.alarm, "alarm applied");
                // Only a rollback this alarm caused (now or on an earlier delivery) stands in for
                // `alarm.fired`; anything else is forwarded below.
                rolled_back |= change.state == "ALARM"
                    && d.rollback().is_some()
                    && d.reason
                        .as_deref()
                        .is_some_and(|r| r.contains(&format!("`{}`", change.alarm)));
                outcome.deployments.push(d);
            }
        }
    }
    if change.state != "ALARM" {
        info!(event_id, alarm = %change.alarm, state = %change.state, "alarm left ALARM; recorded");
        if outcome.deployments.is_empty() {
            outcome.skipped = Some(format!(
                "event {event_id}: alarm {} is {}; nothing in flight",
                change.alarm, change.state
            ));
        }
        return Ok(outcome);
    }
    if rolled_back {
        // A redelivery must not come back as `alarm.fired` once the rollback is done.
        ports.store().remember(&change.key()).await?;
        return Ok(outcome);
    }

    // Nothing in flight is gated by it: tell people, naming the suspect deployment. The
    // registrations it may be about are found by its dimensions (one keyed read each).
    let mut watching: Vec<Registration> = Vec::new();
    for (name, value) in &change.dimensions {
        let key = match name.as_str() {
            "ServiceName" => LookupKey::EcsService(value.clone()),
            "TargetGroup" => LookupKey::TargetGroup(value.clone()),
            _ => continue,
        };
        for r in ports.store().registrations_by(&key).await? {
            if !watching.contains(&r) {
                watching.push(r);
            }
        }
    }
    let mut managed: Vec<&Registration> = gating.clone();
    for r in &watching {
        if !managed.contains(&r) && watches(r, &change) {
            managed.push(r);
        }
    }
    if managed.is_empty() {
        let why = format!(
            "event {event_id}: alarm {} is not on a managed service",
            change.alarm
        );
        info!(event_id, "skipped: {why}");
        return Ok(Outcome::skipped(why));
    }
    let key = change.key();
    // A marker write that failed may have landed (its answer lost): the alert goes out anyway
    // and the error is reported after, so the retry finds the marker. An alert twice is better
    // than an alert never.
    let marker_error = match ports.store().remember(&key).await {
        Ok(Created::AlreadyExists) => {
            let why = format!(
                "event {event_id}: this transition of alarm {} was handled already",
                change.alarm
            );
            info!(event_id, "skipped: {why}");
            return Ok(Outcome::skipped(why));
        }
        Ok(Created::New) => None,
        Err(e) => Some(e),
    };
    let now = ports.clock().now();
    for registration in managed {
        let suspect = ports
            .store()
            .latest(&registration.service, &registration.environment)
            .await?;
        let alert = Alert::for_alarm(
            &change.alarm,
            &change.reason,
            &registration.service,
            &registration.environment,
            suspect.as_ref(),
            change.at.unwrap_or(now),
        );
        if let Err(e) = ports.notifier().publish(&alert).await {
            // Let the retry send it: the marker must not claim it was handled.
            ports.store().forget(&key).await?;
            return Err(e.into());
        }
        info!(event_id, alarm = %change.alarm, service = %registration.service,
              environment = %registration.environment, "alarm.fired published");
        if let Some(d) = suspect {
            outcome.deployments.push(d);
        }
    }
    match marker_error {
        Some(e) => Err(e.into()),
        None => Ok(outcome),
    }
}

/// Whether the alarm's metrics are those of the registration's ECS services or target groups.
fn watches(registration: &Registration, change: &AlarmChange) -> bool {
    let services = registration.ecs_services();
    let target_groups: Vec<&str> = match &registration.spec.engine {
        Engine::AlbWeights { blue, green, .. } => {
            vec![
                blue.target_group_arn.as_str(),
                green.target_group_arn.as_str(),
            ]
        }
        _ => Vec::new(),
    };
    let cluster_ok = change
        .dimensions
        .iter()
        .filter(|(k, _)| k == "ClusterName")
        .all(|(_, v)| *v == registration.spec.cluster);
    change.dimensions.iter().any(|(k, v)| match k.as_str() {
        "ServiceName" => cluster_ok && services.contains(&v.as_str()),
        "TargetGroup" => target_groups
            .iter()
            .any(|arn| target_group_dimension(arn) == v.as_str()),
        _ => false,
    })
}
