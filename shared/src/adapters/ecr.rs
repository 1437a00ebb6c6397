//! Tags to digests, for deployments started by tag through the API.

use aws_sdk_ecr::Client;
use aws_sdk_ecr::error::DisplayErrorContext;
use aws_sdk_ecr::types::ImageIdentifier;

use crate::ports::{ImageResolver, PortError, PortResult};

#[derive(Clone, Debug)]
pub struct EcrImages {
    client: Client,
}

impl EcrImages {
    pub fn new(client: Client) -> Self {
        EcrImages { client }
    }
}

impl ImageResolver for EcrImages {
    async fn digest_of(&self, repository: &str, tag: &str) -> PortResult<Option<String>> {
        let out = self
            .client
            .describe_images()
            .repository_name(repository)
            .image_ids(ImageIdentifier::builder().image_tag(tag).build())
            .send()
            .await;
        match out {
            Ok(out) => Ok(out
                .image_details
                .unwrap_or_default()
                .into_iter()
                .find_map(|d| d.image_digest)),
            Err(e)
                if e.as_service_error().is_some_and(|s| {
                    s.is_image_not_found_exception() || s.is_repository_not_found_exception()
                }) =>
            {
                Ok(None)
            }
            Err(e) => Err(PortError::remote(
                "ECR DescribeImages",
                DisplayErrorContext(e),
            )),
        }
    }
}
