//! Route tests of the API: real-shaped API Gateway HTTP API (payload v2) events from `events/`
//! and built like API Gateway builds them, through `lambda_http`'s parsing and `api::from_http`,
//! against the local stack. Needs the emulators: `infra/local/test`.

use flightdeck::api::{ApiConfig, ApiResponse};
use flightdeck::ports::DeploymentStore;
use flightdeck_local::local_api::{Caller, call, event, local_config};
use flightdeck_local::{LocalPorts, Result, Stack, local_sdk_config, sample};
use serde_json::{Value, json};

const CI: &str = "arn:aws:sts::123456789012:assumed-role/ci-deployer/github-actions";
const APPROVER: &str = "arn:aws:sts::123456789012:assumed-role/release-approver/release-manager";
const ADMIN: &str = "arn:aws:iam::123456789012:user/platform-admin";
const STRANGER: &str = "arn:aws:sts::123456789012:assumed-role/somebody-else/session";

struct Api {
    stack: Stack,
    ports: LocalPorts,
    config: ApiConfig,
}

async fn api(name: &str) -> Result<Api> {
    let unique = format!(
        "{name}-{}",
        &flightdeck_local::hex64(&format!("{name}{:?}", std::time::SystemTime::now()))[..6]
    );
    let stack = Stack::create(local_sdk_config().await?, &unique, "checkout-api", 1).await?;
    stack.register_sample("staging").await?;
    let ports = stack.ports();
    Ok(Api {
        stack,
        ports,
        config: local_config(),
    })
}

impl Api {
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        caller: Option<&str>,
        key: Option<&str>,
    ) -> ApiResponse {
        let mut headers = vec![("content-type".to_string(), "application/json".to_string())];
        if let Some(key) = key {
            headers.push(("Idempotency-Key".to_string(), key.to_string()));
        }
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let caller = caller.map(|c| match c.strip_prefix("oidc:") {
            Some(email) => Caller::Oidc {
                email: email.to_string(),
                subject: format!("sub-{email}"),
            },
            None => Caller::Iam(c.to_string()),
        });
        let e = event(method, path, &headers, body.as_bytes(), caller.as_ref());
        call(&self.ports, &self.config, &e).await
    }

    async fn sample(&self, e: Value) -> ApiResponse {
        call(&self.ports, &self.config, &e).await
    }
}

fn digest(seed: &str) -> String {
    format!("sha256:{}", flightdeck_local::hex64(seed))
}

fn code(r: &ApiResponse) -> &str {
    r.body["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn the_sample_event_starts_a_deployment_and_a_replay_returns_it() -> Result<()> {
    let t = api("post").await?;
    // The sample's body is base64-encoded, as API Gateway sends it.
    let first = t.sample(sample("apigw-post-deployment.json")?).await;
    assert_eq!(first.status, 201, "{}", first.body);
    assert_eq!(first.body["status"], json!("DEPLOYING"));
    assert_eq!(first.body["trigger"], json!("api"));
    assert_eq!(first.body["started_by"], json!(CI));
    assert!(first.body["image"].as_str().unwrap_or("").ends_with(
        "/checkout-api@sha256:7f5b2640fe6fb4f46592dfd3410c4a79dac4f89e4782432e0378abcd1234ef56"
    ));
    for key in [
        "id",
        "service",
        "environment",
        "image",
        "digest",
        "tag",
        "trigger",
        "status",
        "traffic_percent",
        "started_by",
        "created_at",
        "updated_at",
        "finished_at",
        "reason",
        "events",
    ] {
        assert!(first.body.get(key).is_some(), "{key} missing");
    }
    for e in first.body["events"].as_array().into_iter().flatten() {
        for key in ["at", "status", "reason", "actor"] {
            assert!(e.get(key).is_some(), "event {key} missing");
        }
    }
    let replay = t.sample(sample("apigw-post-deployment.json")?).await;
    assert_eq!(replay.status, 200);
    assert_eq!(replay.body["id"], first.body["id"]);
    assert_eq!(t.stack.deployments("staging").await?.len(), 1);
    assert_eq!(t.stack.task_definition_revisions().await?.len(), 2);

    // The same key with a different body is a conflict.
    let other = t
        .send("POST", "/deployments", Some(json!({"service": "checkout-api", "environment": "staging", "image": digest("other")})), Some(CI), Some("github-run-7012345678-attempt-1"))
        .await;
    assert_eq!(
        (other.status, code(&other)),
        (409, "idempotency_key_reused")
    );

    let id = first.body["id"].as_str().unwrap_or_default();
    let mut get = sample("apigw-get-deployment.json")?;
    get["rawPath"] = json!(format!("/deployments/{id}"));
    get["requestContext"]["http"]["path"] = json!(format!("/deployments/{id}"));
    let got = t.sample(get).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["id"], json!(id));
    Ok(())
}

