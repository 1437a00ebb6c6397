//! The local stack: Flightdeck's resources on the AWS emulators, made from the same definitions
//! `infra/` deploys, plus a simulated ECS scheduler that reports task and deployment events the way
//! ECS does. The demo, the admin command and the integration tests all build on it.
//!
//! Every `Stack` gets its own table, topic, queue, cluster and service (named by a prefix), so
//! tests start from a clean state without resetting the emulator under each other.

pub mod gates_demo;
pub mod local_api;
pub mod native_demo;
pub mod sim;
pub mod timeline;

use std::path::{Path, PathBuf};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType,
};
use chrono::{DateTime, SecondsFormat, Utc};
use flightdeck::adapters::ecr::EcrImages;
use flightdeck::adapters::{
    cloudwatch::CloudWatchAlarms, dynamodb::DynamoStore, ecs::EcsClient, elbv2::ElbTraffic,
    sns::SnsNotifier,
};
use flightdeck::deployment::Deployment;
use flightdeck::deployment::Listener;
use flightdeck::handlers::Ports;
use flightdeck::ports::{Clock, DeploymentStore, PortResult, SystemClock, TrafficControl};
use flightdeck::registration::Registration;
use serde_json::Value;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

pub type Error = Box<dyn std::error::Error + Send + Sync>;
pub type Result<T> = std::result::Result<T, Error>;

pub type LocalPorts<C = SystemClock> =
    Ports<DynamoStore, EcsClient, CountingTraffic, SnsNotifier, C, EcrImages>;

pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "eu-west-1";
pub const CONTAINER: &str = "app";

/// The repository root (the workspace), wherever the binary or test runs from.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// SDK configuration for the emulators; refuses to run against anything but a local endpoint.
pub async fn local_sdk_config() -> Result<SdkConfig> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").map_err(|_| {
        "AWS_ENDPOINT_URL is not set: start the local stack with `infra/local/stack up` and \
         `source .local/env`, or run `infra/local/test`"
    })?;
    if !(endpoint.starts_with("http://127.0.0.1") || endpoint.starts_with("http://localhost")) {
        return Err(format!("AWS_ENDPOINT_URL={endpoint} is not a local emulator").into());
    }
    Ok(aws_config::defaults(BehaviorVersion::latest()).load().await)
}

/// The DynamoDB table as `infra/template.yaml` defines it.
pub fn table_definition() -> Result<Value> {
    let path = repo_root().join("infra/template.yaml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let template: serde_yaml::Value = serde_yaml::from_str(&text)?;
    let resources = template
        .get("Resources")
        .and_then(serde_yaml::Value::as_mapping)
        .ok_or("template has no Resources")?;
    let table = resources
        .values()
        .find(|r| r.get("Type").and_then(serde_yaml::Value::as_str) == Some("AWS::DynamoDB::Table"))
        .and_then(|r| r.get("Properties"))
        .ok_or("template has no AWS::DynamoDB::Table")?;
    Ok(serde_json::to_value(table)?)
}

fn key_schema(value: &Value) -> Result<Vec<KeySchemaElement>> {
    value
        .as_array()
        .ok_or("KeySchema is not a list")?
        .iter()
        .map(|k| {
            Ok(KeySchemaElement::builder()
                .attribute_name(k["AttributeName"].as_str().ok_or("AttributeName")?)
                .key_type(KeyType::from(k["KeyType"].as_str().ok_or("KeyType")?))
                .build()?)
        })
        .collect()
}

/// Creates `name` with the keys and indexes of the template's table.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, name: &str) -> Result<()> {
    let def = table_definition()?;
    let mut request = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(key_schema(&def["KeySchema"])?));
    for a in def["AttributeDefinitions"]
        .as_array()
        .ok_or("AttributeDefinitions")?
    {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(a["AttributeName"].as_str().ok_or("AttributeName")?)
                .attribute_type(ScalarAttributeType::from(
                    a["AttributeType"].as_str().ok_or("AttributeType")?,
                ))
                .build()?,
        );
    }
    for g in def["GlobalSecondaryIndexes"]
        .as_array()
        .into_iter()
        .flatten()
    {
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(g["IndexName"].as_str().ok_or("IndexName")?)
                .set_key_schema(Some(key_schema(&g["KeySchema"])?))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::from(
                            g["Projection"]["ProjectionType"]
                                .as_str()
                                .ok_or("ProjectionType")?,
                        ))
                        .build(),
                )
                .build()?,
        );
    }
    request.send().await?;
    Ok(())
}

