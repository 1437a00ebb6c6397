//! The rolling engine's ECS calls: read the service, register the new revision, point the service
//! at a task definition.

use aws_sdk_ecs::Client;
use aws_sdk_ecs::config::retry::RetryConfig;
use aws_sdk_ecs::error::DisplayErrorContext;
use aws_sdk_ecs::operation::describe_services::DescribeServicesError;
use aws_sdk_ecs::types::{
    CanaryConfiguration, DeploymentConfiguration, DeploymentStrategy, DesiredStatus,
    LinearConfiguration, ServiceField, SortOrder, StopServiceDeploymentStopType, Tag,
    TaskDefinitionField, TaskDefinitionStatus,
};

use crate::native::NativeStrategy;
use crate::ports::{
    EcsControl, EcsService, PortError, PortResult, ServiceDeployment, ServiceDeploymentView,
    StoppedTaskView, Tags,
};
use crate::stop_reason::{StopReason, StoppedTask};

/// The tag that names the deployment a revision was registered for.
pub const DEPLOYMENT_TAG: &str = "flightdeck:deployment";

/// How many of a family's newest revisions a retried registration looks at for its own.
const LOOK_BACK: i32 = 20;

/// `(family, revision)` of a task-definition ARN (`…:task-definition/FAMILY:REVISION`).
fn revision_of(arn: &str) -> Option<(&str, i32)> {
    let (rest, revision) = arn.rsplit_once(':')?;
    let family = rest.rsplit_once('/').map_or(rest, |(_, f)| f);
    Some((family, revision.parse().ok()?))
}

fn registered_for(tags: Option<&[Tag]>, deployment_id: &str) -> bool {
    tags.unwrap_or_default()
        .iter()
        .any(|t| t.key() == Some(DEPLOYMENT_TAG) && t.value() == Some(deployment_id))
}

#[derive(Clone, Debug)]
pub struct EcsClient {
    client: Client,
}

impl EcsClient {
    pub fn new(client: Client) -> Self {
        EcsClient { client }
    }

    /// The revision of `family` newer than `base` registered for `deployment_id`, newest first;
    /// looks at the most recent `LOOK_BACK` revisions at most.
    async fn registered_since(
        &self,
        family: &str,
        base: i32,
        deployment_id: &str,
    ) -> PortResult<Option<String>> {
        let listed = self
            .client
            .list_task_definitions()
            .family_prefix(family)
            .status(TaskDefinitionStatus::Active)
            .sort(SortOrder::Desc)
            .max_results(LOOK_BACK)
            .send()
            .await
            .map_err(|e| PortError::remote("ECS ListTaskDefinitions", DisplayErrorContext(e)))?;
        let newer = listed.task_definition_arns().iter().filter(|arn| {
            revision_of(arn).is_some_and(|(f, revision)| f == family && revision > base)
        });
        for arn in newer {
            let described = self
                .client
                .describe_task_definition()
                .task_definition(arn)
                .include(TaskDefinitionField::Tags)
                .send()
                .await
                .map_err(|e| {
                    PortError::remote("ECS DescribeTaskDefinition", DisplayErrorContext(e))
                })?;
            if registered_for(described.tags.as_deref(), deployment_id) {
                return Ok(Some(arn.clone()));
            }
        }
        Ok(None)
    }
}

impl EcsClient {
    /// DescribeServices of one service (with its tags when `tags`): the active one, or `None`
    /// when the cluster has none by that name (ECS lists it under `failures`, or as INACTIVE).
    async fn active(
        &self,
        cluster: &str,
        service: &str,
        tags: bool,
    ) -> PortResult<Option<aws_sdk_ecs::types::Service>> {
        let mut call = self
            .client
            .describe_services()
            .cluster(cluster)
            .services(service);
        if tags {
            call = call.include(ServiceField::Tags);
        }
        let out = match call.send().await {
            Ok(out) => out,
            // No such cluster: no such service either.
            Err(e)
                if e.as_service_error().is_some_and(|s| {
                    matches!(s, DescribeServicesError::ClusterNotFoundException(_))
                }) =>
            {
                return Ok(None);
            }
            Err(e) => {
                return Err(PortError::remote(
                    "ECS DescribeServices",
                    DisplayErrorContext(e),
                ));
            }
        };
        Ok(out
            .services
            .unwrap_or_default()
            .into_iter()
            .find(|s| s.status.as_deref() != Some("INACTIVE")))
    }
}

