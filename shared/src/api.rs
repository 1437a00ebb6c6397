//! The CI and operator HTTP API (DESIGN.md, "API"): routing, validation, authorization and the
//! JSON shapes. Transport-free: `ApiRequest` in, `ApiResponse` out; `from_http` (feature `api`)
//! builds the request from an API Gateway HTTP API (payload v2) event.
//!
//! Errors are `{"error": {"code", "message"}}` with a fitting 4xx. Nothing a caller sends can
//! produce a 5xx; only the AWS services behind the API failing can (502, `upstream_failed`).

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::deployment::{Deployment, Status, Trigger};
use crate::events::valid_digest;
use crate::handlers::{self, HandlerError, create_and_start};
use crate::lifecycle::{Fact, Refusal};
use crate::ports::{
    Adapters, Clock, DeploymentStore, EcsControl, ImageResolver, MANAGED_TAG, PortError,
    TrafficControl,
};
use crate::registration::{ManagedResource, Registration, RegistrationError, check_name};

/// A request as the API sees it, whatever carried it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApiRequest {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub idempotency_key: Option<String>,
    /// The body, decoded (API Gateway's base64 undone) and checked to be UTF-8.
    pub body: Option<String>,
    /// The IAM principal from the authorizer context; `None` when the request carries none.
    pub caller: Option<String>,
    /// The account the API runs in (from the request context), for image references.
    pub account: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Value,
    /// For 405: the methods the path does accept.
    pub allow: Option<&'static str>,
}

impl ApiResponse {
    fn ok(status: u16, body: Value) -> ApiResponse {
        ApiResponse {
            status,
            body,
            allow: None,
        }
    }

    pub fn error(status: u16, code: &str, message: impl Into<String>) -> ApiResponse {
        ApiResponse::ok(
            status,
            json!({ "error": { "code": code, "message": message.into() } }),
        )
    }
}

/// Settings of the `api` function.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApiConfig {
    /// `FLIGHTDECK_ADMINS`: may register services and act on every deployment.
    pub admins: Vec<String>,
    /// The region the functions and ECR live in (for image references by digest).
    pub region: String,
}

impl ApiConfig {
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<ApiConfig, crate::config::MissingSetting> {
        let admins = lookup("FLIGHTDECK_ADMINS")
            .ok_or(crate::config::MissingSetting("FLIGHTDECK_ADMINS"))?;
        let region = lookup("AWS_REGION")
            .filter(|r| !r.is_empty())
            .ok_or(crate::config::MissingSetting("AWS_REGION"))?;
        Ok(ApiConfig {
            admins: admins
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect(),
            region,
        })
    }
}

pub use crate::principal::principal_matches;

/// A deployment as the API returns it (DESIGN.md, "A deployment as the API returns it").
#[derive(Serialize)]
struct DeploymentView<'a> {
    id: &'a str,
    service: &'a str,
    environment: &'a str,
    image: &'a str,
    digest: &'a str,
    tag: Option<&'a str>,
    trigger: Trigger,
    status: Status,
    traffic_percent: u8,
    started_by: Option<&'a str>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    reason: Option<&'a str>,
    events: &'a [crate::deployment::AuditEvent],
}

pub fn deployment_json(d: &Deployment) -> Value {
    serde_json::to_value(DeploymentView {
        id: &d.id,
        service: &d.service,
        environment: &d.environment,
        image: &d.image,
        digest: &d.digest,
        tag: d.tag.as_deref(),
        trigger: d.trigger,
        status: d.status(),
        traffic_percent: d.traffic_percent,
        started_by: d.started_by.as_deref(),
        created_at: d.created_at,
        updated_at: d.updated_at,
        finished_at: d.finished_at(),
        reason: d.reason.as_deref(),
        events: &d.events,
    })
    .unwrap_or(Value::Null)
}

fn registration_json(r: &Registration) -> Value {
    let mut body = serde_json::to_value(&r.spec).unwrap_or(Value::Null);
    if let Some(map) = body.as_object_mut() {
        map.insert("service".into(), json!(r.service));
        map.insert("environment".into(), json!(r.environment));
    }
    body
}

