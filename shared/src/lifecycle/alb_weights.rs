//! The `alb-weights` engine: the new revision goes on the idle colour of a blue/green pair, is
//! ready once its target group has the desired count of healthy targets, and the listener's
//! weights move to it step by step (SHIFTING), each step held for its bake. A rollback puts all
//! traffic back on the stable colour in one call and then scales the new colour in; after
//! success the old colour is scaled in once `scale_down_after_minutes` passed, unless a newer
//! deployment has taken it meanwhile (see `Effect::Scale`).

use chrono::{DateTime, Duration, Utc};

use super::{
    Engine, Registered, ServiceObservation, colour_name, has_pending, note, note_or_ready,
    observed_text, push_effect, record_observed, roll_back, rolled_back, succeed, transition,
};
use crate::deployment::{Deployment, Effect, State, Status};

pub(super) struct AlbWeights;

impl Engine for AlbWeights {
    /// The idle colour takes the new revision, scaled to the live colour's desired count.
    fn deploy(&self, d: &mut Deployment, registered: &Registered) -> Effect {
        let mut desired = None;
        if let Some(traffic) = d.traffic.as_mut() {
            traffic.stable = registered.stable;
            traffic.stable_owner = registered.stable_owner.clone();
            if let Some(canary) = traffic.canary() {
                d.rollout.ecs_service = traffic.target(canary).service.clone();
                desired = Some(registered.desired_count);
            }
        }
        Effect::Deploy {
            service: d.rollout.ecs_service.clone(),
            task_definition: d.rollout.new_task_definition.clone().unwrap_or_default(),
            desired_count: desired,
            strategy: None,
        }
    }

    fn put_on(&self, d: &Deployment) -> String {
        let desired = d.rollout.desired_count.unwrap_or(1);
        match d.traffic.as_ref().and_then(|t| t.canary()) {
            Some(canary) => format!(
                "the idle {} colour, ECS service {} (scaled to {desired})",
                colour_name(canary),
                d.rollout.ecs_service
            ),
            None => format!("ECS service {}", d.rollout.ecs_service),
        }
    }

    fn observe(&self, d: &mut Deployment, seen: &ServiceObservation, now: DateTime<Utc>) {
        // The count the colour was scaled to (or more, if it was scaled up since).
        let desired = d.rollout.desired_count.unwrap_or(1).max(seen.desired);
        match d.status() {
            // Ready means that many healthy targets (an empty target group, or one whose targets
            // are still starting, is not ready); the count covers whatever revision is
            // registered, so ECS must also report the colour's rollout done.
            Status::Deploying => {
                let healthy = seen.steady && seen.healthy_targets.is_some_and(|h| h >= desired);
                if let Some(why) = note_or_ready(d, seen, desired, healthy, now) {
                    super::ready(d, why, "aws.ecs", now);
                }
            }
            // The end-of-bake health gate: judged on this look, taken once the bake is over,
            // never on one from before the step.
            Status::Shifting => {
                record_observed(d, seen.observed(desired, now));
                let over = d
                    .progress()
                    .and_then(|p| p.bake_until)
                    .is_some_and(|until| now >= until);
                if over && !has_pending(d, |e| matches!(e, Effect::SetWeights { .. })) {
                    bake_passed(d, seen.healthy_targets, now);
                }
            }
            _ => {}
        }
    }

    /// The first weight step.
    fn ready(&self, d: &mut Deployment, why: String, actor: &str, now: DateTime<Utc>) {
        let Some(progress) = d.progress().cloned() else {
            return;
        };
        let Some(traffic) = d.traffic.as_mut() else {
            return;
        };
        traffic.step = 0;
        let first = traffic.steps.first().copied().unwrap_or(100);
        let colour = traffic.canary().map(colour_name).unwrap_or("new");
        let reason = format!("{why}; shifting {first}% of traffic to the {colour} colour");
        transition(d, State::Shifting(progress), reason, actor, now);
        push_effect(d, Effect::SetWeights { percent: first });
    }

