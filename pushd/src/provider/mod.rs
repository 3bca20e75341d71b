//! The push providers: what a send returns, whatever the provider.
//!
//! [`apns::Apns`] and [`fcm::Fcm`] turn a job into the provider's HTTP/2
//! request and its answer into an [`Outcome`]; they hold the credentials
//! (provider token, `OAuth2` access token) and refresh them. Retries, circuits
//! and failover are the dispatcher's; a provider client sends once.

use std::time::Duration;

pub mod apns;
pub mod auth;
pub mod fcm;

/// Which of a provider's endpoints to send to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Primary,
    Secondary,
}

/// What became of one send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted; the provider's id for the notification if it gave one
    /// (`apns-id`, FCM's message `name`).
    Sent { id: Option<String> },
    /// The token will never work again (APNs 410 `Unregistered`, 400
    /// `BadDeviceToken`, `DeviceTokenNotForTopic`; FCM `UNREGISTERED`,
    /// `INVALID_ARGUMENT` naming the token). Report it; do not retry.
    InvalidToken { reason: String },
    /// Try again later. `endpoint_fault` is true when the endpoint itself is
    /// failing (5xx, timeout, connection error: counts against its circuit)
    /// and false when it is only throttling us (429). `retry_after` is the
    /// provider's `Retry-After`, if any.
    Retry {
        reason: String,
        retry_after: Option<Duration>,
        endpoint_fault: bool,
    },
    /// Our credential was refused (APNs 403 `ExpiredProviderToken`,
    /// `InvalidProviderToken`; FCM 401). The client has already dropped its
    /// cached credential; the job is retried with a fresh one.
    AuthRejected { reason: String },
    /// The request can never succeed (bad payload, bad topic, 413): dead-letter.
    Rejected { reason: String },
}

impl Outcome {
    /// A short label for metrics (`sent`, `invalid_token`, or the reason).
    pub fn reason(&self) -> &str {
        match self {
            Outcome::Sent { .. } => "sent",
            Outcome::InvalidToken { reason }
            | Outcome::Retry { reason, .. }
            | Outcome::AuthRejected { reason }
            | Outcome::Rejected { reason } => reason,
        }
    }
}
