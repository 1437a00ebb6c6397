//! ECS's own blue/green, linear and canary deployments (the `ecs-native` engine): how a
//! registration's strategy maps onto ECS's `deploymentConfiguration`, and the Lambda lifecycle
//! hook's question and answer (`ecs-hook`). Pure: parsing, validation and the mapping only.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::registration::Strategy;

/// ECS accepts bake times of 0 to 1440 minutes.
pub const MAX_BAKE_MINUTES: u32 = 1440;
/// ECS's LINEAR strategy shifts at least 3% per step.
pub const MIN_LINEAR_STEP_PERCENT: u8 = 3;

/// A registration's strategy as ECS's `deploymentConfiguration` says it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "strategy", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NativeStrategy {
    /// `strategy: BLUE_GREEN`, `bakeTimeInMinutes`.
    BlueGreen { bake_minutes: u32 },
    /// `strategy: LINEAR`, `linearConfiguration{stepPercent, stepBakeTimeInMinutes}`.
    Linear {
        step_percent: u8,
        step_bake_minutes: u32,
    },
    /// `strategy: CANARY`, `canaryConfiguration{canaryPercent, canaryBakeTimeInMinutes}`.
    Canary {
        canary_percent: u8,
        canary_bake_minutes: u32,
    },
}

impl NativeStrategy {
    /// The ECS strategy for a registration's, or why ECS cannot express it.
    pub fn of(strategy: &Strategy) -> Result<NativeStrategy, String> {
        let bake = |minutes: u32, what: &str| {
            if minutes > MAX_BAKE_MINUTES {
                Err(format!(
                    "{what} is {minutes} min; ECS accepts at most {MAX_BAKE_MINUTES} (24 hours)"
                ))
            } else {
                Ok(minutes)
            }
        };
        match strategy {
            Strategy::AllAtOnce { bake_minutes } => Ok(NativeStrategy::BlueGreen {
                bake_minutes: bake(*bake_minutes, "bake_minutes")?,
            }),
            Strategy::Linear {
                step_percent,
                interval_minutes,
            } => {
                if *step_percent < MIN_LINEAR_STEP_PERCENT || *step_percent > 100 {
                    return Err(format!(
                        "step_percent is {step_percent}; ECS's LINEAR strategy shifts \
                         {MIN_LINEAR_STEP_PERCENT} to 100 percent per step"
                    ));
                }
                Ok(NativeStrategy::Linear {
                    step_percent: *step_percent,
                    step_bake_minutes: bake(*interval_minutes, "interval_minutes")?,
                })
            }
            Strategy::Canary {
                steps,
                bake_minutes,
            } => match steps.as_slice() {
                [canary] | [canary, 100] if (1..100).contains(canary) => {
                    Ok(NativeStrategy::Canary {
                        canary_percent: *canary,
                        canary_bake_minutes: bake(*bake_minutes, "bake_minutes")?,
                    })
                }
                _ => Err(format!(
                    "steps {steps:?} cannot be expressed by ECS's CANARY strategy, which shifts one \
                     canary step (1 to 99 percent) and then 100%: use e.g. [10, 100], a `linear` \
                     strategy for equal steps, or the `alb-weights` engine for steps of your own"
                )),
            },
        }
    }

    /// The longest bake ECS holds a step for: how long a service deployment may rightly show no
    /// progress.
    pub fn longest_bake_minutes(&self) -> u32 {
        match self {
            NativeStrategy::BlueGreen { bake_minutes } => *bake_minutes,
            NativeStrategy::Linear {
                step_bake_minutes, ..
            } => *step_bake_minutes,
            NativeStrategy::Canary {
                canary_bake_minutes,
                ..
            } => *canary_bake_minutes,
        }
    }

    /// ECS's name of the strategy.
    pub fn name(&self) -> &'static str {
        match self {
            NativeStrategy::BlueGreen { .. } => "BLUE_GREEN",
            NativeStrategy::Linear { .. } => "LINEAR",
            NativeStrategy::Canary { .. } => "CANARY",
        }
    }
}

/// The stages ECS calls a lifecycle hook at, by name: a stage this version does not know yet is
/// kept by its name rather than refused (ECS adds stages; `PRE_PRODUCTION_TRAFFIC_SHIFT` came
/// after the others).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HookStage {
    ReconcileService,
    PreScaleUp,
    PostScaleUp,
    TestTrafficShift,
    PostTestTrafficShift,
    PreProductionTrafficShift,
    ProductionTrafficShift,
    PostProductionTrafficShift,
    Other(String),
}