/// One isolated set of Flightdeck resources on the emulators.
pub struct Stack {
    pub sdk: SdkConfig,
    pub prefix: String,
    pub table: String,
    pub topic_arn: String,
    pub queue_url: String,
    pub cluster: String,
    pub service: String,
    /// Task-definition families are account-wide, so each stack has its own.
    pub family: String,
    pub initial_task_definition: String,
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub ecs: aws_sdk_ecs::Client,
    pub sns: aws_sdk_sns::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub elbv2: aws_sdk_elasticloadbalancingv2::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
}

/// A message as the subscriber queue received it from SNS.
#[derive(Clone, Debug)]
pub struct ReceivedAlert {
    pub subject: String,
    pub event_type: String,
    pub severity: String,
    pub service: String,
    pub environment: String,
    /// The JSON document (the `sqs` body of the message).
    pub document: Value,
}

impl Stack {
    /// Creates table, topic, subscriber queue, ECS cluster, task definition and service named after
    /// `prefix`. The service runs `desired` tasks of `checkout-api:1`-style revision one.
    pub async fn create(
        sdk: SdkConfig,
        prefix: &str,
        service: &str,
        desired: i32,
    ) -> Result<Stack> {
        let dynamodb = aws_sdk_dynamodb::Client::new(&sdk);
        let ecs = aws_sdk_ecs::Client::new(&sdk);
        let sns = aws_sdk_sns::Client::new(&sdk);
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        let elbv2 = aws_sdk_elasticloadbalancingv2::Client::new(&sdk);
        let cloudwatch = aws_sdk_cloudwatch::Client::new(&sdk);
        let table = format!("{prefix}-deployments");
        create_table(&dynamodb, &table).await?;

        let topic_arn = sns
            .create_topic()
            .name(format!("{prefix}-alerts"))
            .send()
            .await?
            .topic_arn
            .ok_or("CreateTopic returned no ARN")?;
        let queue_url = sqs
            .create_queue()
            .queue_name(format!("{prefix}-subscriber"))
            .send()
            .await?
            .queue_url
            .ok_or("CreateQueue returned no URL")?;
        let queue_arn = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await?
            .attributes
            .and_then(|a| {
                a.get(&aws_sdk_sqs::types::QueueAttributeName::QueueArn)
                    .cloned()
            })
            .ok_or("no queue ARN")?;
        sns.subscribe()
            .topic_arn(&topic_arn)
            .protocol("sqs")
            .endpoint(queue_arn)
            .send()
            .await?;

        let cluster = prefix.to_string();
        ecs.create_cluster().cluster_name(&cluster).send().await?;
        let container = aws_sdk_ecs::types::ContainerDefinition::builder()
            .name(CONTAINER)
            .image(format!(
                "{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/{service}:v1.0.0"
            ))
            .memory(512)
            .essential(true)
            .port_mappings(
                aws_sdk_ecs::types::PortMapping::builder()
                    .container_port(8080)
                    .build(),
            )
            .build();
        let family = format!("{prefix}-{service}");
        let initial_task_definition = ecs
            .register_task_definition()
            .family(&family)
            .network_mode(aws_sdk_ecs::types::NetworkMode::Awsvpc)
            .requires_compatibilities(aws_sdk_ecs::types::Compatibility::Fargate)
            .cpu("256")
            .memory("512")
            .container_definitions(container)
            .send()
            .await?
            .task_definition
            .and_then(|t| t.task_definition_arn)
            .ok_or("RegisterTaskDefinition returned no ARN")?;
        ecs.create_service()
            .cluster(&cluster)
            .service_name(service)
            .task_definition(&initial_task_definition)
            .desired_count(desired)
            .tags(managed_tag())
            .send()
            .await?;

        Ok(Stack {
            sdk,
            prefix: prefix.to_string(),
            table,
            topic_arn,
            queue_url,
            cluster,
            service: service.to_string(),
            family,
            initial_task_definition,
            dynamodb,
            ecs,
            sns,
            sqs,
            elbv2,
            cloudwatch,
        })
    }

    /// The handlers' ports, wired to this stack exactly as a function's `main.rs` wires them.
    pub fn ports(&self) -> LocalPorts {
        self.ports_with_clock(SystemClock)
    }

