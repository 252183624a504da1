//! The geoprov pre-provisioning hook: AWS IoT fleet provisioning asks it
//! whether a device presenting the claim certificate may be provisioned here.
//!
//! `request` is the wire contract, `rules` the pure decision, `handler` the
//! invocation (deadline, registry write, audit, telemetry), `config` the
//! cold-start configuration.

pub mod config;
pub mod handler;
pub mod request;
/// The device rules, from the core crate that the hook, device activation and
/// the issuer share.
pub use geoprov_device_rules::rules;

pub use config::{DeviceRuleSettings, HookConfig};
pub use handler::{HookDecision, ProvisioningHook};
pub use request::{HookRequest, HookResponse, ProvisioningClaim};
pub use rules::{Policy, Reason};

/// The service name in logs and metrics.
pub const SERVICE: &str = "pre-provisioning-hook";