impl EcsControl for EcsClient {
    async fn service_tags(&self, cluster: &str, service: &str) -> PortResult<Tags> {
        Ok(self.active(cluster, service, true).await?.map(|found| {
            found
                .tags()
                .iter()
                .filter_map(|t| Some((t.key.clone()?, t.value.clone().unwrap_or_default())))
                .collect()
        }))
    }

    async fn service(&self, cluster: &str, service: &str) -> PortResult<EcsService> {
        const OP: &str = "ECS DescribeServices";
        let found = self.active(cluster, service, false).await?.ok_or_else(|| {
            PortError::remote(
                OP,
                format!("service {service} in cluster {cluster} not found"),
            )
        })?;
        let task_definition = found.task_definition.clone().ok_or_else(|| {
            PortError::remote(OP, format!("service {service} has no task definition"))
        })?;
        let count = |n: i32| u32::try_from(n).unwrap_or(0);
        let deployments = found
            .deployments
            .iter()
            .flatten()
            .filter_map(|d| {
                d.task_definition.clone().map(|td| ServiceDeployment {
                    task_definition: td,
                    running: count(d.running_count),
                    completed: d
                        .rollout_state
                        .as_ref()
                        .is_none_or(|s| s.as_str() == "COMPLETED"),
                })
            })
            .collect();
        Ok(EcsService {
            task_definition,
            desired_count: count(found.desired_count),
            running_count: count(found.running_count),
            deployments,
            current_service_deployment: found.current_service_deployment.clone(),
            production_listener_rule: found
                .load_balancers
                .iter()
                .flatten()
                .find_map(|lb| lb.advanced_configuration.as_ref())
                .and_then(|a| a.production_listener_rule.clone()),
        })
    }

    async fn update_service_native(
        &self,
        cluster: &str,
        service: &str,
        task_definition: &str,
        strategy: &NativeStrategy,
    ) -> PortResult<Option<String>> {
        const OP: &str = "ECS UpdateService";
        // The deployment configuration is sent whole: read it first so that the service's
        // lifecycle hooks, alarms and circuit breaker stay as they are.
        let current = self
            .active(cluster, service, false)
            .await?
            .ok_or_else(|| {
                PortError::remote(
                    "ECS DescribeServices",
                    format!("service {service} in cluster {cluster} not found"),
                )
            })?
            .deployment_configuration;
        let out = self
            .client
            .update_service()
            .cluster(cluster)
            .service(service)
            .task_definition(task_definition)
            .deployment_configuration(native_configuration(current, strategy))
            .send()
            .await
            .map_err(|e| PortError::remote(OP, DisplayErrorContext(e)))?;
        Ok(out.service.and_then(|s| s.current_service_deployment))
    }

    async fn service_deployment(&self, arn: &str) -> PortResult<Option<ServiceDeploymentView>> {
        let out = self
            .client
            .describe_service_deployments()
            .service_deployment_arns(arn)
            .send()
            .await
            .map_err(|e| {
                PortError::remote("ECS DescribeServiceDeployments", DisplayErrorContext(e))
            })?;
        let count = |n: i32| u32::try_from(n).unwrap_or(0);
        let percent = |w: Option<f64>| {
            w.filter(|w| w.is_finite())
                .map(|w| w.clamp(0.0, 100.0).round() as u8)
        };
        Ok(out
            .service_deployments()
            .iter()
            .find(|sd| sd.service_deployment_arn.as_deref() == Some(arn))
            .map(|sd| ServiceDeploymentView {
                arn: arn.to_string(),
                status: sd
                    .status
                    .as_ref()
                    .map_or("PENDING", |s| s.as_str())
                    .to_string(),
                stage: sd.lifecycle_stage.as_ref().map(|s| s.as_str().to_string()),
                target_revision_arn: sd
                    .target_service_revision
                    .as_ref()
                    .and_then(|r| r.arn.clone()),
                source_revision_arns: sd
                    .source_service_revisions()
                    .iter()
                    .filter_map(|r| r.arn.clone())
                    .collect(),
                target_desired: sd
                    .target_service_revision
                    .as_ref()
                    .map_or(0, |r| count(r.requested_task_count)),
                production_percent: percent(
                    sd.target_service_revision
                        .as_ref()
                        .and_then(|r| r.requested_production_traffic_weight),
                ),
                status_reason: sd.status_reason.clone(),
                rollback_reason: sd.rollback.as_ref().and_then(|r| r.reason.clone()),
            }))
    }

