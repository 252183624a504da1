//! The canary's window: its verdict of each of the last N minutes, kept in
//! the region's geoprov table, and the datapoint that carries it.
//!
//! Route 53 evaluates a `CLOUDWATCH_METRIC` health check from the alarm's
//! data stream with the settings it copied, and supports no "M out of N"
//! alarm. So the M-of-N lives here: each run publishes
//! `CanaryFailuresInWindow`, the number of the last N minutes (this run's
//! included) whose run failed or is missing, and the region's health alarm
//! is 1 of 1 on it (`>= M`, Maximum, 60 s, missing data breaching). The
//! region is unhealthy from the run that makes M failures of the last N,
//! and healthy again once no more than M - 1 of the last N failed: after at
//! most N - M + 1 good minutes in a row (a full window of failures needs all
//! of them). Fail fast, recover slower, by construction, and every
//! datapoint carries its verdict.
//!
//! A minute with no recorded run counts as a failure: a canary that did not
//! run proved nothing. A new region (no window yet) is therefore unhealthy
//! until N - M + 1 good minutes have passed. When the window cannot be read
//! or written, the run publishes N: fail closed.
//!
//! The minute of a run is the scheduled event's `time` (the minute
//! EventBridge fired for), else the clock's; a time more than two minutes
//! ahead of the clock is not believed (one bad event must not push the
//! window into the future and leave every real minute outside it). An item
//! that does not parse is replaced by a new window, not kept for ever.

use std::collections::BTreeMap;
use std::future::Future;

use aws_sdk_dynamodb::types::AttributeValue;
use geoprov_shared::table::{PARTITION_KEY, SORT_KEY};

/// The sizes a window may have.
pub const MAX_WINDOW: u32 = 10;

/// Each minute's verdict, by epoch minute: `true` for a run that succeeded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Window {
    minutes: BTreeMap<i64, bool>,
}

impl Window {
    /// Records `minute`'s verdict and forgets what is older than the window
    /// of the newest minute. A second run in one minute keeps the worse
    /// verdict.
    pub fn record(&mut self, minute: i64, ok: bool, size: u32) {
        let entry = self.minutes.entry(minute).or_insert(ok);
        *entry = *entry && ok;
        let newest = self.minutes.keys().next_back().copied().unwrap_or(minute);
        let oldest_kept = newest - i64::from(size) + 1;
        self.minutes.retain(|m, _| *m >= oldest_kept);
    }

    /// The minutes of `(minute - size, minute]` that failed or have no run.
    pub fn failures(&self, minute: i64, size: u32) -> u32 {
        (0..i64::from(size))
            .filter(|back| self.minutes.get(&(minute - back)) != Some(&true))
            .count() as u32
    }

