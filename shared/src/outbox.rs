//! The record's outbox, as pure functions: which effect an invocation may carry out next, and
//! what a claim, a success or a failure does to the record. `handlers::carry_out` saves each of
//! these with a conditional write, so every step is decided on the latest record.
//!
//! Rules (DESIGN.md, "Core idea"):
//! - Two lanes, AWS calls and alerts; within a lane effects run one at a time, in the order
//!   decided. An effect still claimed by a live invocation holds its lane, cancelled or not, so
//!   nothing decided later can overtake a call in flight.
//! - A claim carries the claiming invocation's token: finding its own token on a record after a
//!   lost answer, an invocation knows the claim is its own and carries the effect out.
//! - A claim older than `CLAIM_LEASE` belongs to an invocation that died (Lambda timeouts are
//!   shorter): it counts as a failed attempt (`abandoned`), so that a call that hangs until the
//!   timeout every time is given up on like one that fails every time.
//! - A failed call releases its claim at once and backs off; past `MAX_ATTEMPTS` the lifecycle
//!   decides what giving up means (`Fact::EffectGaveUp`).

use chrono::{DateTime, Duration, Utc};

use crate::deployment::{Claim, Deployment, Lane, PendingEffect};

/// How long a claimed effect is left to the invocation that claimed it. Longer than any
/// function's timeout (the template sets at most 60 s).
pub const CLAIM_LEASE: Duration = Duration::seconds(90);

/// Failed attempts of an AWS call before the deployment is given up on. Alerts never give up.
pub const MAX_ATTEMPTS: u32 = 5;

/// Backoff after the `attempts`-th failure: 5 s, 10 s, 20 s, … at most 2 minutes.
pub fn backoff(attempts: u32) -> Duration {
    let seconds = 5i64.saturating_mul(1i64 << attempts.saturating_sub(1).min(5));
    Duration::seconds(seconds.min(120))
}

/// The next effect `token` may carry out now, by sequence number: the head of a lane, when it is
/// not cancelled, not claimed by a live invocation other than `token`'s, and not backing off.
/// The AWS lane is looked at first.
pub fn next(d: &Deployment, token: &str, now: DateTime<Utc>) -> Option<u32> {
    [Lane::Aws, Lane::Alerts]
        .into_iter()
        .filter_map(|lane| head(d, lane))
        .find(|e| {
            !e.cancelled
                && e.retry_at.is_none_or(|at| now >= at)
                && e.claim
                    .as_ref()
                    .is_none_or(|c| c.token == token || now - c.at >= CLAIM_LEASE)
        })
        .map(|e| e.seq)
}

/// The first effect of a lane still in the outbox.
fn head(d: &Deployment, lane: Lane) -> Option<&PendingEffect> {
    d.outbox
        .iter()
        .filter(|e| e.effect.lane() == lane)
        .min_by_key(|e| e.seq)
}

/// Drops cancelled effects whose claimant is gone (lease passed), and those claimed by the
/// invocation `token` itself, which carries out one effect at a time and has none in flight
/// when it looks (its claim write landed, its answer was lost, and the effect was cancelled
/// before it could start the call): they no longer hold their lane. Returns whether anything
/// was dropped.
pub fn drop_abandoned(d: &mut Deployment, token: &str, now: DateTime<Utc>) -> bool {
    let before = d.outbox.len();
    d.outbox.retain(|e| {
        !(e.cancelled
            && e.claim
                .as_ref()
                .is_none_or(|c| c.token == token || now - c.at >= CLAIM_LEASE))
    });
    d.outbox.len() != before
}

/// What a lapsed claim records as its error.
pub const LEASE_LAPSED: &str =
    "no answer within the claim lease (the invocation timed out or died)";

/// Whether effect `seq` carries another invocation's claim whose lease has passed: that
/// invocation died with the call's outcome unknown, which is a failed attempt (record it with
/// `failed(…, LEASE_LAPSED, …)`).
pub fn abandoned(d: &Deployment, seq: u32, token: &str, now: DateTime<Utc>) -> bool {
    d.outbox.iter().any(|e| {
        e.seq == seq
            && e.claim
                .as_ref()
                .is_some_and(|c| c.token != token && now - c.at >= CLAIM_LEASE)
    })
}

/// Marks effect `seq` claimed by `token`. False when it is not in the outbox any more.
pub fn claim(d: &mut Deployment, seq: u32, token: &str, now: DateTime<Utc>) -> bool {
    match d.outbox.iter_mut().find(|e| e.seq == seq) {
        Some(e) => {
            e.claim = Some(Claim {
                token: token.to_string(),
                at: now,
            });
            true
        }
        None => false,
    }
}

