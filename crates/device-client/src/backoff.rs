//! How long a device waits before it tries again: capped exponential
//! backoff with full jitter, the scheme of the AWS Architecture Blog's
//! "Exponential Backoff And Jitter" and the AWS IoT Device SDKs' reconnect
//! default. After attempt `n` (from 0) the delay is uniform in
//! `[0, min(cap, base * 2^n)]`, so a fleet that lost its region at the same
//! instant spreads its reconnects instead of arriving in waves at IoT's
//! CONNECT quota.

use std::time::Duration;

/// A backoff schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The ceiling of the first delay.
    pub base: Duration,
    /// The largest ceiling.
    pub cap: Duration,
}

impl Backoff {
    /// Reconnecting, and retrying a throttled provisioning call. A device in
    /// the field would start at 1 s and cap at a few minutes (the SDKs use
    /// 1 s and 120 s); these keep the emulator's runs short.
    pub const DEVICE: Backoff = Backoff {
        base: Duration::from_millis(250),
        cap: Duration::from_secs(4),
    };

    /// The ceiling of the delay after attempt `attempt` (from 0).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX);
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay for `attempt` given `unit`, a uniform draw from [0, 1).
    pub fn delay_with(&self, attempt: u32, unit: f64) -> Duration {
        self.ceiling(attempt).mul_f64(unit.clamp(0.0, 1.0))
    }

    /// The delay for `attempt`, drawn at random.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, fastrand::f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_ceiling_doubles_up_to_the_cap() {
        let ceilings: Vec<u64> = (0..7)
            .map(|n| Backoff::DEVICE.ceiling(n).as_millis() as u64)
            .collect();
        assert_eq!(ceilings, [250, 500, 1000, 2000, 4000, 4000, 4000]);
        assert_eq!(Backoff::DEVICE.ceiling(u32::MAX), Duration::from_secs(4));
    }

    proptest! {
        /// Full jitter: any delay from nothing to the ceiling, never more.
        #[test]
        fn a_delay_is_within_zero_and_the_ceiling(attempt in 0u32..64, unit in 0.0f64..1.0) {
            let delay = Backoff::DEVICE.delay_with(attempt, unit);
            prop_assert!(delay <= Backoff::DEVICE.ceiling(attempt));
            prop_assert!(delay <= Backoff::DEVICE.cap);
        }
    }

    #[test]
    fn random_delays_spread_over_the_whole_range() {
        let delays: Vec<Duration> = (0..1000).map(|_| Backoff::DEVICE.delay(3)).collect();
        let ceiling = Backoff::DEVICE.ceiling(3);
        assert!(delays.iter().all(|d| *d <= ceiling));
        assert!(delays.iter().any(|d| *d < ceiling / 4));
        assert!(delays.iter().any(|d| *d > ceiling * 3 / 4));
    }
}