    /// The stored form: `minute:1` or `minute:0`, comma-separated.
    pub fn encode(&self) -> String {
        self.minutes
            .iter()
            .map(|(m, ok)| format!("{m}:{}", u8::from(*ok)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The stored form read back; `None` when it does not parse.
    pub fn decode(raw: &str) -> Option<Self> {
        let mut minutes = BTreeMap::new();
        for part in raw.split(',').filter(|p| !p.is_empty()) {
            let (minute, ok) = part.split_once(':')?;
            let ok = match ok {
                "1" => true,
                "0" => false,
                _ => return None,
            };
            minutes.insert(minute.parse().ok()?, ok);
        }
        Some(Window { minutes })
    }
}

/// The window as stored, and the version it was read at (0: none stored;
/// `None`: an item that does not parse, replaced whatever it holds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub window: Window,
    pub version: Option<u64>,
}

impl Default for Stored {
    fn default() -> Self {
        Stored {
            window: Window::default(),
            version: Some(0),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("DynamoDB {operation} of the canary window failed: {message}")]
    Call {
        operation: &'static str,
        message: String,
    },
    #[error("the stored canary window does not parse")]
    Malformed,
    #[error("the canary window changed while it was written")]
    Conflict,
}

/// Where the window is kept.
pub trait WindowStore {
    fn load(&self, region: &str) -> impl Future<Output = Result<Stored, WindowError>> + Send;
    /// Writes `window` if the stored version is still `read_version`
    /// (`None`: whatever is stored).
    fn save(
        &self,
        region: &str,
        window: &Window,
        read_version: Option<u64>,
    ) -> impl Future<Output = Result<(), WindowError>> + Send;
}

/// Records `minute`'s verdict and answers the failures in the window: a
/// read, a conditional write, one more try on a conflict (two runs at once).
pub async fn record_run(
    store: &impl WindowStore,
    region: &str,
    minute: i64,
    ok: bool,
    size: u32,
) -> Result<u32, WindowError> {
    let mut last = WindowError::Conflict;
    for _ in 0..2 {
        let mut stored = store.load(region).await?;
        stored.window.record(minute, ok, size);
        match store.save(region, &stored.window, stored.version).await {
            Ok(()) => return Ok(stored.window.failures(minute, size)),
            Err(WindowError::Conflict) => last = WindowError::Conflict,
            Err(e) => return Err(e),
        }
    }
    Err(last)
}

/// The partition key of `region`'s window.
pub fn window_pk(region: &str) -> String {
    format!("CANARY#{region}")
}

pub const WINDOW_SK: &str = "WINDOW";

/// The window in the geoprov table: one item per region.
#[derive(Debug, Clone)]
pub struct DynamoWindowStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoWindowStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoWindowStore {
            client,
            table: table.into(),
        }
    }
}

fn call(operation: &'static str) -> impl Fn(String) -> WindowError {
    move |message| WindowError::Call { operation, message }
}

impl WindowStore for DynamoWindowStore {
    async fn load(&self, region: &str) -> Result<Stored, WindowError> {
        let item = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PARTITION_KEY, AttributeValue::S(window_pk(region)))
            .key(SORT_KEY, AttributeValue::S(WINDOW_SK.into()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| {
                call("GetItem")(aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())
            })?
            .item;
        let Some(item) = item else {
            return Ok(Stored::default());
        };
        let window = item
            .get("minutes")
            .and_then(|v| v.as_s().ok())
            .and_then(|raw| Window::decode(raw));
        let version = item
            .get("version")
            .and_then(|v| v.as_n().ok())
            .and_then(|n| n.parse::<u64>().ok());
        match (window, version) {
            (Some(window), Some(version)) => Ok(Stored {
                window,
                version: Some(version),
            }),
            // Fail closed for this minute (a new window counts what it has
            // not seen as failed), and replace the item.
            _ => {
                tracing::error!(
                    region,
                    "the canary window item does not parse; a new window replaces it"
                );
                Ok(Stored {
                    window: Window::default(),
                    version: None,
                })
            }
        }
    }

    async fn save(
        &self,
        region: &str,
        window: &Window,
        read_version: Option<u64>,
    ) -> Result<(), WindowError> {
        let next = read_version.unwrap_or(0) + 1;
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .item(PARTITION_KEY, AttributeValue::S(window_pk(region)))
            .item(SORT_KEY, AttributeValue::S(WINDOW_SK.into()))
            .item("minutes", AttributeValue::S(window.encode()))
            .item("version", AttributeValue::N(next.to_string()));
        let put = match read_version {
            None => put,
            Some(0) => put
                .condition_expression("attribute_not_exists(#pk)")
                .expression_attribute_names("#pk", PARTITION_KEY),
            Some(v) => put
                .condition_expression("#version = :read")
                .expression_attribute_names("#version", "version")
                .expression_attribute_values(":read", AttributeValue::N(v.to_string())),
        };
        match put.send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let conflict = e
                    .as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception());
                match conflict {
                    true => Err(WindowError::Conflict),
                    false => Err(call("PutItem")(
                        aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string(),
                    )),
                }
            }
        }
    }
}

