//! The one table (DESIGN.md, "Records"). Key layout:
//!
//! | item | pk | sk | by-service index | active index (sparse) |
//! |---|---|---|---|---|
//! | deployment | `DEPLOYMENT#id` | `DEPLOYMENT` | `SERVICE#svc#env` / `created_at#id` | `ACTIVE` / `svc#env#created_at#id`, only while active |
//! | registration | `REGISTRATION` | `svc#env` | | |
//! | registration lookup (a copy) | `LOOKUP#kind#value` | `svc#env` | | |
//! | stage (in-flight slot, colour owners) | `SLOT#svc#env` | `SLOT` | | |
//! | idempotency key | `IDEMPOTENCY#key` | `IDEMPOTENCY` | | |
//! | handled-event marker | `HANDLED#key` | `HANDLED` | | |
//! | audit event | `DEPLOYMENT#id` | `EVENT#0000000042` | | |

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{AttributeValue, Delete, Put, TransactWriteItem};
use serde::{Deserialize, Serialize};

use crate::deployment::{AuditEvent, Deployment, Stage};
use crate::ports::{Created, DeploymentStore, Page, PortError, PortResult};
use crate::registration::{self, LookupKey, Registration};

pub const BY_SERVICE_INDEX: &str = "by-service";
pub const ACTIVE_INDEX: &str = "active";
const ACTIVE: &str = "ACTIVE";

#[derive(Clone, Debug)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

#[derive(Serialize, Deserialize)]
struct DeploymentItem {
    pk: String,
    sk: String,
    gsi1pk: String,
    gsi1sk: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    active_pk: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    active_sk: Option<String>,
    #[serde(flatten)]
    deployment: Deployment,
}

/// A registration, and (same shape, other keys) each of its lookup items.
#[derive(Serialize, Deserialize)]
struct RegistrationItem {
    pk: String,
    sk: String,
    /// Conditional-write counter of the registration item.
    #[serde(default)]
    registration_version: u64,
    #[serde(flatten)]
    registration: Registration,
}

#[derive(Serialize, Deserialize)]
struct StageItem {
    pk: String,
    sk: String,
    #[serde(flatten)]
    stage: Stage,
}

fn slot_pk(service: &str, environment: &str) -> String {
    format!("SLOT#{service}#{environment}")
}

/// The summary `/metrics` reads: an item per service, environment and day, an attribute per
/// deployment that ended (`T#<id>`).
fn summary_pk(service: &str, environment: &str) -> String {
    format!("SUMMARY#{service}#{environment}")
}

fn summary_sk(day: chrono::NaiveDate) -> String {
    format!("DAY#{}", day.format("%Y-%m-%d"))
}

const TALLY_PREFIX: &str = "T#";

fn deployment_pk(id: &str) -> String {
    format!("DEPLOYMENT#{id}")
}

const DEPLOYMENT_SK: &str = "DEPLOYMENT";
const REGISTRATION_PK: &str = "REGISTRATION";
/// The sort key of the item that claims an ECS service (`CLAIM#ecs-service#CLUSTER/SERVICE`)
/// for one registration.
const CLAIM_SK: &str = "CLAIM";

/// The condition on a claim item: no one holds it, or this registration does.
const UNCLAIMED_OR_OURS: &str = "attribute_not_exists(pk) OR #owner = :owner";

fn claim_key(claim: &str) -> String {
    format!("CLAIM#ecs-service#{claim}")
}

impl DeploymentItem {
    fn new(d: &Deployment) -> Self {
        let created = d
            .created_at
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let active = d.needs_reconcile();
        DeploymentItem {
            pk: deployment_pk(&d.id),
            sk: DEPLOYMENT_SK.to_string(),
            gsi1pk: format!("SERVICE#{}#{}", d.service, d.environment),
            gsi1sk: format!("{created}#{}", d.id),
            active_pk: active.then(|| ACTIVE.to_string()),
            active_sk: active
                .then(|| format!("{}#{}#{created}#{}", d.service, d.environment, d.id)),
            deployment: d.clone(),
        }
    }
}

