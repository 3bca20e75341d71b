//! pushd: the push-notification daemon.
//!
//! The engine streams push jobs over a local socket ([`protocol::push`]);
//! pushd makes each durable in its own fjall queue before acknowledging it,
//! then sends it to APNs or FCM with per-provider concurrency limits,
//! exponential backoff with full jitter, `Retry-After`, a circuit breaker per
//! endpoint and failover to a secondary endpoint. Tokens the providers reject
//! for good go back to the engine. `pushd mock-provider` imitates both
//! providers on loopback for tests and benchmarks.

pub mod admin;
pub mod backoff;
pub mod circuit;
pub mod config;
pub mod daemon;
pub mod dispatch;
pub mod link;
pub mod metrics;
pub mod mock;
pub mod provider;
pub mod queue;
pub mod sched;
