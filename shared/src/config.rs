//! Settings every function reads at cold start. A missing one fails the cold start by name.

#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub table: String,
    pub topic_arn: String,
    /// `FLIGHTDECK_CHAT_TOPIC_ARN` (optional): alerts also go there in AWS Chatbot's
    /// custom-notification format.
    pub chat_topic_arn: Option<String>,
    /// `FLIGHTDECK_DASHBOARD_URL` (optional): the dashboard, for links in chat messages.
    pub dashboard_url: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("missing setting {0}: set it in the function's environment (see infra/template.yaml)")]
pub struct MissingSetting(pub &'static str);

impl Config {
    pub fn from_env() -> Result<Config, MissingSetting> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Config, MissingSetting> {
        let get = |name: &'static str| {
            lookup(name)
                .filter(|v| !v.trim().is_empty())
                .ok_or(MissingSetting(name))
        };
        Ok(Config {
            table: get("FLIGHTDECK_TABLE")?,
            topic_arn: get("FLIGHTDECK_TOPIC_ARN")?,
            chat_topic_arn: lookup("FLIGHTDECK_CHAT_TOPIC_ARN").filter(|v| !v.trim().is_empty()),
            dashboard_url: lookup("FLIGHTDECK_DASHBOARD_URL").filter(|v| !v.trim().is_empty()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_setting_is_named() {
        let err = Config::from_lookup(|n| (n == "FLIGHTDECK_TABLE").then(|| "t".to_string()))
            .unwrap_err();
        assert_eq!(err, MissingSetting("FLIGHTDECK_TOPIC_ARN"));
        assert!(err.to_string().contains("FLIGHTDECK_TOPIC_ARN"));
    }
}
