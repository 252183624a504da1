//! Region health as the control plane sees it: hysteresis over signals,
//! drains, and the failback hold. Pure: no I/O.
//!
//! The data plane (Route 53 health checks on the records) moves devices away
//! from a failed region by itself. This state decides which regions the
//! control plane puts in the chains: a region that recovers rejoins them only
//! after it has stayed available for the minimum interval (failback
//! hysteresis), and a drained region stays out until it is undrained.

use serde::{Deserialize, Serialize};

/// One observation of a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Signal {
    Healthy,
    Unhealthy,
    /// The region's health could not be read, or its alarm has too little
    /// data to say.
    Unknown,
}

/// How signals turn into health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive unhealthy signals that make a healthy region unhealthy.
    pub fail_after: u32,
    /// Consecutive healthy signals that make an unhealthy region healthy.
    pub recover_after: u32,
    /// Whether an UNKNOWN signal counts toward `fail_after` (else it is
    /// ignored: it neither counts nor resets).
    pub unknown_counts_as_unhealthy: bool,
    /// Seconds a recovered region stays out of the chains (failback hysteresis).
    pub failback_hold: i64,
}

/// What the report says of a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Healthy,
    Unhealthy,
    Drained,
    /// Never observed: no signal has reached the control plane yet.
    Unknown,
}

/// The stored health of one region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegionHealth {
    /// Whether any signal was ever applied.
    #[serde(default)]
    pub observed: bool,
    /// Healthy after hysteresis. A region not yet observed is not unhealthy.
    #[serde(default)]
    pub unhealthy: bool,
    pub consecutive_healthy: u32,
    pub consecutive_unhealthy: u32,
    /// Taken out of service by an operator, whatever its health.
    pub drained: bool,
    /// Epoch seconds at which the region last recovered; it rejoins the
    /// chains `minChangeIntervalSeconds` later.
    #[serde(default)]
    pub recovered_at: Option<i64>,
    /// Epoch seconds of the newest signal applied; an older one is stale.
    #[serde(default)]
    pub last_signal_at: Option<i64>,
}

impl RegionHealth {
    /// The state after one more signal. `at` is when the signal was true
    /// (epoch milliseconds; one older than the last applied is stale, see
    /// `is_stale`); `now` is when it is applied (epoch seconds), from which a
    /// recovery's hold runs.
    pub fn observe(self, signal: Signal, thresholds: Thresholds, at: i64, now: i64) -> Self {
        let mut next = self;
        let counts_as = match signal {
            // An ignored unknown signal neither counts nor resets.
            Signal::Unknown if !thresholds.unknown_counts_as_unhealthy => return next,
            Signal::Unknown => Signal::Unhealthy,
            other => other,
        };
        if signal != Signal::Unknown {
            // Only a real observation makes the region known and dates its health.
            next.observed = true;
            next.last_signal_at = Some(self.last_signal_at.map_or(at, |t| t.max(at)));
        }
        if counts_as == Signal::Healthy {
            next.consecutive_healthy = next.consecutive_healthy.saturating_add(1);
            next.consecutive_unhealthy = 0;
            if next.unhealthy && next.consecutive_healthy >= thresholds.recover_after {
                next.unhealthy = false;
                next.recovered_at = Some(now);
            }
        } else {
            next.consecutive_unhealthy = next.consecutive_unhealthy.saturating_add(1);
            next.consecutive_healthy = 0;
            if next.consecutive_unhealthy >= thresholds.fail_after {
                next.unhealthy = true;
            }
            // A bad signal while a recovery is held out starts the hold again:
            // the region has not been stable for the interval.
            if self.held_until(now, thresholds.failback_hold).is_some() {
                next.recovered_at = Some(now);
            }
        }
        next
    }

    /// Whether a signal of `at` (epoch milliseconds) is older than the newest
    /// one applied.
    pub fn is_stale(&self, at: i64) -> bool {
        self.last_signal_at.is_some_and(|last| at < last)
    }

    pub fn drained(self, drained: bool) -> Self {
        RegionHealth { drained, ..self }
    }

    /// Whether the control plane puts the region in the chains at `now`: not
    /// drained, not unhealthy, and past the failback hold if it recovered.
    /// A region never observed is admitted: its health check still guards it.
    pub fn admitted(&self, now: i64, failback_hold: i64) -> bool {
        !self.drained
            && !self.unhealthy
            && self
                .recovered_at
                .is_none_or(|at| now >= at.saturating_add(failback_hold))
    }

    /// When a recovered region rejoins the chains, if it is still held out.
    pub fn held_until(&self, now: i64, failback_hold: i64) -> Option<i64> {
        let until = self.recovered_at?.saturating_add(failback_hold);
        (!self.drained && !self.unhealthy && now < until).then_some(until)
    }

    pub fn status(&self) -> Status {
        match (self.drained, self.observed, self.unhealthy) {
            (true, _, _) => Status::Drained,
            (false, _, true) => Status::Unhealthy,
            (false, false, false) => Status::Unknown,
            (false, true, false) => Status::Healthy,
        }
    }
}

