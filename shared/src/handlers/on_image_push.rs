//! `on-image-push`: an ECR push becomes one deployment per matching registration, started with
//! the rolling engine. A redelivered event finds its deployments already there and does nothing.

use serde_json::Value;
use tracing::{info, warn};

use super::{HandlerError, Outcome, Ports};
use crate::deployment::{Deployment, ImagePush, Status};
use crate::events::{self, ECR_IMAGE_ACTION, EcrImageAction, EventError};
use crate::lifecycle::Fact;
use crate::ports::{Clock, Created, DeploymentStore, EcsControl, Notifier};
use crate::registration::Registration;

pub async fn handle<S, E, N, C>(
    ports: &Ports<S, E, N, C>,
    event: Value,
) -> Result<Outcome, HandlerError>
where
    S: DeploymentStore,
    E: EcsControl,
    N: Notifier,
    C: Clock,
{
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

    let registrations = ports.store.registrations().await?;
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
        match start(ports, registration, &push).await {
            Ok(d) => {
                info!(event_id, deployment_id = %d.id, status = %d.status, service = %d.service,
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

/// Creates the deployment (once per push, service and environment) and starts its rollout.
async fn start<S, E, N, C>(
    ports: &Ports<S, E, N, C>,
    registration: &Registration,
    push: &ImagePush,
) -> Result<Deployment, HandlerError>
where
    S: DeploymentStore,
    E: EcsControl,
    N: Notifier,
    C: Clock,
{
    let deployment = Deployment::from_push(registration, push, ports.clock.now());
    let id = deployment.id.clone();
    if ports.store.create(&deployment).await? == Created::AlreadyExists {
        // A redelivery, or a concurrent delivery that is starting it right now: either way the
        // deployment is someone else's to start. Finish only what an earlier run left undone.
        info!(event_id = %push.event_id, deployment_id = %id, "deployment exists already; nothing to start");
        return match ports.apply(&id, &Fact::Tick).await? {
            Some(d) => Ok(d),
            None => Ok(deployment),
        };
    }

    // One active deployment per service and environment: a newer push supersedes older ones.
    // The rollback target stays the revision that was serving before any of them.
    let mut stable_revision = None;
    for other in ports
        .store
        .active(&registration.service, &registration.environment)
        .await?
    {
        if other == id {
            continue;
        }
        if let Some(old) = ports.store.get(&other).await? {
            if old.status == Status::RollingBack {
                continue;
            }
            stable_revision = stable_revision.or(old.rollout.previous_task_definition.clone());
        }
        ports
            .apply(&other, &Fact::Superseded { by: id.clone() })
            .await?;
    }

    let rollout = &deployment.rollout;
    let started = async {
        let service = ports
            .ecs
            .service(&rollout.cluster, &rollout.ecs_service)
            .await?;
        let new_task_definition = ports
            .ecs
            .register_revision(
                &service.task_definition,
                &rollout.container,
                &deployment.image,
            )
            .await?;
        let ecs_deployment_id = ports
            .ecs
            .update_service(&rollout.cluster, &rollout.ecs_service, &new_task_definition)
            .await?;
        Ok::<_, crate::ports::PortError>(Fact::RolloutStarted {
            previous_task_definition: stable_revision.unwrap_or(service.task_definition),
            new_task_definition,
            ecs_deployment_id,
            desired_count: service.desired_count,
        })
    }
    .await;
    let fact = match started {
        Ok(fact) => fact,
        Err(e) => Fact::StartFailed {
            reason: format!("the rollout could not be started: {e}"),
        },
    };
    let d = ports.apply(&id, &fact).await?;
    Ok(d.unwrap_or(deployment))
}