/// The run's minute: the scheduled event's `time`, else `now_ms`'s; a time
/// more than two minutes ahead of the clock is not believed.
pub fn run_minute(event: &serde_json::Value, now_ms: i64) -> i64 {
    let now = now_ms.div_euclid(60_000);
    event
        .get("time")
        .and_then(|t| t.as_str())
        .and_then(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
        })
        .map(|t| t.unix_timestamp().div_euclid(60))
        .filter(|minute| *minute <= now + 2)
        .unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn failures_count_failed_and_missing_minutes() {
        let mut w = Window::default();
        // A new window: everything before the first run is missing.
        w.record(100, true, 5);
        assert_eq!(w.failures(100, 5), 4);
        for m in 101..=104 {
            w.record(m, true, 5);
        }
        assert_eq!(w.failures(104, 5), 0);
        w.record(105, false, 5);
        assert_eq!(w.failures(105, 5), 1);
        // 106 never ran: at 107 it counts as a failure.
        w.record(107, true, 5);
        assert_eq!(w.failures(107, 5), 2);
        // Only the window is kept.
        assert_eq!(w.encode(), "103:1,104:1,105:0,107:1");
        // A second run in one minute keeps the worse verdict.
        w.record(107, false, 5);
        assert_eq!(w.failures(107, 5), 3);
        w.record(107, true, 5);
        assert_eq!(w.failures(107, 5), 3);
    }

    /// The alarm is `failures >= M`: with 2 of 5 the region fails on the
    /// second bad minute and recovers after 4 good ones in a row.
    #[test]
    fn two_of_five_fails_fast_and_recovers_slower() {
        let (m, n) = (2, 5);
        let mut w = Window::default();
        let mut minute = 0;
        let mut run = |ok: bool, w: &mut Window| {
            minute += 1;
            w.record(minute, ok, n);
            w.failures(minute, n) >= m
        };
        for _ in 0..5 {
            run(true, &mut w);
        }
        assert!(!run(true, &mut w), "healthy");
        assert!(!run(false, &mut w), "one bad minute is not enough");
        assert!(run(false, &mut w), "the second fails the region");
        let recovery: Vec<bool> = (0..5).map(|_| run(true, &mut w)).collect();
        assert_eq!(recovery, [true, true, true, false, false]);
    }

    #[test]
    fn the_stored_form_round_trips_and_refuses_garbage() {
        let mut w = Window::default();
        w.record(29_000_000, true, 5);
        w.record(29_000_001, false, 5);
        assert_eq!(Window::decode(&w.encode()), Some(w));
        assert_eq!(Window::decode(""), Some(Window::default()));
        assert_eq!(Window::decode("12:2"), None);
        assert_eq!(Window::decode("x:1"), None);
    }

    #[test]
    fn the_minute_is_the_events_then_the_clocks() {
        let event = serde_json::json!({"time": "2026-11-30T12:00:59Z"});
        let now = 1_796_040_000_i64 * 1000 + 60_000;
        assert_eq!(run_minute(&event, now), 1_796_040_000 / 60);
        // A time far ahead of the clock is not believed.
        let ahead = serde_json::json!({"time": "2099-01-01T00:00:00Z"});
        assert_eq!(run_minute(&ahead, now), now / 60_000);
        assert_eq!(1_796_040_000 % 60, 0);
        assert_eq!(run_minute(&serde_json::json!({}), 125_000), 2);
        assert_eq!(run_minute(&serde_json::json!({"time": "soon"}), 60_000), 1);
    }

    /// A store double (named as such): one that loses the race once, and one
    /// that always fails.
    struct RacingStore {
        stored: Mutex<Stored>,
        conflicts_left: Mutex<u32>,
    }

    impl WindowStore for RacingStore {
        async fn load(&self, _: &str) -> Result<Stored, WindowError> {
            Ok(self.stored.lock().unwrap().clone())
        }
        async fn save(
            &self,
            _: &str,
            window: &Window,
            read: Option<u64>,
        ) -> Result<(), WindowError> {
            let mut left = self.conflicts_left.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return Err(WindowError::Conflict);
            }
            let mut stored = self.stored.lock().unwrap();
            assert_eq!(stored.version, read);
            *stored = Stored {
                window: window.clone(),
                version: Some(read.unwrap_or(0) + 1),
            };
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_lost_race_is_tried_once_more() {
        let store = RacingStore {
            stored: Mutex::new(Stored::default()),
            conflicts_left: Mutex::new(1),
        };
        assert_eq!(record_run(&store, "eu-west-1", 10, true, 3).await, Ok(2));
        assert_eq!(store.stored.lock().unwrap().version, Some(1));
        *store.conflicts_left.lock().unwrap() = 2;
        assert_eq!(
            record_run(&store, "eu-west-1", 11, true, 3).await,
            Err(WindowError::Conflict)
        );
    }
}
