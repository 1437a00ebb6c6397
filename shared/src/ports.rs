//! The small interfaces the handlers need from the outside world. Adapters implement them with
//! the AWS SDK (`crate::adapters`); tests implement them in memory.

use std::future::Future;

use chrono::{DateTime, Utc};

use crate::alerts::Alert;
use crate::deployment::Deployment;
use crate::registration::Registration;

/// Failures of a port, in the terms the handlers act on.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// A conditional write lost a race; reload and decide again.
    #[error("the record changed since it was read")]
    Conflict,
    /// The remote service refused or failed the call.
    #[error("{operation}: {message}")]
    Remote {
        operation: &'static str,
        message: String,
    },
    /// A stored item could not be read as what it should be.
    #[error("stored item {key} is unreadable: {message}")]
    Corrupt { key: String, message: String },
}

impl PortError {
    pub fn remote(operation: &'static str, error: impl std::fmt::Display) -> PortError {
        PortError::Remote {
            operation,
            message: error.to_string(),
        }
    }
}

pub type PortResult<T> = Result<T, PortError>;

/// Created, or already there (the conditional create found an earlier one).
#[derive(Debug, PartialEq)]
pub enum Created {
    New,
    AlreadyExists,
}

pub trait DeploymentStore: Send + Sync {
    fn registrations(&self) -> impl Future<Output = PortResult<Vec<Registration>>> + Send;
    fn put_registration(
        &self,
        registration: &Registration,
    ) -> impl Future<Output = PortResult<()>> + Send;
    /// Writes a new deployment unless one with its id exists.
    fn create(&self, deployment: &Deployment) -> impl Future<Output = PortResult<Created>> + Send;
    /// A strongly consistent read.
    fn get(&self, id: &str) -> impl Future<Output = PortResult<Option<Deployment>>> + Send;
    /// Saves `deployment` if the stored copy is still at `deployment.record_version`, then bumps it.
    fn save(&self, deployment: &mut Deployment) -> impl Future<Output = PortResult<()>> + Send;
    /// Ids of the active deployments of a service and environment, oldest first.
    fn active(
        &self,
        service: &str,
        environment: &str,
    ) -> impl Future<Output = PortResult<Vec<String>>> + Send;
}

/// What the rolling engine needs from ECS.
pub trait EcsControl: Send + Sync {
    fn service(
        &self,
        cluster: &str,
        service: &str,
    ) -> impl Future<Output = PortResult<EcsService>> + Send;
    /// Registers a copy of `task_definition` whose `container` runs `image`; returns the new ARN.
    fn register_revision(
        &self,
        task_definition: &str,
        container: &str,
        image: &str,
    ) -> impl Future<Output = PortResult<String>> + Send;
    /// Points the service at `task_definition`; returns the id of the ECS deployment that runs it,
    /// when ECS says so.
    fn update_service(
        &self,
        cluster: &str,
        service: &str,
        task_definition: &str,
    ) -> impl Future<Output = PortResult<Option<String>>> + Send;
}

#[derive(Clone, Debug, PartialEq)]
pub struct EcsService {
    pub task_definition: String,
    pub desired_count: u32,
}

pub trait Notifier: Send + Sync {
    fn publish(&self, alert: &Alert) -> impl Future<Output = PortResult<()>> + Send;
}

pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