impl HookStage {
    pub fn parse(name: &str) -> HookStage {
        match name {
            "RECONCILE_SERVICE" => HookStage::ReconcileService,
            "PRE_SCALE_UP" => HookStage::PreScaleUp,
            "POST_SCALE_UP" => HookStage::PostScaleUp,
            "TEST_TRAFFIC_SHIFT" => HookStage::TestTrafficShift,
            "POST_TEST_TRAFFIC_SHIFT" => HookStage::PostTestTrafficShift,
            "PRE_PRODUCTION_TRAFFIC_SHIFT" => HookStage::PreProductionTrafficShift,
            "PRODUCTION_TRAFFIC_SHIFT" => HookStage::ProductionTrafficShift,
            "POST_PRODUCTION_TRAFFIC_SHIFT" => HookStage::PostProductionTrafficShift,
            other => HookStage::Other(other.to_string()),
        }
    }

    /// ECS's name of the stage.
    pub fn name(&self) -> &str {
        match self {
            HookStage::ReconcileService => "RECONCILE_SERVICE",
            HookStage::PreScaleUp => "PRE_SCALE_UP",
            HookStage::PostScaleUp => "POST_SCALE_UP",
            HookStage::TestTrafficShift => "TEST_TRAFFIC_SHIFT",
            HookStage::PostTestTrafficShift => "POST_TEST_TRAFFIC_SHIFT",
            HookStage::PreProductionTrafficShift => "PRE_PRODUCTION_TRAFFIC_SHIFT",
            HookStage::ProductionTrafficShift => "PRODUCTION_TRAFFIC_SHIFT",
            HookStage::PostProductionTrafficShift => "POST_PRODUCTION_TRAFFIC_SHIFT",
            HookStage::Other(name) => name,
        }
    }

    /// Whether production traffic may move to the new revision once this stage is answered
    /// SUCCEEDED: the stages where an approval or a freeze must hold the rollout.
    pub fn before_production_traffic(&self) -> bool {
        matches!(
            self,
            HookStage::PreProductionTrafficShift | HookStage::PostTestTrafficShift
        )
    }
}

/// `gates.analysis` on ECS's own strategies: which of the two target groups behind the
/// production listener rule (`rule`, forwarding with `weights`) runs the new revision, while it
/// has `percent` of production traffic. Before ECS moves any (`percent` 0) the stable one is
/// the group with all of it; mid-shift the new revision's is the group whose weight matches its
/// share, which a 50/50 split cannot tell. Why not, when it cannot be told (the judge then has
/// no data: its `no_data` policy decides).
pub fn tell_apart(
    rule: Option<&str>,
    weights: &[(String, u32)],
    percent: u8,
) -> Result<crate::deployment::JudgedGroups, String> {
    let Some(rule) = rule else {
        return Err("the ECS service names no production listener rule \
                    (loadBalancers[].advancedConfiguration): the judge compares the two target \
                    groups behind it"
            .to_string());
    };
    let listener = crate::deployment::Listener::of_arn(rule);
    let Some(load_balancer) = listener.load_balancer_dimension() else {
        return Err(format!("{rule} is not a listener rule ARN"));
    };
    if !load_balancer.starts_with("app/") {
        return Err(format!(
            "{load_balancer} is not an Application Load Balancer: the judge reads \
             AWS/ApplicationELB metrics"
        ));
    }
    let [(a, wa), (b, wb)] = weights else {
        return Err(format!(
            "the production listener rule forwards to {} target groups; the judge compares two",
            weights.len()
        ));
    };
    let total = f64::from(*wa) + f64::from(*wb);
    if total == 0.0 {
        return Err("the production listener rule sends no traffic anywhere".to_string());
    }
    let share = |w: u32| f64::from(w) * 100.0 / total;
    let (sa, sb) = (share(*wa), share(*wb));
    let groups = |canary: &str, stable: &str| crate::deployment::JudgedGroups {
        load_balancer: load_balancer.to_string(),
        canary: canary.to_string(),
        stable: stable.to_string(),
    };
    let p = f64::from(percent);
    if percent == 0 {
        return match (*wa, *wb) {
            (_, 0) if *wa > 0 => Ok(groups(b, a)),
            (0, _) => Ok(groups(a, b)),
            _ => Err(format!(
                "before production traffic moved, the rule splits it {sa:.0}/{sb:.0}: neither \
                 target group is the stable one"
            )),
        };
    }
    // ECS sets the rule's weights to the shares it reports: allow rounding only.
    const SLACK: f64 = 2.0;
    let (da, db) = ((sa - p).abs(), (sb - p).abs());
    if (da - db).abs() < SLACK {
        return Err(format!(
            "at {percent}% both target groups take about the same share, so which one runs the \
             new revision cannot be told: register ecs-hook for PRE_PRODUCTION_TRAFFIC_SHIFT so \
             Flightdeck reads the rule before production traffic moves"
        ));
    }
    let (canary, stable, off) = if da < db { (a, b, da) } else { (b, a, db) };
    if off > SLACK {
        return Err(format!(
            "the production listener rule's weights ({sa:.0}/{sb:.0}) do not match ECS's \
             {percent}% on the new revision"
        ));
    }
    Ok(groups(canary, stable))
}

