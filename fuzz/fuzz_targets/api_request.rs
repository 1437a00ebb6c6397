//! The HTTP API (`api::handle`, transport-free) on any request, over in-memory ports holding the
//! local stack's registrations and deployments. This reaches the routing, query, body and
//! authorization parsing that is private to api.rs.
//!
//! Input: `METHOD PATH[?k=v&…]` on the first line, the caller's ARN on the second (empty: none),
//! the Idempotency-Key on the third (empty: none), the body after (empty: none).
//!
//! Properties: nothing a caller sends produces a 5xx (the ports never fail); every refusal is a
//! 4xx `{"error": {"code", "message"}}`; 405 says what is allowed; a request repeated with its
//! Idempotency-Key answers the same deployment; a registration PUT is what GET then returns.
#![no_main]

use flightdeck::api::{self, ApiConfig, ApiRequest, ApiResponse};
use flightdeck_fuzz::memory::{MemoryPorts, block_on, ports};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn config() -> ApiConfig {
    ApiConfig {
        admins: vec!["arn:aws:iam::123456789012:role/flightdeck-admin".to_string()],
        region: "eu-west-1".to_string(),
        ..ApiConfig::default()
    }
}

fn request(text: &str) -> Option<ApiRequest> {
    let mut lines = text.splitn(4, '\n');
    let first = lines.next()?;
    let (method, target) = first.split_once(' ')?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let some = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
    Some(ApiRequest {
        method: method.to_string(),
        path: path.to_string(),
        query: query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        caller: some(lines.next()),
        caller_alias: None,
        idempotency_key: some(lines.next()),
        body: some(lines.next()),
        account: Some("123456789012".to_string()),
    })
}

fn call(ports: &MemoryPorts, request: &ApiRequest) -> ApiResponse {
    let response = block_on(api::handle(ports, &config(), request));
    let status = response.status;
    assert!(
        matches!(status, 200 | 201 | 400 | 403 | 404 | 405 | 409 | 422),
        "status {status} for {request:?}: {}",
        response.body
    );
    // A JSON object, or one of the dashboard's files (served whole, 200 only).
    assert!(
        response.body.is_object() || (response.asset.is_some() && status == 200),
        "{}",
        response.body
    );
    if status >= 400 {
        let error = &response.body["error"];
        assert!(
            error["code"].as_str().is_some_and(|c| !c.is_empty()),
            "{}",
            response.body
        );
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            response.body
        );
    }
    assert_eq!(status == 405, response.allow.is_some());
    response
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Some(request) = request(text) else { return };
    let ports = ports();
    let response = call(&ports, &request);

    if request.method == "POST" && request.path == "/deployments" && response.status == 201 {
        let id = response.body["id"]
            .as_str()
            .expect("a created deployment has an id");
        if request.idempotency_key.is_some() {
            let replay = call(&ports, &request);
            assert_eq!(replay.status, 200, "replay: {}", replay.body);
            assert_eq!(
                replay.body["id"].as_str(),
                Some(id),
                "replay answered another deployment"
            );
        }
        let get = ApiRequest {
            method: "GET".to_string(),
            path: format!("/deployments/{id}"),
            ..request.clone()
        };
        assert_eq!(
            call(&ports, &get).status,
            200,
            "a created deployment can be read"
        );
    }
    if request.method == "PUT" && matches!(response.status, 200 | 201) {
        let get = ApiRequest {
            method: "GET".to_string(),
            body: None,
            ..request.clone()
        };
        let read = call(&ports, &get);
        assert_eq!(read.status, 200);
        assert_eq!(
            read.body, response.body,
            "GET does not return what PUT stored"
        );
        let again = call(&ports, &request);
        assert_eq!(again.status, 200, "a second PUT replaces: {}", again.body);
    }
    let _: &Value = &response.body;
});
