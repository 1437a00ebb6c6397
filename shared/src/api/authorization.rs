//! Who may do what: admins (`FLIGHTDECK_ADMINS`) register services and act on every
//! deployment; a registration's deployers and approvers act on its deployments.

use super::ApiResponse;
use crate::registration::Registration;

pub use crate::principal::principal_matches;

/// The caller of a request, and whether it is an admin.
#[derive(Clone, Copy, Debug)]
pub(super) struct Caller<'a> {
    pub principal: &'a str,
    /// The other name an OIDC caller may be listed under (its subject beside its email).
    pub alias: Option<&'a str>,
    pub admin: bool,
}

impl Caller<'_> {
    /// Refused (403) unless the caller is an admin; `what` says what only an admin may do.
    pub fn require_admin(&self, what: &str) -> Result<(), ApiResponse> {
        if self.admin {
            return Ok(());
        }
        Err(ApiResponse::error(
            403,
            "forbidden",
            format!(
                "{} is not an admin (FLIGHTDECK_ADMINS): only an admin may {what}",
                self.principal
            ),
        ))
    }

    /// Refused (403) unless the caller may take `action` on a deployment of `registration`:
    /// an admin, an approver to approve, a deployer for the rest.
    pub fn require_role(
        &self,
        registration: &Registration,
        action: &str,
    ) -> Result<(), ApiResponse> {
        let (listed, role) = if action == "approve" {
            (&registration.spec.approvers, "an approver")
        } else {
            (&registration.spec.deployers, "a deployer")
        };
        let named = |p: &String| {
            principal_matches(self.principal, p) || self.alias.is_some_and(|a| a == p.as_str())
        };
        if self.admin || listed.iter().any(named) {
            return Ok(());
        }
        Err(ApiResponse::error(
            403,
            "forbidden",
            format!(
                "{} is not {role} of {} in {}",
                self.principal, registration.service, registration.environment
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registration() -> Registration {
        Registration::parse(
            "api",
            "production",
            r#"{"cluster":"prod","repository":"api","container":"app",
                "engine":{"type":"rolling","service":"api"},
                "deployers":["arn:aws:iam::1:role/ci-deployer"],
                "approvers":["arn:aws:iam::1:role/release-approver"]}"#,
        )
        .unwrap()
    }

    #[test]
    fn admins_deployers_and_approvers_each_get_their_one_check() {
        let r = registration();
        let deployer = Caller {
            principal: "arn:aws:sts::1:assumed-role/ci-deployer/build-7",
            alias: None,
            admin: false,
        };
        let approver = Caller {
            principal: "arn:aws:sts::1:assumed-role/release-approver/alice",
            alias: None,
            admin: false,
        };
        let admin = Caller {
            principal: "arn:aws:iam::1:user/platform-admin",
            alias: None,
            admin: true,
        };
        assert!(deployer.require_role(&r, "rollback").is_ok());
        assert!(approver.require_role(&r, "approve").is_ok());
        assert!(admin.require_role(&r, "approve").is_ok());
        let refused = deployer.require_role(&r, "approve").unwrap_err();
        assert_eq!(refused.status, 403);
        assert!(
            refused
                .body
                .to_string()
                .contains("is not an approver of api in production"),
            "{}",
            refused.body
        );
        let refused = approver.require_admin("register services").unwrap_err();
        assert_eq!(refused.status, 403);
        assert!(
            refused
                .body
                .to_string()
                .contains("not an admin (FLIGHTDECK_ADMINS): only an admin may register services"),
            "{}",
            refused.body
        );
        assert!(admin.require_admin("override a change freeze").is_ok());
    }
}
