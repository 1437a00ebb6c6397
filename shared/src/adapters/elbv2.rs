//! The `alb-weights` engine's listener: read and set the forward weights of a listener rule or a
//! listener's default action, and read a target group's health.

use aws_sdk_elasticloadbalancingv2::Client;
use aws_sdk_elasticloadbalancingv2::error::DisplayErrorContext;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, ForwardActionConfig, TargetGroupTuple, TargetHealthStateEnum,
};

use crate::deployment::Listener;
use crate::ports::{PortError, PortResult, TrafficControl};

#[derive(Clone, Debug)]
pub struct ElbTraffic {
    client: Client,
}

impl ElbTraffic {
    pub fn new(client: Client) -> Self {
        ElbTraffic { client }
    }

    async fn actions(&self, listener: &Listener) -> PortResult<Vec<Action>> {
        match listener {
            Listener::Rule(arn) => {
                let out = self
                    .client
                    .describe_rules()
                    .rule_arns(arn)
                    .send()
                    .await
                    .map_err(|e| {
                        PortError::remote("ELBv2 DescribeRules", DisplayErrorContext(e))
                    })?;
                let rule = out.rules.unwrap_or_default().into_iter().next();
                Ok(rule.and_then(|r| r.actions).unwrap_or_default())
            }
            Listener::Default(arn) => {
                let out = self
                    .client
                    .describe_listeners()
                    .listener_arns(arn)
                    .send()
                    .await
                    .map_err(|e| {
                        PortError::remote("ELBv2 DescribeListeners", DisplayErrorContext(e))
                    })?;
                let found = out.listeners.unwrap_or_default().into_iter().next();
                Ok(found.and_then(|l| l.default_actions).unwrap_or_default())
            }
        }
    }
}

impl TrafficControl for ElbTraffic {
    async fn weights(&self, listener: &Listener) -> PortResult<Vec<(String, u32)>> {
        let actions = self.actions(listener).await?;
        let forward = actions
            .into_iter()
            .find(|a| a.r#type == Some(ActionTypeEnum::Forward))
            .ok_or_else(|| {
                PortError::remote(
                    "ELBv2 DescribeRules",
                    format!("{listener:?} has no forward action"),
                )
            })?;
        if let Some(groups) = forward.forward_config.and_then(|f| f.target_groups) {
            return Ok(groups
                .into_iter()
                .filter_map(|g| {
                    let weight = u32::try_from(g.weight.unwrap_or(1)).unwrap_or(0);
                    g.target_group_arn.map(|arn| (arn, weight))
                })
                .collect());
        }
        // A plain forward to one target group sends it everything.
        Ok(forward
            .target_group_arn
            .map(|arn| vec![(arn, 1)])
            .unwrap_or_default())
    }

    async fn set_weights(&self, listener: &Listener, weights: &[(String, u32)]) -> PortResult<()> {
        let mut config = ForwardActionConfig::builder();
        for (arn, weight) in weights {
            config = config.target_groups(
                TargetGroupTuple::builder()
                    .target_group_arn(arn)
                    .weight(i32::try_from(*weight).unwrap_or(i32::MAX))
                    .build(),
            );
        }
        let action = Action::builder()
            .r#type(ActionTypeEnum::Forward)
            .forward_config(config.build())
            .build();
        match listener {
            Listener::Rule(arn) => {
                self.client
                    .modify_rule()
                    .rule_arn(arn)
                    .actions(action)
                    .send()
                    .await
                    .map_err(|e| PortError::remote("ELBv2 ModifyRule", DisplayErrorContext(e)))?;
            }
            Listener::Default(arn) => {
                self.client
                    .modify_listener()
                    .listener_arn(arn)
                    .default_actions(action)
                    .send()
                    .await
                    .map_err(|e| {
                        PortError::remote("ELBv2 ModifyListener", DisplayErrorContext(e))
                    })?;
            }
        }
        Ok(())
    }

    async fn healthy_targets(&self, target_group_arn: &str) -> PortResult<Option<u32>> {
        let out = self
            .client
            .describe_target_health()
            .target_group_arn(target_group_arn)
            .send()
            .await
            .map_err(|e| PortError::remote("ELBv2 DescribeTargetHealth", DisplayErrorContext(e)))?;
        let targets = out.target_health_descriptions.unwrap_or_default();
        if targets.is_empty() {
            return Ok(None);
        }
        let healthy = targets
            .iter()
            .filter(|t| {
                t.target_health.as_ref().and_then(|h| h.state.as_ref())
                    == Some(&TargetHealthStateEnum::Healthy)
            })
            .count();
        Ok(Some(u32::try_from(healthy).unwrap_or(u32::MAX)))
    }
}
