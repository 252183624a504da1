//! geoprov-iot-emu: one region of AWS IoT Core's data plane, as far as
//! provisioning needs it, on loopback: MQTT 3.1.1 over TLS with client
//! certificates (`broker`, `tls`), policy evaluation (`policy`), the fleet
//! provisioning MQTT API with the pre-provisioning hook, JITP and JITR
//! (`provisioning`, `template`), IoT's rate quotas (`quotas`), IoT rules with Lambda actions (`rules`), and
//! an admin API for outage tests (`faults`). The registry it reads and writes is moto's IoT (`registry`).
//!
//! Each module cites the pages of the AWS IoT Core developer guide it
//! follows; where the guide is silent the emulator is strict.

pub mod broker;
pub mod certificate_provider;
pub mod faults;
pub mod invoke;
pub mod policy;
pub mod provisioning;
pub mod quotas;
pub mod registry;
pub mod rules;
pub mod template;
pub mod tls;
pub mod topics;
