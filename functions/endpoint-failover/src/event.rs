//! The events the function is invoked with: a CloudWatch alarm state change
//! or a schedule, both through EventBridge, or an operator command.

use aws_lambda_events::eventbridge::EventBridgeEvent;
use serde::Deserialize;
use serde_json::Value;

pub const ALARM_STATE_CHANGE: &str = "CloudWatch Alarm State Change";
pub const SCHEDULED_EVENT: &str = "Scheduled Event";

/// What an operator can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Plan from the stored health and apply.
    Reconcile,
    /// Report health and the plan; change nothing.
    Status,
    /// Take a region out of service until it is undrained.
    Drain,
    Undrain,
}

/// An operator command: `{"action", "region"?, "dryRun"?}`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Command {
    pub action: Action,
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub dry_run: bool,
}

/// What invoked the function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A health alarm changed state; `state` is ALARM, OK or INSUFFICIENT_DATA.
    /// `event_id` is EventBridge's id: a redelivered event carries the same.
    Alarm {
        alarm_name: String,
        state: String,
        event_id: Option<String>,
        /// The region the alarm is in (the event's source region).
        region: Option<String>,
        /// When the event was sent, in epoch seconds (its age is checked).
        time: i64,
        /// When the state changed, in epoch milliseconds: the alarm's state
        /// timestamp, else the event's time. Orders signals of one region.
        changed_at: i64,
    },
    /// The schedule: read every region's health alarm.
    Schedule {
        event_id: Option<String>,
    },
    Command(Command),
}

impl Trigger {
    /// The name the report gives the trigger.
    pub fn name(&self) -> &'static str {
        match self {
            Trigger::Alarm { .. } => "ALARM_STATE_CHANGE",
            Trigger::Schedule { .. } => "SCHEDULE",
            Trigger::Command(c) => match c.action {
                Action::Reconcile => "RECONCILE",
                Action::Status => "STATUS",
                Action::Drain => "DRAIN",
                Action::Undrain => "UNDRAIN",
            },
        }
    }

    /// Whether the invocation must leave every store as it found it.
    pub fn writes_nothing(&self) -> bool {
        matches!(self, Trigger::Command(c) if c.dry_run || c.action == Action::Status)
    }
}

/// The event could not be understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidEvent(pub String);

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AlarmDetail {
    alarm_name: String,
    state: AlarmState,
}

#[derive(Deserialize)]
struct AlarmState {
    value: String,
    #[serde(default)]
    timestamp: Option<String>,
}

/// CloudWatch's state timestamp, `2026-11-29T17:04:40.989+0000`, in epoch
/// milliseconds.
fn state_timestamp_millis(text: &str) -> Option<i64> {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3][offset_hour sign:mandatory][offset_minute]"
    );
    let at = time::OffsetDateTime::parse(text, format).ok()?;
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).ok()
}