/// Whether effect `seq` is claimed by `token` and still to be carried out.
pub fn claimed_by(d: &Deployment, seq: u32, token: &str) -> bool {
    d.outbox
        .iter()
        .any(|e| e.seq == seq && !e.cancelled && e.claim.as_ref().is_some_and(|c| c.token == token))
}

/// Whether effect `seq` still carries `token`'s claim, cancelled or not (its claimant must
/// report back either way: a cancelled effect holds its lane until then).
pub fn held_by(d: &Deployment, seq: u32, token: &str) -> bool {
    d.outbox
        .iter()
        .any(|e| e.seq == seq && e.claim.as_ref().is_some_and(|c| c.token == token))
}

/// What finishing an effect does to the record.
#[derive(Debug, PartialEq)]
pub enum Finished {
    /// Removed; apply the effect's result.
    Done,
    /// It had been cancelled while in flight: removed, and its result is stale.
    Stale,
    /// Not there any more (another invocation took it over after the lease and finished it).
    Gone,
}

/// Removes effect `seq` after its call succeeded.
pub fn done(d: &mut Deployment, seq: u32) -> Finished {
    let Some(index) = d.outbox.iter().position(|e| e.seq == seq) else {
        return Finished::Gone;
    };
    let effect = d.outbox.remove(index);
    if effect.cancelled {
        Finished::Stale
    } else {
        Finished::Done
    }
}

/// Records that effect `seq`'s call failed: the claim is released and the effect backs off.
/// Returns the number of attempts so far when the effect has failed for good (an AWS call past
/// `MAX_ATTEMPTS`); the lifecycle then decides what giving up means.
pub fn failed(d: &mut Deployment, seq: u32, error: &str, now: DateTime<Utc>) -> Option<u32> {
    let e = release(d, seq, error)?;
    e.attempts += 1;
    e.retry_at = Some(now + backoff(e.attempts));
    (e.effect.lane() == Lane::Aws && e.attempts >= MAX_ATTEMPTS).then_some(e.attempts)
}

/// How long an effect that must wait for another call in flight (a scale lock) waits before it
/// looks again.
pub const WAIT: Duration = Duration::seconds(10);

/// Defers effect `seq`, which had to wait for another call: the claim is released and it is
/// tried again after `WAIT`, without counting an attempt (the other call's lease bounds the
/// wait). `last_error` keeps why, and says that it ran before.
pub fn deferred(d: &mut Deployment, seq: u32, why: &str, now: DateTime<Utc>) {
    if let Some(e) = release(d, seq, why) {
        e.retry_at = Some(now + WAIT);
    }
}

/// Releases effect `seq`'s claim after a run that did not finish it, keeping `why`; a cancelled
/// one is dropped instead (it held its lane only until now).
fn release<'a>(d: &'a mut Deployment, seq: u32, why: &str) -> Option<&'a mut PendingEffect> {
    let index = d.outbox.iter().position(|e| e.seq == seq)?;
    if d.outbox[index].cancelled {
        d.outbox.remove(index);
        return None;
    }
    let e = &mut d.outbox[index];
    e.claim = None;
    e.last_error = Some(why.to_string());
    Some(e)
}

