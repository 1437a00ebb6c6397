//! `on-alarm`: wires the AWS clients into the shared handler. Clients are built once per cold start.

use flightdeck::adapters::{NoEcr, aws_ports};
use flightdeck::config::Config;
use flightdeck::handlers::{HandlerError, on_alarm};
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = Config::from_env()?;
    let aws = aws_config::load_from_env().await;
    let ports = aws_ports(&aws, config, NoEcr("on-alarm"));
    let ports = &ports;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let outcome = on_alarm::handle(ports, event.payload).await?;
        tracing::info!(skipped = ?outcome.skipped, deployments = outcome.deployments.len(), "done");
        Ok::<_, HandlerError>(())
    }))
    .await
}