/// The signal an alarm state carries: ALARM is unhealthy, OK healthy, and
/// INSUFFICIENT_DATA (or anything else) unknown.
pub fn signal_from_alarm_state(state: &str) -> Signal {
    match state {
        "ALARM" => Signal::Unhealthy,
        "OK" => Signal::Healthy,
        _ => Signal::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const T: Thresholds = Thresholds {
        fail_after: 2,
        recover_after: 3,
        unknown_counts_as_unhealthy: true,
        failback_hold: 60,
    };

    /// The signals one a second, from second 0.
    fn run(signals: &[Signal]) -> RegionHealth {
        signals
            .iter()
            .enumerate()
            .fold(RegionHealth::default(), |h, (i, s)| {
                h.observe(*s, T, i as i64 * 1000, i as i64)
            })
    }

    #[test]
    fn a_region_never_observed_is_unknown_and_admitted() {
        let h = RegionHealth::default();
        assert_eq!(h.status(), Status::Unknown);
        assert!(h.admitted(0, 60));
        assert_eq!(run(&[Signal::Healthy]).status(), Status::Healthy);
    }

    #[test]
    fn turns_unhealthy_after_fail_after_consecutive_bad_signals() {
        use Signal::*;
        assert!(!run(&[Unhealthy]).unhealthy);
        assert!(run(&[Unhealthy, Unhealthy]).unhealthy);
        assert!(
            !run(&[Unhealthy, Healthy, Unhealthy]).unhealthy,
            "not consecutive"
        );
        assert!(
            run(&[Unhealthy, Unknown]).unhealthy,
            "unknown counts by default"
        );
        let ignore = Thresholds {
            unknown_counts_as_unhealthy: false,
            ..T
        };
        let h = [Unhealthy, Unknown, Unknown]
            .iter()
            .fold(RegionHealth::default(), |h, s| h.observe(*s, ignore, 0, 0));
        assert!(!h.unhealthy);
        assert_eq!(
            h.consecutive_unhealthy, 1,
            "ignored: neither counts nor resets"
        );
    }

    #[test]
    fn unknown_signals_never_make_a_region_known_nor_date_it() {
        let h = RegionHealth::default().observe(Signal::Unknown, T, 5_000, 5);
        assert_eq!(h.status(), Status::Unknown);
        assert_eq!(h.last_signal_at, None);
        let h = h.observe(Signal::Unknown, T, 6_000, 6);
        assert_eq!(
            h.status(),
            Status::Unhealthy,
            "two unknowns reach failAfter"
        );
        assert!(
            !h.is_stale(1_000),
            "an earlier real signal is not stale after unknowns"
        );
    }

    #[test]
    fn recovers_after_recover_after_good_signals_and_is_held_out_for_the_interval() {
        use Signal::*;
        let down = [Unhealthy, Unhealthy];
        assert!(run(&[&down[..], &[Healthy, Healthy]].concat()).unhealthy);
        let up = run(&[&down[..], &[Healthy, Healthy, Healthy]].concat());
        assert!(!up.unhealthy);
        assert_eq!(up.recovered_at, Some(4));
        assert!(!up.admitted(63, 60));
        assert_eq!(up.held_until(63, 60), Some(64));
        assert!(up.admitted(64, 60));
        assert_eq!(up.held_until(64, 60), None);
    }

    #[test]
    fn a_bad_signal_during_the_hold_starts_it_again_and_one_after_it_does_not() {
        use Signal::*;
        let up = run(&[Unhealthy, Unhealthy, Healthy, Healthy, Healthy]); // recovered at 4
        let blip = up.observe(Unhealthy, T, 30_000, 30);
        assert!(!blip.unhealthy, "one bad signal is under failAfter");
        assert_eq!(
            blip.held_until(30, 60),
            Some(90),
            "the hold runs again from the blip"
        );
        let later = up.observe(Unhealthy, T, 100_000, 100);
        assert!(
            later.admitted(100, 60),
            "after the hold a blip changes nothing"
        );
        assert_eq!(later.recovered_at, Some(4));
    }

    #[test]
    fn a_recovery_is_held_from_when_it_is_applied_not_from_the_event() {
        use Signal::*;
        let down = run(&[Unhealthy, Unhealthy]);
        let late_ok = [Healthy, Healthy, Healthy]
            .iter()
            .fold(down, |h, s| h.observe(*s, T, 10_000, 300));
        assert_eq!(late_ok.recovered_at, Some(300));
    }

    #[test]
    fn drained_regions_are_out_whatever_their_health() {
        let h = RegionHealth::default().drained(true);
        assert!(!h.admitted(0, 0));
        assert_eq!(h.held_until(0, 60), None);
        assert_eq!(h.status(), Status::Drained);
        assert_eq!(h.drained(false).status(), Status::Unknown);
        assert!(
            h.drained(false).admitted(0, 60),
            "undrain takes effect at once"
        );
    }

    #[test]
    fn alarm_states() {
        assert_eq!(signal_from_alarm_state("ALARM"), Signal::Unhealthy);
        assert_eq!(signal_from_alarm_state("OK"), Signal::Healthy);
        assert_eq!(
            signal_from_alarm_state("INSUFFICIENT_DATA"),
            Signal::Unknown
        );
    }

    proptest! {
        /// The region's health is what the last run of signals long enough
        /// to cross a threshold says; shorter runs change nothing.
        #[test]
        fn health_follows_the_last_long_enough_run(signals in proptest::collection::vec(any::<bool>(), 0..40)) {
            let signals: Vec<Signal> = signals.iter().map(|ok| if *ok { Signal::Healthy } else { Signal::Unhealthy }).collect();
            let mut unhealthy = false;
            let mut run_len = 0u32;
            let mut last = None;
            for s in &signals {
                run_len = if last == Some(*s) { run_len + 1 } else { 1 };
                last = Some(*s);
                match s {
                    Signal::Unhealthy if run_len >= T.fail_after => unhealthy = true,
                    Signal::Healthy if run_len >= T.recover_after => unhealthy = false,
                    _ => {}
                }
            }
            prop_assert_eq!(run(&signals).unhealthy, unhealthy);
        }
    }
}
