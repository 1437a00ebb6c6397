//! AWS implementations of the ports. They translate between SDK shapes and domain types, and
//! nothing more.

#[cfg(feature = "cloudwatch")]
pub mod cloudwatch;
#[cfg(feature = "dynamodb")]
pub mod dynamodb;
#[cfg(feature = "ecr")]
pub mod ecr;
#[cfg(feature = "ecs")]
pub mod ecs;
#[cfg(feature = "elbv2")]
pub mod elbv2;
#[cfg(feature = "sns")]
pub mod sns;