/// Reads the trigger from the raw event.
pub fn parse(payload: Value) -> Result<Trigger, InvalidEvent> {
    let invalid = |what: &str, e: serde_json::Error| InvalidEvent(format!("{what}: {e}"));
    if payload.get("detail-type").is_some() {
        let event: EventBridgeEvent<Value> =
            serde_json::from_value(payload).map_err(|e| invalid("EventBridge event", e))?;
        return match event.detail_type.as_str() {
            ALARM_STATE_CHANGE => {
                let detail: AlarmDetail = serde_json::from_value(event.detail)
                    .map_err(|e| invalid("alarm state change detail", e))?;
                // Without its time an event cannot be told stale or fresh.
                let time = event
                    .time
                    .ok_or_else(|| InvalidEvent("an alarm state change needs its time".into()))?;
                let changed_at = detail
                    .state
                    .timestamp
                    .as_deref()
                    .and_then(state_timestamp_millis)
                    .unwrap_or(time.timestamp_millis());
                Ok(Trigger::Alarm {
                    alarm_name: detail.alarm_name,
                    state: detail.state.value,
                    event_id: event.id,
                    region: event.region,
                    time: time.timestamp(),
                    changed_at,
                })
            }
            SCHEDULED_EVENT => Ok(Trigger::Schedule { event_id: event.id }),
            other => Err(InvalidEvent(format!(
                "detail-type {other:?} is neither {ALARM_STATE_CHANGE:?} nor {SCHEDULED_EVENT:?}"
            ))),
        };
    }
    if payload.get("action").is_some() {
        let command: Command =
            serde_json::from_value(payload).map_err(|e| invalid("operator command", e))?;
        return match (command.action, &command.region) {
            (Action::Drain | Action::Undrain, None) => Err(InvalidEvent(
                "drain and undrain need the region they apply to".into(),
            )),
            (Action::Reconcile | Action::Status, Some(_)) => Err(InvalidEvent(
                "reconcile and status apply to every region; remove \"region\"".into(),
            )),
            _ => Ok(Trigger::Command(command)),
        };
    }
    Err(InvalidEvent(
        "neither an EventBridge event (detail-type) nor an operator command (action)".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample(name: &str) -> Value {
        let path = format!(
            "{}/../../events/endpoint-failover/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(&path).expect(&path)).expect(&path)
    }

    fn sample_time(name: &str) -> i64 {
        let time = sample(name)["time"].as_str().unwrap().to_owned();
        time::OffsetDateTime::parse(&time, &time::format_description::well_known::Rfc3339)
            .unwrap()
            .unix_timestamp()
    }

    #[test]
    fn reads_the_sample_alarm_and_schedule_events() {
        assert_eq!(
            parse(sample("alarm-us-east-1")).unwrap(),
            Trigger::Alarm {
                alarm_name: "geoprov-health-us-east-1".into(),
                state: "ALARM".into(),
                event_id: Some("c4c1c1c9-6542-e61b-6ef0-8c4d36933a92".into()),
                region: Some("us-east-1".into()),
                time: sample_time("alarm-us-east-1"),
                changed_at: 1_795_971_880_989,
            }
        );
        assert_eq!(
            parse(sample("ok-us-east-1")).unwrap(),
            Trigger::Alarm {
                alarm_name: "geoprov-health-us-east-1".into(),
                state: "OK".into(),
                event_id: Some("2dde0eb1-528b-d2d5-9ca6-6d590caf2329".into()),
                region: Some("us-east-1".into()),
                time: sample_time("ok-us-east-1"),
                changed_at: 1_795_972_180_120,
            }
        );
        assert_eq!(
            parse(sample("schedule")).unwrap(),
            Trigger::Schedule {
                event_id: Some("53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa".into())
            }
        );
    }

    #[test]
    fn reads_operator_commands() {
        let drain = parse(sample("drain-us-east-1")).unwrap();
        assert_eq!(drain.name(), "DRAIN");
        assert!(!drain.writes_nothing());
        let dry = parse(json!({"action": "reconcile", "dryRun": true})).unwrap();
        assert!(dry.writes_nothing());
        assert!(parse(json!({"action": "status"})).unwrap().writes_nothing());
    }

    #[test]
    fn refuses_what_it_cannot_act_on() {
        for bad in [
            json!({}),
            json!([1, 2]),
            json!({"action": "drain"}),
            json!({"action": "reconcile", "region": "us-east-1"}),
            json!({"action": "explode", "region": "us-east-1"}),
            json!({"action": "drain", "region": "us-east-1", "dryrun": true}),
            json!({"detail-type": "EC2 Instance State-change Notification", "source": "aws.ec2", "detail": {}}),
            json!({"detail-type": ALARM_STATE_CHANGE, "source": "aws.cloudwatch", "detail": {"alarmName": "x"}}),
        ] {
            assert!(parse(bad.clone()).is_err(), "{bad}");
        }
    }
}