/// Fencing: entering a new phase cancels the AWS calls decided in earlier phases. One not yet
/// claimed is dropped; one being carried out is marked cancelled and holds its lane until its
/// claimant reports back. Alerts are never cancelled: they tell of something that happened.
pub fn cancel_stale(d: &mut Deployment) {
    let phase = d.phase;
    d.outbox.retain_mut(|e| {
        if e.effect.lane() == Lane::Alerts || e.phase >= phase {
            return true;
        }
        if e.claim.is_some() {
            e.cancelled = true;
            true
        } else {
            false
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::alerts::{Alert, EventType};
    use crate::deployment::{Effect, Lane};
    use crate::registration::Registration;
    use chrono::TimeZone;

    fn t(sec: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 20, 10, 0, 0).unwrap() + Duration::seconds(sec)
    }

    fn with_effects(effects: Vec<Effect>) -> Deployment {
        let r = Registration::parse(
            "api",
            "staging",
            r#"{"cluster":"c","repository":"api","container":"app","engine":{"type":"rolling","service":"api"}}"#,
        )
        .unwrap();
        let mut d = Deployment::from_api(
            &r,
            "d-1".into(),
            "i".into(),
            "sha256:a".into(),
            None,
            "x",
            t(0),
        );
        for (seq, effect) in effects.into_iter().enumerate() {
            d.outbox.push(PendingEffect {
                seq: seq as u32,
                phase: 0,
                claim: None,
                cancelled: false,
                attempts: 0,
                last_error: None,
                retry_at: None,
                effect,
            });
        }
        d
    }

    fn alert(d: &Deployment) -> Effect {
        Effect::Alert(Box::new(Alert::for_deployment(EventType::Started, d, t(0))))
    }

    #[test]
    fn a_claim_whose_answer_was_lost_is_recognised_as_our_own() {
        let mut d = with_effects(vec![Effect::RegisterRevision]);
        assert!(claim(&mut d, 0, "inv-1", t(1)));
        // The write landed; the invocation reloads after a conflict and finds its own token.
        assert!(claimed_by(&d, 0, "inv-1"));
        assert_eq!(next(&d, "inv-1", t(2)), Some(0), "ours: carry it out now");
        assert_eq!(next(&d, "inv-2", t(2)), None, "someone else's: leave it");
        assert_eq!(
            next(&d, "inv-2", t(1) + CLAIM_LEASE),
            Some(0),
            "taken over after the lease"
        );
    }

    /// Seed 126675 of the 200,000-seed run: an invocation's claim write lands with its answer
    /// lost; before it reloads, an abort cancels the effect (claimed, so it is kept, holding
    /// its lane). The invocation then finds its own claim on a cancelled effect it never
    /// started: it must let go of it, or the rollback's call waits behind it for the lease.
    #[test]
    fn our_own_claim_on_an_effect_cancelled_before_we_started_it_is_dropped() {
        let mut d = with_effects(vec![Effect::SetWeights { percent: 100 }]);
        assert!(claim(&mut d, 0, "inv-1", t(1)));
        d.outbox[0].cancelled = true;
        assert!(
            !drop_abandoned(&mut d, "inv-2", t(2)),
            "another's: in flight, kept"
        );
        assert!(
            drop_abandoned(&mut d, "inv-1", t(2)),
            "ours and not started: dropped"
        );
        assert!(d.outbox.is_empty());
    }

    #[test]
    fn alerts_go_out_in_order_and_a_failing_call_does_not_hold_them_up() {
        let base = with_effects(vec![]);
        let mut d = with_effects(vec![
            Effect::RollBack {
                to_task_definition: "td:1".into(),
            },
            alert(&base),
            alert(&base),
        ]);
        assert_eq!(next(&d, "i", t(1)), Some(0));
        claim(&mut d, 0, "i", t(1));
        assert_eq!(failed(&mut d, 0, "throttled", t(1)), None);
        // The AWS call backs off; the first alert goes, and the second only after it.
        assert_eq!(next(&d, "i", t(2)), Some(1));
        claim(&mut d, 1, "i", t(2));
        assert_eq!(
            next(&d, "j", t(2)),
            None,
            "the second alert waits for the first"
        );
        assert_eq!(done(&mut d, 1), Finished::Done);
        assert_eq!(next(&d, "j", t(3)), Some(2));
        assert_eq!(
            next(&d, "j", t(1) + backoff(1)),
            Some(0),
            "the call is retried after its backoff"
        );
        assert_eq!(d.outbox[0].effect.lane(), Lane::Aws);
    }

    #[test]
    fn a_failed_call_releases_its_claim_at_once() {
        let mut d = with_effects(vec![Effect::RegisterRevision]);
        claim(&mut d, 0, "inv-1", t(1));
        failed(&mut d, 0, "boom", t(1));
        assert!(d.outbox[0].claim.is_none());
        assert_eq!(d.outbox[0].attempts, 1);
        assert_eq!(next(&d, "inv-2", t(1) + backoff(1)), Some(0));
    }

    #[test]
    fn a_claim_whose_lease_lapsed_is_a_failed_attempt() {
        let mut d = with_effects(vec![Effect::RegisterRevision]);
        let mut at = t(0);
        for n in 1..=MAX_ATTEMPTS {
            assert!(claim(&mut d, 0, &format!("inv-{n}"), at));
            at += CLAIM_LEASE;
            assert!(abandoned(&d, 0, "next", at));
            assert!(!abandoned(&d, 0, &format!("inv-{n}"), at), "never our own");
            let gave_up = failed(&mut d, 0, LEASE_LAPSED, at);
            assert_eq!(d.outbox[0].attempts, n);
            assert_eq!(gave_up.is_some(), n == MAX_ATTEMPTS);
            at += backoff(n);
        }
        let mut fresh = with_effects(vec![Effect::RegisterRevision]);
        claim(&mut fresh, 0, "inv-1", t(0));
        assert!(
            !abandoned(&fresh, 0, "inv-2", t(89)),
            "still within the lease"
        );
    }

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(1), Duration::seconds(5));
        assert_eq!(backoff(2), Duration::seconds(10));
        assert_eq!(backoff(4), Duration::seconds(40));
        assert_eq!(backoff(30), Duration::seconds(120));
    }
}
