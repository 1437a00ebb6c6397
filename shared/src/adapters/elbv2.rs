//! The `alb-weights` engine's listener: read and set the forward weights of a listener rule or a
//! listener's default action, and read a target group's health.

use aws_sdk_elasticloadbalancingv2::Client;
use aws_sdk_elasticloadbalancingv2::error::DisplayErrorContext;
use aws_sdk_elasticloadbalancingv2::types::{
    Action, ActionTypeEnum, ForwardActionConfig, TargetGroupTuple, TargetHealthStateEnum,
};

/// The rule's actions with the forward action's weights replaced, and nothing else changed:
/// other actions (authentication, fixed responses), their order and the forward action's
/// stickiness stay as they are. An OIDC action read back from ELBv2 has no client secret, so it
/// is written back with `UseExistingClientSecret`.
pub fn with_weights(actions: Vec<Action>, weights: &[(String, u32)]) -> Option<Vec<Action>> {
    let mut found = false;
    let out = actions
        .into_iter()
        .map(|action| match action.r#type {
            Some(ActionTypeEnum::Forward) if !found => {
                found = true;
                let stickiness = action
                    .forward_config
                    .as_ref()
                    .and_then(|f| f.target_group_stickiness_config.clone());
                let mut config =
                    ForwardActionConfig::builder().set_target_group_stickiness_config(stickiness);
                for (arn, weight) in weights {
                    config = config.target_groups(
                        TargetGroupTuple::builder()
                            .target_group_arn(arn)
                            .weight(i32::try_from(*weight).unwrap_or(i32::MAX))
                            .build(),
                    );
                }
                let mut action = action;
                action.target_group_arn = None;
                action.forward_config = Some(config.build());
                action
            }
            Some(ActionTypeEnum::AuthenticateOidc) => {
                let mut action = action;
                if let Some(oidc) = action.authenticate_oidc_config.as_mut()
                    && oidc.client_secret.is_none()
                {
                    oidc.use_existing_client_secret = Some(true);
                }
                action
            }
            _ => action,
        })
        .collect();
    found.then_some(out)
}

