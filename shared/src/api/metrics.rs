//! `/metrics`: DORA figures of a service and environment.

use std::collections::BTreeMap;

use chrono::Duration;
use serde_json::{Value, json};

use super::{Answer, ApiRequest, ApiResponse, invalid, query, upstream};
use crate::deployment::{Deployment, Status};
use crate::ports::{Adapters, Clock, DeploymentStore};
use crate::registration::check_name;

/// DORA figures over the last `days` days, computed from the records.
pub(super) async fn metrics<P: Adapters>(ports: &P, request: &ApiRequest) -> Answer {
    let (Some(service), Some(environment)) =
        (query(request, "service"), query(request, "environment"))
    else {
        return Err(invalid("service, environment", "both are required"));
    };
    check_name("service", service).map_err(|e| invalid("service", e))?;
    check_name("environment", environment).map_err(|e| invalid("environment", e))?;
    let days = match query(request, "days") {
        Some(d) => d
            .parse::<u32>()
            .ok()
            .filter(|d| (1..=365).contains(d))
            .ok_or_else(|| invalid("days", "must be a whole number from 1 to 365"))?,
        None => 30,
    };
    let now = ports.clock().now();
    let deployments = ports
        .store()
        .created_since(service, environment, now - Duration::days(i64::from(days)))
        .await
        .map_err(upstream)?;
    Ok(ApiResponse::ok(
        200,
        dora(service, environment, days, &deployments),
    ))
}

/// Deployment frequency (successes per day), lead time from push to success (median, seconds),
/// change failure rate (rolled back or failed among finished rollouts), time to restore (median
/// seconds from the bad revision's start to ROLLED_BACK).
pub fn dora(service: &str, environment: &str, days: u32, deployments: &[Deployment]) -> Value {
    let count = |s: Status| deployments.iter().filter(|d| d.status() == s).count();
    let succeeded = count(Status::Succeeded);
    let failed = count(Status::RolledBack) + count(Status::Failed);
    let lead: Vec<i64> = deployments
        .iter()
        .filter(|d| d.status() == Status::Succeeded)
        .filter_map(|d| d.finished_at().map(|f| (f - d.created_at).num_seconds()))
        .collect();
    let restore: Vec<i64> = deployments
        .iter()
        .filter(|d| d.status() == Status::RolledBack)
        .filter_map(|d| {
            let from = d.rollout.started_at.unwrap_or(d.created_at);
            d.finished_at().map(|f| (f - from).num_seconds())
        })
        .collect();
    let finished = succeeded + failed;
    let mut by_status = BTreeMap::new();
    for d in deployments {
        *by_status.entry(d.status().as_str()).or_insert(0u32) += 1;
    }
    json!({
        "service": service,
        "environment": environment,
        "days": days,
        "deployments": deployments.len(),
        "by_status": by_status,
        "deployment_frequency_per_day": round2(succeeded as f64 / f64::from(days)),
        "lead_time_seconds": { "median": median(&lead), "samples": lead.len() },
        "change_failure_rate": if finished == 0 { Value::Null } else { json!(round2(failed as f64 / finished as f64)) },
        "time_to_restore_seconds": { "median": median(&restore), "samples": restore.len() },
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