    pub fn ports_with_clock<C: Clock>(&self, clock: C) -> LocalPorts<C> {
        Ports {
            store: DynamoStore::new(self.dynamodb.clone(), self.table.clone()),
            ecs: EcsClient::new(self.ecs.clone()),
            traffic: CountingTraffic::new(ElbTraffic::new(self.elbv2.clone())),
            notifier: SnsNotifier::new(self.sns.clone(), self.topic_arn.clone()),
            clock,
            images: EcrImages::new(aws_sdk_ecr::Client::new(&self.sdk)),
        }
    }

    /// The reconcile loop's alarm reader, on the CloudWatch emulator.
    pub fn alarms(&self) -> CloudWatchAlarms {
        CloudWatchAlarms::new(self.cloudwatch.clone())
    }

    /// Registers a service from a registration document, as `flightdeck-admin register` does.
    pub async fn register(
        &self,
        service: &str,
        environment: &str,
        json: &str,
    ) -> Result<Registration> {
        let registration = Registration::parse(service, environment, json)?;
        self.ports().store.put_registration(&registration).await?;
        Ok(registration)
    }

    /// Registers the sample document in `infra/local/registrations/`, pointed at this stack's cluster.
    pub async fn register_sample(&self, environment: &str) -> Result<Registration> {
        let path = repo_root().join("infra/local/registrations/checkout-api.staging.json");
        let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
        doc["cluster"] = Value::String(self.cluster.clone());
        doc["engine"]["service"] = Value::String(self.service.clone());
        self.register(&self.service, environment, &doc.to_string())
            .await
    }

    /// A deployment with its whole audit trail (the record itself keeps the recent events).
    pub async fn deployment(&self, id: &str) -> Result<Deployment> {
        let store = self.ports().store;
        let mut d = store
            .get(id)
            .await?
            .ok_or_else(|| format!("deployment {id} not found"))?;
        let trail = store.audit_trail(id).await?;
        if !trail.is_empty() {
            d.events = trail;
        }
        Ok(d)
    }

    /// The most recent deployment of `service` in `environment`.
    pub async fn latest(&self, service: &str, environment: &str) -> Result<Deployment> {
        self.ports()
            .store
            .latest(service, environment)
            .await?
            .ok_or_else(|| format!("no deployment of {service} in {environment}").into())
    }

    /// Every deployment of the stack's service in `environment`, newest first.
    pub async fn deployments(&self, environment: &str) -> Result<Vec<Deployment>> {
        let out = self
            .dynamodb
            .query()
            .table_name(&self.table)
            .index_name(flightdeck::adapters::dynamodb::BY_SERVICE_INDEX)
            .key_condition_expression("gsi1pk = :p")
            .expression_attribute_values(
                ":p",
                aws_sdk_dynamodb::types::AttributeValue::S(format!(
                    "SERVICE#{}#{environment}",
                    self.service
                )),
            )
            .scan_index_forward(false)
            .send()
            .await?;
        let mut result = Vec::new();
        for item in out.items.unwrap_or_default() {
            if let Some(aws_sdk_dynamodb::types::AttributeValue::S(id)) = item.get("id") {
                result.push(self.deployment(id).await?);
            }
        }
        Ok(result)
    }

    /// The task definition the ECS service runs, as the emulator reports it.
    pub async fn service_task_definition(&self) -> Result<String> {
        let out = self
            .ecs
            .describe_services()
            .cluster(&self.cluster)
            .services(&self.service)
            .send()
            .await?;
        out.services()
            .first()
            .and_then(|s| s.task_definition.clone())
            .ok_or_else(|| "service not found".into())
    }

    /// Revisions registered in the service's task-definition family.
    pub async fn task_definition_revisions(&self) -> Result<Vec<String>> {
        let out = self
            .ecs
            .list_task_definitions()
            .family_prefix(&self.family)
            .send()
            .await?;
        Ok(out.task_definition_arns.unwrap_or_default())
    }

