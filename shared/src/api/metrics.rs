//! `/metrics`: DORA figures of a service and environment.

use std::collections::BTreeMap;

use chrono::{Duration, NaiveDate};
use serde_json::{Value, json};

use super::{Answer, ApiRequest, ApiResponse, service_and_environment, upstream, whole_number};
use crate::deployment::Status;
use crate::ports::{Adapters, Clock, DeploymentStore, Tally};

/// DORA figures over the last `days` days, from the service's summary (never the records of the
/// ended deployments) and the deployments in flight.
pub(super) async fn metrics<P: Adapters>(ports: &P, request: &ApiRequest) -> Answer {
    let (service, environment) = service_and_environment(request, "both are required")?;
    let days = whole_number(request, "days", 1..=365, 30)?;
    let now = ports.clock().now();
    let since = now - Duration::days(i64::from(days));
    // The summary of the ended ones (an item per day with any), and the few in flight.
    let ended = ports
        .store()
        .tallies(service, environment, since.date_naive())
        .await
        .map_err(upstream)?;
    let mut in_flight = Vec::new();
    for id in ports
        .store()
        .active(service, environment)
        .await
        .map_err(upstream)?
    {
        if let Some(d) = ports.store().get(&id).await.map_err(upstream)?
            && d.status().is_active()
            && d.created_at >= since
        {
            in_flight.push(d.status());
        }
    }
    let ended: Vec<Tally> = ended
        .into_iter()
        .filter(|t| t.created_at >= since)
        .collect();
    Ok(ApiResponse::ok(
        200,
        dora(
            service,
            environment,
            (since.date_naive(), now.date_naive()),
            &ended,
            &in_flight,
        ),
    ))
}

/// Deployment frequency (successes per day), lead time from push to success (median, seconds),
/// change failure rate (rolled back or failed among finished rollouts), time to restore (median
/// seconds from the bad revision's start to ROLLED_BACK), rework rate (unplanned deployments
/// among the ended ones: reverts, and the first deployment after one that rolled back or
/// failed), and a series per day from `window.0` to `window.1` for the charts.
pub fn dora(
    service: &str,
    environment: &str,
    window: (NaiveDate, NaiveDate),
    ended: &[Tally],
    in_flight: &[Status],
) -> Value {
    let days = u32::try_from((window.1 - window.0).num_days().max(1)).unwrap_or(1);
    let count = |s: Status| ended.iter().filter(|t| t.status == s).count();
    let succeeded = count(Status::Succeeded);
    let failed = count(Status::RolledBack) + count(Status::Failed);
    let lead: Vec<i64> = ended.iter().filter_map(|t| t.lead_seconds).collect();
    let restore: Vec<i64> = ended.iter().filter_map(|t| t.restore_seconds).collect();
    let finished = succeeded + failed;
    let mut by_status = BTreeMap::new();
    for status in ended
        .iter()
        .map(|t| t.status)
        .chain(in_flight.iter().copied())
    {
        *by_status.entry(status.as_str()).or_insert(0u32) += 1;
    }
    // Rework among the rollouts that ran (an aborted or superseded one changed nothing).
    let bad = |t: &Tally| matches!(t.status, Status::RolledBack | Status::Failed);
    let mut rollouts: Vec<&Tally> = ended
        .iter()
        .filter(|t| bad(t) || t.status == Status::Succeeded)
        .collect();
    rollouts.sort_by_key(|t| t.created_at);
    let rework = rollouts
        .iter()
        .enumerate()
        .filter(|(i, t)| t.revert || (*i > 0 && bad(rollouts[i - 1])))
        .count();
    let mut daily = Vec::new();
    let mut day = window.0;
    while day <= window.1 {
        let of_day: Vec<&Tally> = ended
            .iter()
            .filter(|t| t.created_at.date_naive() == day)
            .collect();
        let lead: Vec<i64> = of_day.iter().filter_map(|t| t.lead_seconds).collect();
        daily.push(json!({
            "date": day.to_string(),
            "succeeded": of_day.iter().filter(|t| t.status == Status::Succeeded).count(),
            "failed": of_day.iter().filter(|t| bad(t)).count(),
            "lead_time_seconds": median(&lead),
        }));
        let Some(next) = day.succ_opt() else { break };
        day = next;
    }
    json!({
        "service": service,
        "environment": environment,
        "days": days,
        "deployments": ended.len() + in_flight.len(),
        "by_status": by_status,
        "deployment_frequency_per_day": round2(succeeded as f64 / f64::from(days)),
        "lead_time_seconds": { "median": median(&lead), "samples": lead.len() },
        "change_failure_rate": if finished == 0 { Value::Null } else { json!(round2(failed as f64 / finished as f64)) },
        "time_to_restore_seconds": { "median": median(&restore), "samples": restore.len() },
        "rework_rate": if rollouts.is_empty() { Value::Null } else { json!(round2(rework as f64 / rollouts.len() as f64)) },
        "daily": daily,
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn median(values: &[i64]) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2
    } else {
        sorted[mid]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_even_and_odd_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[5, 1, 3]), Some(3));
        assert_eq!(median(&[4, 1, 3, 2]), Some(2));
    }
}

