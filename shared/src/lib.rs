//! What the geoprov functions and the operator CLI share: configuration, AWS
//! clients, the device registry, audit events and telemetry.

pub mod audit;
pub mod aws;
pub mod claims;
pub mod clock;
pub mod config;
pub mod device;
pub mod registry;
pub mod table;
pub mod telemetry;
