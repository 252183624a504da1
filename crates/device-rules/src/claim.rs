//! A well-formed provisioning request, as the hook parses it from IoT's
//! event (`pre_provisioning_hook::request`).

use std::collections::BTreeMap;

use geoprov_shared::device::SerialNumber;

/// A well-formed provisioning request: what the rules decide on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProvisioningClaim {
    pub serial: SerialNumber,
    pub claim_certificate_id: String,
    pub certificate_id: String,
    pub certificate_pem: String,
    pub template_arn: String,
    pub client_id: String,
    /// Every parameter of the request but `SerialNumber`, with its value
    /// when it is a string: what the device (or IoT) sent beside the serial.
    pub parameters: BTreeMap<String, Option<String>>,
}