/// What ECS sends the hook.
#[derive(Clone, Debug, PartialEq)]
pub struct HookInvocation {
    pub execution_id: String,
    pub stage: HookStage,
    /// The service deployment (`arn:aws:ecs:…:service-deployment/…`).
    pub service_deployment_arn: String,
    pub service_arn: String,
    pub target_service_revision_arn: String,
    /// Weights by target group, where ECS sent them.
    pub test_traffic_weights: BTreeMap<String, f64>,
    pub production_traffic_weights: BTreeMap<String, f64>,
    /// Passed back to ECS as it came (state between invocations).
    pub hook_details: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawInvocation {
    execution_id: String,
    lifecycle_stage: String,
    resource_arn: String,
    execution_details: RawDetails,
    #[serde(default)]
    hook_details: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDetails {
    service_arn: String,
    target_service_revision_arn: String,
    #[serde(default)]
    test_traffic_weights: Option<BTreeMap<String, f64>>,
    #[serde(default)]
    production_traffic_weights: Option<BTreeMap<String, f64>>,
}

impl HookInvocation {
    /// The hook's input, validated: every ARN an ARN, weights between 0 and 100.
    pub fn parse(input: &Value) -> Result<HookInvocation, String> {
        let raw: RawInvocation = serde_json::from_value(input.clone())
            .map_err(|e| format!("not an ECS lifecycle hook invocation: {e}"))?;
        let arn = |field: &str, value: &str| {
            if value.starts_with("arn:") {
                Ok(())
            } else {
                Err(format!("{field} is not an ARN: {value:?}"))
            }
        };
        arn("resourceArn", &raw.resource_arn)?;
        arn(
            "executionDetails.serviceArn",
            &raw.execution_details.service_arn,
        )?;
        arn(
            "executionDetails.targetServiceRevisionArn",
            &raw.execution_details.target_service_revision_arn,
        )?;
        if raw.execution_id.trim().is_empty() {
            return Err("executionId is empty".to_string());
        }
        let weights = |field: &str, w: Option<BTreeMap<String, f64>>| {
            let w = w.unwrap_or_default();
            match w.iter().find(|(_, v)| !(0.0..=100.0).contains(*v)) {
                Some((tg, v)) => Err(format!("{field}[{tg}] is {v}, not a percentage")),
                None => Ok(w),
            }
        };
        Ok(HookInvocation {
            execution_id: raw.execution_id,
            stage: HookStage::parse(&raw.lifecycle_stage),
            service_deployment_arn: raw.resource_arn,
            service_arn: raw.execution_details.service_arn,
            target_service_revision_arn: raw.execution_details.target_service_revision_arn,
            test_traffic_weights: weights(
                "testTrafficWeights",
                raw.execution_details.test_traffic_weights,
            )?,
            production_traffic_weights: weights(
                "productionTrafficWeights",
                raw.execution_details.production_traffic_weights,
            )?,
            hook_details: raw.hook_details,
        })
    }
}

/// The hook's answer: go on, roll back, or ask again after `call_back_delay` seconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HookAnswer {
    pub hook_status: HookStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_back_delay: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook_details: Option<Value>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum HookStatus {
    Succeeded,
    Failed,
    InProgress,
}

impl HookStatus {
    /// ECS's name of the status, as the answer carries it.
    pub fn name(self) -> &'static str {
        match self {
            HookStatus::Succeeded => "SUCCEEDED",
            HookStatus::Failed => "FAILED",
            HookStatus::InProgress => "IN_PROGRESS",
        }
    }
}

impl HookAnswer {
    /// Ask again in `seconds`: what a hook answers when it cannot decide yet, and when it cannot
    /// read its record or a gate (never SUCCEEDED then; and not FAILED: an outage of Flightdeck
    /// must not roll back a good release).
    pub fn ask_again(seconds: u32, hook_details: Option<Value>) -> HookAnswer {
        HookAnswer {
            hook_status: HookStatus::InProgress,
            call_back_delay: Some(seconds),
            hook_details,
        }
    }
}

#[cfg(test)]
mod tests {
    const RULE: &str = "arn:aws:elasticloadbalancing:eu-west-1:1:listener-rule/app/web/50dc6c495c0c9188/f2f7dc8efc522ab2/9683b2d02a6cabee";
    const NLB: &str = "arn:aws:elasticloadbalancing:eu-west-1:1:listener/net/tcp/50dc6c495c0c9188/f2f7dc8efc522ab2";

