//! ECR: tags to digests (deployments started by tag through the API) and images' scan results
//! (the vulnerability gate).

use aws_sdk_ecr::Client;
use aws_sdk_ecr::error::DisplayErrorContext;
use aws_sdk_ecr::types::ImageIdentifier;

use crate::ports::{ImageResolver, PortError, PortResult};
use crate::scan::{Finding, ScanReport, Severity};

#[derive(Clone, Debug)]
pub struct EcrImages {
    client: Client,
}

impl EcrImages {
    pub fn new(client: Client) -> Self {
        EcrImages { client }
    }
}

impl ImageResolver for EcrImages {
    async fn digest_of(&self, repository: &str, tag: &str) -> PortResult<Option<String>> {
        let out = self
            .client
            .describe_images()
            .repository_name(repository)
            .image_ids(ImageIdentifier::builder().image_tag(tag).build())
            .send()
            .await;
        match out {
            Ok(out) => Ok(out
                .image_details
                .unwrap_or_default()
                .into_iter()
                .find_map(|d| d.image_digest)),
            Err(e)
                if e.as_service_error().is_some_and(|s| {
                    s.is_image_not_found_exception() || s.is_repository_not_found_exception()
                }) =>
            {
                Ok(None)
            }
            Err(e) => Err(PortError::remote(
                "ECR DescribeImages",
                DisplayErrorContext(e),
            )),
        }
    }