/// Maps what the handlers report to HTTP.
fn from_handler(e: HandlerError) -> ApiResponse {
    match e {
        HandlerError::Refused(Refusal::NotAllowed(m)) => ApiResponse::error(403, "forbidden", m),
        HandlerError::Refused(Refusal::WrongState(m)) => ApiResponse::error(409, "conflict", m),
        HandlerError::NotFound(id) => {
            ApiResponse::error(404, "not_found", format!("deployment {id} not found"))
        }
        HandlerError::Port(PortError::BadCursor) => ApiResponse::error(
            400,
            "invalid_parameter",
            "`next` is not a pagination token from this API",
        ),
        HandlerError::Contended(m) | HandlerError::Port(PortError::Taken(m)) => {
            ApiResponse::error(409, "conflict", m)
        }
        other => ApiResponse::error(502, "upstream_failed", other.to_string()),
    }
}

fn invalid(field: &str, message: impl std::fmt::Display) -> ApiResponse {
    ApiResponse::error(400, "invalid_parameter", format!("{field}: {message}"))
}

/// The routes and the methods each accepts.
enum Route<'a> {
    Services,
    Service(&'a str, &'a str),
    Deployments,
    Deployment(&'a str),
    Action(&'a str, &'a str),
    Metrics,
}

fn route(path: &str) -> Option<(Route<'_>, &'static str)> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    Some(match segments.as_slice() {
        ["services"] => (Route::Services, "GET"),
        ["services", s, e] => (Route::Service(s, e), "GET, PUT"),
        ["deployments"] => (Route::Deployments, "GET, POST"),
        ["deployments", id] => (Route::Deployment(id), "GET"),
        [
            "deployments",
            id,
            action @ ("approve" | "promote" | "rollback" | "abort" | "override-freeze"),
        ] => (Route::Action(id, action), "POST"),
        ["metrics"] => (Route::Metrics, "GET"),
        _ => return None,
    })
}

/// Handles one request. Never panics on input; every refusal is a 4xx JSON body.
pub async fn handle<P: Adapters>(
    ports: &P,
    config: &ApiConfig,
    request: &ApiRequest,
) -> ApiResponse {
    let Some((route, allow)) = route(&request.path) else {
        return ApiResponse::error(404, "not_found", format!("no route {}", request.path));
    };
    if !allow.split(", ").any(|m| m == request.method) {
        let mut response = ApiResponse::error(
            405,
            "method_not_allowed",
            format!(
                "{} does not accept {}; it accepts {allow}",
                request.path, request.method
            ),
        );
        response.allow = Some(allow);
        return response;
    }
    let Some(caller) = request.caller.as_deref() else {
        return ApiResponse::error(403, "forbidden", "the request carries no IAM identity");
    };
    let admin = config.admins.iter().any(|a| principal_matches(caller, a));
    let result = match (route, request.method.as_str()) {
        (Route::Services, _) => list_services(ports).await,
        (Route::Service(s, e), "GET") => get_service(ports, s, e).await,
        (Route::Service(s, e), _) => put_service(ports, admin, s, e, request).await,
        (Route::Deployments, "GET") => list_deployments(ports, request).await,
        (Route::Deployments, _) => {
            Box::pin(start_deployment(ports, config, caller, admin, request)).await
        }
        (Route::Deployment(id), _) => get_deployment(ports, id).await,
        (Route::Action(id, action), _) => {
            Box::pin(act(ports, caller, admin, id, action, request)).await
        }
        (Route::Metrics, _) => metrics(ports, request).await,
    };
    result.unwrap_or_else(|response| response)
}

type Answer = Result<ApiResponse, ApiResponse>;

fn upstream(e: impl Into<HandlerError>) -> ApiResponse {
    from_handler(e.into())
}

async fn list_services<P: Adapters>(ports: &P) -> Answer {
    let registrations = ports.store().registrations().await.map_err(upstream)?;
    let services: Vec<Value> = registrations.iter().map(registration_json).collect();
    Ok(ApiResponse::ok(200, json!({ "services": services })))
}