    fn two(a: u32, b: u32) -> Vec<(String, u32)> {
        vec![("tg-a".to_string(), a), ("tg-b".to_string(), b)]
    }

    #[test]
    fn the_judged_target_groups_are_told_apart_by_the_weights_or_refused_with_why() {
        let pick = |weights: &[(String, u32)], percent: u8| {
            tell_apart(Some(RULE), weights, percent).map(|g| (g.canary, g.stable))
        };
        let ab = Ok(("tg-b".to_string(), "tg-a".to_string()));
        let ba = Ok(("tg-a".to_string(), "tg-b".to_string()));
        assert_eq!(
            pick(&two(100, 0), 0),
            ab,
            "before the shift: all on the stable one"
        );
        assert_eq!(pick(&two(0, 1), 0), ba);
        assert_eq!(
            pick(&two(90, 10), 10),
            ab,
            "mid-shift by the matching weight"
        );
        assert_eq!(
            pick(&two(700, 300), 30),
            ab,
            "weights as ALB keeps them (0-999)"
        );
        assert_eq!(pick(&two(10, 90), 10), ba);
        let refused = |r: Result<(String, String), String>, text: &str| {
            let why = r.expect_err("refused");
            assert!(why.contains(text), "{why}");
        };
        refused(pick(&two(50, 50), 50), "cannot be told");
        refused(pick(&two(60, 40), 0), "neither target group");
        refused(pick(&two(60, 40), 10), "do not match");
        refused(pick(&two(0, 0), 10), "no traffic");
        refused(pick(&[("a".into(), 100)], 0), "1 target groups");
        refused(
            tell_apart(None, &two(100, 0), 0).map(|g| (g.canary, g.stable)),
            "no production listener rule",
        );
        refused(
            tell_apart(Some(NLB), &two(100, 0), 0).map(|g| (g.canary, g.stable)),
            "not an Application Load Balancer",
        );
    }

    use super::*;
    use serde_json::json;

    #[test]
    fn the_hook_samples_in_events_are_read_with_the_target_revision_weights() {
        for (sample, stage) in [
            (
                include_str!("../../events/ecs-hook-pre-production-traffic-shift.json"),
                HookStage::PreProductionTrafficShift,
            ),
            (
                include_str!("../../events/ecs-hook-production-traffic-shift-canary.json"),
                HookStage::ProductionTrafficShift,
            ),
            // Before ECS's next shift, the canary at 10%: held for the canary judge's verdict.
            (
                include_str!("../../events/ecs-hook-pre-production-traffic-shift-next-step.json"),
                HookStage::PreProductionTrafficShift,
            ),
        ] {
            let value: Value = serde_json::from_str(sample).unwrap();
            let call = HookInvocation::parse(&value).unwrap();
            assert_eq!(call.stage, stage);
            assert!(
                call.production_traffic_weights
                    .contains_key(&call.target_service_revision_arn)
            );
        }
    }

