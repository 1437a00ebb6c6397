//! `on-image-push`: an ECR push becomes one deployment per matching registration, started with
//! its engine. A redelivered event finds its deployments already there and does nothing.
//! An image's scan result (`ECR Image Scan`, `Inspector2 Scan`) releases the deployments of that
//! image the vulnerability gate holds: the result itself is read from ECR, so a late, repeated
//! or lost scan event changes nothing but how soon they go on.

use serde_json::Value;
use tracing::{info, warn};

use super::{HandlerError, Outcome, create_and_start};
use crate::deployment::{Deployment, Hold, ImagePush};
use crate::events::{
    self, ECR_IMAGE_ACTION, ECR_IMAGE_SCAN, EcrImageAction, EventError, INSPECTOR2_SCAN,
    ImageScanned,
};
use crate::ports::{Adapters, Clock, DeploymentStore};
use crate::registration::{LookupKey, Registration};

pub async fn handle<P: Adapters>(ports: &P, event: Value) -> Result<Outcome, HandlerError> {
    let envelope = events::envelope(event)?;
    let event_id = events::event_id(&envelope).to_string();
    if envelope.detail_type == ECR_IMAGE_SCAN || envelope.detail_type == INSPECTOR2_SCAN {
        let detail: ImageScanned = events::detail(&envelope)?;
        return scanned(ports, &event_id, &detail).await;
    }
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
            // Held for the scan: the image may have been scanned before (a re-tag).
            Ok(d) if matches!(d.hold(), Some(Hold::Scan { .. })) => {
                let d = match release_if_scanned(ports, &d).await {
                    Ok(after) => after,
                    Err(e) => {
                        warn!(event_id, deployment_id = %d.id, error = %e,
                              "scan result unreadable now; the reconcile loop reads it again");
                        d
                    }
                };
                info!(event_id, deployment_id = %d.id, status = %d.status(), "deployment handled");
                outcome.deployments.push(d);
            }
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

/// An image's scan finished: the deployments of that image the vulnerability gate holds read
/// the result and go on (or fail).
async fn scanned<P: Adapters>(
    ports: &P,
    event_id: &str,
    detail: &ImageScanned,
) -> Result<Outcome, HandlerError> {
    if !events::valid_digest(&detail.image_digest) {
        return Err(EventError::Malformed {
            id: event_id.to_string(),
            detail_type: "image scan".to_string(),
            message: format!(
                "image-digest `{}` is not sha256: and 64 hex characters",
                detail.image_digest
            ),
        }
        .into());
    }
    let repository = detail.repository();
    let key = LookupKey::Repository(repository.to_string());
    let mut outcome = Outcome::default();
    for registration in ports.store().registrations_by(&key).await? {
        if registration.spec.repository != repository {
            continue;
        }
        for id in ports
            .store()
            .active(&registration.service, &registration.environment)
            .await?
        {
            let Some(d) = ports.store().get(&id).await? else {
                continue;
            };
            if d.digest != detail.image_digest || !matches!(d.hold(), Some(Hold::Scan { .. })) {
                continue;
            }
            let after = release_if_scanned(ports, &d).await?;
            info!(event_id, deployment_id = %id, status = %after.status(), scan = %detail.scan_status,
                  "scan result applied");
            outcome.deployments.push(after);
        }
    }
    if outcome.deployments.is_empty() {
        let why = format!(
            "event {event_id}: no deployment of {repository}@{} waits for its scan",
            crate::deployment::short_digest(&detail.image_digest)
        );
        info!(event_id, "skipped: {why}");
        outcome.skipped = Some(why);
    }
    Ok(outcome)
}

/// Reads the image's scan for a deployment the gate holds, and starts it once released.
async fn release_if_scanned<P: Adapters>(
    ports: &P,
    d: &Deployment,
) -> Result<Deployment, HandlerError> {
    let after = super::shifter::read_scan(ports, d).await?;
    match after {
        Some(a) if a.status() == crate::deployment::Status::Pending && a.hold().is_none() => {
            super::start(ports, &a.id).await
        }
        Some(a) => Ok(a),
        None => Ok(d.clone()),
    }
}
