//! `on-image-push`: an ECR push becomes one deployment per matching registration, started with
//! its engine. A redelivered event finds its deployments already there and does nothing.

use serde_json::Value;
use tracing::{info, warn};

use super::{HandlerError, Outcome, create_and_start};
use crate::deployment::{Deployment, ImagePush};
use crate::events::{self, ECR_IMAGE_ACTION, EcrImageAction, EventError};
use crate::ports::{Adapters, Clock, DeploymentStore};
use crate::registration::{LookupKey, Registration};

pub async fn handle<P: Adapters>(ports: &P, event: Value) -> Result<Outcome, HandlerError> {
    let envelope = events::envelope(event)?;
    let event_id = events::event_id(&envelope).to_string();
    if envelope.detail_type != ECR_IMAGE_ACTION {
        let why = format!(
            "event {event_id}: `{}` is not an ECR image action",
            envelope.detail_type
        );
        warn!(event_id, detail_type = %envelope.detail_type, "skipped: {why}");
        return Ok(Outcome::skipped(why));
    }
    let detail: EcrImageAction = events::detail(&envelope)?;
    let malformed = |message: String| EventError::Malformed {
        id: event_id.clone(),
        detail_type: ECR_IMAGE_ACTION.to_string(),
        message,
    };
    if !detail.is_successful_push() {
        let why = format!(
            "event {event_id}: {} with result {} is not a successful push",
            detail.action_type, detail.result
        );
        info!(event_id, "skipped: {why}");
        return Ok(Outcome::skipped(why));
    }
    if !detail.valid_digest() {
        return Err(malformed(format!(
            "image-digest `{}` is not sha256: and 64 hex characters",
            detail.image_digest
        ))
        .into());
    }
    let (Some(account), Some(region)) = (envelope.account.as_deref(), envelope.region.as_deref())
    else {
        return Err(
            malformed("account and region are needed to name the image".to_string()).into(),
        );
    };
    let push = ImagePush {
        registry: format!("{account}.dkr.ecr.{region}.amazonaws.com"),
        repository: detail.repository_name.clone(),
        digest: detail.image_digest.clone(),
        tag: detail.tag().map(str::to_string),
        event_id: event_id.clone(),
    };

    let key = LookupKey::Repository(push.repository.clone());
    let registrations = ports.store().registrations_by(&key).await?;
    let matching: Vec<&Registration> = registrations
        .iter()
        .filter(|r| r.matches_push(&push.repository, push.tag.as_deref()))
        .collect();
    if matching.is_empty() {
        let why = format!(
            "event {event_id}: no registration matches {}:{}",
            push.repository,
            push.tag.as_deref().unwrap_or("(untagged)")
        );
        info!(event_id, "skipped: {why}");
        return Ok(Outcome::skipped(why));
    }

    let mut outcome = Outcome::default();
    let mut first_error = None;
    for registration in matching {
        let deployment = Deployment::from_push(registration, &push, ports.clock().now());
        match create_and_start(ports, deployment).await {
            Ok(d) => {
                info!(event_id, deployment_id = %d.id, status = %d.status(), service = %d.service,
                      environment = %d.environment, "deployment handled");
                outcome.deployments.push(d);
            }
            Err(e) => {
                warn!(event_id, service = %registration.service, environment = %registration.environment,
                      error = %e, "deployment could not be started");
                first_error.get_or_insert(e);
            }
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(outcome),
    }
}
