//! IoT's rate quotas in one region, as token buckets.
//!
//! The rates are IoT's published defaults ("AWS IoT Core endpoints and
//! quotas", docs.aws.amazon.com/general/latest/gr/iot-core.html, and the
//! developer guide's "AWS IoT quotas" table), scaled by `--quota-scale` so
//! that a run on a small machine meets them at a fleet it can drive:
//! - "Connect requests per second per account": 500;
//! - "Maximum number of device certificates that can be registered per
//!   second" (auto-registration, JITR and JITP): 15;
//! - CreateCertificateFromCsr: 15 per second; CreateKeysAndCertificate has
//!   no published figure, so it shares CreateCertificateFromCsr's bucket
//!   (strict: both make a certificate);
//! - RegisterThing: 10 per second.
//!
//! An account may have had any of them raised, and some regions publish
//! other figures: `geoprov plan` and a game day take the rates as input.
//!
//! Each bucket holds one second of its rate (at least one token): IoT does
//! not publish its burst, so the emulator allows none beyond the rate.
//!
//! What a device sees over a rate (`broker` and `provisioning` answer so):
//! - CONNECT: the connection is closed without a CONNACK. IoT counts it in
//!   the `Connect.Throttle` metric ("Monitor AWS IoT alarms and metrics
//!   using CloudWatch") and documents no return code for it;
//! - auto-registration: the certificate is not registered and the
//!   connection is closed; the device's next attempt registers it;
//! - the provisioning MQTT API: a `/rejected` answer with statusCode 429 and
//!   errorCode `ThrottlingException`. The MQTT API documents the payload's
//!   fields but not their values; these are the ones its HTTP API
//!   documents for throttling (CreateCertificateFromCsr, "Errors").

use std::sync::Mutex;
use std::time::Instant;

use serde_json::{Value, json};

/// A rate IoT bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quota {
    /// MQTT CONNECT requests per second per account.
    Connect,
    /// Certificates auto-registered (JITR, JITP) per second.
    AutoRegistration,
    /// CreateCertificateFromCsr and CreateKeysAndCertificate per second.
    CreateCertificate,
    /// RegisterThing per second.
    RegisterThing,
}

impl Quota {
    pub const ALL: [Quota; 4] = [
        Quota::Connect,
        Quota::AutoRegistration,
        Quota::CreateCertificate,
        Quota::RegisterThing,
    ];

    /// IoT's published default, per second.
    pub fn default_rate(self) -> f64 {
        match self {
            Quota::Connect => 500.0,
            Quota::AutoRegistration | Quota::CreateCertificate => 15.0,
            Quota::RegisterThing => 10.0,
        }
    }

    /// The name the admin API and the logs use.
    pub fn name(self) -> &'static str {
        match self {
            Quota::Connect => "connect",
            Quota::AutoRegistration => "autoRegistration",
            Quota::CreateCertificate => "createCertificate",
            Quota::RegisterThing => "registerThing",
        }
    }

    fn index(self) -> usize {
        match self {
            Quota::Connect => 0,
            Quota::AutoRegistration => 1,
            Quota::CreateCertificate => 2,
            Quota::RegisterThing => 3,
        }
    }
}

/// One quota's token bucket, `limit` = (rate per second, capacity), none
/// for no limit; and what it has granted and refused.
#[derive(Debug)]
struct Bucket {
    limit: Option<(f64, f64)>,
    tokens: f64,
    last: Instant,
    spent: u64,
    throttled: u64,
}

impl Bucket {
    fn new(rate: Option<f64>, now: Instant) -> Self {
        let limit = rate.map(|r| (r, r.max(1.0)));
        Bucket {
            limit,
            tokens: limit.map_or(0.0, |(_, capacity)| capacity),
            last: now,
            spent: 0,
            throttled: 0,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        let granted = match self.limit {
            None => true,
            Some((rate, capacity)) => {
                let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
                self.tokens = (self.tokens + elapsed * rate).min(capacity);
                self.last = now;
                let granted = self.tokens >= 1.0;
                if granted {
                    self.tokens -= 1.0;
                }
                granted
            }
        };
        match granted {
            true => self.spent += 1,
            false => self.throttled += 1,
        }
        granted
    }
}

/// The region's quotas. With no scale (`unlimited`), every request passes
/// and is still counted.
#[derive(Debug)]
pub struct Quotas {
    scale: Option<f64>,
    buckets: Mutex<[Bucket; 4]>,
}

impl Quotas {
    /// IoT's defaults times `scale` (a positive, finite number).
    pub fn scaled(scale: f64) -> Result<Self, String> {
        if !(scale.is_finite() && scale > 0.0) {
            return Err(format!("--quota-scale {scale}: expected a positive number"));
        }
        Ok(Self::with_scale(Some(scale)))
    }

