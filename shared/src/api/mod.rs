//! The CI and operator HTTP API (DESIGN.md, "API"): routing here; who may do what in
//! `authorization`, the JSON documents in `documents`, the routes' work in `services`,
//! `deployments` and `metrics`. Transport-free: `ApiRequest` in, `ApiResponse` out; `from_http`
//! (feature `api`) builds the request from an API Gateway HTTP API (payload v2) event.
//!
//! Errors are `{"error": {"code", "message"}}` with a fitting 4xx. Nothing a caller sends can
//! produce a 5xx; only the AWS services behind the API failing can (502, `upstream_failed`).

mod authorization;
mod dashboard;
mod deployments;
mod documents;
mod metrics;
mod services;

use serde_json::{Value, json};

use crate::handlers::HandlerError;
use crate::lifecycle::Refusal;
use crate::ports::{Adapters, PortError};

use authorization::Caller;
pub use authorization::principal_matches;
pub use dashboard::{Asset, UI_PREFIX, oidc_identity};
pub use documents::deployment_json;
pub use metrics::dora;
pub use services::{Unmanaged, check_managed};

/// A request as the API sees it, whatever carried it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApiRequest {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub idempotency_key: Option<String>,
    /// The body, decoded (API Gateway's base64 undone) and checked to be UTF-8.
    pub body: Option<String>,
    /// The caller from the authorizer context: the IAM principal's ARN, or `oidc:<email or
    /// subject>` from the JWT authorizer's claims; `None` when the request carries neither.
    pub caller: Option<String>,
    /// The other name an OIDC caller may be listed under (`oidc:<subject>` beside the email).
    pub caller_alias: Option<String>,
    /// The account the API runs in (from the request context), for image references.
    pub account: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ApiResponse {
    pub status: u16,
    pub body: Value,
    /// For 405: the methods the path does accept.
    pub allow: Option<&'static str>,
    /// A file of the dashboard, served as it is instead of `body`.
    pub asset: Option<&'static Asset>,
}

impl ApiResponse {
    pub(crate) fn ok(status: u16, body: Value) -> ApiResponse {
        ApiResponse {
            status,
            body,
            allow: None,
            asset: None,
        }
    }

    pub(crate) fn asset(asset: &'static Asset) -> ApiResponse {
        ApiResponse {
            asset: Some(asset),
            ..ApiResponse::ok(200, Value::Null)
        }
    }

    /// 404 with the `not_found` code.
    pub fn not_found(message: impl Into<String>) -> ApiResponse {
        ApiResponse::error(404, "not_found", message)
    }

    pub fn error(status: u16, code: &str, message: impl Into<String>) -> ApiResponse {
        ApiResponse::ok(
            status,
            json!({ "error": { "code": code, "message": message.into() } }),
        )
    }
}

/// Settings of the `api` function.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApiConfig {
    /// `FLIGHTDECK_ADMINS`: may register services and act on every deployment.
    pub admins: Vec<String>,
    /// The region the functions and ECR live in (for image references by digest).
    pub region: String,
    /// The organisation's OIDC provider the dashboard signs in with (`FLIGHTDECK_OIDC_ISSUER`,
    /// `FLIGHTDECK_OIDC_CLIENT_ID`); the HTTP API's JWT authorizer checks its tokens.
    pub oidc: Option<Oidc>,
    /// The local stack only: the users the page may act as without signing in (its requests
    /// name one; the local server turns it into the claims a JWT authorizer would pass).
    pub local_users: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Oidc {
    pub issuer: String,
    pub client_id: String,
}

impl ApiConfig {
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<ApiConfig, crate::config::MissingSetting> {
        let admins = lookup("FLIGHTDECK_ADMINS")
            .ok_or(crate::config::MissingSetting("FLIGHTDECK_ADMINS"))?;
        let region = lookup("AWS_REGION")
            .filter(|r| !r.is_empty())
            .ok_or(crate::config::MissingSetting("AWS_REGION"))?;
        let setting = |k: &str| lookup(k).filter(|v| !v.trim().is_empty());
        let oidc = match (
            setting("FLIGHTDECK_OIDC_ISSUER"),
            setting("FLIGHTDECK_OIDC_CLIENT_ID"),
        ) {
            (Some(issuer), Some(client_id)) => Some(Oidc { issuer, client_id }),
            (None, None) => None,
            (None, Some(_)) => return Err(crate::config::MissingSetting("FLIGHTDECK_OIDC_ISSUER")),
            (Some(_), None) => {
                return Err(crate::config::MissingSetting("FLIGHTDECK_OIDC_CLIENT_ID"));
            }
        };
        Ok(ApiConfig {
            oidc,
            local_users: Vec::new(),
            admins: admins
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect(),
            region,
        })
    }
}