    /// Drains the subscriber queue: every alert received since the last call.
    pub async fn received_alerts(&self) -> Result<Vec<ReceivedAlert>> {
        let mut alerts = Vec::new();
        loop {
            let out = self
                .sqs
                .receive_message()
                .queue_url(&self.queue_url)
                .max_number_of_messages(10)
                .send()
                .await?;
            let messages = out.messages.unwrap_or_default();
            if messages.is_empty() {
                return Ok(alerts);
            }
            for m in messages {
                let body: Value = serde_json::from_str(m.body().unwrap_or("{}"))?;
                let attr = |name: &str| {
                    body["MessageAttributes"][name]["Value"]
                        .as_str()
                        .unwrap_or("")
                        .to_string()
                };
                let document: Value =
                    serde_json::from_str(body["Message"].as_str().unwrap_or("null"))?;
                alerts.push(ReceivedAlert {
                    subject: body["Subject"].as_str().unwrap_or("").to_string(),
                    event_type: attr("event_type"),
                    severity: attr("severity"),
                    service: attr("service"),
                    environment: attr("environment"),
                    document,
                });
                if let Some(handle) = m.receipt_handle() {
                    self.sqs
                        .delete_message()
                        .queue_url(&self.queue_url)
                        .receipt_handle(handle)
                        .send()
                        .await?;
                }
            }
        }
    }

    /// A simulated ECS scheduler for this stack's service (see [`EcsSimulator`]).
    pub fn ecs_events(&self) -> EcsSimulator {
        EcsSimulator {
            cluster: self.cluster.clone(),
            service: self.service.clone(),
            next_task: 0,
        }
    }
}

