//! `on-alarm`: wires the AWS clients into the shared handler. Clients are built once per cold start.

use flightdeck::adapters::{
    dynamodb::DynamoStore, ecs::EcsClient, elbv2::ElbTraffic, sns::SnsNotifier,
};
use flightdeck::config::Config;
use flightdeck::handlers::{HandlerError, Ports, on_alarm};
use flightdeck::ports::SystemClock;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = Config::from_env()?;
    let aws = aws_config::load_from_env().await;
    let ports = Ports {
        store: DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), config.table),
        ecs: EcsClient::new(aws_sdk_ecs::Client::new(&aws)),
        traffic: ElbTraffic::new(aws_sdk_elasticloadbalancingv2::Client::new(&aws)),
        notifier: SnsNotifier::new(aws_sdk_sns::Client::new(&aws), config.topic_arn),
        clock: SystemClock,
    };
    let ports = &ports;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let outcome = on_alarm::handle(ports, event.payload).await?;
        tracing::info!(skipped = ?outcome.skipped, deployments = outcome.deployments.len(), "done");
        Ok::<_, HandlerError>(())
    }))
    .await
}