    /// No quota: for measuring the emulator itself.
    pub fn unlimited() -> Self {
        Self::with_scale(None)
    }

    fn with_scale(scale: Option<f64>) -> Self {
        let now = Instant::now();
        Quotas {
            scale,
            buckets: Mutex::new(
                Quota::ALL.map(|q| Bucket::new(scale.map(|s| q.default_rate() * s), now)),
            ),
        }
    }

    /// Spends one unit of `quota`: false when the rate is exceeded.
    pub fn take(&self, quota: Quota) -> bool {
        self.take_at(quota, Instant::now())
    }

    fn take_at(&self, quota: Quota, now: Instant) -> bool {
        let granted = self.buckets.lock().expect("quota lock")[quota.index()].take(now);
        if !granted {
            tracing::info!(quota = quota.name(), "throttled");
        }
        granted
    }

    /// `GET /quotas`: each quota's rate, units spent and requests throttled.
    pub fn describe(&self) -> Value {
        let buckets = self.buckets.lock().expect("quota lock");
        let mut quotas = serde_json::Map::new();
        for quota in Quota::ALL {
            let bucket = &buckets[quota.index()];
            quotas.insert(
                quota.name().to_owned(),
                json!({
                    "ratePerSecond": bucket.limit.map(|(rate, _)| rate),
                    "spent": bucket.spent,
                    "throttled": bucket.throttled,
                }),
            );
        }
        json!({"scale": self.scale, "quotas": quotas})
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_grants_its_rate_then_throttles_until_it_refills() {
        let quotas = Quotas::scaled(0.4).unwrap(); // RegisterThing at 4 per second
        let start = Instant::now();
        let granted = (0..10)
            .filter(|_| quotas.take_at(Quota::RegisterThing, start))
            .count();
        assert_eq!(granted, 4, "one second's worth, no more");
        assert!(!quotas.take_at(Quota::RegisterThing, start + Duration::from_millis(200)));
        assert!(quotas.take_at(Quota::RegisterThing, start + Duration::from_millis(300)));
        // The other quotas are buckets of their own.
        assert!(quotas.take_at(Quota::CreateCertificate, start));
        let described = quotas.describe();
        assert_eq!(described["quotas"]["registerThing"]["spent"], 5);
        assert_eq!(described["quotas"]["registerThing"]["throttled"], 7);
        assert_eq!(described["quotas"]["registerThing"]["ratePerSecond"], 4.0);
    }

    #[test]
    fn a_rate_under_one_per_second_still_admits_one_request() {
        let quotas = Quotas::scaled(0.001).unwrap(); // connect 0.5/s
        let start = Instant::now();
        assert!(quotas.take_at(Quota::Connect, start));
        assert!(!quotas.take_at(Quota::Connect, start + Duration::from_millis(1500)));
        assert!(quotas.take_at(Quota::Connect, start + Duration::from_millis(2100)));
    }

    #[test]
    fn the_defaults_are_iots_published_rates() {
        // "Connect requests per second per account | 500"; "Maximum number
        // of device certificates that can be registered per second | 15";
        // CreateCertificateFromCsr 15 and RegisterThing 10 per second.
        let rates: Vec<f64> = Quota::ALL.iter().map(|q| q.default_rate()).collect();
        assert_eq!(rates, [500.0, 15.0, 15.0, 10.0]);
    }

    #[test]
    fn unlimited_counts_but_never_throttles() {
        let quotas = Quotas::unlimited();
        assert!((0..10_000).all(|_| quotas.take(Quota::Connect)));
        assert_eq!(quotas.describe()["quotas"]["connect"]["spent"], 10_000);
        assert!(quotas.describe()["scale"].is_null());
    }

    #[test]
    fn a_scale_that_is_not_a_positive_number_is_refused() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(Quotas::scaled(bad).is_err(), "{bad}");
        }
    }
}