    async fn revision_task_definitions(
        &self,
        revision_arns: &[String],
    ) -> PortResult<Vec<(String, String)>> {
        if revision_arns.is_empty() {
            return Ok(Vec::new());
        }
        let out = self
            .client
            .describe_service_revisions()
            .set_service_revision_arns(Some(revision_arns.to_vec()))
            .send()
            .await
            .map_err(|e| {
                PortError::remote("ECS DescribeServiceRevisions", DisplayErrorContext(e))
            })?;
        Ok(out
            .service_revisions()
            .iter()
            .filter_map(|r| Some((r.service_revision_arn.clone()?, r.task_definition.clone()?)))
            .collect())
    }

    async fn stop_service_deployment(&self, arn: &str) -> PortResult<()> {
        self.client
            .stop_service_deployment()
            .service_deployment_arn(arn)
            .stop_type(StopServiceDeploymentStopType::Rollback)
            .send()
            .await
            .map_err(|e| PortError::remote("ECS StopServiceDeployment", DisplayErrorContext(e)))?;
        Ok(())
    }

    async fn image_of(&self, task_definition: &str, container: &str) -> PortResult<Option<String>> {
        let out = self
            .client
            .describe_task_definition()
            .task_definition(task_definition)
            .send()
            .await
            .map_err(|e| PortError::remote("ECS DescribeTaskDefinition", DisplayErrorContext(e)))?;
        Ok(out.task_definition.and_then(|td| {
            td.container_definitions
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.name.as_deref() == Some(container))
                .and_then(|c| c.image)
        }))
    }

    async fn register_revision(
        &self,
        task_definition: &str,
        container: &str,
        image: &str,
        deployment_id: &str,
        retry: bool,
    ) -> PortResult<String> {
        let described = self
            .client
            .describe_task_definition()
            .task_definition(task_definition)
            .include(TaskDefinitionField::Tags)
            .send()
            .await
            .map_err(|e| PortError::remote("ECS DescribeTaskDefinition", DisplayErrorContext(e)))?;
        let td = described.task_definition.ok_or_else(|| {
            PortError::remote(
                "ECS DescribeTaskDefinition",
                format!("{task_definition} not found"),
            )
        })?;
        // An earlier attempt may have registered the revision and lost the answer: one of the
        // family's revisions newer than the one it copies carries the deployment's tag then.
        if retry
            && let (Some(family), base) = (td.family.as_deref(), td.revision)
            && let Some(arn) = self.registered_since(family, base, deployment_id).await?
        {
            return Ok(arn);
        }
        let mut tags: Vec<Tag> = described
            .tags
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.key() != Some(DEPLOYMENT_TAG))
            .collect();
        tags.push(
            Tag::builder()
                .key(DEPLOYMENT_TAG)
                .value(deployment_id)
                .build(),
        );
        let mut containers = td.container_definitions.clone().unwrap_or_default();
        let target = containers
            .iter_mut()
            .find(|c| c.name.as_deref() == Some(container))
            .ok_or_else(|| {
                PortError::remote(
                    "ECS RegisterTaskDefinition",
                    format!("container `{container}` is not in {task_definition}"),
                )
            })?;
        target.image = Some(image.to_string());

        // The new revision differs from the current one only in the chosen container's image.
        let registered = self
            .client
            .register_task_definition()
            .set_family(td.family)
            .set_task_role_arn(td.task_role_arn)
            .set_execution_role_arn(td.execution_role_arn)
            .set_network_mode(td.network_mode)
            .set_container_definitions(Some(containers))
            .set_volumes(td.volumes)
            .set_placement_constraints(td.placement_constraints)
            .set_requires_compatibilities(td.requires_compatibilities)
            .set_cpu(td.cpu)
            .set_memory(td.memory)
            .set_tags(Some(tags))
            .set_pid_mode(td.pid_mode)
            .set_ipc_mode(td.ipc_mode)
            .set_proxy_configuration(td.proxy_configuration)
            .set_ephemeral_storage(td.ephemeral_storage)
            .set_runtime_platform(td.runtime_platform)
            .set_enable_fault_injection(td.enable_fault_injection)
            // Sent once: an SDK retry after an answer lost in transit would register a second
            // revision. The outbox retries, and finds the first (`retry`).
            .customize()
            .config_override(
                aws_sdk_ecs::config::Config::builder().retry_config(RetryConfig::disabled()),
            )
            .send()
            .await
            .map_err(|e| PortError::remote("ECS RegisterTaskDefinition", DisplayErrorContext(e)))?;
        registered
            .task_definition
            .and_then(|t| t.task_definition_arn)
            .ok_or_else(|| {
                PortError::remote(
                    "ECS RegisterTaskDefinition",
                    "no task definition ARN in the response",
                )
            })
    }

    async fn update_service(
        &self,
        cluster: &str,
        service: &str,
        task_definition: &str,
        desired_count: Option<u32>,
    ) -> PortResult<Option<String>> {
        let out = self
            .client
            .update_service()
            .cluster(cluster)
            .service(service)
            .task_definition(task_definition)
            .set_desired_count(desired_count.map(|n| i32::try_from(n).unwrap_or(i32::MAX)))
            .send()
            .await
            .map_err(|e| PortError::remote("ECS UpdateService", DisplayErrorContext(e)))?;
        // The PRIMARY deployment running the requested task definition is the one just started.
        Ok(out.service.and_then(|s| {
            s.deployments
                .unwrap_or_default()
                .into_iter()
                .find(|d| {
                    d.status.as_deref() == Some("PRIMARY")
                        && d.task_definition.as_deref() == Some(task_definition)
                })
                .and_then(|d| d.id)
        }))
    }

    async fn stopped_tasks(
        &self,
        cluster: &str,
        service: &str,
    ) -> PortResult<Vec<StoppedTaskView>> {
        let listed = self
            .client
            .list_tasks()
            .cluster(cluster)
            .service_name(service)
            .desired_status(DesiredStatus::Stopped)
            .max_results(100)
            .send()
            .await
            .map_err(|e| PortError::remote("ECS ListTasks", DisplayErrorContext(e)))?;
        let arns = listed.task_arns.unwrap_or_default();
        if arns.is_empty() {
            return Ok(Vec::new());
        }
        let described = self
            .client
            .describe_tasks()
            .cluster(cluster)
            .set_tasks(Some(arns))
            .send()
            .await
            .map_err(|e| PortError::remote("ECS DescribeTasks", DisplayErrorContext(e)))?;
        Ok(described
            .tasks
            .unwrap_or_default()
            .into_iter()
            .filter(|t| t.last_status.as_deref() == Some("STOPPED"))
            .filter_map(|t| {
                let containers: Vec<(&str, Option<i32>, Option<&str>)> = t
                    .containers()
                    .iter()
                    .map(|c| (c.name().unwrap_or_default(), c.exit_code, c.reason()))
                    .collect();
                let stop = StopReason::classify(&StoppedTask {
                    stop_code: t.stop_code.as_ref().map(|c| c.as_str()),
                    stopped_reason: t.stopped_reason.as_deref(),
                    containers: &containers,
                });
                Some(StoppedTaskView {
                    task_arn: t.task_arn.clone()?,
                    task_definition_arn: t.task_definition_arn.clone()?,
                    stop,
                })
            })
            .collect())
    }

    async fn scale(&self, cluster: &str, service: &str, desired_count: u32) -> PortResult<()> {
        self.client
            .update_service()
            .cluster(cluster)
            .service(service)
            .desired_count(i32::try_from(desired_count).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| PortError::remote("ECS UpdateService", DisplayErrorContext(e)))?;
        Ok(())
    }
}

