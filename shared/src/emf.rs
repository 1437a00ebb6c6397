//! Flightdeck's own CloudWatch metrics as Embedded Metric Format log lines (DESIGN.md,
//! "Observability of Flightdeck itself"): no PutMetricData call, CloudWatch Logs extracts them
//! from the function's log. The lifecycle decides what to measure with each change it makes
//! (`Effect::Measure`, in the alerts' lane); the handler that carries the effect out writes the
//! lines. Like EMF itself, at least once: a line may repeat when a save's answer was lost.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

pub const NAMESPACE: &str = "Flightdeck";

/// One measurement of a deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    pub name: MetricName,
    pub value: f64,
    /// `CanaryVerdicts` only: pass, fail or no_data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetricName {
    DeploymentsStarted,
    DeploymentsSucceeded,
    DeploymentsRolledBack,
    DeploymentsFailed,
    PushToDeployingSeconds,
    SignalToRollbackSeconds,
    SignalToRestoredSeconds,
    CanaryVerdicts,
}

impl MetricName {
    pub fn as_str(self) -> &'static str {
        match self {
            MetricName::DeploymentsStarted => "DeploymentsStarted",
            MetricName::DeploymentsSucceeded => "DeploymentsSucceeded",
            MetricName::DeploymentsRolledBack => "DeploymentsRolledBack",
            MetricName::DeploymentsFailed => "DeploymentsFailed",
            MetricName::PushToDeployingSeconds => "PushToDeployingSeconds",
            MetricName::SignalToRollbackSeconds => "SignalToRollbackSeconds",
            MetricName::SignalToRestoredSeconds => "SignalToRestoredSeconds",
            MetricName::CanaryVerdicts => "CanaryVerdicts",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            MetricName::PushToDeployingSeconds
            | MetricName::SignalToRollbackSeconds
            | MetricName::SignalToRestoredSeconds => "Seconds",
            _ => "Count",
        }
    }
}

impl Metric {
    pub fn count(name: MetricName) -> Metric {
        Metric {
            name,
            value: 1.0,
            verdict: None,
        }
    }

    /// Seconds from `from` to `to` (never negative: clocks of two sources may disagree).
    pub fn seconds(name: MetricName, from: DateTime<Utc>, to: DateTime<Utc>) -> Metric {
        let ms = (to - from).num_milliseconds().max(0);
        Metric {
            name,
            value: ms as f64 / 1000.0,
            verdict: None,
        }
    }
}

/// The EMF documents for `metrics` of one deployment: one per dimension set shape (the canary
/// verdicts carry their verdict as a dimension too). Dimension sets: service and environment,
/// and environment alone (what the template's dashboard and rollback alarm read).
pub fn documents(
    service: &str,
    environment: &str,
    deployment_id: &str,
    metrics: &[Metric],
    at: DateTime<Utc>,
) -> Vec<Value> {
    let mut out = Vec::new();
    let plain: Vec<&Metric> = metrics.iter().filter(|m| m.verdict.is_none()).collect();
    if !plain.is_empty() {
        out.push(document(
            &[("service", service), ("environment", environment)],
            deployment_id,
            &plain,
            at,
        ));
    }
    for m in metrics.iter().filter(|m| m.verdict.is_some()) {
        let verdict = m.verdict.as_deref().unwrap_or_default();
        out.push(document(
            &[
                ("service", service),
                ("environment", environment),
                ("verdict", verdict),
            ],
            deployment_id,
            &[m],
            at,
        ));
    }
    out
}

fn document(
    dimensions: &[(&str, &str)],
    deployment_id: &str,
    metrics: &[&Metric],
    at: DateTime<Utc>,
) -> Value {
    let names: Vec<&str> = dimensions.iter().map(|(k, _)| *k).collect();
    let mut sets = vec![names.clone()];
    // Beside the full set, the same without the service (and so across services).
    let without_service: Vec<&str> = names.iter().copied().filter(|k| *k != "service").collect();
    sets.push(without_service);
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": at.timestamp_millis(),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": sets,
                "Metrics": metrics.iter().map(|m| json!({ "Name": m.name.as_str(), "Unit": m.name.unit() })).collect::<Vec<_>>(),
            }],
        }),
    );
    for (k, v) in dimensions {
        root.insert((*k).into(), json!(v));
    }
    for m in metrics {
        root.insert(m.name.as_str().into(), json!(m.value));
    }
    // Not a dimension (it would make a metric per deployment): searchable in Logs Insights.
    root.insert("deployment_id".into(), json!(deployment_id));
    Value::Object(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_rollback_writes_documents_cloudwatch_can_extract() {
        let at = Utc.with_ymd_and_hms(2026, 11, 23, 10, 0, 0).unwrap();
        let metrics = [
            Metric::count(MetricName::DeploymentsRolledBack),
            Metric::seconds(
                MetricName::SignalToRestoredSeconds,
                at - chrono::Duration::seconds(95),
                at,
            ),
            Metric {
                verdict: Some("fail".into()),
                ..Metric::count(MetricName::CanaryVerdicts)
            },
        ];
        let docs = documents("checkout", "production", "d-1", &metrics, at);
        assert_eq!(docs.len(), 2);
        let d = &docs[0];
        let directive = &d["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(d["_aws"]["Timestamp"], json!(at.timestamp_millis()));
        assert_eq!(directive["Namespace"], json!("Flightdeck"));
        assert_eq!(
            directive["Dimensions"],
            json!([["service", "environment"], ["environment"]])
        );
        // Every metric named in the directive and every dimension is a member of the root.
        for m in directive["Metrics"].as_array().unwrap() {
            let name = m["Name"].as_str().unwrap();
            assert!(d[name].is_number(), "{name}");
        }
        for set in directive["Dimensions"].as_array().unwrap() {
            for k in set.as_array().unwrap() {
                assert!(d[k.as_str().unwrap()].is_string());
            }
        }
        assert_eq!(d["DeploymentsRolledBack"], json!(1.0));
        assert_eq!(d["SignalToRestoredSeconds"], json!(95.0));
        assert_eq!(
            directive["Metrics"][1],
            json!({"Name": "SignalToRestoredSeconds", "Unit": "Seconds"})
        );
        let v = &docs[1];
        assert_eq!(v["verdict"], json!("fail"));
        assert_eq!(
            v["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([
                ["service", "environment", "verdict"],
                ["environment", "verdict"]
            ])
        );
    }
}
