//! Service registrations: which ECR repository feeds which ECS service, and how to roll it out.
//!
//! The JSON shape is a contract (DESIGN.md, "Configuration and documents"): unknown fields are
//! rejected with a message naming them, and defaults are filled in here, once.

use serde::{Deserialize, Serialize};

/// A registration as it is stored: the body of `PUT /services/{service}/{environment}` plus its key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub service: String,
    pub environment: String,
    pub spec: ServiceSpec,
}

/// The registration document.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub cluster: String,
    pub repository: String,
    #[serde(default = "default_tag_pattern")]
    pub tag_pattern: String,
    pub container: String,
    pub engine: Engine,
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default)]
    pub gates: Gates,
    #[serde(default)]
    pub promote_to: Option<String>,
    /// How long DEPLOYING may take to become ready, and a rollback to complete.
    #[serde(default = "default_progress_deadline")]
    pub progress_deadline_minutes: u32,
    #[serde(default)]
    pub deployers: Vec<String>,
    #[serde(default)]
    pub approvers: Vec<String>,
    /// Change freezes: no rollout starts inside one (rollbacks and reverts are never frozen).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze: Option<crate::freeze::Freeze>,
}

pub const DEFAULT_PROGRESS_DEADLINE_MINUTES: u32 = 10;

fn default_progress_deadline() -> u32 {
    DEFAULT_PROGRESS_DEADLINE_MINUTES
}

