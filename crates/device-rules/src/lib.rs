//! The device rules: what geoprov decides about a device, whichever door it
//! comes through. The pre-provisioning hook applies them to a claim, device
//! activation (JITR) to a certificate's first connect, and the certificate
//! issuer to a device's CSR; none of those functions owns them.
//!
//! Pure code: `rules` decides over a claim (`claim`) and the device's record
//! from the registry; `settings` is what every caller reads from its
//! environment to apply them. No AWS call is made here.

pub mod claim;
pub mod rules;
pub mod settings;

pub use claim::ProvisioningClaim;
pub use rules::{Denial, GrantKind, Policy, Reason, Verdict};
pub use settings::DeviceRuleSettings;