impl DynamoStore {
    /// A query of one service and environment's deployments on the by-service index, newest
    /// first (the listing's pages and the latest one).
    fn newest_first(
        &self,
        service: &str,
        environment: &str,
    ) -> aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder {
        self.client
            .query()
            .table_name(&self.table)
            .index_name(BY_SERVICE_INDEX)
            .key_condition_expression("gsi1pk = :p")
            .expression_attribute_values(
                ":p",
                AttributeValue::S(format!("SERVICE#{service}#{environment}")),
            )
            .scan_index_forward(false)
    }

    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoStore {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Writes the record under `condition` together with its unsaved audit events, in one
    /// transaction: either all of it lands or none.
    async fn put_with_events(
        &self,
        d: &Deployment,
        events: &[(u32, AuditEvent)],
        condition: &str,
        expected: Option<u64>,
    ) -> PortResult<()> {
        let item =
            serde_dynamo::to_item(DeploymentItem::new(d)).map_err(|e| PortError::Corrupt {
                key: deployment_pk(&d.id),
                message: e.to_string(),
            })?;
        if events.is_empty() {
            // Nothing to write beside the record (claims, most results): one conditional PutItem,
            // half the write capacity of a transaction.
            let mut request = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression(condition);
            if let Some(expected) = expected {
                request = request
                    .expression_attribute_values(":v", AttributeValue::N(expected.to_string()));
            }
            return match request.send().await {
                Ok(_) => Ok(()),
                Err(e) if condition_failed(&e) => Err(PortError::Conflict),
                Err(e) => Err(PortError::remote(
                    "DynamoDB PutItem",
                    DisplayErrorContext(e),
                )),
            };
        }
        let mut put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression(condition);
        if let Some(expected) = expected {
            put = put.expression_attribute_values(":v", AttributeValue::N(expected.to_string()));
        }
        let mut writes = vec![
            TransactWriteItem::builder()
                .put(put.build().map_err(|e| PortError::remote(TRANSACT, e))?)
                .build(),
        ];
        for (seq, event) in events {
            let seq = *seq;
            let mut item = serde_dynamo::to_item::<
                _,
                std::collections::HashMap<String, AttributeValue>,
            >(event)
            .map_err(|e| PortError::Corrupt {
                key: deployment_pk(&d.id),
                message: e.to_string(),
            })?;
            item.insert("pk".into(), AttributeValue::S(deployment_pk(&d.id)));
            item.insert("sk".into(), AttributeValue::S(event_sk(seq)));
            writes.push(
                TransactWriteItem::builder()
                    .put(
                        Put::builder()
                            .table_name(&self.table)
                            .set_item(Some(item))
                            .build()
                            .map_err(|e| PortError::remote(TRANSACT, e))?,
                    )
                    .build(),
            );
        }
        self.transact(writes).await
    }

    /// Runs one transaction; a failed condition on any of its writes is `Conflict`.
    async fn transact(&self, writes: Vec<TransactWriteItem>) -> PortResult<()> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                // A failed condition, or a concurrent transaction on the same item, is a lost
                // race: reload and decide again.
                let lost_condition = e.as_service_error().is_some_and(|s| match s {
                    TransactWriteItemsError::TransactionCanceledException(t) => {
                        t.cancellation_reasons().iter().any(|r| {
                            matches!(
                                r.code(),
                                Some("ConditionalCheckFailed" | "TransactionConflict")
                            )
                        })
                    }
                    _ => false,
                });
                if lost_condition {
                    Err(PortError::Conflict)
                } else {
                    Err(PortError::remote(TRANSACT, DisplayErrorContext(e)))
                }
            }
        }
    }

    /// Why `registration` cannot claim its ECS services: the first claim item held by another.
    async fn claim_taken(&self, registration: &Registration) -> PortResult<Option<String>> {
        let mine = registration.claims_owner();
        for claim in registration.claims() {
            let item = self
                .client
                .get_item()
                .table_name(&self.table)
                .key("pk", AttributeValue::S(claim_key(&claim)))
                .key("sk", AttributeValue::S(CLAIM_SK.to_string()))
                .consistent_read(true)
                .send()
                .await
                .map_err(|e| PortError::remote("DynamoDB GetItem", DisplayErrorContext(e)))?;
            let owner = item
                .item()
                .and_then(|i| i.get("owner"))
                .and_then(|o| o.as_s().ok());
            if let Some(owner) = owner.filter(|o| **o != mine) {
                return Ok(Some(registration::taken_message(&claim, owner)));
            }
        }
        Ok(None)
    }

    /// The registrations (or their lookup copies) under one partition key: one query.
    async fn registrations_under(&self, pk: &str) -> PortResult<Vec<Registration>> {
        let items = query_all(
            self.client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", AttributeValue::S(pk.to_string()))
                .consistent_read(true),
        )
        .await?;
        items
            .into_iter()
            .map(|item| {
                serde_dynamo::from_item::<_, RegistrationItem>(item)
                    .map(|i| i.registration)
                    .map_err(|e| PortError::Corrupt {
                        key: pk.to_string(),
                        message: e.to_string(),
                    })
            })
            .collect()
    }

    async fn registration_item(
        &self,
        service: &str,
        environment: &str,
    ) -> PortResult<Option<RegistrationItem>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(REGISTRATION_PK.to_string()))
            .key("sk", AttributeValue::S(format!("{service}#{environment}")))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| PortError::remote("DynamoDB GetItem", DisplayErrorContext(e)))?;
        out.item
            .map(|item| {
                serde_dynamo::from_item::<_, RegistrationItem>(item).map_err(|e| {
                    PortError::Corrupt {
                        key: format!("{REGISTRATION_PK}#{service}#{environment}"),
                        message: e.to_string(),
                    }
                })
            })
            .transpose()
    }
}

const TRANSACT: &str = "DynamoDB TransactWriteItems";

