//! `/deployments`: listing, reading and starting deployments, and the actions on one
//! (approve, promote, rollback — a revert for the newest SUCCEEDED — abort, override-freeze).

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::authorization::Caller;
use super::documents::deployment_json;
use super::services::find_registration;
use super::{
    Answer, ApiConfig, ApiRequest, ApiResponse, from_handler, invalid, query,
    service_and_environment, upstream, whole_number,
};
use crate::deployment::{Deployment, Status};
use crate::events::valid_digest;
use crate::handlers::{self, create_and_start};
use crate::lifecycle::Fact;
use crate::ports::{Adapters, Clock, DeploymentStore, ImageResolver};
use crate::registration::Registration;

pub(super) async fn list_deployments<P: Adapters>(ports: &P, request: &ApiRequest) -> Answer {
    let (service, environment) =
        service_and_environment(request, "both are required to list deployments")?;
    let status = match query(request, "status") {
        Some(s) => Some(
            parse_status(s)
                .ok_or_else(|| invalid("status", format!("`{s}` is not a deployment status")))?,
        ),
        None => None,
    };
    let limit = whole_number(request, "limit", 1..=100, 20)?;
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

pub(super) async fn get_deployment<P: Adapters>(ports: &P, id: &str) -> Answer {
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
        None => Err(ApiResponse::not_found(format!("deployment {id} not found"))),
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

pub(super) async fn start_deployment<P: Adapters>(
    ports: &P,
    config: &ApiConfig,
    who: Caller<'_>,
    request: &ApiRequest,
) -> Answer {
    let caller = who.principal;
    let text = request
        .body
        .as_deref()
        .ok_or_else(|| invalid("body", "a JSON body is required"))?;
    let body: StartBody = serde_json::from_str(text).map_err(|e| invalid("body", e))?;
    let registration = find_registration(ports, &body.service, &body.environment).await?;
    who.require_role(&registration, "start")?;
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
            .ok_or_else(|| ApiResponse::not_found(format!("no image {repository}:{tag} in ECR")))?;
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

pub(super) async fn act<P: Adapters>(
    ports: &P,
    who: Caller<'_>,
    id: &str,
    action: &str,
    request: &ApiRequest,
) -> Answer {
    let caller = who.principal;
    check_deployment_id(id)?;
    let d = ports
        .store()
        .get(id)
        .await
        .map_err(upstream)?
        .ok_or_else(|| ApiResponse::not_found(format!("deployment {id} not found")))?;
    let registration = find_registration(ports, &d.service, &d.environment).await?;
    who.require_role(&registration, action)?;
    let by = caller.to_string();
    // Boxed: each starts a deployment, whose future is large; kept off the caller's stack.
    if action == "rollback" && d.status() == Status::Succeeded {
        return Box::pin(revert(ports, &registration, &d, caller)).await;
    }
    if action == "override-freeze" {
        return Box::pin(override_freeze(ports, who, &d, request)).await;
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
        None => Err(ApiResponse::not_found(format!("deployment {id} not found"))),
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
    who: Caller<'_>,
    d: &Deployment,
    request: &ApiRequest,
) -> Answer {
    who.require_admin("override a change freeze")?;
    let caller = who.principal;
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