/// The service's deployment configuration with ECS's own `strategy` in it; everything else
/// (lifecycle hooks, alarms, circuit breaker, percentages) as the service has it.
fn native_configuration(
    current: Option<DeploymentConfiguration>,
    strategy: &NativeStrategy,
) -> DeploymentConfiguration {
    let minutes = |m: u32| i32::try_from(m).unwrap_or(i32::MAX);
    let builder = current
        .map(|c| {
            DeploymentConfiguration::builder()
                .set_deployment_circuit_breaker(c.deployment_circuit_breaker)
                .set_maximum_percent(c.maximum_percent)
                .set_minimum_healthy_percent(c.minimum_healthy_percent)
                .set_alarms(c.alarms)
                .set_lifecycle_hooks(c.lifecycle_hooks)
                .set_early_success_criteria(c.early_success_criteria)
        })
        .unwrap_or_else(DeploymentConfiguration::builder);
    match strategy {
        NativeStrategy::BlueGreen { bake_minutes } => builder
            .strategy(DeploymentStrategy::BlueGreen)
            .bake_time_in_minutes(minutes(*bake_minutes)),
        NativeStrategy::Linear {
            step_percent,
            step_bake_minutes,
        } => builder
            .strategy(DeploymentStrategy::Linear)
            .linear_configuration(
                LinearConfiguration::builder()
                    .step_percent(f64::from(*step_percent))
                    .step_bake_time_in_minutes(minutes(*step_bake_minutes))
                    .build(),
            ),
        NativeStrategy::Canary {
            canary_percent,
            canary_bake_minutes,
        } => builder
            .strategy(DeploymentStrategy::Canary)
            .canary_configuration(
                CanaryConfiguration::builder()
                    .canary_percent(f64::from(*canary_percent))
                    .canary_bake_time_in_minutes(minutes(*canary_bake_minutes))
                    .build(),
            ),
    }
    .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_ecs::operation::describe_task_definition::DescribeTaskDefinitionOutput;
    use aws_sdk_ecs::operation::register_task_definition::RegisterTaskDefinitionOutput;
    use aws_sdk_ecs::operation::update_service::UpdateServiceOutput;
    use aws_sdk_ecs::types::{ContainerDefinition, Deployment, Service, TaskDefinition};
    use aws_smithy_mocks::{mock, mock_client};

    const NEW_IMAGE: &str = "1.dkr.ecr.eu-west-1.amazonaws.com/api@sha256:abc";

    fn current() -> TaskDefinition {
        TaskDefinition::builder()
            .family("api")
            .revision(1)
            .task_role_arn("arn:aws:iam::1:role/api-task")
            .cpu("256")
            .memory("512")
            .container_definitions(
                ContainerDefinition::builder()
                    .name("app")
                    .image("api:v1")
                    .memory(512)
                    .build(),
            )
            .container_definitions(
                ContainerDefinition::builder()
                    .name("envoy")
                    .image("envoy:1.30")
                    .build(),
            )
            .build()
    }

    fn describe_rule() -> aws_smithy_mocks::Rule {
        mock!(Client::describe_task_definition).then_output(|| {
            DescribeTaskDefinitionOutput::builder()
                .task_definition(current())
                .build()
        })
    }

    #[tokio::test]
    async fn the_new_revision_differs_only_in_the_chosen_containers_image() {
        let describe = describe_rule();
        let register = mock!(Client::register_task_definition)
            .match_requests(|r| {
                let containers = r.container_definitions();
                r.family() == Some("api")
                    && r.task_role_arn() == Some("arn:aws:iam::1:role/api-task")
                    && r.cpu() == Some("256")
                    && containers.len() == 2
                    && containers[0].image() == Some(NEW_IMAGE)
                    && containers[0].memory() == Some(512)
                    && containers[1].image() == Some("envoy:1.30")
                    && r.tags().len() == 1
                    && r.tags()[0].key() == Some(DEPLOYMENT_TAG)
                    && r.tags()[0].value() == Some("d-1")
            })
            .then_output(|| {
                RegisterTaskDefinitionOutput::builder()
                    .task_definition(
                        TaskDefinition::builder()
                            .task_definition_arn("arn:td/api:2")
                            .build(),
                    )
                    .build()
            });
        let ecs = EcsClient::new(mock_client!(
            aws_sdk_ecs,
            aws_smithy_mocks::RuleMode::MatchAny,
            [&describe, &register]
        ));
        let arn = ecs
            .register_revision("arn:td/api:1", "app", NEW_IMAGE, "d-1", false)
            .await
            .unwrap();
        assert_eq!(arn, "arn:td/api:2");
        assert_eq!(register.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_retry_finds_the_revision_it_registered_behind_another_environments() {
        use aws_sdk_ecs::operation::list_task_definitions::ListTaskDefinitionsOutput;
        let current = mock!(Client::describe_task_definition)
            .match_requests(|r| r.task_definition() == Some("arn:td/api:1"))
            .then_output(|| {
                DescribeTaskDefinitionOutput::builder()
                    .task_definition(current())
                    .build()
            });
        // Newest first: production's revision (3) came after the one this deployment registered
        // (2) whose answer was lost; "api-worker" shares the prefix, not the family.
        let list = mock!(Client::list_task_definitions)
            .match_requests(|r| {
                r.family_prefix() == Some("api") && r.sort() == Some(&SortOrder::Desc)
            })
            .then_output(|| {
                ListTaskDefinitionsOutput::builder()
                    .task_definition_arns("arn:td/api-worker:9")
                    .task_definition_arns("arn:td/api:3")
                    .task_definition_arns("arn:td/api:2")
                    .task_definition_arns("arn:td/api:1")
                    .build()
            });
        let tagged = |arn: &'static str, deployment: &'static str| {
            mock!(Client::describe_task_definition)
                .match_requests(move |r| r.task_definition() == Some(arn))
                .then_output(move || {
                    DescribeTaskDefinitionOutput::builder()
                        .tags(Tag::builder().key(DEPLOYMENT_TAG).value(deployment).build())
                        .build()
                })
        };
        let (other, ours, worker) = (
            tagged("arn:td/api:3", "d-2"),
            tagged("arn:td/api:2", "d-1"),
            tagged("arn:td/api-worker:9", "d-1"),
        );
        let register = mock!(Client::register_task_definition)
            .then_output(|| RegisterTaskDefinitionOutput::builder().build());
        let ecs = EcsClient::new(mock_client!(
            aws_sdk_ecs,
            aws_smithy_mocks::RuleMode::MatchAny,
            [&current, &list, &other, &ours, &worker, &register]
        ));
        let arn = ecs
            .register_revision("arn:td/api:1", "app", NEW_IMAGE, "d-1", true)
            .await
            .unwrap();
        assert_eq!(arn, "arn:td/api:2");
        assert_eq!(register.num_calls(), 0, "nothing registered a second time");
        assert_eq!(worker.num_calls(), 0, "another family is never looked at");
        // A first attempt cannot have registered anything: it lists nothing.
        let list_calls = list.num_calls();
        let _ = ecs
            .register_revision("arn:td/api:1", "app", NEW_IMAGE, "d-1", false)
            .await;
        assert_eq!(list.num_calls(), list_calls);
        assert_eq!(register.num_calls(), 1);
    }

    #[tokio::test]
    async fn stopped_tasks_come_back_classified_as_a_task_event_would_be() {
        use aws_sdk_ecs::operation::describe_tasks::DescribeTasksOutput;
        use aws_sdk_ecs::operation::list_tasks::ListTasksOutput;
        use aws_sdk_ecs::types::{Container, Task, TaskStopCode};
        let list = mock!(Client::list_tasks)
            .match_requests(|r| {
                r.service_name() == Some("api")
                    && r.desired_status() == Some(&DesiredStatus::Stopped)
            })
            .then_output(|| ListTasksOutput::builder().task_arns("arn:task/c/1").build());
        let describe = mock!(Client::describe_tasks).then_output(|| {
            DescribeTasksOutput::builder()
                .tasks(
                    Task::builder()
                        .task_arn("arn:task/c/1")
                        .task_definition_arn("arn:td/api:2")
                        .last_status("STOPPED")
                        .stop_code(TaskStopCode::EssentialContainerExited)
                        .stopped_reason("Essential container in task exited")
                        .containers(
                            Container::builder()
                                .name("app")
                                .exit_code(137)
                                .reason("OutOfMemoryError: Container killed due to memory usage")
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
        let ecs = EcsClient::new(mock_client!(
            aws_sdk_ecs,
            aws_smithy_mocks::RuleMode::MatchAny,
            [&list, &describe]
        ));
        let stopped = ecs.stopped_tasks("c", "api").await.unwrap();
        assert_eq!(stopped.len(), 1);
        assert_eq!(stopped[0].task_definition_arn, "arn:td/api:2");
        assert!(
            matches!(stopped[0].stop, StopReason::OutOfMemory { .. }),
            "{:?}",
            stopped[0].stop
        );
    }

    #[tokio::test]
    async fn a_container_missing_from_the_task_definition_is_named() {
        let describe = describe_rule();
        let ecs = EcsClient::new(mock_client!(
            aws_sdk_ecs,
            aws_smithy_mocks::RuleMode::MatchAny,
            [&describe]
        ));
        let err = ecs
            .register_revision("arn:td/api:1", "web", NEW_IMAGE, "d-1", false)
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("container `web` is not in arn:td/api:1"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn update_service_returns_the_primary_deployment_of_the_new_revision() {
        let update = mock!(Client::update_service).then_output(|| {
            UpdateServiceOutput::builder()
                .service(
                    Service::builder()
                        .deployments(
                            Deployment::builder()
                                .id("ecs-svc/1")
                                .status("ACTIVE")
                                .task_definition("arn:td/api:1")
                                .build(),
                        )
                        .deployments(
                            Deployment::builder()
                                .id("ecs-svc/2")
                                .status("PRIMARY")
                                .task_definition("arn:td/api:2")
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
        let ecs = EcsClient::new(mock_client!(
            aws_sdk_ecs,
            aws_smithy_mocks::RuleMode::MatchAny,
            [&update]
        ));
        assert_eq!(
            ecs.update_service("c", "api", "arn:td/api:2", None)
                .await
                .unwrap()
                .as_deref(),
            Some("ecs-svc/2")
        );
        // An ECS that does not list the new revision as PRIMARY gives no id (the emulator does this).
        assert_eq!(
            ecs.update_service("c", "api", "arn:td/api:3", None)
                .await
                .unwrap(),
            None
        );
    }

    #[tokio::test]
    async fn a_native_rollout_sets_ecs_own_strategy_and_keeps_the_services_lifecycle_hooks() {
        use aws_sdk_ecs::operation::describe_services::DescribeServicesOutput;
        use aws_sdk_ecs::types::{DeploymentCircuitBreaker, DeploymentLifecycleHook};
        let hook = DeploymentLifecycleHook::builder()
            .hook_target_arn("arn:aws:lambda:eu-west-1:1:function:ecs-hook")
            .role_arn("arn:aws:iam::1:role/hook")
            .build();
        let configured = DeploymentConfiguration::builder()
            .lifecycle_hooks(hook.clone())
            .deployment_circuit_breaker(
                DeploymentCircuitBreaker::builder()
                    .enable(true)
                    .rollback(true)
                    .build(),
            )
            .build();
        let describe = mock!(Client::describe_services).then_output(move || {
            DescribeServicesOutput::builder()
                .services(
                    Service::builder()
                        .service_name("api")
                        .status("ACTIVE")
                        .deployment_configuration(configured.clone())
                        .build(),
                )
                .build()
        });
        let update = mock!(Client::update_service)
            .match_requests(move |r| {
                let c = r.deployment_configuration();
                r.task_definition() == Some("arn:td/api:2")
                    && c.and_then(|c| c.strategy()) == Some(&DeploymentStrategy::Canary)
                    && c.and_then(|c| c.canary_configuration()).is_some_and(|k| {
                        k.canary_percent() == Some(10.0)
                            && k.canary_bake_time_in_minutes() == Some(5)
                    })
                    && c.map(|c| c.lifecycle_hooks()) == Some(std::slice::from_ref(&hook))
                    && c.and_then(|c| c.deployment_circuit_breaker())
                        .is_some_and(|b| b.rollback())
            })
            .then_output(|| {
                UpdateServiceOutput::builder()
                    .service(
                        Service::builder()
                            .current_service_deployment("arn:sd/c/api/1")
                            .build(),
                    )
                    .build()
            });
        let ecs = EcsClient::new(mock_client!(
            aws_sdk_ecs,
            aws_smithy_mocks::RuleMode::MatchAny,
            [&describe, &update]
        ));
        let strategy = NativeStrategy::Canary {
            canary_percent: 10,
            canary_bake_minutes: 5,
        };
        let started = ecs
            .update_service_native("c", "api", "arn:td/api:2", &strategy)
            .await
            .unwrap();
        assert_eq!(started.as_deref(), Some("arn:sd/c/api/1"));
        assert_eq!(update.num_calls(), 1, "the request kept the hooks");
    }

    #[tokio::test]
    async fn a_service_deployment_is_read_with_its_stage_weight_and_rollback_reason() {
        use aws_sdk_ecs::operation::describe_service_deployments::DescribeServiceDeploymentsOutput;
        use aws_sdk_ecs::types::{
            Rollback, ServiceDeployment as SdkServiceDeployment, ServiceDeploymentLifecycleStage,
            ServiceDeploymentStatus, ServiceRevisionSummary,
        };
        let describe = mock!(Client::describe_service_deployments).then_output(|| {
            DescribeServiceDeploymentsOutput::builder()
                .service_deployments(
                    SdkServiceDeployment::builder()
                        .service_deployment_arn("arn:sd/c/api/1")
                        .status(ServiceDeploymentStatus::RollbackSuccessful)
                        .lifecycle_stage(ServiceDeploymentLifecycleStage::from(
                            "PRE_PRODUCTION_TRAFFIC_SHIFT",
                        ))
                        .target_service_revision(
                            ServiceRevisionSummary::builder()
                                .arn("arn:rev/c/api/2")
                                .requested_task_count(4)
                                .requested_production_traffic_weight(37.4)
                                .build(),
                        )
                        .source_service_revisions(
                            ServiceRevisionSummary::builder()
                                .arn("arn:rev/c/api/1")
                                .build(),
                        )
                        .rollback(
                            Rollback::builder()
                                .reason("alarm checkout-api-5xx in ALARM")
                                .build(),
                        )
                        .build(),
                )
                .build()
        });
        let ecs = EcsClient::new(mock_client!(
            aws_sdk_ecs,
            aws_smithy_mocks::RuleMode::MatchAny,
            [&describe]
        ));
        let view = ecs
            .service_deployment("arn:sd/c/api/1")
            .await
            .unwrap()
            .expect("found");
        assert_eq!(view.status, "ROLLBACK_SUCCESSFUL");
        assert_eq!(view.stage.as_deref(), Some("PRE_PRODUCTION_TRAFFIC_SHIFT"));
        assert_eq!(view.target_revision_arn.as_deref(), Some("arn:rev/c/api/2"));
        assert_eq!(
            view.source_revision_arns,
            vec!["arn:rev/c/api/1".to_string()]
        );
        assert_eq!(
            (view.target_desired, view.production_percent),
            (4, Some(37))
        );
        assert_eq!(
            view.rollback_reason.as_deref(),
            Some("alarm checkout-api-5xx in ALARM")
        );
        assert_eq!(
            ecs.service_deployment("arn:sd/c/api/9").await.unwrap(),
            None,
            "one ECS does not list is unknown, not an error"
        );
    }

    #[tokio::test]
    async fn a_rollback_stops_the_service_deployment_with_stop_type_rollback() {
        use aws_sdk_ecs::operation::stop_service_deployment::StopServiceDeploymentOutput;
        let stop = mock!(Client::stop_service_deployment)
            .match_requests(|r| {
                r.service_deployment_arn() == Some("arn:sd/c/api/1")
                    && r.stop_type() == Some(&StopServiceDeploymentStopType::Rollback)
            })
            .then_output(|| StopServiceDeploymentOutput::builder().build());
        let ecs = EcsClient::new(mock_client!(
            aws_sdk_ecs,
            aws_smithy_mocks::RuleMode::MatchAny,
            [&stop]
        ));
        ecs.stop_service_deployment("arn:sd/c/api/1").await.unwrap();
        assert_eq!(stop.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_services_tags_are_read_with_describe_services_and_a_missing_one_is_none() {
        use aws_sdk_ecs::operation::describe_services::DescribeServicesOutput;
        let tagged = mock!(Client::describe_services)
            .match_requests(|r| r.services() == ["api"] && r.include() == [ServiceField::Tags])
            .then_output(|| {
                DescribeServicesOutput::builder()
                    .services(
                        Service::builder()
                            .service_name("api")
                            .status("ACTIVE")
                            .tags(
                                Tag::builder()
                                    .key("flightdeck:managed")
                                    .value("true")
                                    .build(),
                            )
                            .build(),
                    )
                    .build()
            });
        let missing = mock!(Client::describe_services)
            .match_requests(|r| r.services() == ["gone"])
            .then_output(|| {
                DescribeServicesOutput::builder()
                    .services(
                        Service::builder()
                            .service_name("gone")
                            .status("INACTIVE")
                            .build(),
                    )
                    .build()
            });
        let ecs = EcsClient::new(mock_client!(
            aws_sdk_ecs,
            aws_smithy_mocks::RuleMode::MatchAny,
            [&tagged, &missing]
        ));
        assert_eq!(
            ecs.service_tags("c", "api").await.unwrap(),
            Some(vec![("flightdeck:managed".to_string(), "true".to_string())])
        );
        assert_eq!(ecs.service_tags("c", "gone").await.unwrap(), None);
    }

    /// Review: a registration naming a cluster that does not exist (a typo) is a missing
    /// service, refused 422 `not_found` with what to fix, like a missing service in an existing
    /// cluster; DescribeServices answers ClusterNotFoundException for it, which `service_tags`
    /// passes on as a remote error: `PUT /services/...` answers 502 `upstream_failed`, which a
    /// client retries.
    #[tokio::test]
    async fn a_service_in_a_cluster_that_does_not_exist_is_none() {
        use aws_sdk_ecs::operation::describe_services::DescribeServicesError;
        use aws_sdk_ecs::types::error::ClusterNotFoundException;
        let missing = mock!(Client::describe_services).then_error(|| {
            DescribeServicesError::ClusterNotFoundException(
                ClusterNotFoundException::builder()
                    .message("Cluster not found.")
                    .build(),
            )
        });
        let ecs = EcsClient::new(mock_client!(
            aws_sdk_ecs,
            aws_smithy_mocks::RuleMode::MatchAny,
            [&missing]
        ));
        let tags = ecs.service_tags("flightdeck-prdo", "api").await;
        assert!(
            matches!(tags, Ok(None)),
            "a missing cluster is not found, not an upstream failure: {tags:?}"
        );
    }
}