/// Whether a PutItem was refused by its condition (a lost race, or the item exists already).
fn condition_failed<R>(
    e: &aws_sdk_dynamodb::error::SdkError<aws_sdk_dynamodb::operation::put_item::PutItemError, R>,
) -> bool {
    e.as_service_error()
        .is_some_and(|s| s.is_conditional_check_failed_exception())
}

/// The record as it is stored (its recent audit events only) and the audit events to write as
/// items of their own.
fn split_events(d: &Deployment) -> (Deployment, Vec<(u32, AuditEvent)>) {
    let events = d
        .unsaved_events()
        .into_iter()
        .map(|(seq, e)| (seq, e.clone()))
        .collect();
    let mut stored = d.clone();
    stored.events_written();
    (stored, events)
}

fn event_sk(seq: u32) -> String {
    format!("EVENT#{seq:010}")
}

impl DeploymentStore for DynamoStore {
    async fn registrations(&self) -> PortResult<Vec<Registration>> {
        self.registrations_under(REGISTRATION_PK).await
    }

    async fn registration(
        &self,
        service: &str,
        environment: &str,
    ) -> PortResult<Option<Registration>> {
        Ok(self
            .registration_item(service, environment)
            .await?
            .map(|i| i.registration))
    }

    async fn registrations_by(&self, key: &LookupKey) -> PortResult<Vec<Registration>> {
        self.registrations_under(&key.as_key()).await
    }

    async fn put_registration(&self, registration: &Registration) -> PortResult<()> {
        let sk = format!("{}#{}", registration.service, registration.environment);
        for _ in 0..4 {
            let previous = self
                .registration_item(&registration.service, &registration.environment)
                .await?;
            let version = previous.as_ref().map_or(0, |p| p.registration_version);
            let item = |pk: String| {
                serde_dynamo::to_item(RegistrationItem {
                    pk,
                    sk: sk.clone(),
                    registration_version: version + 1,
                    registration: registration.clone(),
                })
                .map_err(|e| PortError::Corrupt {
                    key: REGISTRATION_PK.to_string(),
                    message: e.to_string(),
                })
            };
            let mut own = Put::builder()
                .table_name(&self.table)
                .set_item(Some(item(REGISTRATION_PK.to_string())?));
            own = match &previous {
                None => own.condition_expression("attribute_not_exists(pk)"),
                Some(p) => own
                    .condition_expression("registration_version = :v")
                    .expression_attribute_values(
                        ":v",
                        AttributeValue::N(p.registration_version.to_string()),
                    ),
            };
            let build = |e: aws_sdk_dynamodb::error::BuildError| PortError::remote(TRANSACT, e);
            let mut writes = vec![
                TransactWriteItem::builder()
                    .put(own.build().map_err(build)?)
                    .build(),
            ];
            let keys = registration.lookup_keys();
            for key in &keys {
                let put = Put::builder()
                    .table_name(&self.table)
                    .set_item(Some(item(key.as_key())?))
                    .build()
                    .map_err(build)?;
                writes.push(TransactWriteItem::builder().put(put).build());
            }
            // Each ECS service is claimed by one item, written only where no other registration
            // holds it: two admins registering one ECS service at once cannot both succeed.
            let owner = AttributeValue::S(registration.claims_owner());
            let claims = registration.claims();
            for claim in &claims {
                let put = Put::builder()
                    .table_name(&self.table)
                    .item("pk", AttributeValue::S(claim_key(claim)))
                    .item("sk", AttributeValue::S(CLAIM_SK.to_string()))
                    .item("owner", owner.clone())
                    .condition_expression(UNCLAIMED_OR_OURS)
                    .expression_attribute_names("#owner", "owner")
                    .expression_attribute_values(":owner", owner.clone())
                    .build()
                    .map_err(build)?;
                writes.push(TransactWriteItem::builder().put(put).build());
            }
            let released = previous
                .iter()
                .flat_map(|p| p.registration.claims())
                .filter(|c| !claims.contains(c));
            for claim in released {
                let delete = Delete::builder()
                    .table_name(&self.table)
                    .key("pk", AttributeValue::S(claim_key(&claim)))
                    .key("sk", AttributeValue::S(CLAIM_SK.to_string()))
                    .condition_expression(UNCLAIMED_OR_OURS)
                    .expression_attribute_names("#owner", "owner")
                    .expression_attribute_values(":owner", owner.clone())
                    .build()
                    .map_err(build)?;
                writes.push(TransactWriteItem::builder().delete(delete).build());
            }
            let stale = previous
                .iter()
                .flat_map(|p| p.registration.lookup_keys())
                .filter(|k| !keys.contains(k));
            for key in stale {
                let delete = Delete::builder()
                    .table_name(&self.table)
                    .key("pk", AttributeValue::S(key.as_key()))
                    .key("sk", AttributeValue::S(sk.clone()))
                    .build()
                    .map_err(build)?;
                writes.push(TransactWriteItem::builder().delete(delete).build());
            }
            match self.transact(writes).await {
                Ok(()) => return Ok(()),
                // An ECS service claimed by another registration, or another admin changed this
                // one meanwhile: read it again and redo the keys.
                Err(PortError::Conflict) => {
                    if let Some(taken) = self.claim_taken(registration).await? {
                        return Err(PortError::Taken(taken));
                    }
                    continue;
                }
                Err(e) => return Err(e),
            }
        }
        Err(PortError::Conflict)
    }

