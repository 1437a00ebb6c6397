//! Flightdeck's common crate: the domain model, the pure decision core, the ports the handlers
//! need, their AWS adapters, and the typed AWS events. Every Lambda in `functions/` is a thin
//! `main.rs` around one of the handlers here.

pub mod alarm_events;
pub mod alerts;
pub mod api;
pub mod config;
pub mod deployment;
pub mod emf;
pub mod events;
pub mod freeze;
pub mod judge;
pub mod lifecycle;
pub mod native;
pub mod outbox;
pub mod ports;
pub mod principal;
pub mod registration;
pub mod scan;
pub mod stop_reason;

pub mod adapters;
pub mod handlers;
