//! `shifter`: the reconcile loop, on a one-minute schedule (the event's content is ignored). Clients are built once per cold start.

use flightdeck::adapters::aws_ports;
use flightdeck::adapters::cloudwatch::CloudWatchAlarms;
use flightdeck::adapters::ecr::EcrImages;
use flightdeck::config::Config;
use flightdeck::handlers::{HandlerError, shifter};
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = Config::from_env()?;
    let aws = aws_config::load_from_env().await;
    let ports = aws_ports(&aws, config, EcrImages::new(aws_sdk_ecr::Client::new(&aws)));
    let ports = &ports;
    let alarms = CloudWatchAlarms::new(aws_sdk_cloudwatch::Client::new(&aws));
    let alarms = &alarms;
    lambda_runtime::run(service_fn(move |_event: LambdaEvent<Value>| async move {
        let outcome = shifter::handle(ports, alarms).await?;
        tracing::info!(skipped = ?outcome.skipped, deployments = outcome.deployments.len(), "done");
        Ok::<_, HandlerError>(())
    }))
    .await
}
