//! Who a caller is, for authorization and the four-eyes rule. Principals are compared as
//! account + role for assumed roles (the session name is ignored: the same role under another
//! session is the same principal) or as the exact ARN for IAM users and anything else.

/// Whether `caller` (as the IAM authorizer reports it) is the principal `listed` names: an
/// assumed role `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION` matches
/// `arn:aws:iam::ACCOUNT:role/ROLE` with any path; an IAM user matches its exact ARN.
pub fn principal_matches(caller: &str, listed: &str) -> bool {
    if caller == listed {
        return true;
    }
    let Some((caller_account, caller_role)) = assumed_role(caller) else {
        return false;
    };
    let mut parts = listed.splitn(6, ':');
    let (Some("arn"), Some(_partition), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let Some(role_path) = resource.strip_prefix("role/") else {
        return false;
    };
    account == caller_account && role_path.rsplit('/').next() == Some(caller_role)
}

/// (account, role name) of an `sts` assumed-role ARN.
fn assumed_role(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.splitn(6, ':');
    let (Some("arn"), Some(_), Some("sts"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let mut segments = resource.split('/');
    match (segments.next(), segments.next()) {
        (Some("assumed-role"), Some(role)) if !role.is_empty() => Some((account, role)),
        _ => None,
    }
}

/// The principal an ARN stands for: `ACCOUNT:role/ROLE` for an assumed-role session or an IAM
/// role (any path), else the ARN itself.
pub fn principal_key(arn: &str) -> String {
    if let Some((account, role)) = assumed_role(arn) {
        return format!("{account}:role/{role}");
    }
    let mut parts = arn.splitn(6, ':');
    if let (Some("arn"), Some(_), Some("iam"), Some(""), Some(account), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) && let Some(path) = resource.strip_prefix("role/")
        && let Some(role) = path.rsplit('/').next()
    {
        return format!("{account}:role/{role}");
    }
    arn.to_string()
}

/// Whether two ARNs name the same principal (four eyes).
pub fn same_principal(a: &str, b: &str) -> bool {
    principal_key(a) == principal_key(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assumed_roles_match_their_role_with_any_path() {
        let caller = "arn:aws:sts::123456789012:assumed-role/ci-deployer/github-actions-42";
        assert!(principal_matches(
            caller,
            "arn:aws:iam::123456789012:role/ci-deployer"
        ));
        assert!(principal_matches(
            caller,
            "arn:aws:iam::123456789012:role/teams/payments/ci-deployer"
        ));
        assert!(!principal_matches(
            caller,
            "arn:aws:iam::999999999999:role/ci-deployer"
        ));
        assert!(!principal_matches(
            caller,
            "arn:aws:iam::123456789012:role/ci-deployer-2"
        ));
        assert!(!principal_matches(
            caller,
            "arn:aws:iam::123456789012:user/ci-deployer"
        ));
    }

    #[test]
    fn users_match_only_their_exact_arn() {
        let user = "arn:aws:iam::123456789012:user/alice";
        assert!(principal_matches(user, user));
        assert!(!principal_matches(
            user,
            "arn:aws:iam::123456789012:user/alicia"
        ));
        assert!(!principal_matches(
            "garbage",
            "arn:aws:iam::123456789012:role/x"
        ));
    }

    #[test]
    fn one_role_under_two_session_names_is_one_principal() {
        let a = "arn:aws:sts::123456789012:assumed-role/release/alice-laptop";
        let b = "arn:aws:sts::123456789012:assumed-role/release/ci-run-7";
        assert!(same_principal(a, b));
        assert!(same_principal(
            a,
            "arn:aws:iam::123456789012:role/ops/release"
        ));
        assert!(!same_principal(
            a,
            "arn:aws:sts::999999999999:assumed-role/release/x"
        ));
        assert!(!same_principal(
            "arn:aws:iam::123456789012:user/alice",
            "arn:aws:iam::123456789012:user/alicia"
        ));
    }
}
