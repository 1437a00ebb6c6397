//! AWS implementations of the ports. They translate between SDK shapes and domain types, and
//! nothing more.

#[cfg(feature = "cloudwatch")]
pub mod cloudwatch;
#[cfg(feature = "dynamodb")]
pub mod dynamodb;
#[cfg(feature = "ecr")]
pub mod ecr;
#[cfg(feature = "ecs")]
pub mod ecs;
#[cfg(feature = "elbv2")]
pub mod elbv2;
#[cfg(feature = "sns")]
pub mod sns;

/// The ports every function wires the same way, built once per cold start from the SDK
/// configuration (region, credentials, endpoints) and the function's settings.
#[cfg(all(
    feature = "dynamodb",
    feature = "ecs",
    feature = "elbv2",
    feature = "sns"
))]
pub fn aws_ports<I: crate::ports::ImageResolver>(
    sdk: &aws_types::SdkConfig,
    config: crate::config::Config,
    images: I,
) -> crate::handlers::Ports<
    dynamodb::DynamoStore,
    ecs::EcsClient,
    elbv2::ElbTraffic,
    sns::SnsNotifier,
    crate::ports::SystemClock,
    I,
> {
    crate::handlers::Ports {
        store: dynamodb::DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), config.table),
        ecs: ecs::EcsClient::new(aws_sdk_ecs::Client::new(sdk)),
        traffic: elbv2::ElbTraffic::new(aws_sdk_elasticloadbalancingv2::Client::new(sdk)),
        notifier: sns::SnsNotifier::new(aws_sdk_sns::Client::new(sdk), config.topic_arn)
            .with_chat(config.chat_topic_arn, config.dashboard_url),
        clock: crate::ports::SystemClock,
        images,
    }
}

/// For the functions that never read ECR (`on-alarm`, `on-ecs-event`, `ecs-hook`): they carry no
/// ECR client (nor its code). Their handlers never ask; were one to, the call fails naming the
/// function's missing permission rather than answering anything.
pub struct NoEcr(pub &'static str);

impl crate::ports::ImageResolver for NoEcr {
    async fn digest_of(
        &self,
        _repository: &str,
        _tag: &str,
    ) -> crate::ports::PortResult<Option<String>> {
        Err(self.refused("ECR DescribeImages"))
    }

    async fn scan_findings(
        &self,
        _repository: &str,
        _digest: &str,
    ) -> crate::ports::PortResult<crate::scan::ScanReport> {
        Err(self.refused("ECR DescribeImageScanFindings"))
    }
}

impl NoEcr {
    fn refused(&self, operation: &'static str) -> crate::ports::PortError {
        crate::ports::PortError::Remote {
            operation,
            message: format!("the {} function has no ECR client or permission", self.0),
        }
    }
}