/// Maps what the handlers report to HTTP.
pub(crate) fn from_handler(e: HandlerError) -> ApiResponse {
    match e {
        HandlerError::Refused(Refusal::NotAllowed(m)) => ApiResponse::error(403, "forbidden", m),
        HandlerError::Refused(Refusal::WrongState(m)) => ApiResponse::error(409, "conflict", m),
        HandlerError::NotFound(id) => ApiResponse::not_found(format!("deployment {id} not found")),
        HandlerError::Port(PortError::BadCursor) => ApiResponse::error(
            400,
            "invalid_parameter",
            "`next` is not a pagination token from this API",
        ),
        HandlerError::Contended(m) | HandlerError::Port(PortError::Taken(m)) => {
            ApiResponse::error(409, "conflict", m)
        }
        other => ApiResponse::error(502, "upstream_failed", other.to_string()),
    }
}

pub(crate) fn invalid(field: &str, message: impl std::fmt::Display) -> ApiResponse {
    ApiResponse::error(400, "invalid_parameter", format!("{field}: {message}"))
}

/// The routes and the methods each accepts.
enum Route<'a> {
    Services,
    Service(&'a str, &'a str),
    Deployments,
    Deployment(&'a str),
    Action(&'a str, &'a str),
    Metrics,
    Me,
}

fn route(path: &str) -> Option<(Route<'_>, &'static str)> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    Some(match segments.as_slice() {
        ["services"] => (Route::Services, "GET"),
        ["services", s, e] => (Route::Service(s, e), "GET, PUT"),
        ["deployments"] => (Route::Deployments, "GET, POST"),
        ["deployments", id] => (Route::Deployment(id), "GET"),
        [
            "deployments",
            id,
            action @ ("approve" | "promote" | "rollback" | "abort" | "override-freeze"),
        ] => (Route::Action(id, action), "POST"),
        ["metrics"] => (Route::Metrics, "GET"),
        ["me"] => (Route::Me, "GET"),
        _ => return None,
    })
}

/// Handles one request. Never panics on input; every refusal is a 4xx JSON body.
pub async fn handle<P: Adapters>(
    ports: &P,
    config: &ApiConfig,
    request: &ApiRequest,
) -> ApiResponse {
    if let Some(page) = dashboard::serve(config, &request.method, &request.path) {
        return page;
    }
    // The page's calls: the same routes, under the prefix the JWT authorizer guards in AWS.
    let path = match request.path.strip_prefix(UI_PREFIX) {
        Some(rest) if rest.starts_with('/') => rest,
        _ => request.path.as_str(),
    };
    let Some((route, allow)) = route(path) else {
        return ApiResponse::not_found(format!("no route {}", request.path));
    };
    if !allow.split(", ").any(|m| m == request.method) {
        let mut response = ApiResponse::error(
            405,
            "method_not_allowed",
            format!(
                "{} does not accept {}; it accepts {allow}",
                request.path, request.method
            ),
        );
        response.allow = Some(allow);
        return response;
    }
    let Some(caller) = request.caller.as_deref() else {
        return ApiResponse::error(
            403,
            "forbidden",
            "the request carries no identity (IAM signature or sign-in token)",
        );
    };
    let alias = request.caller_alias.as_deref();
    let who = Caller {
        principal: caller,
        alias,
        admin: config.admins.iter().any(|a| {
            principal_matches(caller, a) || alias.is_some_and(|alias| alias == a.as_str())
        }),
    };
    let result = match (route, request.method.as_str()) {
        (Route::Services, _) => services::list_services(ports).await,
        (Route::Service(s, e), "GET") => services::get_service(ports, s, e).await,
        (Route::Service(s, e), _) => services::put_service(ports, who, s, e, request).await,
        (Route::Deployments, "GET") => deployments::list_deployments(ports, request).await,
        (Route::Deployments, _) => {
            Box::pin(deployments::start_deployment(ports, config, who, request)).await
        }
        (Route::Deployment(id), _) => deployments::get_deployment(ports, id).await,
        (Route::Action(id, action), _) => {
            Box::pin(deployments::act(ports, who, id, action, request)).await
        }
        (Route::Metrics, _) => metrics::metrics(ports, request).await,
        (Route::Me, _) => Ok(ApiResponse::ok(
            200,
            json!({ "principal": who.principal, "alias": who.alias, "admin": who.admin }),
        )),
    };
    result.unwrap_or_else(|response| response)
}

pub(crate) type Answer = Result<ApiResponse, ApiResponse>;

pub(crate) fn upstream(e: impl Into<HandlerError>) -> ApiResponse {
    from_handler(e.into())
}

/// The `service` and `environment` query parameters, both required (`missing` says so) and
/// checked as names.
pub(crate) fn service_and_environment<'a>(
    request: &'a ApiRequest,
    missing: &str,
) -> Result<(&'a str, &'a str), ApiResponse> {
    let (Some(service), Some(environment)) =
        (query(request, "service"), query(request, "environment"))
    else {
        return Err(invalid("service, environment", missing));
    };
    crate::registration::check_name("service", service).map_err(|e| invalid("service", e))?;
    crate::registration::check_name("environment", environment)
        .map_err(|e| invalid("environment", e))?;
    Ok((service, environment))
}

