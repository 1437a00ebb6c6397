//! `/services`: the registrations, and registering one (admins only, naming only resources
//! tagged for Flightdeck).

use serde_json::{Value, json};

use super::authorization::Caller;
use super::documents::registration_json;
use super::{Answer, ApiRequest, ApiResponse, invalid, upstream};
use crate::ports::{Adapters, DeploymentStore, EcsControl, MANAGED_TAG, PortError, TrafficControl};
use crate::registration::{ManagedResource, Registration, RegistrationError, check_name};

pub(super) async fn list_services<P: Adapters>(ports: &P) -> Answer {
    let registrations = ports.store().registrations().await.map_err(upstream)?;
    let services: Vec<Value> = registrations.iter().map(registration_json).collect();
    Ok(ApiResponse::ok(200, json!({ "services": services })))
}

pub(super) async fn find_registration<P: Adapters>(
    ports: &P,
    service: &str,
    environment: &str,
) -> Result<Registration, ApiResponse> {
    check_name("service", service).map_err(|e| invalid("service", e))?;
    check_name("environment", environment).map_err(|e| invalid("environment", e))?;
    ports
        .store()
        .registration(service, environment)
        .await
        .map_err(upstream)?
        .ok_or_else(|| {
            ApiResponse::not_found(format!("{service} is not registered in {environment}"))
        })
}

pub(super) async fn get_service<P: Adapters>(
    ports: &P,
    service: &str,
    environment: &str,
) -> Answer {
    let registration = find_registration(ports, service, environment).await?;
    Ok(ApiResponse::ok(200, registration_json(&registration)))
}

pub(super) async fn put_service<P: Adapters>(
    ports: &P,
    caller: Caller<'_>,
    service: &str,
    environment: &str,
    request: &ApiRequest,
) -> Answer {
    caller.require_admin("register services")?;
    let body = request
        .body
        .as_deref()
        .ok_or_else(|| invalid("body", "a registration document is required"))?;
    let registration = Registration::parse(service, environment, body)
        .map_err(|e| ApiResponse::error(400, "invalid_registration", e.to_string()))?;
    let stored = ports.store().registrations().await.map_err(upstream)?;
    registration.check_against(&stored).map_err(|e| match e {
        RegistrationError::Conflict(_) => ApiResponse::error(409, "conflict", e.to_string()),
        other => ApiResponse::error(400, "invalid_registration", other.to_string()),
    })?;
    check_managed(ports.ecs(), ports.traffic(), &registration)
        .await
        .map_err(|e| match e {
            Unmanaged::NotFound(_) => ApiResponse::error(422, "not_found", e.to_string()),
            Unmanaged::Untagged { .. } => {
                ApiResponse::error(422, "unmanaged_resource", e.to_string())
            }
            Unmanaged::Unreadable(e) => upstream(e),
        })?;
    let existed = stored
        .iter()
        .any(|r| r.service == service && r.environment == environment);
    ports
        .store()
        .put_registration(&registration)
        .await
        .map_err(upstream)?;
    Ok(ApiResponse::ok(
        if existed { 200 } else { 201 },
        registration_json(&registration),
    ))
}

/// Why a registration names a resource Flightdeck may not change.
#[derive(Debug, thiserror::Error)]
pub enum Unmanaged {
    #[error("{0} does not exist")]
    NotFound(String),
    #[error(
        "{what} is not tagged {key}={value}: Flightdeck may change only resources with that tag \
         (its IAM policy's condition). Tag it, then register again: {how}",
        key = MANAGED_TAG.0,
        value = MANAGED_TAG.1
    )]
    Untagged { what: String, how: String },
    #[error(transparent)]
    Unreadable(#[from] PortError),
}

/// A registration may name only resources tagged `flightdeck:managed=true`: the template's IAM
/// policy lets Flightdeck change nothing else, so an untagged one would fail at the first
/// rollout (or its rollback) instead of at registration. Used by `PUT /services/...` and the
/// admin command.
pub async fn check_managed<E: EcsControl, T: TrafficControl>(
    ecs: &E,
    traffic: &T,
    registration: &Registration,
) -> Result<(), Unmanaged> {
    let (key, value) = MANAGED_TAG;
    let cluster = &registration.spec.cluster;
    for resource in registration.managed_resources() {
        let (tags, what, how) = match resource {
            ManagedResource::EcsService(name) => (
                ecs.service_tags(cluster, name).await?,
                format!("ECS service {name} in cluster {cluster}"),
                format!(
                    "aws ecs tag-resource --resource-arn \
                     arn:aws:ecs:<region>:<account>:service/{cluster}/{name} --tags \
                     key={key},value={value}"
                ),
            ),
            ManagedResource::Listener(arn) => (
                traffic.resource_tags(arn).await?,
                format!("listener {arn}"),
                format!("aws elbv2 add-tags --resource-arns {arn} --tags Key={key},Value={value}"),
            ),
        };
        let Some(tags) = tags else {
            return Err(Unmanaged::NotFound(what));
        };
        if !tags.iter().any(|(k, v)| k == key && v == value) {
            return Err(Unmanaged::Untagged { what, how });
        }
    }
    Ok(())
}