    async fn scan_findings(&self, repository: &str, digest: &str) -> PortResult<ScanReport> {
        let out = self
            .client
            .describe_image_scan_findings()
            .repository_name(repository)
            .image_id(ImageIdentifier::builder().image_digest(digest).build())
            .max_results(100)
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            // No scan started (yet): scan on push may still be on its way.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_scan_not_found_exception()) =>
            {
                return Ok(ScanReport::Pending {
                    status: "NOT_STARTED".to_string(),
                });
            }
            Err(e)
                if e.as_service_error().is_some_and(|s| {
                    s.is_image_not_found_exception() || s.is_repository_not_found_exception()
                }) =>
            {
                return Ok(ScanReport::Unavailable {
                    status: "IMAGE_NOT_FOUND".to_string(),
                    reason: format!("ECR has no image {repository}@{digest}"),
                });
            }
            Err(e) => {
                return Err(PortError::remote(
                    "ECR DescribeImageScanFindings",
                    DisplayErrorContext(e),
                ));
            }
        };
        let status = out
            .image_scan_status()
            .and_then(|s| s.status())
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|| "UNKNOWN".to_string());
        let description = out
            .image_scan_status()
            .and_then(|s| s.description())
            .unwrap_or("no description")
            .to_string();
        Ok(match status.as_str() {
            // ACTIVE: enhanced scanning, continuously; its findings are current.
            "COMPLETE" | "ACTIVE" => {
                let findings = out.image_scan_findings();
                let mut counts: Vec<(Severity, u32)> = Vec::new();
                for (severity, n) in findings
                    .and_then(|f| f.finding_severity_counts())
                    .into_iter()
                    .flatten()
                {
                    let severity = Severity::parse(severity.as_str());
                    let n = u32::try_from(*n).unwrap_or(0);
                    match counts.iter_mut().find(|(s, _)| *s == severity) {
                        Some((_, total)) => *total += n,
                        None => counts.push((severity, n)),
                    }
                }
                let basic = findings
                    .map(|f| f.findings())
                    .unwrap_or_default()
                    .iter()
                    .map(|f| Finding {
                        id: f.name().unwrap_or("unnamed").to_string(),
                        severity: Severity::parse(f.severity().map(|s| s.as_str()).unwrap_or("")),
                        package: f
                            .attributes()
                            .iter()
                            .find(|a| a.key() == "package_name")
                            .and_then(|a| a.value())
                            .map(str::to_string),
                    });
                let enhanced = findings
                    .map(|f| f.enhanced_findings())
                    .unwrap_or_default()
                    .iter()
                    .map(|f| {
                        let details = f.package_vulnerability_details();
                        Finding {
                            id: details
                                .and_then(|d| d.vulnerability_id())
                                .or(f.title())
                                .unwrap_or("unnamed")
                                .to_string(),
                            severity: Severity::parse(f.severity().unwrap_or("")),
                            package: details
                                .and_then(|d| d.vulnerable_packages().first())
                                .and_then(|p| p.name())
                                .map(str::to_string),
                        }
                    });
                ScanReport::Complete {
                    counts,
                    findings: basic.chain(enhanced).collect(),
                }
            }
            "IN_PROGRESS" | "PENDING" => ScanReport::Pending { status },
            _ => ScanReport::Unavailable {
                status,
                reason: description,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecr::operation::describe_image_scan_findings::{
        DescribeImageScanFindingsError, DescribeImageScanFindingsOutput,
    };
    use aws_sdk_ecr::types::{
        Attribute, EnhancedImageScanFinding, FindingSeverity, ImageScanFinding, ImageScanFindings,
        ImageScanStatus, PackageVulnerabilityDetails, ScanStatus, VulnerablePackage,
    };
    use aws_smithy_mocks::{mock, mock_client};

    #[tokio::test]
    async fn basic_and_enhanced_findings_are_read_with_their_counts() {
        let rule = mock!(Client::describe_image_scan_findings).then_output(|| {
            DescribeImageScanFindingsOutput::builder()
                .image_scan_status(
                    ImageScanStatus::builder()
                        .status(ScanStatus::Complete)
                        .build(),
                )
                .image_scan_findings(
                    ImageScanFindings::builder()
                        .finding_severity_counts(FindingSeverity::Critical, 1)
                        .finding_severity_counts(FindingSeverity::Low, 4)
                        .findings(
                            ImageScanFinding::builder()
                                .name("CVE-2026-0001")
                                .severity(FindingSeverity::Critical)
                                .attributes(
                                    Attribute::builder()
                                        .key("package_name")
                                        .value("openssl")
                                        .build()
                                        .unwrap(),
                                )
                                .build(),
                        )
                        .enhanced_findings(
                            EnhancedImageScanFinding::builder()
                                .severity("HIGH")
                                .package_vulnerability_details(
                                    PackageVulnerabilityDetails::builder()
                                        .vulnerability_id("CVE-2026-0002")
                                        .vulnerable_packages(
                                            VulnerablePackage::builder().name("zlib").build(),
                                        )
                                        .build(),
                                )
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
        let ecr = EcrImages::new(mock_client!(aws_sdk_ecr, [&rule]));
        let report = ecr.scan_findings("app", "sha256:ab").await.unwrap();
        let ScanReport::Complete { counts, findings } = report else {
            panic!("{report:?}")
        };
        assert!(counts.contains(&(Severity::Critical, 1)) && counts.contains(&(Severity::Low, 4)));
        assert_eq!(
            crate::scan::findings_text(&findings),
            "CVE-2026-0001 (CRITICAL, openssl); CVE-2026-0002 (HIGH, zlib)"
        );
    }

    #[tokio::test]
    async fn no_scan_yet_is_pending_and_a_failed_scan_is_unavailable() {
        let none = mock!(Client::describe_image_scan_findings).then_error(|| {
            DescribeImageScanFindingsError::ScanNotFoundException(
                aws_sdk_ecr::types::error::ScanNotFoundException::builder().build(),
            )
        });
        let ecr = EcrImages::new(mock_client!(aws_sdk_ecr, [&none]));
        assert!(matches!(
            ecr.scan_findings("app", "sha256:ab").await.unwrap(),
            ScanReport::Pending { .. }
        ));
        let failed = mock!(Client::describe_image_scan_findings).then_output(|| {
            DescribeImageScanFindingsOutput::builder()
                .image_scan_status(
                    ImageScanStatus::builder()
                        .status(ScanStatus::UnsupportedImage)
                        .description("UnsupportedImageError: the operating system is not supported")
                        .build(),
                )
                .build()
        });
        let ecr = EcrImages::new(mock_client!(aws_sdk_ecr, [&failed]));
        let report = ecr.scan_findings("app", "sha256:ab").await.unwrap();
        assert!(
            matches!(&report, ScanReport::Unavailable { status, .. } if status == "UNSUPPORTED_IMAGE"),
            "{report:?}"
        );
    }
}
