//! `ecs-hook`: the Lambda lifecycle hook of `ecs-native` services. ECS invokes it at each stage
//! the service's `lifecycleHooks` entry names and acts on its answer (`hookStatus`,
//! `callBackDelay`, `hookDetails`). Clients are built once per cold start.

use flightdeck::adapters::aws_ports;
use flightdeck::adapters::cloudwatch::CloudWatchAlarms;
use flightdeck::config::Config;
use flightdeck::handlers::{HandlerError, ecs_hook};
use flightdeck::native::HookAnswer;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = Config::from_env()?;
    let aws = aws_config::load_from_env().await;
    let ports = aws_ports(&aws, config);
    let ports = &ports;
    let alarms = CloudWatchAlarms::new(aws_sdk_cloudwatch::Client::new(&aws));
    let alarms = &alarms;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let answer = ecs_hook::handle(ports, alarms, &event.payload).await?;
        Ok::<HookAnswer, HandlerError>(answer)
    }))
    .await
}
