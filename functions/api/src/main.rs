//! `api`: the CI and operator HTTP API behind API Gateway (HTTP API, payload v2, IAM auth).
//! Clients are built once per cold start.

use flightdeck::adapters::aws_ports;
use flightdeck::adapters::ecr::EcrImages;
use flightdeck::api::{self, ApiConfig};
use flightdeck::config::Config;
use lambda_http::{Error, Request, service_fn};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let config = Config::from_env()?;
    let api_config = ApiConfig::from_lookup(|name| std::env::var(name).ok())?;
    let aws = aws_config::load_from_env().await;
    let ports = aws_ports(&aws, config, EcrImages::new(aws_sdk_ecr::Client::new(&aws)));
    let (ports, api_config) = (&ports, &api_config);
    lambda_http::run(service_fn(move |request: Request| async move {
        let response = match api::from_http(&request) {
            Ok(parsed) => api::handle(ports, api_config, &parsed).await,
            Err(refused) => refused,
        };
        tracing::info!(method = %request.method(), path = %request.uri().path(), status = response.status, "request");
        Ok::<_, Error>(api::to_http(&response))
    }))
    .await
}
