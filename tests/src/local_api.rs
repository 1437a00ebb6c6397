//! The API served locally: HTTP requests become API Gateway HTTP API (payload v2) events with an
//! IAM authorizer context, go through `lambda_http`'s own event parsing and the same
//! `api::from_http` the Lambda uses, and are answered by `api::handle`.
//!
//! Identity stands in for IAM: the access key id in a SigV4 `Authorization` header (what
//! `curl --aws-sigv4` sends) names the caller through `infra/local/principals.json`. Signatures
//! are not verified here; in AWS, API Gateway verifies them.

use std::collections::HashMap;

use chrono::Utc;
use flightdeck::adapters::ecr::EcrImages;
use flightdeck::api::{self, ApiConfig, ApiResponse};
use flightdeck::ports::Adapters;
use serde_json::{Value, json};

use crate::{ACCOUNT, Result, repo_root};

/// Access key id -> principal ARN, from `infra/local/principals.json`.
pub fn principals() -> Result<HashMap<String, String>> {
    let path = repo_root().join("infra/local/principals.json");
    let all: HashMap<String, Value> = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    Ok(all
        .into_iter()
        .filter(|(k, _)| !k.starts_with('_'))
        .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_string())))
        .collect())
}

/// The access key id of a SigV4 `Authorization` header.
pub fn access_key(authorization: &str) -> Option<&str> {
    let rest = authorization.strip_prefix("AWS4-HMAC-SHA256")?;
    let credential = rest
        .split(',')
        .find_map(|p| p.trim().strip_prefix("Credential="))?;
    credential.split('/').next().filter(|k| !k.is_empty())
}

/// Who a local request stands for: an IAM principal (a SigV4 access key of
/// `infra/local/principals.json`), or a user the dashboard acts as.
#[derive(Clone, Debug)]
pub enum Caller {
    Iam(String),
    /// The claims a JWT authorizer would pass for this email (verified) and subject.
    Oidc {
        email: String,
        subject: String,
    },
}

/// The header by which the dashboard, served locally, names the local user it acts as (what a
/// sign-in token does in AWS). Only the local server reads it, and only for the users it lists.
pub const LOCAL_USER_HEADER: &str = "x-flightdeck-local-user";

/// The local user a page request names, if it is one of `users`.
pub fn page_user(headers: &[(String, String)], users: &[String]) -> Option<Caller> {
    let named = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(LOCAL_USER_HEADER))
        .map(|(_, v)| v.trim())?;
    users
        .iter()
        .find(|u| u.as_str() == named)
        .map(|u| Caller::Oidc {
            email: u.clone(),
            subject: u.clone(),
        })
}

/// An API Gateway HTTP API (payload v2) event, as API Gateway would send it to the function.
pub fn event(
    method: &str,
    path_and_query: &str,
    headers: &[(String, String)],
    body: &[u8],
    caller: Option<&Caller>,
) -> Value {
    let (path, raw_query) = path_and_query
        .split_once('?')
        .unwrap_or((path_and_query, ""));
    let mut query: HashMap<String, String> = HashMap::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (percent_decode(k), percent_decode(v));
        query
            .entry(k)
            .and_modify(|e| e.push_str(&format!(",{v}")))
            .or_insert(v);
    }
    let mut header_map: HashMap<String, String> = HashMap::new();
    for (k, v) in headers {
        header_map
            .entry(k.to_ascii_lowercase())
            .and_modify(|e| e.push_str(&format!(",{v}")))
            .or_insert_with(|| v.clone());
    }
    let now = Utc::now();
    let authorizer = caller.map(|caller| match caller {
        Caller::Iam(arn) => json!({ "iam": {
            "accessKey": "ASIALOCAL", "accountId": ACCOUNT, "callerId": "LOCAL:caller",
            "userArn": arn, "userId": "LOCAL:caller", "cognitoIdentity": null, "principalOrgId": null
        }}),
        Caller::Oidc { email, subject } => json!({ "jwt": {
            "claims": { "sub": subject, "email": email, "email_verified": "true",
                        "iss": "http://127.0.0.1/local", "aud": "flightdeck-local" },
            "scopes": null
        }}),
    });
    let mut e = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": raw_query,
        "headers": header_map,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": "local",
            "domainName": "127.0.0.1",
            "domainPrefix": "local",
            "http": { "method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1", "userAgent": "local" },
            "requestId": format!("local-{}", now.timestamp_micros()),
            "routeKey": "$default",
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S +0000").to_string(),
            "timeEpoch": now.timestamp_millis(),
        },
        "isBase64Encoded": !body.is_empty(),
    });
    if !query.is_empty() {
        e["queryStringParameters"] = json!(query);
    }
    if let Some(authorizer) = authorizer {
        e["requestContext"]["authorizer"] = authorizer;
    }
    if !body.is_empty() {
        // API Gateway sends bodies it does not know to be text base64-encoded.
        e["body"] = json!(aws_smithy_types::base64::encode(body));
    }
    e
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                match text
                    .get(i + 1..i + 3)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs an API Gateway event through the same path as the Lambda.
pub async fn call<P: Adapters>(ports: &P, config: &ApiConfig, event: &Value) -> ApiResponse {
    let request = match lambda_http::request::from_str(&event.to_string()) {
        Ok(r) => r,
        Err(e) => {
            return ApiResponse::error(
                400,
                "bad_request",
                format!("not an API Gateway event: {e}"),
            );
        }
    };
    match api::from_http(&request) {
        Ok(parsed) => api::handle(ports, config, &parsed).await,
        Err(refused) => refused,
    }
}

/// The users the dashboard may act as on the local stack: a deployer, an approver (both
/// deployer and approver of the local registrations), and a viewer who is neither.
pub const LOCAL_USERS: [&str; 3] = ["dev@example.com", "lead@example.com", "viewer@example.com"];

/// The API settings the local stack uses: the local admin principal, the emulator's region.
pub fn local_config() -> ApiConfig {
    ApiConfig {
        admins: vec!["arn:aws:iam::123456789012:user/platform-admin".to_string()],
        region: std::env::var("AWS_REGION").unwrap_or_else(|_| crate::REGION.to_string()),
        oidc: None,
        local_users: LOCAL_USERS.iter().map(|u| u.to_string()).collect(),
    }
}

impl crate::Stack {
    pub fn images(&self) -> EcrImages {
        EcrImages::new(aws_sdk_ecr::Client::new(&self.sdk))
    }
}