async fn find_registration<P: Adapters>(
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
            ApiResponse::error(
                404,
                "not_found",
                format!("{service} is not registered in {environment}"),
            )
        })
}

async fn get_service<P: Adapters>(ports: &P, service: &str, environment: &str) -> Answer {
    let registration = find_registration(ports, service, environment).await?;
    Ok(ApiResponse::ok(200, registration_json(&registration)))
}

async fn put_service<P: Adapters>(
    ports: &P,
    admin: bool,
    service: &str,
    environment: &str,
    request: &ApiRequest,
) -> Answer {
    if !admin {
        return Err(ApiResponse::error(
            403,
            "forbidden",
            "only FLIGHTDECK_ADMINS may register services",
        ));
    }
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

fn query<'a>(request: &'a ApiRequest, name: &str) -> Option<&'a str> {
    request
        .query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

async fn list_deployments<P: Adapters>(ports: &P, request: &ApiRequest) -> Answer {
    let (Some(service), Some(environment)) =
        (query(request, "service"), query(request, "environment"))
    else {
        return Err(invalid(
            "service, environment",
            "both are required to list deployments",
        ));
    };
    check_name("service", service).map_err(|e| invalid("service", e))?;
    check_name("environment", environment).map_err(|e| invalid("environment", e))?;
    let status = match query(request, "status") {
        Some(s) => Some(
            parse_status(s)
                .ok_or_else(|| invalid("status", format!("`{s}` is not a deployment status")))?,
        ),
        None => None,
    };
    let limit = match query(request, "limit") {
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|l| (1..=100).contains(l))
            .ok_or_else(|| invalid("limit", "must be a whole number from 1 to 100"))?,
        None => 20,
    };
    let page = ports
        .store()
        .page(
            service,
            environment,
            status.map(Status::as_str),
            limit,
            query(request, "next"),
        )
        .await
        .map_err(upstream)?;
    let deployments: Vec<Value> = page.deployments.iter().map(deployment_json).collect();
    Ok(ApiResponse::ok(
        200,
        json!({ "deployments": deployments, "next": page.next }),
    ))
}

fn parse_status(text: &str) -> Option<Status> {
    serde_json::from_value(Value::String(text.to_string())).ok()
}

async fn get_deployment<P: Adapters>(ports: &P, id: &str) -> Answer {
    check_deployment_id(id)?;
    match ports.store().get(id).await.map_err(upstream)? {
        Some(mut d) => {
            // The record carries its recent audit events; the whole trail is its own items
            // (records written before the trail moved out have it all in the record).
            let trail = ports.store().audit_trail(id).await.map_err(upstream)?;
            if !trail.is_empty() {
                d.events = trail;
            }
            Ok(ApiResponse::ok(200, deployment_json(&d)))
        }
        None => Err(ApiResponse::error(
            404,
            "not_found",
            format!("deployment {id} not found"),
        )),
    }
}

fn check_deployment_id(id: &str) -> Result<(), ApiResponse> {
    let ok =
        id.len() == 22 && id.starts_with("d-") && id[2..].chars().all(|c| c.is_ascii_hexdigit());
    if ok {
        Ok(())
    } else {
        Err(invalid("id", format!("`{id}` is not a deployment id")))
    }
}

/// `POST /deployments` body.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StartBody {
    service: String,
    environment: String,
    image: String,
}