    #[test]
    fn each_strategy_maps_onto_ecs_own_or_says_why_it_cannot() {
        assert_eq!(
            NativeStrategy::of(&Strategy::AllAtOnce { bake_minutes: 15 }),
            Ok(NativeStrategy::BlueGreen { bake_minutes: 15 })
        );
        assert_eq!(
            NativeStrategy::of(&Strategy::Linear {
                step_percent: 20,
                interval_minutes: 5
            }),
            Ok(NativeStrategy::Linear {
                step_percent: 20,
                step_bake_minutes: 5
            })
        );
        for steps in [vec![10], vec![10, 100]] {
            assert_eq!(
                NativeStrategy::of(&Strategy::Canary {
                    steps,
                    bake_minutes: 10
                }),
                Ok(NativeStrategy::Canary {
                    canary_percent: 10,
                    canary_bake_minutes: 10
                })
            );
        }
        let several = NativeStrategy::of(&Strategy::Canary {
            steps: vec![10, 50, 100],
            bake_minutes: 10,
        })
        .unwrap_err();
        assert!(several.contains("[10, 50, 100]") && several.contains("alb-weights"));
        assert!(
            NativeStrategy::of(&Strategy::Canary {
                steps: vec![100],
                bake_minutes: 1
            })
            .is_err()
        );
        let small = NativeStrategy::of(&Strategy::Linear {
            step_percent: 2,
            interval_minutes: 1,
        })
        .unwrap_err();
        assert!(small.contains("3 to 100"), "{small}");
        let long = NativeStrategy::of(&Strategy::AllAtOnce { bake_minutes: 1441 }).unwrap_err();
        assert!(long.contains("1440"), "{long}");
    }

    fn invocation(stage: &str) -> Value {
        json!({
            "executionId": "a1b2c3",
            "lifecycleStage": stage,
            "resourceArn": "arn:aws:ecs:eu-west-1:123456789012:service-deployment/prod/api/d3p10y",
            "executionDetails": {
                "serviceArn": "arn:aws:ecs:eu-west-1:123456789012:service/prod/api",
                "targetServiceRevisionArn":
                    "arn:aws:ecs:eu-west-1:123456789012:service-revision/prod/api/r3v2",
                "testTrafficWeights": {},
                "productionTrafficWeights": {
                    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/api-blue/1": 90.0,
                    "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/api-green/2": 10.0
                }
            },
            "hookDetails": {"attempt": 2}
        })
    }

    #[test]
    fn a_hook_invocation_is_read_with_its_stage_by_name() {
        let h = HookInvocation::parse(&invocation("PRODUCTION_TRAFFIC_SHIFT")).unwrap();
        assert_eq!(h.stage, HookStage::ProductionTrafficShift);
        assert_eq!(h.production_traffic_weights.len(), 2);
        assert_eq!(h.hook_details, Some(json!({"attempt": 2})));
        let newer = HookInvocation::parse(&invocation("POST_CANARY_ANALYSIS")).unwrap();
        assert_eq!(newer.stage, HookStage::Other("POST_CANARY_ANALYSIS".into()));
        assert!(
            HookInvocation::parse(&invocation("PRE_PRODUCTION_TRAFFIC_SHIFT"))
                .unwrap()
                .stage
                .before_production_traffic()
        );
    }

    #[test]
    fn a_malformed_hook_invocation_is_refused_with_what_is_wrong() {
        let mut no_arn = invocation("PRE_SCALE_UP");
        no_arn["resourceArn"] = json!("d3p10y");
        assert!(
            HookInvocation::parse(&no_arn)
                .unwrap_err()
                .contains("resourceArn")
        );
        let mut weight = invocation("PRE_SCALE_UP");
        weight["executionDetails"]["testTrafficWeights"] = json!({"tg": 140.0});
        assert!(
            HookInvocation::parse(&weight)
                .unwrap_err()
                .contains("not a percentage")
        );
        assert!(
            HookInvocation::parse(&json!({"lifecycleStage": "PRE_SCALE_UP"}))
                .unwrap_err()
                .contains("not an ECS lifecycle hook invocation")
        );
    }

    #[test]
    fn asking_again_is_in_progress_with_a_delay_and_the_state_passed_back() {
        let answer = HookAnswer::ask_again(30, Some(json!({"attempt": 3})));
        assert_eq!(
            serde_json::to_value(&answer).unwrap(),
            json!({"hookStatus": "IN_PROGRESS", "callBackDelay": 30, "hookDetails": {"attempt": 3}})
        );
    }
}
