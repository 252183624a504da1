//! Phase 4, outage: us-east-1 down (its emulator refuses connections), and Route
//! 53's API with it; the canaries turn its health check unhealthy, North
//! America moves to eu-west-1 through health alone, and a wave of North
//! American devices provisions there; the API back, the failover takes
//! us-east-1 out of the chains.
//!
//! Phase 5, recovery: us-east-1 serves again; healthy after N - M + 1 good
//! minutes; the failover holds it out for the failback interval, then puts
//! it back.

use std::time::Duration;

use serde_json::json;

use super::dns::Via;
use super::health::{alarm_event, schedule_event};
use super::{ALARM_THRESHOLD, CANARY_WINDOW, Demo, Device, FAILBACK_SECONDS};

const US: &str = "us-east-1";
const EU: &str = "eu-west-1";

impl Demo {
    /// Sets faults on the region's emulator (`{"refuseConnections": true}`).
    pub fn set_faults(&self, region: &str, refuse_connections: bool) {
        self.stack.emulators[region]
            .emulator
            .faults(json!({ "refuseConnections": refuse_connections }));
    }

    /// The outage, with `late` (the na-late devices) provisioning during it.
    pub fn outage(&mut self, late: &[&Device]) {
        println!("\n4. outage: us-east-1 down, and Route 53's API with it");
        self.set_faults(US, true);
        let minutes = self.canary_until(&[(US, "UNHEALTHY")]);
        self.expect(
            minutes.len() == ALARM_THRESHOLD as usize,
            format!("unhealthy after {} bad minutes, not M", minutes.len()),
        );
        self.report.canary.outage = minutes;
        self.dns_step(
            "ALARM us-east-1",
            &alarm_event(US, "ALARM"),
            Via::DataPlane,
            (EU, EU),
        );
        self.provision(late, "wave 2 (NA, during outage)");
        let landed = late
            .iter()
            .all(|d| self.report.devices[&d.serial].region == EU);
        self.expect(landed, "a device of wave 2 did not land in eu-west-1");
        self.dns_step(
            "API back: schedule",
            &schedule_event(None),
            Via::ControlPlane,
            (EU, EU),
        );
    }

    pub fn recovery(&mut self) {
        println!("\n5. recovery: us-east-1 healthy again");
        self.set_faults(US, false);
        let minutes = self.canary_until(&[(US, "HEALTHY")]);
        self.expect(
            minutes.len() == (CANARY_WINDOW - ALARM_THRESHOLD + 1) as usize,
            format!(
                "healthy after {} good minutes, not N - M + 1",
                minutes.len()
            ),
        );
        self.report.canary.recovery = minutes;
        for step in ["OK us-east-1 (1 of 2)", "OK us-east-1 (2 of 2)"] {
            self.dns_step(step, &alarm_event(US, "OK"), Via::ControlPlane, (EU, EU));
        }
        std::thread::sleep(Duration::from_secs(FAILBACK_SECONDS));
        self.dns_step(
            &format!("schedule, {FAILBACK_SECONDS} s later"),
            &schedule_event(None),
            Via::ControlPlane,
            (US, EU),
        );
    }
}