async fn start_deployment<P: Adapters>(
    ports: &P,
    config: &ApiConfig,
    caller: &str,
    admin: bool,
    request: &ApiRequest,
) -> Answer {
    let text = request
        .body
        .as_deref()
        .ok_or_else(|| invalid("body", "a JSON body is required"))?;
    let body: StartBody = serde_json::from_str(text).map_err(|e| invalid("body", e))?;
    let registration = find_registration(ports, &body.service, &body.environment).await?;
    if !admin
        && !registration
            .spec
            .deployers
            .iter()
            .any(|d| principal_matches(caller, d))
    {
        return Err(ApiResponse::error(
            403,
            "forbidden",
            format!(
                "{caller} is not a deployer of {} in {}",
                body.service, body.environment
            ),
        ));
    }
    if let Some(key) = &request.idempotency_key
        && (key.is_empty() || key.len() > 255 || !key.chars().all(|c| c.is_ascii_graphic()))
    {
        return Err(invalid(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        ));
    }
    let repository = &registration.spec.repository;
    let (digest, tag) = if body.image.starts_with("sha256:") {
        if !valid_digest(&body.image) {
            return Err(invalid(
                "image",
                "a digest is `sha256:` and 64 lowercase hex characters",
            ));
        }
        (body.image.clone(), None)
    } else {
        let tag = body.image.as_str();
        let tag_ok = !tag.is_empty()
            && tag.len() <= 128
            && tag
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !tag_ok {
            return Err(invalid(
                "image",
                "give a digest (`sha256:…`) or a tag (letters, digits, `.`, `_`, `-`)",
            ));
        }
        let digest = ports
            .images()
            .digest_of(repository, tag)
            .await
            .map_err(upstream)?
            .ok_or_else(|| {
                ApiResponse::error(
                    404,
                    "not_found",
                    format!("no image {repository}:{tag} in ECR"),
                )
            })?;
        (digest, Some(tag.to_string()))
    };
    let account = request.account.as_deref().unwrap_or("000000000000");
    let now = ports.clock().now();
    let fingerprint = hex(&Sha256::digest(
        format!("{}\n{}\n{}", body.service, body.environment, body.image).as_bytes(),
    ));
    let id = match &request.idempotency_key {
        Some(key) => format!(
            "d-{}",
            &hex(&Sha256::digest(format!("api\n{key}").as_bytes()))[..20]
        ),
        None => format!(
            "d-{}",
            &hex(&Sha256::digest(
                format!(
                    "api\n{caller}\n{}\n{fingerprint}",
                    now.timestamp_nanos_opt().unwrap_or(0)
                )
                .as_bytes()
            ))[..20]
        ),
    };
    if let Some(key) = &request.idempotency_key
        && let Some((earlier, earlier_id)) = ports
            .store()
            .claim_idempotency_key(key, &fingerprint, &id)
            .await
            .map_err(upstream)?
    {
        if earlier != fingerprint {
            return Err(ApiResponse::error(
                409,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request body",
            ));
        }
        if let Some(d) = ports.store().get(&earlier_id).await.map_err(upstream)? {
            return Ok(ApiResponse::ok(200, deployment_json(&d)));
        }
        // The earlier request stopped between binding the key and creating the deployment:
        // finish its work now, under the same id.
    }
    let deployment = Deployment::from_api(
        &registration,
        id,
        format!(
            "{account}.dkr.ecr.{}.amazonaws.com/{repository}@{digest}",
            config.region
        ),
        digest,
        tag,
        caller,
        now,
    );
    let d = create_and_start(ports, deployment)
        .await
        .map_err(from_handler)?;
    Ok(ApiResponse::ok(201, deployment_json(&d)))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn act<P: Adapters>(
    ports: &P,
    caller: &str,
    admin: bool,
    id: &str,
    action: &str,
    request: &ApiRequest,
) -> Answer {
    check_deployment_id(id)?;
    let d = ports
        .store()
        .get(id)
        .await
        .map_err(upstream)?
        .ok_or_else(|| {
            ApiResponse::error(404, "not_found", format!("deployment {id} not found"))
        })?;
    let registration = find_registration(ports, &d.service, &d.environment).await?;
    let listed = if action == "approve" {
        &registration.spec.approvers
    } else {
        &registration.spec.deployers
    };
    if !admin && !listed.iter().any(|p| principal_matches(caller, p)) {
        let role = if action == "approve" {
            "an approver"
        } else {
            "a deployer"
        };
        return Err(ApiResponse::error(
            403,
            "forbidden",
            format!(
                "{caller} is not {role} of {} in {}",
                d.service, d.environment
            ),
        ));
    }
    let by = caller.to_string();
    // Boxed: each starts a deployment, whose future is large; kept off the caller's stack.
    if action == "rollback" && d.status() == Status::Succeeded {
        return Box::pin(revert(ports, &registration, &d, caller)).await;
    }
    if action == "override-freeze" {
        return Box::pin(override_freeze(ports, admin, &d, caller, request)).await;
    }
    let result = match action {
        "approve" => handlers::approve(ports, id, caller).await.map(Some),
        "promote" => match handlers::apply(ports, id, &Fact::BakeSkipped { by }).await {
            Ok(_) => handlers::apply(ports, id, &Fact::Tick).await,
            Err(e) => Err(e),
        },
        "rollback" => handlers::apply(ports, id, &Fact::Stopped { by, abort: false }).await,
        _ => handlers::apply(ports, id, &Fact::Stopped { by, abort: true }).await,
    };
    match result.map_err(from_handler)? {
        Some(d) => Ok(ApiResponse::ok(200, deployment_json(&d))),
        None => Err(ApiResponse::error(
            404,
            "not_found",
            format!("deployment {id} not found"),
        )),
    }
}

/// `POST /deployments/{id}/rollback` of the newest SUCCEEDED deployment of its service and
/// environment: a new deployment (trigger `revert`) of the last revision that succeeded before
/// it — 201 with it (200 when this revert was asked before). Never frozen; approval only where
/// the registration asks it for reverts.
async fn revert<P: Adapters>(
    ports: &P,
    registration: &Registration,
    d: &Deployment,
    caller: &str,
) -> Answer {
    // Asked before: the same revert (its id says which deployment it reverts and which
    // attempt it is), whatever has happened since — before anything else is checked.
    let mut attempt = 0;
    while attempt < REVERT_ATTEMPTS {
        let id =
            Deployment::revert_id(d, &registration.service, &registration.environment, attempt);
        match ports.store().get(&id).await.map_err(upstream)? {
            None => break,
            Some(existing)
                if existing.status() == Status::Succeeded || existing.status().is_active() =>
            {
                return Ok(ApiResponse::ok(200, deployment_json(&existing)));
            }
            // Ended without success: the next attempt.
            Some(_) => attempt += 1,
        }
    }
    if attempt == REVERT_ATTEMPTS {
        return Err(ApiResponse::error(
            409,
            "conflict",
            format!(
                "deployment {} was reverted {REVERT_ATTEMPTS} times without success; deploy a \
                 revision by digest instead",
                d.id
            ),
        ));
    }
    let succeeded = ports
        .store()
        .page(&d.service, &d.environment, Some("SUCCEEDED"), 50, None)
        .await
        .map_err(upstream)?
        .deployments;
    if let Some(newest) = succeeded.first().filter(|n| n.id != d.id) {
        return Err(ApiResponse::error(
            409,
            "conflict",
            format!(
                "deployment {} is not the newest SUCCEEDED deployment of {} in {} ({} is): only \
                 the newest can be reverted; deploy an earlier revision by digest instead",
                d.id, d.service, d.environment, newest.id
            ),
        ));
    }
    let Some(target) = succeeded
        .iter()
        .find(|o| o.id != d.id && o.created_at <= d.created_at && o.digest != d.digest)
    else {
        return Err(ApiResponse::error(
            409,
            "conflict",
            format!(
                "no earlier revision of {} in {} succeeded before deployment {}: there is nothing \
                 to revert to",
                d.service, d.environment, d.id
            ),
        ));
    };
    let revert = Deployment::revert_of(
        d,
        target,
        registration,
        caller,
        attempt,
        ports.clock().now(),
    );
    // A deployment in flight or waiting is newer than the one reverted: the revert would undo
    // it once it ends.
    for other in ports
        .store()
        .active(&d.service, &d.environment)
        .await
        .map_err(upstream)?
    {
        if let Some(o) = ports.store().get(&other).await.map_err(upstream)?
            && o.status().is_active()
        {
            return Err(ApiResponse::error(
                409,
                "conflict",
                format!(
                    "deployment {} of {} in {} is {}: a revert of {} would undo it; roll that one \
                     back (or abort it), or revert once it ended",
                    o.id,
                    d.service,
                    d.environment,
                    o.status(),
                    d.id
                ),
            ));
        }
    }
    let revert_id = revert.id.clone();
    let started = create_and_start(ports, revert)
        .await
        .map_err(from_handler)?;
    let note = Fact::Noted {
        reason: format!("reverted by deployment {revert_id}, requested by {caller}"),
        actor: caller.to_string(),
    };
    // The revert stands whether or not this note lands.
    if let Err(e) = handlers::apply(ports, &d.id, &note).await {
        tracing::warn!(deployment_id = %d.id, error = %e, "revert not noted on the reverted deployment");
    }
    Ok(ApiResponse::ok(201, deployment_json(&started)))
}

/// How many reverts of one deployment may be asked, each after the one before ended without
/// success.
const REVERT_ATTEMPTS: u32 = 5;

/// `POST /deployments/{id}/override-freeze` with `{"reason": "…"}`: an admin lets a deployment
/// start inside a change freeze; the override and its reason go on the audit trail.
async fn override_freeze<P: Adapters>(
    ports: &P,
    admin: bool,
    d: &Deployment,
    caller: &str,
    request: &ApiRequest,
) -> Answer {
    if !admin {
        return Err(ApiResponse::error(
            403,
            "forbidden",
            format!(
                "{caller} is not an admin (FLIGHTDECK_ADMINS): only an admin may override a change freeze"
            ),
        ));
    }
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        reason: String,
    }
    let text = request
        .body
        .as_deref()
        .ok_or_else(|| invalid("body", "a JSON body with a `reason` is required"))?;
    let body: Body = serde_json::from_str(text).map_err(|e| invalid("body", e))?;
    let reason = body.reason.trim();
    if reason.is_empty() || reason.chars().count() > 200 {
        return Err(invalid("reason", "must be 1 to 200 characters"));
    }
    let fact = Fact::FreezeOverridden {
        by: caller.to_string(),
        reason: reason.to_string(),
    };
    handlers::apply(ports, &d.id, &fact)
        .await
        .map_err(from_handler)?;
    let started = handlers::start(ports, &d.id).await.map_err(from_handler)?;
    Ok(ApiResponse::ok(200, deployment_json(&started)))
}