/// Loads a sample event from `events/`.
pub fn sample(name: &str) -> Result<Value> {
    let path = repo_root().join("events").join(name);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

fn rfc3339(t: DateTime<Utc>) -> Value {
    Value::String(t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// A push of `tag` with a digest made from it, from `events/ecr-image-push.json`.
pub fn image_push(repository: &str, tag: &str) -> Result<Value> {
    let mut event = sample("ecr-image-push.json")?;
    let digest = format!("sha256:{}", hex64(tag));
    event["id"] = Value::String(format!("push-{repository}-{tag}"));
    event["time"] = rfc3339(Utc::now());
    event["detail"]["repository-name"] = Value::String(repository.to_string());
    event["detail"]["image-tag"] = Value::String(tag.to_string());
    event["detail"]["image-digest"] = Value::String(digest);
    Ok(event)
}

/// A stable 64-hex-character string from `seed` (stands in for an image digest).
pub fn hex64(seed: &str) -> String {
    use std::hash::{Hash, Hasher};
    (0..4u64)
        .map(|i| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (seed, i).hash(&mut h);
            format!("{:016x}", h.finish())
        })
        .collect()
}

/// The ECS events a real scheduler would send for the stack's service, shaped from the samples
/// in `events/`, with ids, ARNs and times filled in.
pub struct EcsSimulator {
    cluster: String,
    service: String,
    next_task: u32,
}

impl EcsSimulator {
    fn arn(&self, kind: &str, rest: &str) -> String {
        format!("arn:aws:ecs:{REGION}:{ACCOUNT}:{kind}/{rest}")
    }

    /// The same scheduler, speaking of another ECS service of the stack's cluster.
    pub fn for_service(&self, service: &str) -> EcsSimulator {
        EcsSimulator {
            cluster: self.cluster.clone(),
            service: service.to_string(),
            next_task: self.next_task,
        }
    }

    pub fn new_task_arn(&mut self) -> String {
        self.next_task += 1;
        self.arn(
            "task",
            &format!(
                "{}/{}",
                self.cluster,
                &hex64(&format!(
                    "{}{}{}",
                    self.cluster, self.service, self.next_task
                ))[..32]
            ),
        )
    }

    fn task_event(
        &self,
        sample_name: &str,
        task_arn: &str,
        task_definition: &str,
        version: i64,
    ) -> Result<Value> {
        let mut e = sample(sample_name)?;
        let now = Utc::now();
        e["id"] = Value::String(format!(
            "{}-{version}",
            task_arn.rsplit('/').next().unwrap_or("task")
        ));
        e["time"] = rfc3339(now);
        e["resources"] = serde_json::json!([task_arn]);
        let d = &mut e["detail"];
        d["clusterArn"] = Value::String(self.arn("cluster", &self.cluster));
        d["taskArn"] = Value::String(task_arn.to_string());
        d["group"] = Value::String(format!("service:{}", self.service));
        d["taskDefinitionArn"] = Value::String(task_definition.to_string());
        d["updatedAt"] = rfc3339(now);
        d["version"] = Value::from(version);
        if let Some(containers) = d["containers"].as_array_mut() {
            for c in containers {
                c["taskArn"] = Value::String(task_arn.to_string());
            }
        }
        Ok(e)
    }

    /// The task reached RUNNING.
    pub fn task_running(
        &self,
        task_arn: &str,
        task_definition: &str,
        version: i64,
    ) -> Result<Value> {
        self.task_event("ecs-task-running.json", task_arn, task_definition, version)
    }

    /// The task could not start: exec format error (an image built for another architecture).
    pub fn task_exec_format_error(
        &self,
        task_arn: &str,
        task_definition: &str,
        version: i64,
    ) -> Result<Value> {
        self.task_event(
            "ecs-task-stopped-exec-format-error.json",
            task_arn,
            task_definition,
            version,
        )
    }

    /// The task was killed for running out of memory.
    pub fn task_out_of_memory(
        &self,
        task_arn: &str,
        task_definition: &str,
        version: i64,
    ) -> Result<Value> {
        self.task_event(
            "ecs-task-stopped-oom.json",
            task_arn,
            task_definition,
            version,
        )
    }

    /// The scheduler stopped the task (scale-in, or replaced by a deployment).
    pub fn task_scaled_in(
        &self,
        task_arn: &str,
        task_definition: &str,
        version: i64,
    ) -> Result<Value> {
        self.task_event(
            "ecs-task-stopped-scale-in.json",
            task_arn,
            task_definition,
            version,
        )
    }

    fn service_event(&self, sample_name: &str) -> Result<Value> {
        let mut e = sample(sample_name)?;
        let now = Utc::now();
        e["id"] = Value::String(format!(
            "{}-{}",
            sample_name.trim_end_matches(".json"),
            now.timestamp_micros()
        ));
        e["time"] = rfc3339(now);
        e["resources"] =
            serde_json::json!([self.arn("service", &format!("{}/{}", self.cluster, self.service))]);
        Ok(e)
    }

    /// ECS reports its deployment of the service completed.
    pub fn deployment_completed(&self, ecs_deployment_id: &str) -> Result<Value> {
        let mut e = self.service_event("ecs-deployment-completed.json")?;
        e["detail"]["deploymentId"] = Value::String(ecs_deployment_id.to_string());
        e["detail"]["updatedAt"] = e["time"].clone();
        e["detail"]["reason"] =
            Value::String(format!("ECS deployment {ecs_deployment_id} completed."));
        Ok(e)
    }

    /// ECS reports the service reached a steady state.
    pub fn steady_state(&self) -> Result<Value> {
        let mut e = self.service_event("ecs-service-steady-state.json")?;
        e["detail"]["clusterArn"] = Value::String(self.arn("cluster", &self.cluster));
        e["detail"]["createdAt"] = e["time"].clone();
        Ok(e)
    }
}

/// A clock the test moves by hand, shared by every handler it is given to.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<Mutex<DateTime<Utc>>>);

impl ManualClock {
    pub fn starting_now() -> ManualClock {
        ManualClock(Arc::new(Mutex::new(Utc::now())))
    }

    pub fn starting_at(at: DateTime<Utc>) -> ManualClock {
        ManualClock(Arc::new(Mutex::new(at)))
    }

    pub fn advance(&self, by: chrono::Duration) {
        if let Ok(mut now) = self.0.lock() {
            *now += by;
        }
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        self.0
            .lock()
            .map(|t| *t)
            .unwrap_or_else(|e| *e.into_inner())
    }
}

/// The ELBv2 adapter, counting its calls, so tests can say "no extra ELBv2 calls".
#[derive(Clone, Debug)]
pub struct CountingTraffic {
    inner: ElbTraffic,
    reads: Arc<AtomicUsize>,
    writes: Arc<AtomicUsize>,
    throttle_writes: Arc<AtomicUsize>,
}

impl CountingTraffic {
    pub fn new(inner: ElbTraffic) -> Self {
        CountingTraffic {
            inner,
            reads: Arc::default(),
            writes: Arc::default(),
            throttle_writes: Arc::default(),
        }
    }

    /// The next `n` weight changes fail as ELBv2 throttling would, before they take effect.
    pub fn throttle_next_writes(&self, n: usize) {
        self.throttle_writes.store(n, Ordering::SeqCst);
    }

    /// (reads, weight changes) so far.
    pub fn calls(&self) -> (usize, usize) {
        (
            self.reads.load(Ordering::SeqCst),
            self.writes.load(Ordering::SeqCst),
        )
    }
}

impl TrafficControl for CountingTraffic {
    async fn weights(&self, listener: &Listener) -> PortResult<Vec<(String, u32)>> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.weights(listener).await
    }

    async fn set_weights(&self, listener: &Listener, weights: &[(String, u32)]) -> PortResult<()> {
        let throttled = self
            .throttle_writes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if throttled {
            return Err(flightdeck::ports::PortError::remote(
                "ELBv2 ModifyRule",
                "ThrottlingException: Rate exceeded",
            ));
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
        self.inner.set_weights(listener, weights).await
    }

    async fn healthy_targets(&self, target_group_arn: &str) -> PortResult<u32> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.healthy_targets(target_group_arn).await
    }

    async fn resource_tags(&self, arn: &str) -> PortResult<flightdeck::ports::Tags> {
        self.reads.fetch_add(1, Ordering::SeqCst);
        self.inner.resource_tags(arn).await
    }
}

/// `flightdeck:managed=true`: the tag on every resource Flightdeck may change.
fn managed_tag() -> aws_sdk_ecs::types::Tag {
    let (key, value) = flightdeck::ports::MANAGED_TAG;
    aws_sdk_ecs::types::Tag::builder()
        .key(key)
        .value(value)
        .build()
}

/// The load balancer of an `alb-weights` stack (see `infra/local/alb_fixture.py`).
#[derive(Clone, Debug, serde::Deserialize)]
pub struct AlbFixture {
    pub listener_arn: String,
    pub rule_arn: String,
    pub blue_target_group_arn: String,
    pub green_target_group_arn: String,
}

impl Stack {
    /// Another ECS service in the stack's cluster, on the stack's first revision.
    pub async fn add_service(&self, name: &str, desired_count: i32) -> Result<()> {
        self.ecs
            .create_service()
            .cluster(&self.cluster)
            .service_name(name)
            .task_definition(&self.initial_task_definition)
            .desired_count(desired_count)
            .tags(managed_tag())
            .send()
            .await?;
        Ok(())
    }

    /// Another ECS service, without the `flightdeck:managed` tag (one Flightdeck may not change).
    pub async fn add_unmanaged_service(&self, name: &str) -> Result<()> {
        self.ecs
            .create_service()
            .cluster(&self.cluster)
            .service_name(name)
            .task_definition(&self.initial_task_definition)
            .desired_count(1)
            .send()
            .await?;
        Ok(())
    }

    /// Turns the stack into a blue/green pair: the stack's service is blue (serving), a green
    /// service on the same revision is created at 0 tasks, and a load balancer forwards 100/0.
    pub async fn add_alb(&self, green_service: &str) -> Result<AlbFixture> {
        self.add_service(green_service, 0).await?;
        let python = std::env::var("FLIGHTDECK_PYTHON")
            .unwrap_or_else(|_| repo_root().join(".venv/bin/python").display().to_string());
        let name: String = self.prefix.chars().take(20).collect();
        let out = std::process::Command::new(&python)
            .arg(repo_root().join("infra/local/alb_fixture.py"))
            .arg(name.trim_end_matches('-'))
            .output()
            .map_err(|e| format!("{python}: {e}"))?;
        if !out.status.success() {
            return Err(format!("alb_fixture.py: {}", String::from_utf8_lossy(&out.stderr)).into());
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Registers `infra/local/registrations/{file}` pointed at this stack's cluster and load balancer.
    pub async fn register_alb(
        &self,
        file: &str,
        environment: &str,
        alb: &AlbFixture,
        edit: impl FnOnce(&mut Value),
    ) -> Result<Registration> {
        let path = repo_root().join("infra/local/registrations").join(file);
        let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
        doc["cluster"] = Value::String(self.cluster.clone());
        doc["engine"]["listener_rule_arn"] = Value::String(alb.rule_arn.clone());
        doc["engine"]["blue"]["target_group_arn"] =
            Value::String(alb.blue_target_group_arn.clone());
        doc["engine"]["green"]["target_group_arn"] =
            Value::String(alb.green_target_group_arn.clone());
        edit(&mut doc);
        let service = doc["repository"]
            .as_str()
            .unwrap_or("checkout-web")
            .to_string();
        self.register(&service, environment, &doc.to_string()).await
    }

    /// Plays ECS's part for a colour behind the load balancer: registers `count` task IPs in its
    /// target group (the emulator reports registered targets healthy). On AWS, ECS does this as
    /// the colour's tasks start; readiness waits for it.
    pub async fn targets_up(&self, target_group_arn: &str, count: u8) -> Result<()> {
        let mut request = self
            .elbv2
            .register_targets()
            .target_group_arn(target_group_arn);
        for n in 0..count {
            request = request.targets(
                aws_sdk_elasticloadbalancingv2::types::TargetDescription::builder()
                    .id(format!("172.31.7.{}", 10 + n))
                    .port(8080)
                    .build(),
            );
        }
        request.send().await?;
        Ok(())
    }

    /// (blue, green) weights of the listener rule, read back from the emulator.
    pub async fn rule_weights(&self, alb: &AlbFixture) -> Result<(i32, i32)> {
        let out = self
            .elbv2
            .describe_rules()
            .rule_arns(&alb.rule_arn)
            .send()
            .await?;
        let rule = out
            .rules
            .unwrap_or_default()
            .into_iter()
            .next()
            .ok_or("rule not found")?;
        let groups = rule
            .actions
            .unwrap_or_default()
            .into_iter()
            .find_map(|a| a.forward_config.and_then(|f| f.target_groups))
            .ok_or("the rule has no weighted forward")?;
        let weight = |arn: &str| {
            groups
                .iter()
                .find(|g| g.target_group_arn.as_deref() == Some(arn))
                .and_then(|g| g.weight)
                .unwrap_or(0)
        };
        Ok((
            weight(&alb.blue_target_group_arn),
            weight(&alb.green_target_group_arn),
        ))
    }

    /// The desired count and task definition of one of the stack's services.
    pub async fn service_state(&self, service: &str) -> Result<(i32, String)> {
        let out = self
            .ecs
            .describe_services()
            .cluster(&self.cluster)
            .services(service)
            .send()
            .await?;
        let s = out.services().first().ok_or("service not found")?;
        Ok((
            s.desired_count,
            s.task_definition.clone().unwrap_or_default(),
        ))
    }

    /// Creates a metric alarm on the CloudWatch emulator (in OK).
    pub async fn put_alarm(&self, name: &str) -> Result<()> {
        use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, Statistic};
        self.cloudwatch
            .put_metric_alarm()
            .alarm_name(name)
            .namespace("AWS/ApplicationELB")
            .metric_name("HTTPCode_Target_5XX_Count")
            .dimensions(
                Dimension::builder()
                    .name("TargetGroup")
                    .value(format!("targetgroup/{name}/1"))
                    .build(),
            )
            .statistic(Statistic::Sum)
            .period(60)
            .evaluation_periods(1)
            .threshold(5.0)
            .comparison_operator(ComparisonOperator::GreaterThanThreshold)
            .send()
            .await?;
        self.set_alarm(name, "OK", "created").await
    }

    /// Sets an alarm's state on the CloudWatch emulator (what a metric crossing would do).
    pub async fn set_alarm(&self, name: &str, state: &str, reason: &str) -> Result<()> {
        self.cloudwatch
            .set_alarm_state()
            .alarm_name(name)
            .state_value(aws_sdk_cloudwatch::types::StateValue::from(state))
            .state_reason(reason)
            .send()
            .await?;
        Ok(())
    }
}

/// The EventBridge `CloudWatch Alarm State Change` of `alarm` entering `state`, from the sample.
pub fn alarm_event(sample_name: &str, alarm: &str, state: &str, reason: &str) -> Result<Value> {
    let mut e = sample(sample_name)?;
    let now = Utc::now();
    let data = if e.get("alarmData").is_some() {
        "alarmData"
    } else {
        "detail"
    };
    if data == "detail" {
        e["id"] = Value::String(format!("alarm-{alarm}-{}", now.timestamp_micros()));
        e["time"] = rfc3339(now);
    } else {
        e["time"] = rfc3339(now);
    }
    e[data]["alarmName"] = Value::String(alarm.to_string());
    e[data]["state"]["value"] = Value::String(state.to_string());
    e[data]["state"]["reason"] = Value::String(reason.to_string());
    e[data]["state"]["timestamp"] = rfc3339(now);
    Ok(e)
}

/// A store whose writes land but, every `n`-th time, lose their answer: the caller sees what the
/// SDK's retry would see after a write that went through, a conditional-check failure.
pub struct LossyStore {
    inner: DynamoStore,
    every: usize,
    writes: AtomicUsize,
    lost: AtomicUsize,
}

impl LossyStore {
    pub fn new(inner: DynamoStore, every: usize) -> Self {
        LossyStore {
            inner,
            every: every.max(1),
            writes: AtomicUsize::new(0),
            lost: AtomicUsize::new(0),
        }
    }

    /// Answers lost so far.
    pub fn lost(&self) -> usize {
        self.lost.load(Ordering::SeqCst)
    }

    fn lose_this_one(&self) -> bool {
        let n = self.writes.fetch_add(1, Ordering::SeqCst) + 1;
        let lose = n.is_multiple_of(self.every);
        if lose {
            self.lost.fetch_add(1, Ordering::SeqCst);
        }
        lose
    }
}

impl DeploymentStore for LossyStore {
    async fn registrations(&self) -> PortResult<Vec<Registration>> {
        self.inner.registrations().await
    }
    async fn registration(
        &self,
        service: &str,
        environment: &str,
    ) -> PortResult<Option<Registration>> {
        self.inner.registration(service, environment).await
    }
    async fn registrations_by(
        &self,
        key: &flightdeck::registration::LookupKey,
    ) -> PortResult<Vec<Registration>> {
        self.inner.registrations_by(key).await
    }
    async fn put_registration(&self, registration: &Registration) -> PortResult<()> {
        self.inner.put_registration(registration).await
    }
    async fn create(&self, deployment: &Deployment) -> PortResult<flightdeck::ports::Created> {
        self.inner.create(deployment).await
    }
    async fn get(&self, id: &str) -> PortResult<Option<Deployment>> {
        self.inner.get(id).await
    }
    async fn audit_trail(&self, id: &str) -> PortResult<Vec<flightdeck::deployment::AuditEvent>> {
        self.inner.audit_trail(id).await
    }
    async fn save(&self, deployment: &mut Deployment) -> PortResult<()> {
        let mut copy = deployment.clone();
        self.inner.save(&mut copy).await?;
        if self.lose_this_one() {
            return Err(flightdeck::ports::PortError::Conflict);
        }
        *deployment = copy;
        Ok(())
    }
    async fn active(&self, service: &str, environment: &str) -> PortResult<Vec<String>> {
        self.inner.active(service, environment).await
    }
    async fn all_active(&self) -> PortResult<Vec<String>> {
        self.inner.all_active().await
    }
    async fn latest(&self, service: &str, environment: &str) -> PortResult<Option<Deployment>> {
        self.inner.latest(service, environment).await
    }
    async fn remember(&self, key: &str) -> PortResult<flightdeck::ports::Created> {
        self.inner.remember(key).await
    }
    async fn forget(&self, key: &str) -> PortResult<()> {
        self.inner.forget(key).await
    }
    async fn stage(
        &self,
        service: &str,
        environment: &str,
    ) -> PortResult<flightdeck::deployment::Stage> {
        self.inner.stage(service, environment).await
    }
    async fn save_stage(
        &self,
        service: &str,
        environment: &str,
        stage: &mut flightdeck::deployment::Stage,
    ) -> PortResult<()> {
        let mut copy = stage.clone();
        self.inner
            .save_stage(service, environment, &mut copy)
            .await?;
        if self.lose_this_one() {
            return Err(flightdeck::ports::PortError::Conflict);
        }
        *stage = copy;
        Ok(())
    }
    async fn claim_idempotency_key(
        &self,
        key: &str,
        fingerprint: &str,
        deployment_id: &str,
    ) -> PortResult<Option<(String, String)>> {
        self.inner
            .claim_idempotency_key(key, fingerprint, deployment_id)
            .await
    }
    async fn page(
        &self,
        service: &str,
        environment: &str,
        status: Option<&str>,
        limit: u32,
        cursor: Option<&str>,
    ) -> PortResult<flightdeck::ports::Page> {
        self.inner
            .page(service, environment, status, limit, cursor)
            .await
    }
    async fn tally(&self, tally: &flightdeck::ports::Tally) -> PortResult<()> {
        self.inner.tally(tally).await
    }
    async fn tallies(
        &self,
        service: &str,
        environment: &str,
        since: chrono::NaiveDate,
    ) -> PortResult<Vec<flightdeck::ports::Tally>> {
        self.inner.tallies(service, environment, since).await
    }
}

impl Stack {
    /// The stack's ports with a store that loses the answer of every `every`-th write.
    pub fn lossy_ports(
        &self,
        every: usize,
    ) -> Ports<LossyStore, EcsClient, CountingTraffic, SnsNotifier, SystemClock, EcrImages> {
        let local = self.ports();
        Ports {
            store: LossyStore::new(local.store, every),
            ecs: local.ecs,
            traffic: local.traffic,
            notifier: local.notifier,
            clock: SystemClock,
            images: local.images,
        }
    }
}
