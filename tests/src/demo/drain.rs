//! Phase 6, drain: an operator drains eu-west-1 (everything to us-east-1), then
//! undrains it.

use serde_json::json;

use super::Demo;
use super::dns::Via;

impl Demo {
    pub fn drain(&mut self) {
        println!("\n6. drain: eu-west-1 out of service, then back");
        self.dns_step(
            "drain eu-west-1",
            &json!({"action": "drain", "region": "eu-west-1"}),
            Via::ControlPlane,
            ("us-east-1", "us-east-1"),
        );
        self.dns_step(
            "undrain eu-west-1",
            &json!({"action": "undrain", "region": "eu-west-1"}),
            Via::ControlPlane,
            ("us-east-1", "eu-west-1"),
        );
    }
}
