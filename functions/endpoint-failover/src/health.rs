//! Region health with hysteresis, and Route 53's rule for turning health
//! checker observations into a signal. Pure: no I/O.

use serde::{Deserialize, Serialize};

/// One observation of a region's endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Signal {
    Healthy,
    Unhealthy,
}

/// How many consecutive signals flip a region's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    pub fail_after: u32,
    pub recover_after: u32,
}

/// What the report says of a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Healthy,
    Unhealthy,
    Drained,
}

/// The stored health of one region. A region nobody has reported on yet is
/// healthy: the records must point somewhere from the first reconcile on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegionHealth {
    pub healthy: bool,
    pub consecutive_healthy: u32,
    pub consecutive_unhealthy: u32,
    /// Taken out of service by an operator, whatever its health.
    pub drained: bool,
}

impl Default for RegionHealth {
    fn default() -> Self {
        RegionHealth {
            healthy: true,
            consecutive_healthy: 0,
            consecutive_unhealthy: 0,
            drained: false,
        }
    }
}

impl RegionHealth {
    /// The state after one more signal.
    pub fn observe(self, signal: Signal, thresholds: Thresholds) -> Self {
        let mut next = self;
        match signal {
            Signal::Healthy => {
                next.consecutive_healthy = next.consecutive_healthy.saturating_add(1);
                next.consecutive_unhealthy = 0;
                if next.consecutive_healthy >= thresholds.recover_after {
                    next.healthy = true;
                }
            }
            Signal::Unhealthy => {
                next.consecutive_unhealthy = next.consecutive_unhealthy.saturating_add(1);
                next.consecutive_healthy = 0;
                if next.consecutive_unhealthy >= thresholds.fail_after {
                    next.healthy = false;
                }
            }
        }
        next
    }

    pub fn drained(self, drained: bool) -> Self {
        RegionHealth { drained, ..self }
    }

    /// Whether records may point at the region.
    pub fn available(&self) -> bool {
        self.healthy && !self.drained
    }

    pub fn status(&self) -> Status {
        match (self.drained, self.healthy) {
            (true, _) => Status::Drained,
            (false, true) => Status::Healthy,
            (false, false) => Status::Unhealthy,
        }
    }
}

/// Route 53's own rule: an endpoint is healthy when more than 18% of the
/// health checkers report success. No observations give no signal.
pub fn signal_from_observations(checkers: usize, successes: usize) -> Option<Signal> {
    match checkers {
        0 => None,
        _ if successes * 100 > checkers * 18 => Some(Signal::Healthy),
        _ => Some(Signal::Unhealthy),
    }
}

/// Whether one checker's status report (`"Success: HTTP Status Code 200..."`,
/// `"Failure: ..."`) is a success.
pub fn is_success_report(status: &str) -> bool {
    status.trim_start().starts_with("Success")
}

/// The signal an alarm state carries: ALARM is unhealthy, OK healthy, and
/// INSUFFICIENT_DATA (or anything else) none.
pub fn signal_from_alarm_state(state: &str) -> Option<Signal> {
    match state {
        "ALARM" => Some(Signal::Unhealthy),
        "OK" => Some(Signal::Healthy),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: Thresholds = Thresholds {
        fail_after: 2,
        recover_after: 3,
    };

    fn run(signals: &[Signal]) -> RegionHealth {
        signals
            .iter()
            .fold(RegionHealth::default(), |h, s| h.observe(*s, T))
    }

    #[test]
    fn turns_unhealthy_after_fail_after_consecutive_bad_signals() {
        use Signal::*;
        assert!(run(&[Unhealthy]).healthy);
        assert!(!run(&[Unhealthy, Unhealthy]).healthy);
        assert!(
            run(&[Unhealthy, Healthy, Unhealthy]).healthy,
            "not consecutive"
        );
    }

    #[test]
    fn recovers_after_recover_after_consecutive_good_signals() {
        use Signal::*;
        let down = [Unhealthy, Unhealthy];
        assert!(!run(&[&down[..], &[Healthy, Healthy]].concat()).healthy);
        assert!(run(&[&down[..], &[Healthy, Healthy, Healthy]].concat()).healthy);
        assert!(!run(&[&down[..], &[Healthy, Healthy, Unhealthy, Healthy]].concat()).healthy);
    }

    #[test]
    fn drained_regions_are_unavailable_whatever_their_health() {
        let h = RegionHealth::default().drained(true);
        assert!(!h.available());
        assert_eq!(h.status(), Status::Drained);
        assert_eq!(h.drained(false).status(), Status::Healthy);
    }

    #[test]
    fn route53_rule_is_more_than_18_percent() {
        assert_eq!(signal_from_observations(0, 0), None);
        assert_eq!(signal_from_observations(16, 3), Some(Signal::Healthy)); // 18.75 %
        assert_eq!(signal_from_observations(50, 9), Some(Signal::Unhealthy)); // exactly 18 %
        assert_eq!(signal_from_observations(50, 10), Some(Signal::Healthy));
        assert_eq!(signal_from_observations(8, 0), Some(Signal::Unhealthy));
    }

    #[test]
    fn status_reports_and_alarm_states() {
        assert!(is_success_report("Success: HTTP Status Code 200, OK"));
        assert!(!is_success_report("Failure: Connection timed out."));
        assert_eq!(signal_from_alarm_state("ALARM"), Some(Signal::Unhealthy));
        assert_eq!(signal_from_alarm_state("OK"), Some(Signal::Healthy));
        assert_eq!(signal_from_alarm_state("INSUFFICIENT_DATA"), None);
    }

    proptest! {
        /// The region's health is what the last run of signals long enough
        /// to cross a threshold says; shorter runs change nothing.
        #[test]
        fn health_follows_the_last_long_enough_run(signals in proptest::collection::vec(any::<bool>(), 0..40)) {
            let signals: Vec<Signal> = signals.iter().map(|ok| if *ok { Signal::Healthy } else { Signal::Unhealthy }).collect();
            let mut expected = true;
            let mut run_len = 0u32;
            let mut last = None;
            for s in &signals {
                run_len = if last == Some(*s) { run_len + 1 } else { 1 };
                last = Some(*s);
                match s {
                    Signal::Unhealthy if run_len >= T.fail_after => expected = false,
                    Signal::Healthy if run_len >= T.recover_after => expected = true,
                    _ => {}
                }
            }
            prop_assert_eq!(run(&signals).healthy, expected);
        }
    }
}