use crate::deployment::Listener;
use crate::ports::{PortError, PortResult, Tags, TrafficControl};
use aws_sdk_elasticloadbalancingv2::operation::describe_tags::DescribeTagsError;

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
        let actions = self.actions(listener).await?;
        let actions = with_weights(actions, weights).ok_or_else(|| {
            PortError::remote(
                "ELBv2 weights",
                format!("{listener:?} has no forward action"),
            )
        })?;
        match listener {
            Listener::Rule(arn) => {
                self.client
                    .modify_rule()
                    .rule_arn(arn)
                    .set_actions(Some(actions))
                    .send()
                    .await
                    .map_err(|e| PortError::remote("ELBv2 ModifyRule", DisplayErrorContext(e)))?;
            }
            Listener::Default(arn) => {
                self.client
                    .modify_listener()
                    .listener_arn(arn)
                    .set_default_actions(Some(actions))
                    .send()
                    .await
                    .map_err(|e| {
                        PortError::remote("ELBv2 ModifyListener", DisplayErrorContext(e))
                    })?;
            }
        }
        Ok(())
    }

    async fn healthy_targets(&self, target_group_arn: &str) -> PortResult<u32> {
        let out = self
            .client
            .describe_target_health()
            .target_group_arn(target_group_arn)
            .send()
            .await
            .map_err(|e| PortError::remote("ELBv2 DescribeTargetHealth", DisplayErrorContext(e)))?;
        let targets = out.target_health_descriptions.unwrap_or_default();
        let healthy = targets
            .iter()
            .filter(|t| {
                t.target_health.as_ref().and_then(|h| h.state.as_ref())
                    == Some(&TargetHealthStateEnum::Healthy)
            })
            .count();
        Ok(u32::try_from(healthy).unwrap_or(u32::MAX))
    }

    async fn resource_tags(&self, arn: &str) -> PortResult<Tags> {
        let out = match self.client.describe_tags().resource_arns(arn).send().await {
            Ok(out) => out,
            Err(e)
                if e.as_service_error().is_some_and(|s| {
                    matches!(
                        s,
                        DescribeTagsError::ListenerNotFoundException(_)
                            | DescribeTagsError::RuleNotFoundException(_)
                            | DescribeTagsError::LoadBalancerNotFoundException(_)
                    )
                }) =>
            {
                return Ok(None);
            }
            Err(e) => {
                return Err(PortError::remote(
                    "ELBv2 DescribeTags",
                    DisplayErrorContext(e),
                ));
            }
        };
        Ok(Some(
            out.tag_descriptions()
                .iter()
                .filter(|d| d.resource_arn() == Some(arn))
                .flat_map(|d| d.tags())
                .filter_map(|t| Some((t.key.clone()?, t.value.clone().unwrap_or_default())))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_elasticloadbalancingv2::types::{
        AuthenticateOidcActionConfig, TargetGroupStickinessConfig,
    };

    fn rule_with_login() -> Vec<Action> {
        vec![
            Action::builder()
                .r#type(ActionTypeEnum::AuthenticateOidc)
                .order(1)
                .authenticate_oidc_config(
                    AuthenticateOidcActionConfig::builder()
                        .issuer("https://idp.example.com")
                        .authorization_endpoint("https://idp.example.com/authorize")
                        .token_endpoint("https://idp.example.com/token")
                        .user_info_endpoint("https://idp.example.com/userinfo")
                        .client_id("web")
                        .build(),
                )
                .build(),
            Action::builder()
                .r#type(ActionTypeEnum::Forward)
                .order(2)
                .forward_config(
                    ForwardActionConfig::builder()
                        .target_groups(
                            TargetGroupTuple::builder()
                                .target_group_arn("tg/blue")
                                .weight(100)
                                .build(),
                        )
                        .target_group_stickiness_config(
                            TargetGroupStickinessConfig::builder()
                                .enabled(true)
                                .duration_seconds(300)
                                .build(),
                        )
                        .build(),
                )
                .build(),
        ]
    }

    #[test]
    fn a_weight_change_keeps_the_login_action_its_order_and_stickiness() {
        let weights = [("tg/blue".to_string(), 90), ("tg/green".to_string(), 10)];
        let out = with_weights(rule_with_login(), &weights).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].r#type, Some(ActionTypeEnum::AuthenticateOidc));
        assert_eq!(out[0].order, Some(1));
        let oidc = out[0].authenticate_oidc_config.as_ref().unwrap();
        assert_eq!(oidc.issuer.as_deref(), Some("https://idp.example.com"));
        assert_eq!(oidc.use_existing_client_secret, Some(true));
        let forward = out[1].forward_config.as_ref().unwrap();
        assert_eq!(out[1].order, Some(2));
        let groups: Vec<(Option<&str>, Option<i32>)> = forward
            .target_groups()
            .iter()
            .map(|g| (g.target_group_arn(), g.weight()))
            .collect();
        assert_eq!(
            groups,
            vec![(Some("tg/blue"), Some(90)), (Some("tg/green"), Some(10))]
        );
        let sticky = forward.target_group_stickiness_config.as_ref().unwrap();
        assert_eq!(sticky.enabled, Some(true));
        assert_eq!(sticky.duration_seconds, Some(300));
    }

    #[test]
    fn a_rule_without_a_forward_action_is_refused() {
        let only_login = vec![rule_with_login().remove(0)];
        assert!(with_weights(only_login, &[("tg/blue".to_string(), 100)]).is_none());
    }

    #[tokio::test]
    async fn a_rules_tags_are_read_and_a_rule_that_does_not_exist_is_none() {
        use aws_sdk_elasticloadbalancingv2::operation::describe_tags::DescribeTagsOutput;
        use aws_sdk_elasticloadbalancingv2::types::error::RuleNotFoundException;
        use aws_sdk_elasticloadbalancingv2::types::{Tag, TagDescription};
        use aws_smithy_mocks::{mock, mock_client};
        let tagged = mock!(Client::describe_tags)
            .match_requests(|r| r.resource_arns() == ["arn:rule/1"])
            .then_output(|| {
                DescribeTagsOutput::builder()
                    .tag_descriptions(
                        TagDescription::builder()
                            .resource_arn("arn:rule/1")
                            .tags(
                                Tag::builder()
                                    .key("flightdeck:managed")
                                    .value("true")
                                    .build(),
                            )
                            .tags(Tag::builder().key("team").value("checkout").build())
                            .build(),
                    )
                    .build()
            });
        let missing = mock!(Client::describe_tags)
            .match_requests(|r| r.resource_arns() == ["arn:rule/9"])
            .then_error(|| {
                DescribeTagsError::RuleNotFoundException(RuleNotFoundException::builder().build())
            });
        let elb = ElbTraffic::new(mock_client!(
            aws_sdk_elasticloadbalancingv2,
            aws_smithy_mocks::RuleMode::MatchAny,
            [&tagged, &missing]
        ));
        let tags = elb
            .resource_tags("arn:rule/1")
            .await
            .unwrap()
            .expect("found");
        assert!(tags.contains(&("flightdeck:managed".to_string(), "true".to_string())));
        assert_eq!(tags.len(), 2);
        assert_eq!(elb.resource_tags("arn:rule/9").await.unwrap(), None);
    }
}
