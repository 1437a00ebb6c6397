//! The vulnerability gate (`gates.scan`): a deployment waits for its image's ECR scan (basic or
//! enhanced) and fails before anything changes when findings at or above `block_at` exist.
//! Pure: the report comes from DescribeImageScanFindings (`ports::ImageScans`), prompted by the
//! `ECR Image Scan` / `Inspector2 Scan` events or by the reconcile loop.

use serde::{Deserialize, Serialize};

/// The registration's `gates.scan`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanGate {
    #[serde(default = "default_block_at")]
    pub block_at: Severity,
    #[serde(default = "default_wait")]
    pub wait_minutes: u32,
    #[serde(default)]
    pub missing: Missing,
}

fn default_block_at() -> Severity {
    Severity::Critical
}

fn default_wait() -> u32 {
    10
}

/// What a deployment does when no scan result came within `wait_minutes`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Missing {
    #[default]
    Fail,
    Allow,
}

/// Finding severities, least severe first (ECR's names; enhanced scanning's UNTRIAGED counts
/// with INFORMATIONAL).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Severity {
    Informational,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// ECR's severity name; anything unknown (UNDEFINED, UNTRIAGED) is informational.
    pub fn parse(name: &str) -> Severity {
        match name.to_ascii_uppercase().as_str() {
            "CRITICAL" => Severity::Critical,
            "HIGH" => Severity::High,
            "MEDIUM" => Severity::Medium,
            "LOW" => Severity::Low,
            _ => Severity::Informational,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "CRITICAL",
            Severity::High => "HIGH",
            Severity::Medium => "MEDIUM",
            Severity::Low => "LOW",
            Severity::Informational => "INFORMATIONAL",
        }
    }
}

/// One finding: the vulnerability's id (a CVE), its severity, and the package it is in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub id: String,
    pub severity: Severity,
    pub package: Option<String>,
}

/// What DescribeImageScanFindings says of an image.
#[derive(Clone, Debug, PartialEq)]
pub enum ScanReport {
    /// The scan finished: the count per severity and the findings ECR listed (one page).
    Complete {
        counts: Vec<(Severity, u32)>,
        findings: Vec<Finding>,
    },
    /// No result yet (scan in progress, pending, or none started yet).
    Pending { status: String },
    /// There will be no result (scan failed, unsupported image, findings unavailable).
    Unavailable { status: String, reason: String },
}

/// Findings kept in the record and named in alerts, worst first.
pub const WORST_KEPT: usize = 5;

impl ScanGate {
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        if self.block_at < Severity::Medium {
            return Err(("gates.scan.block_at", "must be CRITICAL, HIGH or MEDIUM"));
        }
        if self.wait_minutes == 0 || self.wait_minutes > 1440 {
            return Err(("gates.scan.wait_minutes", "must be 1 to 1440 (minutes)"));
        }
        Ok(())
    }

    /// The findings at or above `block_at`, worst first (at most `WORST_KEPT`), and how many
    /// there are in all (the counts decide: ECR lists one page of findings, counts them all).
    pub fn blocking(
        &self,
        counts: &[(Severity, u32)],
        findings: &[Finding],
    ) -> (u32, Vec<Finding>) {
        let total: u32 = counts
            .iter()
            .filter(|(s, _)| *s >= self.block_at)
            .map(|(_, n)| *n)
            .sum();
        let mut worst: Vec<Finding> = findings
            .iter()
            .filter(|f| f.severity >= self.block_at)
            .cloned()
            .collect();
        worst.sort_by(|a, b| b.severity.cmp(&a.severity).then_with(|| a.id.cmp(&b.id)));
        worst.dedup_by(|a, b| a.id == b.id && a.package == b.package);
        worst.truncate(WORST_KEPT);
        (total.max(worst.len() as u32), worst)
    }
}

/// `CRITICAL 2, HIGH 5` — the counts, worst first, zeros left out.
pub fn counts_text(counts: &[(Severity, u32)]) -> String {
    let mut sorted: Vec<&(Severity, u32)> = counts.iter().filter(|(_, n)| *n > 0).collect();
    sorted.sort_by_key(|c| std::cmp::Reverse(c.0));
    if sorted.is_empty() {
        return "no findings".to_string();
    }
    sorted
        .iter()
        .map(|(s, n)| format!("{} {n}", s.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `CVE-2024-1 (CRITICAL, openssl)` for each finding.
pub fn findings_text(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| match &f.package {
            Some(p) => format!("{} ({}, {p})", f.id, f.severity.as_str()),
            None => format!("{} ({})", f.id, f.severity.as_str()),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(id: &str, s: Severity, p: &str) -> Finding {
        Finding {
            id: id.into(),
            severity: s,
            package: Some(p.into()),
        }
    }

    #[test]
    fn findings_at_or_above_the_threshold_block_worst_first() {
        let gate: ScanGate = serde_json::from_str(r#"{"block_at": "HIGH"}"#).unwrap();
        let counts = [
            (Severity::Critical, 1),
            (Severity::High, 7),
            (Severity::Low, 30),
        ];
        let findings = [
            finding("CVE-2026-3", Severity::High, "zlib"),
            finding("CVE-2026-1", Severity::Low, "bash"),
            finding("CVE-2026-2", Severity::Critical, "openssl"),
        ];
        let (total, worst) = gate.blocking(&counts, &findings);
        assert_eq!(total, 8);
        assert_eq!(
            findings_text(&worst),
            "CVE-2026-2 (CRITICAL, openssl); CVE-2026-3 (HIGH, zlib)"
        );
        assert_eq!(counts_text(&counts), "CRITICAL 1, HIGH 7, LOW 30");
        let critical_only: ScanGate = serde_json::from_str("{}").unwrap();
        assert_eq!(critical_only.blocking(&[(Severity::High, 7)], &[]).0, 0);
    }

    #[test]
    fn a_threshold_below_medium_is_refused() {
        let gate: ScanGate = serde_json::from_str(r#"{"block_at": "LOW"}"#).unwrap();
        assert_eq!(gate.check().unwrap_err().0, "gates.scan.block_at");
        assert!(serde_json::from_str::<ScanGate>(r#"{"block_at": "SEVERE"}"#).is_err());
    }
}