    /// The step's own gate is read when its bake is over (`observe`); a Tick alone passes
    /// nothing. A bake whose end cannot be judged for the progress deadline (the new colour's
    /// service or target health unreadable all along) is rolled back, never held for ever.
    fn bake_over(&self, d: &mut Deployment, now: DateTime<Utc>) {
        let Some(until) = d.progress().and_then(|p| p.bake_until) else {
            return;
        };
        if now >= until + super::deadline(d) {
            let judge = if d.gates.analysis.is_some() {
                " or its canary metrics"
            } else {
                ""
            };
            let reason = format!(
                "the end of the {}% step's bake could not be judged within {} min: the new \
                 colour's health{judge} could not be read ({})",
                d.traffic_percent,
                d.progress_deadline_minutes,
                observed_text(d)
            );
            roll_back(d, reason, "flightdeck", now);
        }
    }

    /// Success owes the old colour's scale-down after `scale_down_after_minutes`.
    fn succeeded(&self, d: &mut Deployment, now: DateTime<Utc>) -> String {
        let Some(traffic) = d.traffic.as_mut() else {
            return String::new();
        };
        let wait = Duration::minutes(i64::from(traffic.scale_down_after_minutes));
        traffic.scale_down_at = Some(now + wait);
        format!(
            "all traffic on the {} colour; bake of {} min passed with every gate green",
            traffic.canary().map(colour_name).unwrap_or("new"),
            d.bake_minutes
        )
    }

    /// One ELBv2 call puts all traffic back on the stable colour; the new colour is scaled in
    /// once that is done (see `rolled_back`).
    fn roll_back(&self, _d: &mut Deployment, _previous: String) -> Effect {
        Effect::SetWeights { percent: 0 }
    }

    /// With all traffic back on the stable colour, the new colour is scaled in — unless a newer
    /// deployment has put its revision on it by then.
    fn rolled_back(&self, d: &mut Deployment) {
        if let Some(traffic) = d.traffic.as_ref()
            && let Some(canary) = traffic.canary()
        {
            let effect = Effect::Scale {
                service: traffic.target(canary).service.clone(),
                desired_count: 0,
                colour: Some(canary),
                owner: Some(d.id.clone()),
            };
            push_effect(d, effect);
        }
    }

    /// The listener's weights changed: hold the step for its bake, or finish a rollback.
    fn weights_set(&self, d: &mut Deployment, percent: u8, now: DateTime<Utc>) {
        let Some(traffic) = d.traffic.as_ref() else {
            return;
        };
        let (Some(stable), Some(canary)) = (traffic.stable, traffic.canary()) else {
            return;
        };
        let split = format!(
            "{} {}% / {} {}%",
            colour_name(stable),
            100 - percent.min(100),
            colour_name(canary),
            percent.min(100)
        );
        let bake = Duration::minutes(i64::from(d.bake_minutes));
        match &mut d.state {
            State::Shifting(progress) => {
                progress.bake_until = Some(now + bake);
                d.traffic_percent = percent;
                d.updated_at = now;
                let reason = format!("weights set: {split}; holding for {} min", d.bake_minutes);
                note(d, reason, "flightdeck", now);
            }
            State::RollingBack { rollback } if percent == 0 => {
                rollback.issued_at = Some(now);
                let requested_at = rollback.requested_at;
                d.traffic_percent = 0;
                push_effect(
                    d,
                    Effect::Measure {
                        metrics: vec![crate::emf::Metric::seconds(
                            crate::emf::MetricName::SignalToRollbackSeconds,
                            requested_at,
                            now,
                        )],
                    },
                );
                let why = format!(
                    "weights back to 100% on the stable {} colour ({split})",
                    colour_name(stable)
                );
                rolled_back(d, why, "flightdeck", now);
            }
            // A result that belongs to no phase now changes nothing: the record keeps saying
            // what the current phase set.
            _ => {}
        }
    }

