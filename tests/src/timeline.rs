//! Readable renderings of deployments and alerts for the demo and the admin command.

use chrono::SecondsFormat;
use flightdeck::deployment::Deployment;

use crate::ReceivedAlert;

/// One deployment with its audit trail.
pub fn describe(d: &Deployment) -> String {
    let mut out = format!(
        "{} {} {} {}\n  image   {}\n  status  {} ({}% traffic)\n  reason  {}\n",
        d.id,
        d.service,
        d.environment,
        d.tag.as_deref().unwrap_or("untagged"),
        d.image,
        d.status(),
        d.traffic_percent,
        d.reason.as_deref().unwrap_or("-")
    );
    for e in &d.events {
        out.push_str(&format!(
            "  {}  {:<12}  {}  ({})\n",
            e.at.to_rfc3339_opts(SecondsFormat::Millis, true),
            e.status.map(|s| s.as_str()).unwrap_or("·"),
            e.reason.as_deref().unwrap_or("-"),
            e.actor.as_deref().unwrap_or("-")
        ));
    }
    out
}

/// The audit trails of several deployments merged into one timeline, oldest first.
pub fn merged(deployments: &[Deployment]) -> String {
    let mut rows: Vec<_> = deployments
        .iter()
        .flat_map(|d| d.events.iter().map(move |e| (e.at, d, e)))
        .collect();
    rows.sort_by_key(|(at, _, _)| *at);
    rows.iter()
        .map(|(at, d, e)| {
            format!(
                "{}  {:<7} {:<17} {}  [{}]\n",
                at.format("%H:%M:%S%.3f"),
                d.tag.as_deref().unwrap_or("-"),
                e.status.map(|s| s.as_str()).unwrap_or("  ·"),
                e.reason.as_deref().unwrap_or("-"),
                e.actor.as_deref().unwrap_or("-")
            )
        })
        .collect()
}

/// An alert as the subscriber queue received it.
pub fn alert(a: &ReceivedAlert) -> String {
    format!(
        "Subject: {}\n  attributes: event_type={} severity={} service={} environment={}\n  body: {}\n",
        a.subject,
        a.event_type,
        a.severity,
        a.service,
        a.environment,
        serde_json::to_string(&a.document).unwrap_or_default()
    )
}
