//! The rolling engine's ECS calls: read the service, register the new revision, point the service
//! at a task definition.

use aws_sdk_ecs::Client;
use aws_sdk_ecs::error::DisplayErrorContext;
use aws_sdk_ecs::types::TaskDefinitionField;

use crate::ports::{EcsControl, EcsService, PortError, PortResult};

#[derive(Clone, Debug)]
pub struct EcsClient {
    client: Client,
}

impl EcsClient {
    pub fn new(client: Client) -> Self {
        EcsClient { client }
    }
}

impl EcsControl for EcsClient {
    async fn service(&self, cluster: &str, service: &str) -> PortResult<EcsService> {
        const OP: &str = "ECS DescribeServices";
        let out = self
            .client
            .describe_services()
            .cluster(cluster)
            .services(service)
            .send()
            .await
            .map_err(|e| PortError::remote(OP, DisplayErrorContext(e)))?;
        if let Some(failure) = out.failures().first() {
            return Err(PortError::remote(
                OP,
                format!(
                    "service {service} in cluster {cluster}: {}",
                    failure.reason().unwrap_or("not found")
                ),
            ));
        }
        let found = out
            .services()
            .iter()
            .find(|s| s.status.as_deref() != Some("INACTIVE"))
            .ok_or_else(|| {
                PortError::remote(
                    OP,
                    format!("service {service} in cluster {cluster} not found"),
                )
            })?;
        let task_definition = found.task_definition.clone().ok_or_else(|| {
            PortError::remote(OP, format!("service {service} has no task definition"))
        })?;
        Ok(EcsService {
            task_definition,
            desired_count: u32::try_from(found.desired_count).unwrap_or(0),
        })
    }

    async fn register_revision(
        &self,
        task_definition: &str,
        container: &str,
        image: &str,
    ) -> PortResult<String> {
        let described = self
            .client
            .describe_task_definition()
            .task_definition(task_definition)
            .include(TaskDefinitionField::Tags)
            .send()
            .await
            .map_err(|e| PortError::remote("ECS DescribeTaskDefinition", DisplayErrorContext(e)))?;
        let tags = described.tags.clone().filter(|t| !t.is_empty());
        let td = described.task_definition.ok_or_else(|| {
            PortError::remote(
                "ECS DescribeTaskDefinition",
                format!("{task_definition} not found"),
            )
        })?;
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
            .set_tags(tags)
            .set_pid_mode(td.pid_mode)
            .set_ipc_mode(td.ipc_mode)
            .set_proxy_configuration(td.proxy_configuration)
            .set_ephemeral_storage(td.ephemeral_storage)
            .set_runtime_platform(td.runtime_platform)
            .set_enable_fault_injection(td.enable_fault_injection)
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
    ) -> PortResult<Option<String>> {
        let out = self
            .client
            .update_service()
            .cluster(cluster)
            .service(service)
            .task_definition(task_definition)
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
}
