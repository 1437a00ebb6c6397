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
    match (assumed_role(caller), iam_role(listed)) {
        (Some(caller), Some(listed)) => caller == listed,
        _ => false,
    }
}

/// (service, account, resource) of an ARN with an empty region (`arn:PARTITION:SERVICE::ACCOUNT:RESOURCE`).
fn global_arn(arn: &str) -> Option<(&str, &str, &str)> {
    let mut parts = arn.splitn(6, ':');
    match (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) {
        (Some("arn"), Some(_), Some(service), Some(""), Some(account), Some(resource)) => {
            Some((service, account, resource))
        }
        _ => None,
    }
}

/// (account, role name) of an `sts` assumed-role ARN.
fn assumed_role(arn: &str) -> Option<(&str, &str)> {
    let ("sts", account, resource) = global_arn(arn)? else {
        return None;
    };
    let mut segments = resource.split('/');
    match (segments.next(), segments.next()) {
        (Some("assumed-role"), Some(role)) if !role.is_empty() => Some((account, role)),
        _ => None,
    }
}

/// (account, role name) of an IAM role ARN, whatever its path.
fn iam_role(arn: &str) -> Option<(&str, &str)> {
    let ("iam", account, resource) = global_arn(arn)? else {
        return None;
    };
    let role = resource.strip_prefix("role/")?.rsplit('/').next()?;
    (!role.is_empty()).then_some((account, role))
}

/// The principal an ARN stands for: `ACCOUNT:role/ROLE` for an assumed-role session or an IAM
/// role (any path), else the ARN itself.
pub fn principal_key(arn: &str) -> String {
    match assumed_role(arn).or_else(|| iam_role(arn)) {
        Some((account, role)) => format!("{account}:role/{role}"),
        None => arn.to_string(),
    }
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