/// DORA figures over the last `days` days, computed from the records.
async fn metrics<P: Adapters>(ports: &P, request: &ApiRequest) -> Answer {
    let (Some(service), Some(environment)) =
        (query(request, "service"), query(request, "environment"))
    else {
        return Err(invalid("service, environment", "both are required"));
    };
    check_name("service", service).map_err(|e| invalid("service", e))?;
    check_name("environment", environment).map_err(|e| invalid("environment", e))?;
    let days = match query(request, "days") {
        Some(d) => d
            .parse::<u32>()
            .ok()
            .filter(|d| (1..=365).contains(d))
            .ok_or_else(|| invalid("days", "must be a whole number from 1 to 365"))?,
        None => 30,
    };
    let now = ports.clock().now();
    let deployments = ports
        .store()
        .created_since(service, environment, now - Duration::days(i64::from(days)))
        .await
        .map_err(upstream)?;
    Ok(ApiResponse::ok(
        200,
        dora(service, environment, days, &deployments),
    ))
}

/// Deployment frequency (successes per day), lead time from push to success (median, seconds),
/// change failure rate (rolled back or failed among finished rollouts), time to restore (median
/// seconds from the bad revision's start to ROLLED_BACK).
pub fn dora(service: &str, environment: &str, days: u32, deployments: &[Deployment]) -> Value {
    let count = |s: Status| deployments.iter().filter(|d| d.status() == s).count();
    let succeeded = count(Status::Succeeded);
    let failed = count(Status::RolledBack) + count(Status::Failed);
    let lead: Vec<i64> = deployments
        .iter()
        .filter(|d| d.status() == Status::Succeeded)
        .filter_map(|d| d.finished_at().map(|f| (f - d.created_at).num_seconds()))
        .collect();
    let restore: Vec<i64> = deployments
        .iter()
        .filter(|d| d.status() == Status::RolledBack)
        .filter_map(|d| {
            let from = d.rollout.started_at.unwrap_or(d.created_at);
            d.finished_at().map(|f| (f - from).num_seconds())
        })
        .collect();
    let finished = succeeded + failed;
    let mut by_status = BTreeMap::new();
    for d in deployments {
        *by_status.entry(d.status().as_str()).or_insert(0u32) += 1;
    }
    json!({
        "service": service,
        "environment": environment,
        "days": days,
        "deployments": deployments.len(),
        "by_status": by_status,
        "deployment_frequency_per_day": round2(succeeded as f64 / f64::from(days)),
        "lead_time_seconds": { "median": median(&lead), "samples": lead.len() },
        "change_failure_rate": if finished == 0 { Value::Null } else { json!(round2(failed as f64 / finished as f64)) },
        "time_to_restore_seconds": { "median": median(&restore), "samples": restore.len() },
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn median(values: &[i64]) -> Option<i64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let mid = sorted.len() / 2;
    Some(if sorted.len().is_multiple_of(2) {
        (sorted[mid - 1] + sorted[mid]) / 2
    } else {
        sorted[mid]
    })
}

/// Builds the request from an API Gateway HTTP API (payload v2) event as `lambda_http` gives it.
#[cfg(feature = "api")]
pub fn from_http(request: &lambda_http::Request) -> Result<ApiRequest, ApiResponse> {
    use lambda_http::{Body, RequestExt, request::RequestContext};
    let body = match request.body() {
        Body::Empty => None,
        Body::Text(t) => Some(t.clone()),
        Body::Binary(b) => {
            Some(String::from_utf8(b.clone()).map_err(|_| invalid("body", "must be UTF-8 JSON"))?)
        }
        _ => None,
    };
    let (caller, account) = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => {
            let iam = ctx.authorizer.as_ref().and_then(|a| a.iam.as_ref());
            (
                iam.and_then(|i| i.user_arn.clone())
                    .filter(|a| !a.is_empty()),
                ctx.account_id.clone(),
            )
        }
        _ => (None, None),
    };
    let query = request
        .query_string_parameters_ref()
        .map(|q| {
            q.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    Ok(ApiRequest {
        method: request.method().as_str().to_string(),
        path: request.raw_http_path().to_string(),
        query,
        idempotency_key: request
            .headers()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body,
        caller,
        account,
    })
}

/// The HTTP response for API Gateway.
#[cfg(feature = "api")]
pub fn to_http(response: &ApiResponse) -> lambda_http::Response<lambda_http::Body> {
    let mut builder = lambda_http::Response::builder()
        .status(response.status)
        .header("content-type", "application/json");
    if let Some(allow) = response.allow {
        builder = builder.header("allow", allow);
    }
    builder
        .body(lambda_http::Body::Text(response.body.to_string()))
        .unwrap_or_else(|_| lambda_http::Response::new(lambda_http::Body::Empty))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_their_methods() {
        assert!(matches!(
            route("/deployments/d-1/approve"),
            Some((Route::Action(_, "approve"), "POST"))
        ));
        assert!(route("/deployments/d-1/explode").is_none());
        assert!(route("/nope").is_none());
        assert!(matches!(
            route("/services/a/b"),
            Some((Route::Service("a", "b"), "GET, PUT"))
        ));
    }

    #[test]
    fn medians_of_even_and_odd_counts() {
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[5, 1, 3]), Some(3));
        assert_eq!(median(&[4, 1, 3, 2]), Some(2));
    }

    #[test]
    fn admins_come_from_a_comma_separated_setting() {
        let config = ApiConfig::from_lookup(|k| match k {
            "FLIGHTDECK_ADMINS" => Some(" arn:aws:iam::1:role/a ,arn:aws:iam::1:user/b,".into()),
            "AWS_REGION" => Some("eu-west-1".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            config.admins,
            ["arn:aws:iam::1:role/a", "arn:aws:iam::1:user/b"]
        );
        assert!(ApiConfig::from_lookup(|_| None).is_err());
    }
}