fn default_tag_pattern() -> String {
    "*".to_string()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Engine {
    /// UpdateService to the new task definition; ECS does the rollout.
    Rolling { service: String },
    /// Two ECS services behind weighted target groups of one listener rule.
    AlbWeights {
        #[serde(default)]
        listener_rule_arn: Option<String>,
        #[serde(default)]
        listener_arn: Option<String>,
        blue: Colour,
        green: Colour,
        #[serde(default = "default_scale_down")]
        scale_down_after_minutes: u32,
    },
    /// ECS's own blue/green, linear and canary strategies with a lifecycle hook.
    EcsNative { service: String },
}

fn default_scale_down() -> u32 {
    5
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Colour {
    pub service: String,
    pub target_group_arn: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Strategy {
    Canary {
        steps: Vec<u8>,
        bake_minutes: u32,
    },
    Linear {
        step_percent: u8,
        interval_minutes: u32,
    },
    AllAtOnce {
        #[serde(default)]
        bake_minutes: u32,
    },
}

impl Default for Strategy {
    fn default() -> Self {
        Strategy::AllAtOnce { bake_minutes: 0 }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gates {
    #[serde(default)]
    pub alarms: Vec<String>,
    #[serde(default = "default_max_failed_tasks")]
    pub max_failed_tasks: u32,
    #[serde(default)]
    pub approval: bool,
    /// A revert (API rollback of a SUCCEEDED deployment) waits for approval too.
    #[serde(default)]
    pub approval_for_reverts: bool,
    /// A deployment awaiting approval this long gets `.approval_reminder`.
    #[serde(default = "default_reminder")]
    pub approval_reminder_minutes: u32,
    /// And this long, the reminder again at higher severity.
    #[serde(default = "default_escalation")]
    pub approval_escalation_minutes: u32,
    /// The canary judge: the new colour against the stable one, from ALB metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<crate::judge::Analysis>,
    /// After SUCCEEDED, alarms and crash loops keep watching this long.
    #[serde(default)]
    pub watch_minutes: u32,
    /// The vulnerability gate: the image's ECR scan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan: Option<crate::scan::ScanGate>,
}

fn default_max_failed_tasks() -> u32 {
    3
}

pub const DEFAULT_REMINDER_MINUTES: u32 = 60;
pub const DEFAULT_ESCALATION_MINUTES: u32 = 240;

fn default_reminder() -> u32 {
    DEFAULT_REMINDER_MINUTES
}

fn default_escalation() -> u32 {
    DEFAULT_ESCALATION_MINUTES
}

impl Default for Gates {
    fn default() -> Self {
        Gates {
            alarms: Vec::new(),
            max_failed_tasks: default_max_failed_tasks(),
            approval: false,
            approval_for_reverts: false,
            approval_reminder_minutes: DEFAULT_REMINDER_MINUTES,
            approval_escalation_minutes: DEFAULT_ESCALATION_MINUTES,
            analysis: None,
            watch_minutes: 0,
            scan: None,
        }
    }
}

/// What an event knows that leads to the registrations it concerns.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LookupKey {
    /// An ECR repository name.
    Repository(String),
    /// An ECS service name (in any cluster: the caller checks the cluster).
    EcsService(String),
    /// A CloudWatch alarm name a registration gates on.
    Alarm(String),
    /// A target group as CloudWatch names it: `targetgroup/NAME/ID`.
    TargetGroup(String),
}

impl LookupKey {
    /// The key as stored.
    pub fn as_key(&self) -> String {
        match self {
            LookupKey::Repository(v) => format!("LOOKUP#repository#{v}"),
            LookupKey::EcsService(v) => format!("LOOKUP#ecs-service#{v}"),
            LookupKey::Alarm(v) => format!("LOOKUP#alarm#{v}"),
            LookupKey::TargetGroup(v) => format!("LOOKUP#target-group#{v}"),
        }
    }
}

/// `targetgroup/NAME/ID` of a target group ARN, as CloudWatch's `TargetGroup` dimension names it.
pub fn target_group_dimension(arn: &str) -> &str {
    arn.rsplit_once(':').map(|(_, rest)| rest).unwrap_or(arn)
}

/// The refusal for a claim (`CLUSTER/SERVICE`) held by `owner` (`SERVICE#ENVIRONMENT`).
pub fn taken_message(claim: &str, owner: &str) -> String {
    let (cluster, service) = claim.split_once('/').unwrap_or(("", claim));
    let (s, e) = owner.split_once('#').unwrap_or((owner, ""));
    format!(
        "ECS service {service} in cluster {cluster} is already managed by the registration of {s} \
         in {e}; one ECS service has one registration"
    )
}

/// A resource a registration lets Flightdeck change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ManagedResource<'a> {
    /// An ECS service, by name, in the registration's cluster.
    EcsService(&'a str),
    /// A listener rule or listener, by ARN.
    Listener(&'a str),
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum RegistrationError {
    #[error("invalid registration document: {0}")]
    Document(String),
    #[error("invalid {field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The registration clashes with the ones already stored.
    #[error("{0}")]
    Conflict(String),
}

impl Registration {
    /// Checks `self` against the registrations already stored (its own earlier version among
    /// them is replaced): no ECS service may be managed by two registrations, and promotions may
    /// not form a cycle.
    pub fn check_against(&self, stored: &[Registration]) -> Result<(), RegistrationError> {
        if let Some(taken) = self.ecs_service_taken(stored) {
            return Err(RegistrationError::Conflict(taken));
        }
        let others: Vec<&Registration> = stored
            .iter()
            .filter(|r| !(r.service == self.service && r.environment == self.environment))
            .collect();
        let next = |environment: &str| -> Option<String> {
            if environment == self.environment {
                return self.spec.promote_to.clone();
            }
            others
                .iter()
                .find(|r| r.service == self.service && r.environment == environment)
                .and_then(|r| r.spec.promote_to.clone())
        };
        let mut chain = vec![self.environment.clone()];
        let mut at = self.environment.clone();
        while let Some(to) = next(&at) {
            let cycle = chain.contains(&to);
            chain.push(to.clone());
            if cycle {
                return Err(invalid(
                    "promote_to",
                    &format!("promotions would form a cycle: {}", chain.join(" → ")),
                ));
            }
            at = to;
        }
        Ok(())
    }

    /// Why this registration cannot have its ECS services, when another of `stored` manages one
    /// of them: one ECS service has one registration.
    pub fn ecs_service_taken(&self, stored: &[Registration]) -> Option<String> {
        let owner = self.claims_owner();
        self.claims().into_iter().find_map(|claim| {
            let other = stored
                .iter()
                .find(|r| r.claims_owner() != owner && r.claims().contains(&claim))?;
            Some(taken_message(&claim, &other.claims_owner()))
        })
    }

    /// What this registration claims for itself alone: `CLUSTER/SERVICE` of each ECS service it
    /// deploys to.
    pub fn claims(&self) -> Vec<String> {
        self.ecs_services()
            .into_iter()
            .map(|s| format!("{}/{s}", self.spec.cluster))
            .collect()
    }

    /// Who holds a claim: `SERVICE#ENVIRONMENT` of the registration.
    pub fn claims_owner(&self) -> String {
        format!("{}#{}", self.service, self.environment)
    }

    /// Parses and validates a registration document for `service` in `environment`.
    pub fn parse(service: &str, environment: &str, json: &str) -> Result<Self, RegistrationError> {
        let spec: ServiceSpec =
            serde_json::from_str(json).map_err(|e| RegistrationError::Document(e.to_string()))?;
        let registration = Registration {
            service: service.to_string(),
            environment: environment.to_string(),
            spec,
        };
        registration.validate()?;
        Ok(registration)
    }

    pub fn validate(&self) -> Result<(), RegistrationError> {
        check_name("service", &self.service)?;
        check_name("environment", &self.environment)?;
        let spec = &self.spec;
        check_name("cluster", &spec.cluster)?;
        check_name("container", &spec.container)?;
        if spec.repository.is_empty() || spec.repository.len() > 256 {
            return Err(invalid("repository", "must be 1 to 256 characters"));
        }
        if spec.tag_pattern.is_empty() {
            return Err(invalid(
                "tag_pattern",
                "must not be empty (use `*` for any tag)",
            ));
        }
        if spec.gates.max_failed_tasks == 0 || spec.gates.max_failed_tasks > 100 {
            return Err(invalid("gates.max_failed_tasks", "must be 1 to 100"));
        }
        if spec.progress_deadline_minutes == 0 || spec.progress_deadline_minutes > 1440 {
            return Err(invalid(
                "progress_deadline_minutes",
                "must be 1 to 1440 (minutes)",
            ));
        }
        if spec.promote_to.as_deref() == Some(self.environment.as_str()) {
            return Err(invalid("promote_to", "must name another environment"));
        }
        if let Some(next) = &spec.promote_to {
            check_name("promote_to", next)?;
        }
        if spec.gates.alarms.len() > 20 {
            return Err(invalid(
                "gates.alarms",
                "at most 20 alarms (use a composite alarm)",
            ));
        }
        for alarm in &spec.gates.alarms {
            if alarm.is_empty() || alarm.len() > 255 {
                return Err(invalid(
                    "gates.alarms",
                    "alarm names are 1 to 255 characters",
                ));
            }
        }
        let gates = &spec.gates;
        if gates.approval_reminder_minutes == 0 || gates.approval_reminder_minutes > 10080 {
            return Err(invalid(
                "gates.approval_reminder_minutes",
                "must be 1 to 10080 (minutes)",
            ));
        }
        if gates.approval_escalation_minutes <= gates.approval_reminder_minutes
            || gates.approval_escalation_minutes > 20160
        {
            return Err(invalid(
                "gates.approval_escalation_minutes",
                "must be more than approval_reminder_minutes and at most 20160 (minutes)",
            ));
        }
        if gates.watch_minutes > 1440 {
            return Err(invalid(
                "gates.watch_minutes",
                "must be 0 to 1440 (minutes)",
            ));
        }
        if let Some(analysis) = &gates.analysis {
            analysis.check().map_err(|(f, m)| invalid(f, m))?;
            if matches!(spec.engine, Engine::Rolling { .. }) {
                return Err(invalid(
                    "gates.analysis",
                    "the canary judge compares the new revision's target group with the stable \
                     one's: `rolling` puts both revisions in one (use `alb-weights` or \
                     `ecs-native`)",
                ));
            }
            if matches!(spec.strategy, Strategy::AllAtOnce { .. }) {
                return Err(invalid(
                    "gates.analysis",
                    "`all-at-once` moves all traffic in one step, leaving the stable revision \
                     none to compare with: use a `canary` or `linear` strategy",
                ));
            }
            if self.bake_minutes() < 3 {
                return Err(invalid(
                    "gates.analysis",
                    "the canary judge needs per-minute samples: give each step a bake of at \
                     least 3 minutes",
                ));
            }
        }
        if let Some(scan) = &gates.scan {
            scan.check().map_err(|(f, m)| invalid(f, m))?;
        }
        if let Some(freeze) = &spec.freeze {
            freeze.check().map_err(|(f, m)| invalid(f, &m))?;
        }
        match &spec.strategy {
            Strategy::Canary { steps, .. } => {
                let increasing = steps.windows(2).all(|w| w[0] < w[1]);
                if steps.is_empty() || !increasing || steps.iter().any(|&p| p == 0 || p > 100) {
                    return Err(invalid(
                        "strategy.steps",
                        "must be increasing percentages from 1 to 100, e.g. [10, 100]",
                    ));
                }
            }
            Strategy::Linear { step_percent, .. } => {
                if *step_percent == 0 || *step_percent > 100 {
                    return Err(invalid("strategy.step_percent", "must be 1 to 100"));
                }
            }
            Strategy::AllAtOnce { .. } => {}
        }
        match &spec.engine {
            Engine::Rolling { service } => {
                check_name("engine.service", service)?;
                if !matches!(spec.strategy, Strategy::AllAtOnce { .. }) {
                    return Err(invalid(
                        "strategy",
                        "the rolling engine takes only `all-at-once`: ECS does the rollout",
                    ));
                }
            }
            Engine::AlbWeights {
                listener_rule_arn,
                listener_arn,
                blue,
                green,
                ..
            } => {
                match (listener_rule_arn, listener_arn) {
                    (Some(arn), None) | (None, Some(arn)) if arn.starts_with("arn:") => {}
                    _ => {
                        return Err(invalid(
                            "engine",
                            "alb-weights needs exactly one of `listener_rule_arn` or `listener_arn` (an ARN)",
                        ));
                    }
                }
                check_name("engine.blue.service", &blue.service)?;
                check_name("engine.green.service", &green.service)?;
                if blue.service == green.service || blue.target_group_arn == green.target_group_arn
                {
                    return Err(invalid(
                        "engine",
                        "blue and green must be different services with different target groups",
                    ));
                }
                for tg in [&blue.target_group_arn, &green.target_group_arn] {
                    if !tg.starts_with("arn:") {
                        return Err(invalid(
                            "engine.target_group_arn",
                            "must be a target group ARN",
                        ));
                    }
                }
            }
            Engine::EcsNative { service } => {
                check_name("engine.service", service)?;
                crate::native::NativeStrategy::of(&spec.strategy).map_err(|message| {
                    RegistrationError::Invalid {
                        field: "strategy",
                        message: format!("ecs-native: {message}"),
                    }
                })?;
            }
        }
        Ok(())
    }

    /// The traffic percentages on the new revision, step by step; always ends at 100.
    pub fn traffic_steps(&self) -> Vec<u8> {
        let mut steps = match &self.spec.strategy {
            Strategy::AllAtOnce { .. } => vec![100],
            Strategy::Canary { steps, .. } => steps.clone(),
            Strategy::Linear { step_percent, .. } => (1..=100u16
                .div_ceil(u16::from(*step_percent)))
                .map(|n| (n * u16::from(*step_percent)).min(100) as u8)
                .collect(),
        };
        if steps.last() != Some(&100) {
            steps.push(100);
        }
        steps
    }

    /// Every ECS service the registration deploys to (both colours for `alb-weights`).
    /// The keys an event finds this registration by (DESIGN.md, "Records"): its repository
    /// (pushes), its ECS services (ECS events, alarms on a service), its alarms and target groups
    /// (alarm events). Each is one keyed read, however many registrations there are.
    pub fn lookup_keys(&self) -> Vec<LookupKey> {
        let mut keys = vec![LookupKey::Repository(self.spec.repository.clone())];
        keys.extend(
            self.ecs_services()
                .into_iter()
                .map(|s| LookupKey::EcsService(s.to_string())),
        );
        keys.extend(
            self.spec
                .gates
                .alarms
                .iter()
                .map(|a| LookupKey::Alarm(a.clone())),
        );
        if let Engine::AlbWeights { blue, green, .. } = &self.spec.engine {
            for colour in [blue, green] {
                keys.push(LookupKey::TargetGroup(
                    target_group_dimension(&colour.target_group_arn).to_string(),
                ));
            }
        }
        keys.sort();
        keys.dedup();
        keys
    }

    /// What Flightdeck changes for this registration: its ECS services (UpdateService, and
    /// scaling for alb-weights) and the listener rule or listener whose weights it sets. Each
    /// must carry `ports::MANAGED_TAG` (the IAM policy's condition).
    pub fn managed_resources(&self) -> Vec<ManagedResource<'_>> {
        let mut out: Vec<ManagedResource<'_>> = self
            .ecs_services()
            .into_iter()
            .map(ManagedResource::EcsService)
            .collect();
        if let Engine::AlbWeights {
            listener_rule_arn,
            listener_arn,
            ..
        } = &self.spec.engine
        {
            out.extend(
                listener_rule_arn
                    .as_deref()
                    .or(listener_arn.as_deref())
                    .map(ManagedResource::Listener),
            );
        }
        out
    }

    pub fn ecs_services(&self) -> Vec<&str> {
        match &self.spec.engine {
            Engine::Rolling { service } | Engine::EcsNative { service } => vec![service],
            Engine::AlbWeights { blue, green, .. } => vec![&blue.service, &green.service],
        }
    }

    /// The ECS service this registration deploys to (the rolling engine's service).
    pub fn ecs_service(&self) -> &str {
        match &self.spec.engine {
            Engine::Rolling { service } | Engine::EcsNative { service } => service,
            Engine::AlbWeights { blue, .. } => &blue.service,
        }
    }

    pub fn bake_minutes(&self) -> u32 {
        match self.spec.strategy {
            Strategy::AllAtOnce { bake_minutes } | Strategy::Canary { bake_minutes, .. } => {
                bake_minutes
            }
            Strategy::Linear {
                interval_minutes, ..
            } => interval_minutes,
        }
    }

    /// Whether a push of `repository:tag` is meant for this registration. Untagged pushes match nothing.
    pub fn matches_push(&self, repository: &str, tag: Option<&str>) -> bool {
        match tag {
            Some(tag) if !tag.is_empty() => {
                self.spec.repository == repository && glob_match(&self.spec.tag_pattern, tag)
            }
            _ => false,
        }
    }
}

fn invalid(field: &'static str, message: &str) -> RegistrationError {
    RegistrationError::Invalid {
        field,
        message: message.to_string(),
    }
}

/// Names of services, environments, clusters and containers: what ECS and our keys accept.
pub fn check_name(field: &'static str, value: &str) -> Result<(), RegistrationError> {
    let ok = !value.is_empty()
        && value.len() <= 255
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            field,
            &format!("`{value}` must be 1 to 255 letters, digits, `-` or `_`"),
        ))
    }
}

/// Glob match: `*` is any run of characters (also none), `?` exactly one.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"{
      "cluster": "flightdeck-prod", "repository": "checkout-api", "tag_pattern": "v*",
      "container": "app", "engine": { "type": "rolling", "service": "checkout-api" },
      "strategy": { "type": "all-at-once", "bake_minutes": 5 },
      "gates": { "alarms": ["checkout-api-5xx"], "max_failed_tasks": 3, "approval": false },
      "promote_to": "production",
      "deployers": ["arn:aws:iam::123456789012:role/ci-deployer"],
      "approvers": ["arn:aws:iam::123456789012:role/release-approver"]
    }"#;

    fn reg(service: &str, environment: &str, ecs: &str, promote_to: Option<&str>) -> Registration {
        let promote = promote_to
            .map(|p| format!(r#","promote_to":"{p}""#))
            .unwrap_or_default();
        let json = format!(
            r#"{{"cluster":"c","repository":"{service}","container":"app",
                "engine":{{"type":"rolling","service":"{ecs}"}}{promote}}}"#
        );
        Registration::parse(service, environment, &json).unwrap()
    }

    fn native(strategy: &str) -> Result<Registration, RegistrationError> {
        let json = format!(
            r#"{{"cluster":"c","repository":"r","container":"app",
                "engine":{{"type":"ecs-native","service":"checkout-api"}},"strategy":{strategy}}}"#
        );
        Registration::parse("checkout-api", "staging", &json)
    }

    #[test]
    fn an_ecs_native_registration_takes_every_strategy_ecs_can_express() {
        for strategy in [
            r#"{"type":"all-at-once","bake_minutes":5}"#,
            r#"{"type":"linear","step_percent":20,"interval_minutes":2}"#,
            r#"{"type":"canary","steps":[10,100],"bake_minutes":3}"#,
            r#"{"type":"canary","steps":[10],"bake_minutes":3}"#,
        ] {
            assert!(native(strategy).is_ok(), "{strategy}");
        }
    }

    #[test]
    fn an_ecs_native_strategy_ecs_cannot_express_is_refused_saying_why() {
        let e = native(r#"{"type":"canary","steps":[5,25,100],"bake_minutes":1}"#).unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("invalid strategy: ecs-native:"), "{text}");
        assert!(text.contains("alb-weights"), "{text}");
        let e = native(r#"{"type":"linear","step_percent":2,"interval_minutes":1}"#).unwrap_err();
        assert!(e.to_string().contains("3 to 100"), "{e}");
    }

    #[test]
    fn a_promotion_cycle_is_refused_naming_the_cycle() {
        let stored = vec![reg("api", "production", "api-prod", Some("staging"))];
        let staging = reg("api", "staging", "api-staging", Some("production"));
        let err = staging.check_against(&stored).unwrap_err().to_string();
        assert!(err.contains("staging → production → staging"), "{err}");
        // Re-registering production without the back edge is fine.
        let fixed = reg("api", "production", "api-prod", None);
        assert!(fixed.check_against(std::slice::from_ref(&staging)).is_ok());
    }

    #[test]
    fn two_registrations_may_not_manage_one_ecs_service() {
        let stored = vec![reg("api", "staging", "shared-svc", None)];
        let other = reg("web", "staging", "shared-svc", None);
        let err = other.check_against(&stored).unwrap_err().to_string();
        assert!(
            err.contains("already managed by the registration of api in staging"),
            "{err}"
        );
        // Its own earlier version is not a clash.
        assert!(
            reg("api", "staging", "shared-svc", None)
                .check_against(&stored)
                .is_ok()
        );
    }

    #[test]
    fn the_design_sample_parses() {
        let r = Registration::parse("checkout-api", "staging", SAMPLE).unwrap();
        assert_eq!(r.ecs_service(), "checkout-api");
        assert_eq!(r.bake_minutes(), 5);
        assert_eq!(r.spec.promote_to.as_deref(), Some("production"));
    }

    #[test]
    fn defaults_fill_in_what_is_left_out() {
        let json = r#"{"cluster":"c","repository":"r","container":"app",
                       "engine":{"type":"rolling","service":"s"}}"#;
        let r = Registration::parse("s", "dev", json).unwrap();
        assert_eq!(r.spec.tag_pattern, "*");
        assert_eq!(r.spec.gates.max_failed_tasks, 3);
        assert_eq!(r.spec.strategy, Strategy::AllAtOnce { bake_minutes: 0 });
    }

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let json = SAMPLE.replace("\"promote_to\"", "\"promote_too\"");
        let err = Registration::parse("s", "dev", &json)
            .unwrap_err()
            .to_string();
        assert!(err.contains("promote_too"), "{err}");
        let json = SAMPLE.replace("\"max_failed_tasks\"", "\"max_failures\"");
        let err = Registration::parse("s", "dev", &json)
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_failures"), "{err}");
    }

    #[test]
    fn rolling_refuses_stepped_strategies() {
        let json = SAMPLE.replace(
            r#"{ "type": "all-at-once", "bake_minutes": 5 }"#,
            r#"{ "type": "canary", "steps": [10, 100], "bake_minutes": 5 }"#,
        );
        let err = Registration::parse("s", "dev", &json).unwrap_err();
        assert!(matches!(
            err,
            RegistrationError::Invalid {
                field: "strategy",
                ..
            }
        ));
    }

    #[test]
    fn bad_names_are_rejected() {
        assert!(Registration::parse("bad name", "dev", SAMPLE).is_err());
        assert!(Registration::parse("svc", "", SAMPLE).is_err());
    }

    #[test]
    fn tag_patterns_are_globs() {
        assert!(glob_match("v*", "v1.2.3"));
        assert!(glob_match("*", ""));
        assert!(glob_match("release-?", "release-7"));
        assert!(!glob_match("release-?", "release-10"));
        assert!(glob_match("*-rc*", "v2-rc1"));
        assert!(!glob_match("v*", "latest"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
    }

    #[test]
    fn untagged_pushes_match_nothing() {
        let json = SAMPLE.replace("\"v*\"", "\"*\"");
        let r = Registration::parse("s", "dev", &json).unwrap();
        assert!(r.matches_push("checkout-api", Some("anything")));
        assert!(!r.matches_push("checkout-api", None));
        assert!(!r.matches_push("checkout-api", Some("")));
        assert!(!r.matches_push("other-repo", Some("anything")));
    }
}