    /// Rolling back, the listener is seen with no traffic on the new colour: the rollback's
    /// weights call landed (its answer may have been lost), unless an older call still in flight
    /// can yet move traffic.
    fn traffic_observed(&self, d: &mut Deployment, percent: u8, now: DateTime<Utc>) {
        if percent != 0 || d.stale_call_in_flight() {
            return;
        }
        let Some(stable) = d.traffic.as_ref().and_then(|t| t.stable) else {
            return;
        };
        let State::RollingBack { rollback } = &mut d.state else {
            return;
        };
        rollback.issued_at.get_or_insert(now);
        d.traffic_percent = 0;
        let why = format!(
            "the listener sends all traffic to the stable {} colour (read back)",
            colour_name(stable)
        );
        rolled_back(d, why, "aws.elasticloadbalancing", now);
    }

    /// After success, the old colour is scaled to zero once `scale_down_after_minutes` passed,
    /// and only while it still holds what this deployment retired (see `Effect::Scale`).
    fn tick_succeeded(&self, d: &mut Deployment, now: DateTime<Utc>) {
        let Some(traffic) = d.traffic.as_ref() else {
            return;
        };
        let due = traffic.scale_down_at.is_some_and(|at| now >= at);
        if !due || traffic.scaled_down || has_pending(d, |e| matches!(e, Effect::Scale { .. })) {
            return;
        }
        let Some(stable) = traffic.stable else { return };
        let effect = Effect::Scale {
            service: traffic.target(stable).service.clone(),
            desired_count: 0,
            colour: Some(stable),
            owner: traffic.stable_owner.clone(),
        };
        push_effect(d, effect);
        d.updated_at = now;
    }

    /// A scale-down carried out (`done`) or found moot; none is owed after this once the
    /// deployment has ended.
    fn scaled_down(&self, d: &mut Deployment, service: &str, done: bool, now: DateTime<Utc>) {
        if d.traffic.as_ref().is_none_or(|t| t.scaled_down) {
            return;
        }
        if matches!(d.status(), Status::Succeeded | Status::RolledBack) {
            self.scale_abandoned(d);
        }
        let reason = if done {
            format!("scaled ECS service {service} to 0")
        } else {
            format!(
                "ECS service {service} left as it is: a newer deployment put its revision on it"
            )
        };
        note(d, reason, "flightdeck", now);
    }

    fn scale_abandoned(&self, d: &mut Deployment) {
        if let Some(traffic) = d.traffic.as_mut() {
            traffic.scaled_down = true;
        }
    }
}

/// The end of a step's bake, judged on the look at the new colour taken after it: healthy at
/// its desired count, the next step or success; else the rollback.
fn bake_passed(d: &mut Deployment, healthy: Option<u32>, now: DateTime<Utc>) {
    let desired = d.rollout.desired_count.unwrap_or(1);
    let unhealthy = healthy.is_some_and(|h| h < desired);
    if unhealthy {
        let reason = format!(
            "the new colour dropped below its desired count during the bake ({})",
            observed_text(d)
        );
        roll_back(d, reason, "flightdeck", now);
        return;
    }
    // The canary judge's verdict taken after the bake (read right before this look).
    match super::judge_at_bake_end(d) {
        None => return,
        Some(Err(reason)) => {
            roll_back(d, reason, "flightdeck", now);
            return;
        }
        Some(Ok(())) => {}
    }
    let Some(traffic) = d.traffic.as_mut() else {
        succeed(d, now);
        return;
    };
    if d.traffic_percent >= 100 || traffic.step + 1 >= traffic.steps.len() {
        succeed(d, now);
        return;
    }
    traffic.step += 1;
    let percent = traffic.steps[traffic.step];
    if let Some(progress) = d.progress_mut() {
        progress.bake_until = None;
    }
    let reason = format!(
        "bake of {} min passed with every gate green; shifting to {percent}%",
        d.bake_minutes
    );
    note(d, reason, "flightdeck", now);
    push_effect(d, Effect::SetWeights { percent });
}