    async fn create(&self, deployment: &Deployment) -> PortResult<Created> {
        let (stored, events) = split_events(deployment);
        match self
            .put_with_events(&stored, &events, "attribute_not_exists(pk)", None)
            .await
        {
            Ok(()) => Ok(Created::New),
            Err(PortError::Conflict) => Ok(Created::AlreadyExists),
            Err(e) => Err(e),
        }
    }

    async fn get(&self, id: &str) -> PortResult<Option<Deployment>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(deployment_pk(id)))
            .key("sk", AttributeValue::S(DEPLOYMENT_SK.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| {
                PortError::remote(
                    "DynamoDB GetItem",
                    aws_sdk_dynamodb::error::DisplayErrorContext(e),
                )
            })?;
        out.item
            .map(|item| deployment_from_item(item, || deployment_pk(id)))
            .transpose()
    }

    async fn save(&self, deployment: &mut Deployment) -> PortResult<()> {
        let expected = deployment.record_version;
        let mut next = deployment.clone();
        next.record_version = expected + 1;
        let (stored, events) = split_events(&next);
        self.put_with_events(&stored, &events, "record_version = :v", Some(expected))
            .await?;
        *deployment = stored;
        Ok(())
    }

    async fn audit_trail(&self, id: &str) -> PortResult<Vec<AuditEvent>> {
        let items = query_all(
            self.client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :events)")
                .expression_attribute_values(":pk", AttributeValue::S(deployment_pk(id)))
                .expression_attribute_values(":events", AttributeValue::S("EVENT#".into()))
                .consistent_read(true),
        )
        .await?;
        items
            .into_iter()
            .map(|item| {
                serde_dynamo::from_item::<_, AuditEvent>(item).map_err(|e| PortError::Corrupt {
                    key: deployment_pk(id),
                    message: e.to_string(),
                })
            })
            .collect()
    }

    async fn active(&self, service: &str, environment: &str) -> PortResult<Vec<String>> {
        let items = query_all(
            self.client
                .query()
                .table_name(&self.table)
                .index_name(ACTIVE_INDEX)
                .key_condition_expression("active_pk = :a AND begins_with(active_sk, :p)")
                .expression_attribute_values(":a", AttributeValue::S(ACTIVE.to_string()))
                .expression_attribute_values(
                    ":p",
                    AttributeValue::S(format!("{service}#{environment}#")),
                ),
        )
        .await?;
        Ok(items.iter().filter_map(deployment_id_of).collect())
    }

    async fn all_active(&self) -> PortResult<Vec<String>> {
        let items = query_all(
            self.client
                .query()
                .table_name(&self.table)
                .index_name(ACTIVE_INDEX)
                .key_condition_expression("active_pk = :a")
                .expression_attribute_values(":a", AttributeValue::S(ACTIVE.to_string())),
        )
        .await?;
        Ok(items.iter().filter_map(deployment_id_of).collect())
    }

    async fn latest(&self, service: &str, environment: &str) -> PortResult<Option<Deployment>> {
        let out = self
            .newest_first(service, environment)
            .limit(1)
            .send()
            .await
            .map_err(|e| {
                PortError::remote(
                    "DynamoDB Query",
                    aws_sdk_dynamodb::error::DisplayErrorContext(e),
                )
            })?;
        match out
            .items
            .unwrap_or_default()
            .first()
            .and_then(deployment_id_of)
        {
            Some(id) => self.get(&id).await,
            None => Ok(None),
        }
    }

    async fn remember(&self, key: &str) -> PortResult<Created> {
        let expires = chrono::Utc::now().timestamp() + MARKER_TTL_SECONDS;
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", AttributeValue::S(format!("HANDLED#{key}")))
            .item("sk", AttributeValue::S("HANDLED".to_string()))
            .item("expires_at", AttributeValue::N(expires.to_string()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(Created::New),
            Err(e) if condition_failed(&e) => Ok(Created::AlreadyExists),
            Err(e) => Err(PortError::remote(
                "DynamoDB PutItem",
                aws_sdk_dynamodb::error::DisplayErrorContext(e),
            )),
        }
    }

    async fn forget(&self, key: &str) -> PortResult<()> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(format!("HANDLED#{key}")))
            .key("sk", AttributeValue::S("HANDLED".to_string()))
            .send()
            .await
            .map_err(|e| PortError::remote("DynamoDB DeleteItem", DisplayErrorContext(e)))?;
        Ok(())
    }

    async fn stage(&self, service: &str, environment: &str) -> PortResult<Stage> {
        let pk = slot_pk(service, environment);
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(pk.clone()))
            .key("sk", AttributeValue::S("SLOT".to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| PortError::remote("DynamoDB GetItem", DisplayErrorContext(e)))?;
        match out.item {
            Some(item) => serde_dynamo::from_item::<_, StageItem>(item)
                .map(|i| i.stage)
                .map_err(|e| PortError::Corrupt {
                    key: pk,
                    message: e.to_string(),
                }),
            None => Ok(Stage::default()),
        }
    }

    async fn save_stage(
        &self,
        service: &str,
        environment: &str,
        stage: &mut Stage,
    ) -> PortResult<()> {
        let expected = stage.version;
        let pk = slot_pk(service, environment);
        let mut next = stage.clone();
        next.version = expected + 1;
        let item = serde_dynamo::to_item(StageItem {
            pk: pk.clone(),
            sk: "SLOT".to_string(),
            stage: next,
        })
        .map_err(|e| PortError::Corrupt {
            key: pk,
            message: e.to_string(),
        })?;
        let mut request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        request = if expected == 0 {
            request.condition_expression("attribute_not_exists(version)")
        } else {
            request
                .condition_expression("version = :v")
                .expression_attribute_values(":v", AttributeValue::N(expected.to_string()))
        };
        match request.send().await {
            Ok(_) => {
                stage.version = expected + 1;
                Ok(())
            }
            Err(e) if condition_failed(&e) => Err(PortError::Conflict),
            Err(e) => Err(PortError::remote(
                "DynamoDB PutItem",
                DisplayErrorContext(e),
            )),
        }
    }

    async fn claim_idempotency_key(
        &self,
        key: &str,
        fingerprint: &str,
        deployment_id: &str,
    ) -> PortResult<Option<(String, String)>> {
        let pk = AttributeValue::S(format!("IDEMPOTENCY#{key}"));
        let sk = AttributeValue::S("IDEMPOTENCY".to_string());
        let expires = chrono::Utc::now().timestamp() + MARKER_TTL_SECONDS;
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item("pk", pk.clone())
            .item("sk", sk.clone())
            .item("fingerprint", AttributeValue::S(fingerprint.to_string()))
            .item(
                "deployment_id",
                AttributeValue::S(deployment_id.to_string()),
            )
            .item("expires_at", AttributeValue::N(expires.to_string()))
            .condition_expression("attribute_not_exists(pk)")
            .send()
            .await;
        match put {
            Ok(_) => return Ok(None),
            Err(e) if condition_failed(&e) => {}
            Err(e) => {
                return Err(PortError::remote(
                    "DynamoDB PutItem",
                    DisplayErrorContext(e),
                ));
            }
        }
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", pk)
            .key("sk", sk)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| PortError::remote("DynamoDB GetItem", DisplayErrorContext(e)))?
            .item
            .unwrap_or_default();
        let text = |name: &str| match item.get(name) {
            Some(AttributeValue::S(v)) => v.clone(),
            _ => String::new(),
        };
        Ok(Some((text("fingerprint"), text("deployment_id"))))
    }

    async fn page(
        &self,
        service: &str,
        environment: &str,
        status: Option<&str>,
        limit: u32,
        cursor: Option<&str>,
    ) -> PortResult<Page> {
        let mut start = cursor
            .map(|c| decode_cursor(c, service, environment))
            .transpose()?;
        // DynamoDB applies `Limit` before the filter: with a status, a page of `limit` items may
        // hold none that match. Read on (in pages of `FILTERED_PAGE`, at most `FILTERED_READS`
        // of them per call) until `limit` match, and resume after the last one returned.
        const FILTERED_PAGE: i32 = 100;
        const FILTERED_READS: usize = 10;
        let wanted = usize::try_from(limit).unwrap_or(100);
        let mut deployments = Vec::new();
        let mut reads = 0;
        loop {
            let mut request = self
                .newest_first(service, environment)
                .limit(if status.is_some() {
                    FILTERED_PAGE
                } else {
                    i32::try_from(limit).unwrap_or(100)
                })
                .set_exclusive_start_key(start.take());
            if let Some(status) = status {
                request = request
                    .filter_expression("#status = :status")
                    .expression_attribute_names("#status", "status")
                    .expression_attribute_values(":status", AttributeValue::S(status.to_string()));
            }
            let out = request
                .send()
                .await
                .map_err(|e| PortError::remote("DynamoDB Query", DisplayErrorContext(e)))?;
            reads += 1;
            for item in out.items.unwrap_or_default() {
                if deployments.len() == wanted {
                    // More matched than there is room for: the next page starts after the last.
                    let next = deployments
                        .last()
                        .map(|d: &Deployment| encode_cursor(&index_position(d)));
                    return Ok(Page { deployments, next });
                }
                deployments.push(deployment_from_item(item, || {
                    format!("SERVICE#{service}#{environment}")
                })?);
            }
            start = out.last_evaluated_key;
            if start.is_none() || deployments.len() == wanted || reads >= FILTERED_READS {
                return Ok(Page {
                    deployments,
                    next: start.as_ref().map(encode_cursor),
                });
            }
        }
    }

    async fn tally(&self, tally: &crate::ports::Tally) -> PortResult<()> {
        let value = serde_dynamo::to_attribute_value(tally).map_err(|e| PortError::Corrupt {
            key: tally.id.clone(),
            message: e.to_string(),
        })?;
        // One attribute per deployment on its day's item: a single write, which creates the
        // item when it is the day's first and overwrites this deployment's word if said again.
        self.client
            .update_item()
            .table_name(&self.table)
            .key(
                "pk",
                AttributeValue::S(summary_pk(&tally.service, &tally.environment)),
            )
            .key(
                "sk",
                AttributeValue::S(summary_sk(tally.created_at.date_naive())),
            )
            .update_expression("SET #d = :v")
            .expression_attribute_names("#d", format!("{TALLY_PREFIX}{}", tally.id))
            .expression_attribute_values(":v", value)
            .send()
            .await
            .map_err(|e| PortError::remote("DynamoDB UpdateItem tally", DisplayErrorContext(e)))?;
        Ok(())
    }

    async fn tallies(
        &self,
        service: &str,
        environment: &str,
        since: chrono::NaiveDate,
    ) -> PortResult<Vec<crate::ports::Tally>> {
        let pk = summary_pk(service, environment);
        let items = query_all(
            self.client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :p AND sk >= :since")
                .expression_attribute_values(":p", AttributeValue::S(pk.clone()))
                .expression_attribute_values(":since", AttributeValue::S(summary_sk(since))),
        )
        .await?;
        let mut tallies = Vec::new();
        for item in items {
            for (name, value) in item {
                if !name.starts_with(TALLY_PREFIX) {
                    continue;
                }
                let tally =
                    serde_dynamo::from_attribute_value(value).map_err(|e| PortError::Corrupt {
                        key: format!("{pk} {name}"),
                        message: e.to_string(),
                    })?;
                tallies.push(tally);
            }
        }
        Ok(tallies)
    }
}

