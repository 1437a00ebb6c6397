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
pub fn aws_ports(
    sdk: &aws_types::SdkConfig,
    config: crate::config::Config,
) -> crate::handlers::Ports<
    dynamodb::DynamoStore,
    ecs::EcsClient,
    elbv2::ElbTraffic,
    sns::SnsNotifier,
    crate::ports::SystemClock,
> {
    crate::handlers::Ports {
        store: dynamodb::DynamoStore::new(aws_sdk_dynamodb::Client::new(sdk), config.table),
        ecs: ecs::EcsClient::new(aws_sdk_ecs::Client::new(sdk)),
        traffic: elbv2::ElbTraffic::new(aws_sdk_elasticloadbalancingv2::Client::new(sdk)),
        notifier: sns::SnsNotifier::new(aws_sdk_sns::Client::new(sdk), config.topic_arn),
        clock: crate::ports::SystemClock,
    }
}
