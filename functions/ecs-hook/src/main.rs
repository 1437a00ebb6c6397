//! `ecs-hook`: the Lambda lifecycle hook of `ecs-native` services. ECS invokes it at each stage
//! the service's `lifecycleHooks` entry names and acts on its answer (`hookStatus`,
//! `callBackDelay`, `hookDetails`). Clients are built once per cold start.
//!
//! An invocation that fails or times out makes ECS roll the rollout back, so the answer always
//! comes back inside the function's own deadline: reads still running two seconds before it
//! give way to IN_PROGRESS, and ECS asks again.

use flightdeck::adapters::cloudwatch::CloudWatchAlarms;
use flightdeck::adapters::{NoEcr, aws_ports};
use flightdeck::config::Config;
use flightdeck::handlers::{HandlerError, ecs_hook};
use flightdeck::native::HookAnswer;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tracing::warn;

/// What is kept back of the function's time for answering.
const MARGIN: Duration = Duration::from_secs(2);

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let config = Config::from_env()?;
    let aws = aws_config::load_from_env().await;
    let ports = aws_ports(&aws, config, NoEcr("ecs-hook"));
    let ports = &ports;
    let alarms = CloudWatchAlarms::new(aws_sdk_cloudwatch::Client::new(&aws));
    let alarms = &alarms;
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let left = Duration::from_millis(event.context.deadline.saturating_sub(now_ms));
        let budget = left.saturating_sub(MARGIN).max(Duration::from_secs(1));
        match tokio::time::timeout(budget, ecs_hook::handle(ports, alarms, &event.payload)).await {
            Ok(answer) => Ok::<HookAnswer, HandlerError>(answer?),
            Err(_) => {
                let execution = event
                    .payload
                    .get("executionId")
                    .and_then(|v| v.as_str())
                    .unwrap_or("unknown");
                warn!(
                    execution,
                    budget_ms = budget.as_millis(),
                    "hook ran out of time; ECS asks again"
                );
                Ok(HookAnswer::ask_again(
                    ecs_hook::RETRY_SECONDS,
                    event.payload.get("hookDetails").cloned(),
                ))
            }
        }
    }))
    .await
}