/// A whole-number query parameter within `range`, or `default` when absent.
pub(crate) fn whole_number(
    request: &ApiRequest,
    name: &str,
    range: std::ops::RangeInclusive<u32>,
    default: u32,
) -> Result<u32, ApiResponse> {
    match query(request, name) {
        Some(text) => text
            .parse::<u32>()
            .ok()
            .filter(|n| range.contains(n))
            .ok_or_else(|| {
                invalid(
                    name,
                    format!(
                        "must be a whole number from {} to {}",
                        range.start(),
                        range.end()
                    ),
                )
            }),
        None => Ok(default),
    }
}

pub(crate) fn query<'a>(request: &'a ApiRequest, name: &str) -> Option<&'a str> {
    request
        .query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Builds the request from an API Gateway HTTP API (payload v2) event as `lambda_http` gives it.
#[cfg(feature = "api")]
pub fn from_http(request: &lambda_http::Request) -> Result<ApiRequest, ApiResponse> {
    use lambda_http::{Body, RequestExt, request::RequestContext};
    let body = match request.body() {
        Body::Empty => None,
        Body::Text(t) => Some(t.clone()),
        Body::Binary(b) => {
            Some(String::from_utf8(b.clone()).map_err(|_| invalid("body", "must be UTF-8 JSON"))?)
        }
        _ => None,
    };
    let (caller, caller_alias, account) = match request.request_context_ref() {
        Some(RequestContext::ApiGatewayV2(ctx)) => {
            let iam = ctx
                .authorizer
                .as_ref()
                .and_then(|a| a.iam.as_ref())
                .and_then(|i| i.user_arn.clone())
                .filter(|a| !a.is_empty());
            let oidc = ctx
                .authorizer
                .as_ref()
                .and_then(|a| a.jwt.as_ref())
                .and_then(|jwt| oidc_identity(|k| jwt.claims.get(k).cloned()));
            match (iam, oidc) {
                (Some(arn), _) => (Some(arn), None, ctx.account_id.clone()),
                (None, Some((name, alias))) => (Some(name), alias, ctx.account_id.clone()),
                (None, None) => (None, None, ctx.account_id.clone()),
            }
        }
        _ => (None, None, None),
    };
    let query = request
        .query_string_parameters_ref()
        .map(|q| {
            q.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        })
        .unwrap_or_default();
    Ok(ApiRequest {
        method: request.method().as_str().to_string(),
        path: request.raw_http_path().to_string(),
        query,
        idempotency_key: request
            .headers()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        body,
        caller,
        caller_alias,
        account,
    })
}

impl ApiResponse {
    /// The response's headers and body text, whatever carries it.
    pub fn http_parts(&self) -> (Vec<(&'static str, &'static str)>, String) {
        let mut headers = Vec::new();
        if let Some(allow) = self.allow {
            headers.push(("allow", allow));
        }
        match self.asset {
            Some(asset) => {
                headers.push(("content-type", asset.content_type));
                headers.push(("cache-control", "no-cache"));
                headers.push(("x-content-type-options", "nosniff"));
                headers.push((
                    "content-security-policy",
                    dashboard::CONTENT_SECURITY_POLICY,
                ));
                (headers, asset.body.to_string())
            }
            None => {
                headers.push(("content-type", "application/json"));
                headers.push(("cache-control", "no-store"));
                (headers, self.body.to_string())
            }
        }
    }
}

/// The HTTP response for API Gateway.
#[cfg(feature = "api")]
pub fn to_http(response: &ApiResponse) -> lambda_http::Response<lambda_http::Body> {
    let (headers, body) = response.http_parts();
    let mut builder = lambda_http::Response::builder().status(response.status);
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    builder
        .body(lambda_http::Body::Text(body))
        .unwrap_or_else(|_| lambda_http::Response::new(lambda_http::Body::Empty))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_their_methods() {
        assert!(matches!(
            route("/deployments/d-1/approve"),
            Some((Route::Action(_, "approve"), "POST"))
        ));
        assert!(route("/deployments/d-1/explode").is_none());
        assert!(route("/nope").is_none());
        assert!(matches!(
            route("/services/a/b"),
            Some((Route::Service("a", "b"), "GET, PUT"))
        ));
    }

    #[test]
    fn admins_come_from_a_comma_separated_setting() {
        let config = ApiConfig::from_lookup(|k| match k {
            "FLIGHTDECK_ADMINS" => Some(" arn:aws:iam::1:role/a ,arn:aws:iam::1:user/b,".into()),
            "AWS_REGION" => Some("eu-west-1".into()),
            _ => None,
        })
        .unwrap();
        assert_eq!(
            config.admins,
            ["arn:aws:iam::1:role/a", "arn:aws:iam::1:user/b"]
        );
        assert!(ApiConfig::from_lookup(|_| None).is_err());
    }
}
