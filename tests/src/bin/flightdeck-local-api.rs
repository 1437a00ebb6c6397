//! `flightdeck-local-api`: the API on 127.0.0.1 against the local stack, for curl, a browser, the
//! CI example and the schemathesis run. It creates its own resources on the emulators (prefix
//! `flightdeck-api`, a rolling `checkout-api` service in `staging` whose deployers and approvers
//! are the local principals), then serves until stopped.
//!
//!   FLIGHTDECK_API_PORT (default 4597)   where to listen
//!
//! ECS is simulated in the background, so deployments started through the API go on by
//! themselves: every second the new revision's tasks of each DEPLOYING rolling deployment are
//! reported RUNNING and ECS reports its deployment completed (`on-ecs-event`), and the reconcile
//! loop (`shifter`) runs.
//!
//! A deployment whose tag contains `crash`, or whose digest's hex begins `bad`, stands for an
//! image that cannot start: its tasks are reported stopped (exec format error) until the crash
//! limit rolls it back.
//!
//! Callers are named by the access key id of their SigV4 signature (`infra/local/principals.json`).
//! The dashboard at `/` needs no sign-in here: it acts as one of the local users
//! (`local_api::LOCAL_USERS`), named in a header that only this server reads.

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

use flightdeck_local::local_api::{self, access_key, principals};
use flightdeck_local::{Result, Stack, local_sdk_config};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flightdeck-local-api: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> Result<()> {
    let port: u16 = std::env::var("FLIGHTDECK_API_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(4597);
    let prefix = format!(
        "flightdeck-api-{}",
        &flightdeck_local::hex64(&format!("{:?}", std::time::SystemTime::now()))[..6]
    );
    let stack = Stack::create(local_sdk_config().await?, &prefix, "checkout-api", 2).await?;
    let sample =
        flightdeck_local::repo_root().join("infra/local/registrations/checkout-api.staging.json");
    let mut doc: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(sample)?)?;
    doc["cluster"] = serde_json::json!(stack.cluster);
    doc["deployers"] = serde_json::json!([
        "arn:aws:iam::123456789012:role/ci-deployer",
        "arn:aws:iam::123456789012:role/release-approver",
        "oidc:dev@example.com",
        "oidc:lead@example.com"
    ]);
    // The dashboard's local users: both may approve, neither their own deployments (four eyes).
    doc["approvers"] = serde_json::json!([
        "arn:aws:iam::123456789012:role/release-approver",
        "oidc:dev@example.com",
        "oidc:lead@example.com"
    ]);
    stack
        .register("checkout-api", "staging", &doc.to_string())
        .await?;
    // Production runs its own ECS service (one ECS service has one registration).
    stack.add_service("checkout-api-production", 2).await?;
    let mut production = doc.clone();
    production["engine"]["service"] = serde_json::json!("checkout-api-production");
    production["gates"]["approval"] = serde_json::json!(true);
    stack
        .register("checkout-api", "production", &production.to_string())
        .await?;

    tokio::spawn(simulate_ecs(
        stack.ports(),
        stack.ecs_events(),
        stack.alarms(),
    ));
    let state = Arc::new(State {
        ports: stack.ports(),
        config: local_api::local_config(),
        principals: principals()?,
    });
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    println!(
        "flightdeck-local-api: http://127.0.0.1:{port} (table {}, topic {})",
        stack.table, stack.topic_arn
    );
    println!(
        "FLIGHTDECK_TABLE={} FLIGHTDECK_TOPIC_ARN={}",
        stack.table, stack.topic_arn
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(&state, request).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

struct State {
    ports: flightdeck_local::LocalPorts,
    config: flightdeck::api::ApiConfig,
    principals: std::collections::HashMap<String, String>,
}

async fn answer(state: &State, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let method = request.method().as_str().to_string();
    let path = request
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let headers: Vec<(String, String)> = request
        .headers()
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_string(), v.to_string()))
        })
        .collect();
    let caller = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        .and_then(|(_, v)| access_key(v))
        .and_then(|key| state.principals.get(key).cloned())
        .map(local_api::Caller::Iam)
        // The page's user header names a caller only on the page's routes, as a sign-in token
        // only reaches the function through the dashboard's API in AWS.
        .or_else(|| {
            path.starts_with("/ui/")
                .then(|| local_api::page_user(&headers, &state.config.local_users))
                .flatten()
        });
    let body = match request.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let event = local_api::event(&method, &path, &headers, &body, caller.as_ref());
    let response = local_api::call(&state.ports, &state.config, &event).await;
    println!("{method} {path} -> {}", response.status);
    let (headers, body) = response.http_parts();
    let mut builder = Response::builder().status(response.status);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    builder
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

/// A tag with `crash` in it, or a digest whose hex begins `bad`, stands for an image that cannot
/// start on the local stack.
fn cannot_start(d: &flightdeck::deployment::Deployment) -> bool {
    d.tag.as_deref().is_some_and(|t| t.contains("crash")) || d.digest.starts_with("sha256:bad")
}

/// What ECS and the one-minute schedule would do, compressed into a one-second loop.
async fn simulate_ecs(
    ports: flightdeck_local::LocalPorts,
    ecs: flightdeck_local::EcsSimulator,
    alarms: flightdeck::adapters::cloudwatch::CloudWatchAlarms,
) {
    use flightdeck::deployment::Status;
    use flightdeck::handlers::{on_ecs_event, shifter};
    use flightdeck::ports::DeploymentStore;
    let mut reported = std::collections::HashSet::new();
    let mut on_service = std::collections::HashMap::new();
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        let Ok(ids) = ports.store.all_active().await else {
            continue;
        };
        for id in ids {
            let Ok(Some(d)) = ports.store.get(&id).await else {
                continue;
            };
            // Each deployment's events speak of its own ECS service (staging and production
            // run one each).
            let ecs = on_service
                .entry(d.rollout.ecs_service.clone())
                .or_insert_with(|| ecs.for_service(&d.rollout.ecs_service));
            // ECS settles a rollback: the service is steady on the previous revision again.
            if d.status() == Status::RollingBack
                && d.traffic.is_none()
                && d.rollback().and_then(|r| r.issued_at).is_some()
            {
                if let Ok(event) = ecs.steady_state() {
                    let _ = on_ecs_event::handle(&ports, event).await;
                }
                continue;
            }
            let Some(td) = d.rollout.new_task_definition.clone() else {
                continue;
            };
            if d.status() != Status::Deploying
                || d.traffic.is_some()
                || !reported.insert(id.clone())
            {
                continue;
            }
            // An image that cannot start (see the module's notes): its tasks stop with an exec
            // format error until the crash limit rolls it back.
            if cannot_start(&d) {
                for _ in 0..d.max_failed_tasks.max(1) {
                    let task = ecs.new_task_arn();
                    if let Ok(event) = ecs.task_exec_format_error(&task, &td, 3) {
                        let _ = on_ecs_event::handle(&ports, event).await;
                    }
                }
                continue;
            }
            for _ in 0..d.rollout.desired_count.unwrap_or(1) {
                let task = ecs.new_task_arn();
                if let Ok(event) = ecs.task_running(&task, &td, 3) {
                    let _ = on_ecs_event::handle(&ports, event).await;
                }
            }
            if let Ok(event) = ecs.deployment_completed("ecs-svc/local") {
                let _ = on_ecs_event::handle(&ports, event).await;
            }
        }
        let _ = shifter::handle(&ports, &alarms).await;
    }
}
