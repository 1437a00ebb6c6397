//! The dashboard (DESIGN.md, "Dashboard"): one page and its assets, embedded in the binary and
//! served to any request that reaches the function (in AWS the HTTP API decides who reaches it),
//! and the page's settings. The page reads and acts through the same routes under `/ui/`, which
//! in AWS sit behind the HTTP API's JWT authorizer: a browser cannot sign SigV4.

use serde_json::json;

use super::{ApiConfig, ApiResponse};

/// A file of the page, as served.
#[derive(Debug, PartialEq, Eq)]
pub struct Asset {
    pub content_type: &'static str,
    pub body: &'static str,
}

static INDEX: Asset = Asset {
    content_type: "text/html; charset=utf-8",
    body: include_str!("../../dashboard/index.html"),
};

static ASSETS: [(&str, Asset); 2] = [
    (
        "app.js",
        Asset {
            content_type: "text/javascript; charset=utf-8",
            body: include_str!("../../dashboard/app.js"),
        },
    ),
    (
        "app.css",
        Asset {
            content_type: "text/css; charset=utf-8",
            body: include_str!("../../dashboard/app.css"),
        },
    ),
];

/// The page's scripts and styles are its own files; it calls its own origin (and, signing in,
/// the OIDC provider's token endpoint); no frame may embed it.
pub(super) const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self' https:; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'none'";

/// The prefix of the routes the page calls.
pub const UI_PREFIX: &str = "/ui";

/// The page's answer to `GET path`, when `path` is the page's: `/`, `/assets/<file>` or
/// `/dashboard.json` (how the page signs in). `None` for every other path.
pub(super) fn serve(config: &ApiConfig, method: &str, path: &str) -> Option<ApiResponse> {
    let page = path == "/" || path.starts_with("/assets/") || path == "/dashboard.json";
    if !page {
        return None;
    }
    if method != "GET" && method != "HEAD" {
        let mut refused = ApiResponse::error(
            405,
            "method_not_allowed",
            format!("{path} does not accept {method}; it accepts GET"),
        );
        refused.allow = Some("GET");
        return Some(refused);
    }
    if path == "/dashboard.json" {
        return Some(ApiResponse::ok(200, settings(config)));
    }
    let asset = if path == "/" {
        Some(&INDEX)
    } else {
        let name = path.trim_start_matches("/assets/");
        ASSETS.iter().find(|(n, _)| *n == name).map(|(_, a)| a)
    };
    Some(match asset {
        Some(asset) => ApiResponse::asset(asset),
        None => ApiResponse::not_found(format!("no asset {path}")),
    })
}

/// How the page signs in: with the organisation's OIDC provider (authorization code with PKCE),
/// or, on the local stack, as one of the local users it names.
fn settings(config: &ApiConfig) -> serde_json::Value {
    match (&config.oidc, config.local_users.is_empty()) {
        (Some(oidc), _) => json!({
            "signin": "oidc",
            "issuer": oidc.issuer,
            "client_id": oidc.client_id,
            "api": UI_PREFIX,
        }),
        (None, false) => json!({
            "signin": "local",
            "users": config.local_users,
            "api": UI_PREFIX,
        }),
        (None, true) => json!({ "signin": "none", "api": UI_PREFIX }),
    }
}

/// The caller's identity from an OIDC token's claims, as the JWT authorizer passes them:
/// always `oidc:<subject>` (the same whichever token, ID or access, the caller sends, so four
/// eyes cannot be passed by switching tokens), and `oidc:<email>` as the other name it may be
/// listed under when the provider says the email is verified. `None` without a subject.
pub fn oidc_identity(claim: impl Fn(&str) -> Option<String>) -> Option<(String, Option<String>)> {
    let subject = claim("sub").filter(|s| !s.is_empty())?;
    let verified_email = claim("email")
        .filter(|e| !e.is_empty())
        .filter(|_| claim("email_verified").as_deref() == Some("true"));
    let principal = format!("oidc:{subject}");
    let alias = verified_email
        .map(|email| format!("oidc:{email}"))
        .filter(|alias| *alias != principal);
    Some((principal, alias))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ApiConfig {
        ApiConfig::default()
    }

    #[test]
    fn the_page_and_its_assets_are_served_from_the_binary() {
        let page = serve(&config(), "GET", "/").unwrap();
        assert_eq!(page.status, 200);
        let asset = page.asset.unwrap();
        assert!(asset.content_type.starts_with("text/html"));
        assert!(asset.body.contains("/assets/app.js"));
        for name in ["app.js", "app.css"] {
            let r = serve(&config(), "GET", &format!("/assets/{name}")).unwrap();
            assert_eq!(r.status, 200, "{name}");
            assert!(!r.asset.unwrap().body.is_empty());
        }
        assert_eq!(
            serve(&config(), "GET", "/assets/../secrets")
                .unwrap()
                .status,
            404
        );
        assert_eq!(serve(&config(), "POST", "/").unwrap().status, 405);
        assert!(serve(&config(), "GET", "/deployments").is_none());
    }

    #[test]
    fn the_page_signs_in_with_oidc_where_configured_and_as_a_local_user_on_the_local_stack() {
        let mut c = config();
        assert_eq!(
            serve(&c, "GET", "/dashboard.json").unwrap().body["signin"],
            "none"
        );
        c.local_users = vec!["dev@example.com".into()];
        let local = serve(&c, "GET", "/dashboard.json").unwrap().body;
        assert_eq!(local["signin"], "local");
        assert_eq!(local["users"][0], "dev@example.com");
        c.oidc = Some(super::super::Oidc {
            issuer: "https://idp.example.com".into(),
            client_id: "abc".into(),
        });
        let oidc = serve(&c, "GET", "/dashboard.json").unwrap().body;
        assert_eq!(oidc["signin"], "oidc");
        assert_eq!(oidc["client_id"], "abc");
    }

    #[test]
    fn an_oidc_caller_is_their_subject_also_listed_by_their_verified_email() {
        let claims = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            oidc_identity(claims(&[
                ("sub", "u-1"),
                ("email", "a@example.com"),
                ("email_verified", "true")
            ])),
            Some(("oidc:u-1".into(), Some("oidc:a@example.com".into())))
        );
        assert_eq!(
            oidc_identity(claims(&[("sub", "u-1"), ("email", "a@example.com")])),
            Some(("oidc:u-1".into(), None)),
            "an unverified email names nobody"
        );
        assert_eq!(oidc_identity(claims(&[("email", "a@example.com")])), None);
    }
}
