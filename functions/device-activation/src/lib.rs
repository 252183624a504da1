//! device-activation: just-in-time registration (JITR) that honours the
//! device registry.
//!
//! The fleet CA is registered in every region with auto-registration and no
//! provisioning template, so a certificate it signed, on first connect, is
//! registered PENDING_ACTIVATION and IoT publishes
//! `$aws/events/certificates/registered/<caCertificateId>` (IoT developer
//! guide, "Register a client certificate when the client connects to AWS IoT
//! just-in-time registration"); IoT publishes it again whenever the client
//! comes back with the certificate still PENDING_ACTIVATION. A topic rule
//! sends the event here. The device rules are the hook's
//! ([`geoprov_device_rules::Policy::device_rules`]: registered, not blocked,
//! region allowed, quota, factory key), not a copy:
//! - allowed: the provisioning is committed like the hook's (quota and
//!   audit event in one transaction), then the thing, its group, the device
//!   policy and the principal are attached and, last, the certificate is
//!   activated;
//! - denied: audited, and the certificate stays PENDING_ACTIVATION, so it
//!   never connects here; an unblocked device is activated on its next
//!   connect.
//!
//! `event` is the wire contract, `activation` the invocation, `iot` the IoT
//! adapter behind a small trait, `config` the cold-start configuration.

pub mod activation;
pub mod config;
pub mod event;
pub mod iot;

/// The service name in logs and metrics.
pub const SERVICE: &str = "device-activation";