#[cfg(test)]
mod rework_tests {
    use super::*;
    use chrono::TimeZone;

    fn at(id: &str, hour: u32, status: Status, revert: bool) -> Tally {
        Tally {
            id: id.into(),
            service: "api".into(),
            environment: "staging".into(),
            created_at: chrono::Utc
                .with_ymd_and_hms(2026, 11, 20, hour, 0, 0)
                .unwrap(),
            status,
            lead_seconds: None,
            restore_seconds: None,
            revert,
        }
    }

    #[test]
    fn rework_counts_the_first_rollout_after_a_failure_and_reverts_among_rollouts() {
        let day = |d| NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
        let ended = [
            at("d-1", 1, Status::RolledBack, false),
            at("d-2", 2, Status::Superseded, false),
            at("d-3", 3, Status::Succeeded, false),
            at("d-4", 4, Status::Succeeded, true),
        ];
        // Rollouts d-1, d-3, d-4: d-3 fixed d-1, d-4 was a revert.
        let v = dora("api", "staging", (day(19), day(21)), &ended, &[]);
        assert_eq!(v["rework_rate"], json!(0.67));
    }
}

#[cfg(test)]
mod summary_tests {
    use super::*;
    use chrono::TimeZone;

    fn tally(id: &str, status: Status, lead: Option<i64>, restore: Option<i64>) -> Tally {
        Tally {
            id: id.into(),
            service: "api".into(),
            environment: "staging".into(),
            created_at: chrono::Utc
                .with_ymd_and_hms(2026, 11, 20, 10, 0, 0)
                .unwrap(),
            status,
            lead_seconds: lead,
            restore_seconds: restore,
            revert: false,
        }
    }

    #[test]
    fn dora_figures_come_from_the_summary_and_the_deployments_in_flight() {
        let ended = [
            tally("d-1", Status::Succeeded, Some(300), None),
            tally("d-2", Status::Succeeded, Some(500), None),
            tally("d-3", Status::RolledBack, None, Some(120)),
            tally("d-4", Status::Aborted, None, None),
        ];
        let day = |d| chrono::NaiveDate::from_ymd_opt(2026, 11, d).unwrap();
        let v = dora(
            "api",
            "staging",
            (day(19), day(21)),
            &ended,
            &[Status::Deploying],
        );
        assert_eq!(v["deployments"], json!(5));
        assert_eq!(v["by_status"]["SUCCEEDED"], json!(2));
        assert_eq!(v["by_status"]["DEPLOYING"], json!(1));
        assert_eq!(v["deployment_frequency_per_day"], json!(1.0));
        assert_eq!(v["lead_time_seconds"]["median"], json!(400));
        assert_eq!(v["change_failure_rate"], json!(0.33));
        assert_eq!(v["time_to_restore_seconds"]["median"], json!(120));
        // No rollout came after d-3 rolled back (d-4 was aborted): no rework among three.
        assert_eq!(v["rework_rate"], json!(0.0));
        let daily = v["daily"].as_array().unwrap();
        assert_eq!(daily.len(), 3);
        assert_eq!(daily[1]["date"], json!("2026-11-20"));
        assert_eq!(daily[1]["succeeded"], json!(2));
        assert_eq!(daily[1]["failed"], json!(1));
        assert_eq!(daily[0]["succeeded"], json!(0));
    }
}