#[tokio::test]
async fn identity_and_lists_decide_who_may_do_what() -> Result<()> {
    let t = api("auth").await?;
    let body = json!({"service": "checkout-api", "environment": "staging", "image": digest("a")});
    let anonymous = t
        .send("POST", "/deployments", Some(body.clone()), None, None)
        .await;
    assert_eq!(anonymous.status, 403);
    let stranger = t
        .send(
            "POST",
            "/deployments",
            Some(body.clone()),
            Some(STRANGER),
            None,
        )
        .await;
    assert_eq!((stranger.status, code(&stranger)), (403, "forbidden"));
    let get_anonymous = t.send("GET", "/services", None, None, None).await;
    assert_eq!(get_anonymous.status, 403);

    // One ECS service has one registration: production may not take staging's.
    let clash = json!({
        "cluster": t.stack.cluster, "repository": "checkout-api", "container": "app",
        "engine": {"type": "rolling", "service": "checkout-api"}
    });
    let refused = t
        .send(
            "PUT",
            "/services/checkout-api/production",
            Some(clash),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!((refused.status, code(&refused)), (409, "conflict"));
    assert!(
        refused.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("already managed by the registration of checkout-api in staging"),
        "{}",
        refused.body
    );

    // Only admins register; a registration names who deploys and approves.
    t.stack.add_service("checkout-api-production", 1).await?;
    let doc = json!({
        "cluster": t.stack.cluster, "repository": "checkout-api", "container": "app",
        "engine": {"type": "rolling", "service": "checkout-api-production"},
        "gates": {"approval": true},
        "deployers": ["arn:aws:iam::123456789012:role/ci-deployer"],
        "approvers": ["arn:aws:iam::123456789012:role/ci-deployer", "arn:aws:iam::123456789012:role/release-approver"]
    });
    let refused = t
        .send(
            "PUT",
            "/services/checkout-api/production",
            Some(doc.clone()),
            Some(CI),
            None,
        )
        .await;
    assert_eq!(refused.status, 403);
    let created = t
        .send(
            "PUT",
            "/services/checkout-api/production",
            Some(doc.clone()),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let updated = t
        .send(
            "PUT",
            "/services/checkout-api/production",
            Some(doc),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(updated.status, 200);

    // Only resources tagged flightdeck:managed=true may be registered (the IAM policy lets
    // Flightdeck change nothing else); the refusal says how to tag it.
    t.stack
        .add_unmanaged_service("checkout-api-untagged")
        .await?;
    let untagged = json!({
        "cluster": t.stack.cluster, "repository": "checkout-api", "container": "app",
        "engine": {"type": "rolling", "service": "checkout-api-untagged"}
    });
    let refused = t
        .send(
            "PUT",
            "/services/checkout-api/qa",
            Some(untagged),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(
        (refused.status, code(&refused)),
        (422, "unmanaged_resource"),
        "{}",
        refused.body
    );
    let message = refused.body["error"]["message"].as_str().unwrap_or("");
    assert!(
        message.contains("checkout-api-untagged")
            && message.contains("aws ecs tag-resource")
            && message.contains("key=flightdeck:managed,value=true"),
        "{message}"
    );
    let missing = json!({
        "cluster": t.stack.cluster, "repository": "checkout-api", "container": "app",
        "engine": {"type": "rolling", "service": "checkout-api-nowhere"}
    });
    let refused = t
        .send(
            "PUT",
            "/services/checkout-api/qa",
            Some(missing),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(
        (refused.status, code(&refused)),
        (422, "not_found"),
        "{}",
        refused.body
    );

    let listed = t.send("GET", "/services", None, Some(STRANGER), None).await;
    assert_eq!(listed.body["services"].as_array().map(Vec::len), Some(2));

    // Production waits for approval; the deployer who started it may not approve it.
    let started = t
        .send("POST", "/deployments", Some(json!({"service": "checkout-api", "environment": "production", "image": digest("p")})), Some(CI), Some("prod-1"))
        .await;
    assert_eq!(started.status, 201, "{}", started.body);
    assert_eq!(started.body["status"], json!("AWAITING_APPROVAL"));
    let id = started.body["id"].as_str().unwrap_or_default().to_string();
    let own = t
        .send(
            "POST",
            &format!("/deployments/{id}/approve"),
            None,
            Some(CI),
            None,
        )
        .await;
    assert_eq!((own.status, code(&own)), (403, "forbidden"));
    assert!(
        own.body["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("cannot approve")
    );
    // The same role under another session name is the same principal.
    let other_session = t
        .send(
            "POST",
            &format!("/deployments/{id}/approve"),
            None,
            Some("arn:aws:sts::123456789012:assumed-role/ci-deployer/laptop"),
            None,
        )
        .await;
    assert_eq!(
        (other_session.status, code(&other_session)),
        (403, "forbidden")
    );
    let not_listed = t
        .send(
            "POST",
            &format!("/deployments/{id}/approve"),
            None,
            Some(STRANGER),
            None,
        )
        .await;
    assert_eq!(not_listed.status, 403);
    let approved = t
        .send(
            "POST",
            &format!("/deployments/{id}/approve"),
            None,
            Some(APPROVER),
            None,
        )
        .await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    assert_eq!(approved.body["status"], json!("DEPLOYING"));
    let again = t
        .send(
            "POST",
            &format!("/deployments/{id}/approve"),
            None,
            Some(APPROVER),
            None,
        )
        .await;
    assert_eq!((again.status, code(&again)), (409, "conflict"));

    // Roll back by the deployer; then there is nothing left to roll back.
    let rolled = t
        .send(
            "POST",
            &format!("/deployments/{id}/rollback"),
            None,
            Some(CI),
            None,
        )
        .await;
    assert_eq!(rolled.status, 200, "{}", rolled.body);
    assert_eq!(rolled.body["status"], json!("ROLLING_BACK"));
    let twice = t
        .send(
            "POST",
            &format!("/deployments/{id}/rollback"),
            None,
            Some(CI),
            None,
        )
        .await;
    assert_eq!(twice.status, 409);
    Ok(())
}

#[tokio::test]
async fn bad_input_gets_a_4xx_json_error_never_a_5xx() -> Result<()> {
    let t = api("bad").await?;
    let cases: Vec<(&str, &str, Option<Value>, u16)> = vec![
        ("GET", "/nowhere", None, 404),
        ("DELETE", "/deployments", None, 405),
        ("PATCH", "/services/a/b", None, 405),
        ("POST", "/deployments", None, 400),
        (
            "POST",
            "/deployments",
            Some(json!({"service": "checkout-api"})),
            400,
        ),
        (
            "POST",
            "/deployments",
            Some(
                json!({"service": "checkout-api", "environment": "staging", "image": "sha256:short"}),
            ),
            400,
        ),
        (
            "POST",
            "/deployments",
            Some(json!({"service": "checkout-api", "environment": "staging", "image": "bad tag!"})),
            400,
        ),
        (
            "POST",
            "/deployments",
            Some(
                json!({"service": "checkout-api", "environment": "staging", "image": "v9", "extra": 1}),
            ),
            400,
        ),
        (
            "POST",
            "/deployments",
            Some(json!({"service": "nope", "environment": "staging", "image": digest("x")})),
            404,
        ),
        (
            "POST",
            "/deployments",
            Some(json!({"service": "checkout-api", "environment": "staging", "image": "v404"})),
            404,
        ),
        ("GET", "/deployments", None, 400),
        (
            "GET",
            "/deployments?service=checkout-api&environment=staging&limit=0",
            None,
            400,
        ),
        (
            "GET",
            "/deployments?service=checkout-api&environment=staging&limit=abc",
            None,
            400,
        ),
        (
            "GET",
            "/deployments?service=checkout-api&environment=staging&status=DONE",
            None,
            400,
        ),
        (
            "GET",
            "/deployments?service=checkout-api&environment=staging&next=zz",
            None,
            400,
        ),
        (
            "GET",
            "/deployments?service=checkout-api&environment=staging&next=7b7d",
            None,
            400,
        ),
        ("GET", "/deployments/not-an-id", None, 400),
        ("GET", "/deployments/d-00000000000000000000", None, 404),
        (
            "POST",
            "/deployments/d-00000000000000000000/approve",
            None,
            404,
        ),
        ("GET", "/services/bad%20name/staging", None, 400),
        ("GET", "/services/checkout-api/nowhere", None, 404),
        (
            "PUT",
            "/services/checkout-api/dev",
            Some(json!({"cluster": "c"})),
            400,
        ),
        (
            "PUT",
            "/services/checkout-api/dev",
            Some(
                json!({"cluster": "c", "repository": "r", "container": "app", "engine": {"type": "ecs-native", "service": "s"},
                       "strategy": {"type": "canary", "steps": [5, 25, 100], "bake_minutes": 1}}),
            ),
            400,
        ),
        (
            "GET",
            "/metrics?service=checkout-api&environment=staging&days=0",
            None,
            400,
        ),
    ];
    for (method, path, body, status) in cases {
        let r = t.send(method, path, body, Some(ADMIN), None).await;
        assert_eq!(r.status, status, "{method} {path}: {}", r.body);
        assert!(
            r.body["error"]["code"].is_string() && r.body["error"]["message"].is_string(),
            "{method} {path}: {}",
            r.body
        );
    }
    // A body that is not UTF-8 is refused, not a crash.
    let e = event(
        "POST",
        "/deployments",
        &[],
        &[0xff, 0xfe, 0x00],
        Some(&Caller::Iam(ADMIN.into())),
    );
    let r = call(&t.ports, &t.config, &e).await;
    assert_eq!(r.status, 400);
    Ok(())
}

#[tokio::test]
async fn lists_page_newest_first_a_status_filter_reads_past_other_statuses_and_metrics_count_the_records()
-> Result<()> {
    let t = api("list").await?;
    let mut ids = Vec::new();
    for n in 0..3 {
        let r = t
            .send("POST", "/deployments", Some(json!({"service": "checkout-api", "environment": "staging", "image": digest(&n.to_string())})), Some(CI), Some(&format!("list-{n}")))
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        ids.push(r.body["id"].as_str().unwrap_or_default().to_string());
    }
    // Each push queues behind the one in flight; all three are on record.
    let first = t
        .send(
            "GET",
            "/deployments?service=checkout-api&environment=staging&limit=2",
            None,
            Some(STRANGER),
            None,
        )
        .await;
    assert_eq!(first.status, 200);
    let page: Vec<&str> = first.body["deployments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(page, [ids[2].as_str(), ids[1].as_str()]);
    let next = first.body["next"]
        .as_str()
        .ok_or("no next token")?
        .to_string();
    let second = t
        .send(
            "GET",
            &format!("/deployments?service=checkout-api&environment=staging&limit=2&next={next}"),
            None,
            Some(STRANGER),
            None,
        )
        .await;
    let page: Vec<&str> = second.body["deployments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(page, [ids[0].as_str()]);
    let pending = t
        .send(
            "GET",
            "/deployments?service=checkout-api&environment=staging&status=PENDING",
            None,
            Some(STRANGER),
            None,
        )
        .await;
    assert!(
        pending.body["deployments"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|d| d["status"] == json!("PENDING"))
    );
    // A status filter with a small limit still finds older ones behind newer others (DynamoDB
    // limits before it filters): page through each status one at a time and get exactly the
    // deployments with it, newest first.
    let mut statuses = Vec::new();
    for id in &ids {
        let d = t
            .send(
                "GET",
                &format!("/deployments/{id}"),
                None,
                Some(STRANGER),
                None,
            )
            .await;
        statuses.push(d.body["status"].as_str().unwrap_or_default().to_string());
    }
    for status in &statuses {
        let expected: Vec<&str> = ids
            .iter()
            .zip(&statuses)
            .rev()
            .filter(|(_, s)| *s == status)
            .map(|(id, _)| id.as_str())
            .collect();
        let mut found = Vec::new();
        let mut next: Option<String> = None;
        for _ in 0..5 {
            let query = format!(
                "/deployments?service=checkout-api&environment=staging&status={status}&limit=1{}",
                next.as_deref()
                    .map(|n| format!("&next={n}"))
                    .unwrap_or_default()
            );
            let r = t.send("GET", &query, None, Some(STRANGER), None).await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert!(
                !r.body["deployments"].as_array().is_none_or(Vec::is_empty),
                "a page of {status} is never empty while one is left: {}",
                r.body
            );
            for d in r.body["deployments"].as_array().into_iter().flatten() {
                found.push(d["id"].as_str().unwrap_or_default().to_string());
            }
            next = r.body["next"].as_str().map(str::to_string);
            if next.is_none() {
                break;
            }
        }
        assert_eq!(found, expected, "status {status}");
    }

    let abort = t
        .send(
            "POST",
            &format!("/deployments/{}/abort", ids[2]),
            None,
            Some(CI),
            None,
        )
        .await;
    assert_eq!(abort.body["status"], json!("ABORTED"), "{}", abort.body);
    let metrics = t
        .send(
            "GET",
            "/metrics?service=checkout-api&environment=staging&days=7",
            None,
            Some(STRANGER),
            None,
        )
        .await;
    assert_eq!(metrics.status, 200);
    assert_eq!(metrics.body["deployments"], json!(3));
    assert_eq!(metrics.body["by_status"]["ABORTED"], json!(1));
    assert!(metrics.body.get("change_failure_rate").is_some());
    Ok(())
}

/// Two admins registering one ECS service at the same moment both pass the API's read of the
/// registrations; the store's own claim of the ECS service lets one of them through only.
#[tokio::test]
async fn the_store_lets_one_registration_claim_an_ecs_service_however_writes_interleave()
-> Result<()> {
    let t = api("claim").await?;
    let doc = |service: &str| {
        json!({
            "cluster": t.stack.cluster, "repository": "payments", "container": "app",
            "engine": {"type": "rolling", "service": service}
        })
        .to_string()
    };
    // What the second admin's request writes after its check passed on a stale read.
    let err = t
        .stack
        .register("payments", "staging", &doc("checkout-api"))
        .await
        .expect_err("checkout-api is staging's checkout-api's already");
    let port = err.downcast_ref::<flightdeck::ports::PortError>();
    assert!(
        matches!(port, Some(flightdeck::ports::PortError::Taken(m))
            if m.contains("already managed by the registration of checkout-api in staging")),
        "{err}"
    );
    assert!(
        t.ports
            .store
            .registration("payments", "staging")
            .await?
            .is_none(),
        "nothing of the refused registration is stored"
    );
    // Moving the registration to another ECS service releases its claim; updating it in place
    // keeps it.
    t.stack.add_service("checkout-v2", 1).await?;
    let mut moved: Value = serde_json::from_str(&doc("checkout-v2"))?;
    moved["repository"] = json!("checkout-api");
    t.stack
        .register("checkout-api", "staging", &moved.to_string())
        .await?;
    t.stack
        .register("checkout-api", "staging", &moved.to_string())
        .await?;
    t.stack
        .register("payments", "staging", &doc("checkout-api"))
        .await?;
    Ok(())
}

/// `/metrics` over a service with 1,000 past deployments (spread over 90 days, a few a day)
/// reads one summary item per day of the window with any ended deployment, never the records.
/// The items are counted by asking DynamoDB for the count of the query the store's `tallies`
/// makes (the same key condition), beside the call itself.
#[tokio::test]
async fn metrics_over_a_thousand_past_deployments_read_one_summary_item_per_day() -> Result<()> {
    use flightdeck::deployment::Status;
    use flightdeck::ports::Tally;
    let t = api("thousand").await?;
    let now = chrono::Utc::now();
    let mut in_window = 0;
    for n in 0..1000i64 {
        let created_at = now - chrono::Duration::minutes(n * 129 + 5);
        let tally = Tally {
            id: format!("d-{:020x}", n),
            service: "checkout-api".into(),
            environment: "staging".into(),
            created_at,
            status: if n % 10 == 0 {
                Status::RolledBack
            } else {
                Status::Succeeded
            },
            lead_seconds: Some(300 + n % 60),
            restore_seconds: (n % 10 == 0).then_some(90),
            revert: false,
        };
        if created_at >= now - chrono::Duration::days(30) {
            in_window += 1;
        }
        t.ports.store.tally(&tally).await?;
    }
    for days in [30i64, 365] {
        let metrics = t
            .send(
                "GET",
                &format!("/metrics?service=checkout-api&environment=staging&days={days}"),
                None,
                Some(STRANGER),
                None,
            )
            .await;
        assert_eq!(metrics.status, 200, "{}", metrics.body);
        let counted = metrics.body["deployments"].as_u64().unwrap_or_default();
        if days == 30 {
            // The summary is read from the window's first day on and filtered to its start.
            assert!(
                counted >= in_window && counted <= in_window + 12,
                "{counted} vs {in_window}"
            );
        } else {
            assert_eq!(counted, 1000);
        }
        // What that call read: the summary items from the window's first day on.
        let since = (now - chrono::Duration::days(days)).date_naive();
        let read = t
            .stack
            .dynamodb
            .query()
            .table_name(&t.stack.table)
            .key_condition_expression("pk = :p AND sk >= :since")
            .expression_attribute_values(
                ":p",
                aws_sdk_dynamodb::types::AttributeValue::S("SUMMARY#checkout-api#staging".into()),
            )
            .expression_attribute_values(
                ":since",
                aws_sdk_dynamodb::types::AttributeValue::S(format!("DAY#{since}")),
            )
            .select(aws_sdk_dynamodb::types::Select::Count)
            .send()
            .await?;
        println!(
            "metrics: 1,000 past deployments, days={days}: {} summary items read for {counted} \
             deployments in the window (the records read before the summary: {counted})",
            read.count
        );
        assert!(read.count <= days as i32 + 1, "{} items", read.count);
        assert!(
            read.count <= 91,
            "one item per day with any: {}",
            read.count
        );
    }
    Ok(())
}

/// The same person sends an ID token (subject and verified email) to start and an access token
/// (subject only) to approve: one principal either way, so four eyes holds.
#[tokio::test]
async fn an_oidc_user_cannot_approve_with_another_token_what_they_started() -> Result<()> {
    let t = api("oidc-4eyes").await?;
    let path =
        flightdeck_local::repo_root().join("infra/local/registrations/checkout-api.staging.json");
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    doc["cluster"] = json!(t.stack.cluster);
    doc["engine"]["service"] = json!(t.stack.service);
    doc["gates"]["approval"] = json!(true);
    doc["deployers"] = json!(["oidc:alice@example.com"]);
    doc["approvers"] = json!(["oidc:sub-alice@example.com", "oidc:bob@example.com"]);
    t.stack
        .register(&t.stack.service, "staging", &doc.to_string())
        .await?;
    // ID token: subject `sub-alice@example.com`, verified email alice@example.com.
    let started = t
        .send(
            "POST",
            "/ui/deployments",
            Some(json!({"service": "checkout-api", "environment": "staging", "image": digest("alice")})),
            Some("oidc:alice@example.com"),
            None,
        )
        .await;
    assert_eq!(started.status, 201, "{}", started.body);
    assert_eq!(
        started.body["status"],
        json!("AWAITING_APPROVAL"),
        "{}",
        started.body
    );
    let id = started.body["id"].as_str().unwrap_or_default().to_string();
    let alice = Caller::Oidc {
        email: "alice@example.com".into(),
        subject: "sub-alice@example.com".into(),
    };
    let mut e = event(
        "POST",
        &format!("/ui/deployments/{id}/approve"),
        &[],
        b"",
        Some(&alice),
    );
    // Her access token: no email.
    if let Some(claims) = e["requestContext"]["authorizer"]["jwt"]["claims"].as_object_mut() {
        claims.remove("email");
        claims.remove("email_verified");
    }
    let own = call(&t.ports, &t.config, &e).await;
    assert_eq!(
        own.status, 403,
        "self-approval with another token: {}",
        own.body
    );
    assert!(
        own.body.to_string().contains("cannot approve it"),
        "{}",
        own.body
    );
    let bob = t
        .send(
            "POST",
            &format!("/ui/deployments/{id}/approve"),
            None,
            Some("oidc:bob@example.com"),
            None,
        )
        .await;
    assert_eq!(bob.status, 200, "{}", bob.body);
    Ok(())
}