/// Pagination tokens are the index position, hex-encoded JSON: opaque to callers, checked here.
/// The by-service index position of a deployment's record (a page's resume point).
fn index_position(d: &Deployment) -> std::collections::HashMap<String, AttributeValue> {
    let item = DeploymentItem::new(d);
    [
        ("pk", item.pk),
        ("sk", item.sk),
        ("gsi1pk", item.gsi1pk),
        ("gsi1sk", item.gsi1sk),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), AttributeValue::S(v)))
    .collect()
}

fn encode_cursor(key: &std::collections::HashMap<String, AttributeValue>) -> String {
    let plain: std::collections::BTreeMap<&str, &str> = key
        .iter()
        .filter_map(|(k, v)| match v {
            AttributeValue::S(s) => Some((k.as_str(), s.as_str())),
            _ => None,
        })
        .collect();
    let json = serde_json::to_string(&plain).unwrap_or_default();
    json.bytes().map(|b| format!("{b:02x}")).collect()
}

/// A token back as the index position it encodes, if it is one this listing could have issued:
/// any other (forged, edited, or from another service's listing) is `BadCursor`, never a call
/// that DynamoDB would refuse.
fn decode_cursor(
    token: &str,
    service: &str,
    environment: &str,
) -> PortResult<std::collections::HashMap<String, AttributeValue>> {
    const KEYS: [&str; 4] = ["pk", "sk", "gsi1pk", "gsi1sk"];
    if !token.len().is_multiple_of(2) || token.len() > 4096 {
        return Err(PortError::BadCursor);
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| {
            token
                .get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect();
    let plain: std::collections::BTreeMap<String, String> = bytes
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(PortError::BadCursor)?;
    if plain.len() != KEYS.len() || !KEYS.iter().all(|k| plain.contains_key(*k)) {
        return Err(PortError::BadCursor);
    }
    let field = |k: &str| plain.get(k).map(String::as_str).unwrap_or_default();
    let id = field("pk").strip_prefix("DEPLOYMENT#").unwrap_or_default();
    let position_ok = field("gsi1sk")
        .split_once('#')
        .is_some_and(|(created, rest)| {
            rest == id && chrono::DateTime::parse_from_rfc3339(created).is_ok()
        });
    let ours = !id.is_empty()
        && id.len() <= 128
        && field("sk") == DEPLOYMENT_SK
        && field("gsi1pk") == format!("SERVICE#{service}#{environment}")
        && position_ok;
    if !ours {
        return Err(PortError::BadCursor);
    }
    Ok(plain
        .into_iter()
        .map(|(k, v)| (k, AttributeValue::S(v)))
        .collect())
}

/// Handled-event markers expire (DynamoDB TTL on `expires_at`) after a week: far longer than
/// EventBridge keeps retrying.
const MARKER_TTL_SECONDS: i64 = 7 * 24 * 3600;

/// Every item of a query, page after page.
async fn query_all(
    request: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
) -> PortResult<Vec<std::collections::HashMap<String, AttributeValue>>> {
    let pages: Result<Vec<_>, _> = request
        .into_paginator()
        .items()
        .send()
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect();
    pages.map_err(|e| PortError::remote("DynamoDB Query", DisplayErrorContext(e)))
}

/// A stored deployment item back as a `Deployment`; `key` names it in the error.
fn deployment_from_item(
    item: std::collections::HashMap<String, AttributeValue>,
    key: impl FnOnce() -> String,
) -> PortResult<Deployment> {
    serde_dynamo::from_item::<_, DeploymentItem>(item)
        .map(|i| i.deployment)
        .map_err(|e| PortError::Corrupt {
            key: key(),
            message: e.to_string(),
        })
}

fn deployment_id_of(item: &std::collections::HashMap<String, AttributeValue>) -> Option<String> {
    match item.get("pk") {
        Some(AttributeValue::S(pk)) => pk.strip_prefix("DEPLOYMENT#").map(str::to_string),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deployment::{Deployment, ImagePush};
    use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsOutput;
    use aws_sdk_dynamodb::types::CancellationReason;
    use aws_sdk_dynamodb::types::error::TransactionCanceledException;
    use aws_smithy_mocks::{mock, mock_client};
    use chrono::TimeZone;

    fn deployment() -> Deployment {
        let registration = Registration::parse(
            "api",
            "staging",
            r#"{"cluster":"c","repository":"api","container":"app","engine":{"type":"rolling","service":"api"}}"#,
        )
        .unwrap();
        let push = ImagePush {
            registry: "1.dkr.ecr.eu-west-1.amazonaws.com".into(),
            repository: "api".into(),
            digest: format!("sha256:{}", "c".repeat(64)),
            tag: Some("v1".into()),
            event_id: "e".into(),
        };
        Deployment::from_push(
            &registration,
            &push,
            chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
        )
    }

    fn conditional_failure() -> TransactWriteItemsError {
        TransactWriteItemsError::TransactionCanceledException(
            TransactionCanceledException::builder()
                .cancellation_reasons(
                    CancellationReason::builder()
                        .code("ConditionalCheckFailed")
                        .build(),
                )
                .cancellation_reasons(CancellationReason::builder().code("None").build())
                .build(),
        )
    }

    fn record_put(
        r: &aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsInput,
    ) -> Option<Put> {
        r.transact_items().first().and_then(|w| w.put().cloned())
    }

    #[tokio::test]
    async fn a_save_that_lost_a_race_is_a_conflict_and_keeps_the_version() {
        let rule = mock!(Client::transact_write_items)
            .match_requests(|r| {
                record_put(r)
                    .is_some_and(|p| p.condition_expression() == Some("record_version = :v"))
            })
            .then_error(conditional_failure);
        let store = DynamoStore::new(mock_client!(aws_sdk_dynamodb, [&rule]), "t");
        let mut d = deployment();
        d.record_version = 4;
        assert!(matches!(store.save(&mut d).await, Err(PortError::Conflict)));
        assert_eq!(d.record_version, 4);
    }

    #[tokio::test]
    async fn a_save_is_conditional_on_the_version_read_and_bumps_it() {
        let rule = mock!(Client::transact_write_items)
            .match_requests(|r| {
                let Some(put) = record_put(r) else {
                    return false;
                };
                let values = put
                    .expression_attribute_values()
                    .cloned()
                    .unwrap_or_default();
                let item = put.item().clone();
                // The record and its one unsaved audit event, in one transaction.
                let event = r.transact_items().get(1).and_then(|w| w.put());
                values.get(":v") == Some(&AttributeValue::N("4".into()))
                    && item.get("record_version") == Some(&AttributeValue::N("5".into()))
                    && item.get("active_pk") == Some(&AttributeValue::S("ACTIVE".into()))
                    && r.transact_items().len() == 2
                    && event.and_then(|p| p.item().get("sk").cloned())
                        == Some(AttributeValue::S("EVENT#0000000000".into()))
            })
            .then_output(|| TransactWriteItemsOutput::builder().build());
        let store = DynamoStore::new(mock_client!(aws_sdk_dynamodb, [&rule]), "t");
        let mut d = deployment();
        d.record_version = 4;
        store.save(&mut d).await.unwrap();
        assert_eq!(d.record_version, 5);
        assert_eq!((d.events_saved, d.events_total), (1, 1));
        assert_eq!(rule.num_calls(), 1);
    }

    #[tokio::test]
    async fn a_save_without_new_audit_events_is_one_conditional_put() {
        use aws_sdk_dynamodb::operation::put_item::PutItemOutput;
        let rule = mock!(Client::put_item)
            .match_requests(|r| {
                r.condition_expression() == Some("record_version = :v")
                    && r.expression_attribute_values()
                        .and_then(|v| v.get(":v"))
                        .is_some_and(|v| *v == AttributeValue::N("7".into()))
            })
            .then_output(|| PutItemOutput::builder().build());
        let store = DynamoStore::new(mock_client!(aws_sdk_dynamodb, [&rule]), "t");
        let mut d = deployment();
        d.events_written();
        d.record_version = 7;
        store.save(&mut d).await.unwrap();
        assert_eq!((rule.num_calls(), d.record_version), (1, 8));
    }

    #[tokio::test]
    async fn finished_deployments_leave_the_active_index() {
        let rule = mock!(Client::transact_write_items)
            .match_requests(|r| {
                record_put(r).is_some_and(|p| {
                    !p.item().contains_key("active_pk") && !p.item().contains_key("active_sk")
                })
            })
            .then_output(|| TransactWriteItemsOutput::builder().build());
        let store = DynamoStore::new(mock_client!(aws_sdk_dynamodb, [&rule]), "t");
        let mut d = deployment();
        d.state = crate::deployment::State::Succeeded {
            finished_at: d.created_at,
            watch_until: None,
        };
        store.save(&mut d).await.unwrap();
        assert_eq!(rule.num_calls(), 1);
    }

    #[tokio::test]
    async fn creating_an_existing_deployment_reports_it_exists() {
        let rule = mock!(Client::transact_write_items)
            .match_requests(|r| {
                record_put(r)
                    .is_some_and(|p| p.condition_expression() == Some("attribute_not_exists(pk)"))
            })
            .then_error(conditional_failure);
        let store = DynamoStore::new(mock_client!(aws_sdk_dynamodb, [&rule]), "t");
        assert_eq!(
            store.create(&deployment()).await.unwrap(),
            Created::AlreadyExists
        );
    }

    #[test]
    fn a_pagination_token_of_another_listing_or_a_forged_one_is_refused() {
        let mut key = std::collections::HashMap::new();
        key.insert("pk".to_string(), AttributeValue::S("DEPLOYMENT#d-1".into()));
        key.insert("sk".to_string(), AttributeValue::S("DEPLOYMENT".into()));
        key.insert(
            "gsi1pk".to_string(),
            AttributeValue::S("SERVICE#api#staging".into()),
        );
        key.insert(
            "gsi1sk".to_string(),
            AttributeValue::S("2026-01-02T03:04:05.000Z#d-1".into()),
        );
        let token = encode_cursor(&key);
        assert!(decode_cursor(&token, "api", "staging").is_ok());
        assert!(matches!(
            decode_cursor(&token, "api", "production"),
            Err(PortError::BadCursor)
        ));
        let mut forged = key.clone();
        forged.insert("gsi1sk".to_string(), AttributeValue::S("x".into()));
        assert!(matches!(
            decode_cursor(&encode_cursor(&forged), "api", "staging"),
            Err(PortError::BadCursor)
        ));
        assert!(matches!(
            decode_cursor("zz", "api", "staging"),
            Err(PortError::BadCursor)
        ));
    }

    #[test]
    fn records_round_trip_through_items() {
        let mut d = deployment();
        d.failed_tasks.push(crate::deployment::FailedTask {
            task_arn: "arn:task/1".into(),
            stop: crate::stop_reason::StopReason::OutOfMemory {
                container: Some("app".into()),
            },
            at: d.created_at,
        });
        let alert = crate::alerts::Alert::for_deployment(
            crate::alerts::EventType::Started,
            &d,
            d.created_at,
        );
        d.outbox.push(crate::deployment::PendingEffect {
            seq: 0,
            phase: 1,
            claim: Some(crate::deployment::Claim {
                token: "t-1".into(),
                at: d.created_at,
            }),
            cancelled: false,
            attempts: 2,
            last_error: Some("throttled".into()),
            retry_at: Some(d.created_at),
            effect: crate::deployment::Effect::Alert(Box::new(alert)),
        });
        let item: std::collections::HashMap<String, AttributeValue> =
            serde_dynamo::to_item(DeploymentItem::new(&d)).unwrap();
        let back: DeploymentItem = serde_dynamo::from_item(item).unwrap();
        assert_eq!(back.deployment, d);
    }

    /// Two invocations saving one record at the same moment: DynamoDB cancels one transaction
    /// with `TransactionConflict` (not `ConditionalCheckFailed`). That is a lost race like any
    /// other — reload and decide again — not a failed call: as `Remote` it fails the event
    /// (Lambda retries it a minute later) or answers the API caller 502 (an approval or a
    /// rollback racing a reconcile tick).
    #[tokio::test]
    async fn a_save_cancelled_by_a_concurrent_transaction_is_a_conflict_to_retry() {
        let rule = mock!(Client::transact_write_items).then_error(|| {
            TransactWriteItemsError::TransactionCanceledException(
                TransactionCanceledException::builder()
                    .cancellation_reasons(
                        CancellationReason::builder()
                            .code("TransactionConflict")
                            .build(),
                    )
                    .cancellation_reasons(CancellationReason::builder().code("None").build())
                    .build(),
            )
        });
        let store = DynamoStore::new(mock_client!(aws_sdk_dynamodb, [&rule]), "t");
        let mut d = deployment();
        d.record_version = 4;
        let result = store.save(&mut d).await;
        assert!(
            matches!(result, Err(PortError::Conflict)),
            "a transaction cancelled by a concurrent one came back as {result:?}"
        );
    }
}
