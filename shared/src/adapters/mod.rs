//! AWS implementations of the ports. They translate between SDK shapes and domain types, and
//! nothing more.

#[cfg(feature = "dynamodb")]
pub mod dynamodb;
#[cfg(feature = "ecs")]
pub mod ecs;
#[cfg(feature = "sns")]
pub mod sns;
