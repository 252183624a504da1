//! One invocation: the event's signal or command is applied to the stored
//! health, the records are planned from it, and the changes are written as
//! UPSERTs by one invocation at a time.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use geoprov_shared::device::RegionName;
use geoprov_shared::telemetry::{self, MetricLine, Unit};
use serde_json::Value;

use crate::config::{Bounds, FailoverConfig};
use crate::event::{self, Action, Trigger};
use crate::health::{self, Thresholds};
use crate::planner::{self, Observed, Plan};
use crate::report::{ErrorCode, Report};
use crate::route53::{Route53, Upsert};
use crate::state::{FailoverStore, RecordChange, RegionUpdate, StoredState};
use crate::SERVICE;

/// How long the change lock is held at most: re-reading, planning and
/// writing the records, with Route 53's retries.
pub const LOCK_LEASE: Duration = Duration::from_secs(60);
const LOCK_POLL: Duration = Duration::from_millis(200);

/// The failover function, with its configuration and adapters.
pub struct Failover<R, S> {
    config: FailoverConfig,
    route53: R,
    store: S,
    bounds: Bounds,
}

impl<R: Route53 + Sync, S: FailoverStore + Sync> Failover<R, S> {
    pub fn new(config: FailoverConfig, route53: R, store: S, bounds: Bounds) -> Self {
        Failover {
            config,
            route53,
            store,
            bounds,
        }
    }

    pub fn config(&self) -> &FailoverConfig {
        &self.config
    }

    /// Handles one event. Never fails: what went wrong is in the report's
    /// errors, and the records are changed only from a consistent view.
    pub async fn handle(&self, payload: Value, request_id: &str) -> Report {
        let started = Instant::now();
        let cold_start = telemetry::take_cold_start();
        let report = match event::parse(payload) {
            Ok(trigger) => self.run(trigger, request_id).await,
            Err(e) => {
                let mut report = Report::new("INVALID_EVENT", false);
                report.error(ErrorCode::InvalidEvent, e.to_string());
                report
            }
        };
        let report_json = serde_json::to_value(&report).unwrap_or(Value::Null);
        tracing::info!(
            request_id,
            cold_start,
            trigger = report.trigger,
            applied = report.applied,
            changes = report.changes.len(),
            errors = report.errors.len(),
            report = %report_json,
            "failover report"
        );
        self.emit_metrics(&report, started.elapsed());
        report
    }

    async fn run(&self, trigger: Trigger, request_id: &str) -> Report {
        let writes_nothing = trigger.writes_nothing();
        let mut report = Report::new(trigger.name(), writes_nothing);
        let updates = self.updates_for(&trigger, &mut report).await;

        let mut state = match self.store.load().await {
            Ok(state) => state,
            Err(e) => {
                report.error(ErrorCode::StateUnavailable, e.to_string());
                return report;
            }
        };
        if report.count(ErrorCode::UnknownAlarm) + report.count(ErrorCode::UnknownRegion) > 0 {
            // An event this deployment cannot place: report, change nothing.
            self.fill_health(&mut report, &state);
            return report;
        }
        for (region, update, event_id) in updates {
            let current = state.health.get(&region).copied().unwrap_or_default();
            if writes_nothing {
                state.health.insert(region, update.apply(current));
                continue;
            }
            match self
                .store
                .update_region(&region, update, event_id.as_deref())
                .await
            {
                Ok(written) => {
                    state.health.insert(region, written);
                }
                Err(e) => {
                    // The signal is not stored: acting on it would break the
                    // hysteresis the stored health promises.
                    report.region_error(
                        ErrorCode::StateUnavailable,
                        region.as_str(),
                        e.to_string(),
                    );
                    self.fill_health(&mut report, &state);
                    return report;
                }
            }
        }

        let Some(plan) = self.plan(&state, &mut report).await else {
            return report;
        };
        if plan.changes.is_empty() || writes_nothing {
            report.set_plan(plan);
            return report;
        }

        // Changes to make: one invocation at a time re-reads, plans and writes.
        if !self.lock(request_id).await {
            report.set_plan(plan);
            report.error(
                ErrorCode::LockTimeout,
                format!(
                    "another invocation held the change lock for over {} s; nothing written",
                    self.bounds.lock_wait.as_secs()
                ),
            );
            return report;
        }
        let applied = self.apply_locked(&mut report).await;
        if let Err(e) = self.store.unlock(request_id).await {
            tracing::warn!(error = %e, "change lock not released; it expires with its lease");
        }
        if let Some(change_ids) = applied {
            self.wait_insync(&change_ids, &mut report).await;
        }
        report
    }

    /// The health updates the trigger asks for, each with the id of the
    /// event it comes from (so a redelivered event is not counted twice).
    async fn updates_for(
        &self,
        trigger: &Trigger,
        report: &mut Report,
    ) -> Vec<(RegionName, RegionUpdate, Option<String>)> {
        let thresholds = Thresholds {
            fail_after: self.config.fail_after,
            recover_after: self.config.recover_after,
        };
        match trigger {
            Trigger::Alarm {
                alarm_name,
                state,
                event_id,
            } => {
                let Some(region) = self.config.region_of_alarm(alarm_name) else {
                    report.error(
                        ErrorCode::UnknownAlarm,
                        format!("alarm {alarm_name:?} is no region's health alarm"),
                    );
                    return Vec::new();
                };
                health::signal_from_alarm_state(state)
                    .map(|signal| {
                        let observe = RegionUpdate::Observe(signal, thresholds);
                        (region.clone(), observe, event_id.clone())
                    })
                    .into_iter()
                    .collect()
            }
            Trigger::Schedule { event_id } => {
                let polls = self
                    .config
                    .regions
                    .iter()
                    .map(|(region, target)| async move {
                        (
                            region,
                            self.route53.observations(&target.health_check_id).await,
                        )
                    });
                let mut updates = Vec::new();
                for (region, result) in futures::future::join_all(polls).await {
                    match result.map(|o| o.signal()) {
                        Ok(Some(signal)) => updates.push((
                            region.clone(),
                            RegionUpdate::Observe(signal, thresholds),
                            event_id.clone(),
                        )),
                        Ok(None) => {}
                        Err(e) => report.region_error(
                            ErrorCode::HealthCheckFailed,
                            region.as_str(),
                            e.to_string(),
                        ),
                    }
                }
                updates
            }
            Trigger::Command(command) => {
                let drained = match command.action {
                    Action::Drain => true,
                    Action::Undrain => false,
                    Action::Reconcile | Action::Status => return Vec::new(),
                };
                let named = command.region.as_deref().unwrap_or_default();
                match RegionName::try_from(named)
                    .ok()
                    .filter(|r| self.config.regions.contains_key(r))
                {
                    Some(region) => vec![(region, RegionUpdate::Drain(drained), None)],
                    None => {
                        report.region_error(
                            ErrorCode::UnknownRegion,
                            named,
                            format!("{named:?} is not one of the configured regions"),
                        );
                        Vec::new()
                    }
                }
            }
        }
    }

    fn fill_health(&self, report: &mut Report, state: &StoredState) {
        report.health = self
            .config
            .regions
            .keys()
            .map(|r| {
                let health = state.health.get(r).copied().unwrap_or_default();
                (r.clone(), health.status())
            })
            .collect();
    }

    /// Reads the records and plans; `None` when Route 53 cannot be read.
    async fn plan(&self, state: &StoredState, report: &mut Report) -> Option<Plan> {
        self.fill_health(report, state);
        let records = match self
            .route53
            .geo_records(&self.config.hosted_zone_id, &self.config.record_name)
            .await
        {
            Ok(records) => records,
            Err(e) => {
                report.error(ErrorCode::Route53Failed, e.to_string());
                return None;
            }
        };
        let values: BTreeMap<String, String> = records
            .into_iter()
            .map(|(id, record)| (id, record.value))
            .collect();
        Some(planner::plan(
            &self.config,
            Observed {
                records: &values,
                health: &state.health,
                last_change: &state.last_change,
                now: geoprov_shared::clock::now_epoch_millis() / 1000,
            },
        ))
    }

    async fn lock(&self, owner: &str) -> bool {
        let deadline = Instant::now() + self.bounds.lock_wait;
        loop {
            match self.store.try_lock(owner, LOCK_LEASE).await {
                Ok(true) => return true,
                Ok(false) => {}
                Err(e) => tracing::warn!(error = %e, "change lock could not be read"),
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
    }

    /// Under the lock: reads everything again, plans and writes. Returns the
    /// change ids when every batch was written.
    async fn apply_locked(&self, report: &mut Report) -> Option<Vec<String>> {
        let state = match self.store.load().await {
            Ok(state) => state,
            Err(e) => {
                report.error(ErrorCode::StateUnavailable, e.to_string());
                return None;
            }
        };
        let plan = self.plan(&state, report).await?;
        report.set_plan(plan);
        if report.changes.is_empty() {
            // Another invocation made these changes while this one waited.
            return None;
        }
        let upserts: Vec<Upsert> = report
            .changes
            .iter()
            .map(|change| {
                let location = &self.config.locations[change.location];
                Upsert {
                    set_identifier: location.set_identifier.clone(),
                    geo_location: location.geo_location.clone(),
                    value: self.config.regions[&change.to].endpoint.clone(),
                }
            })
            .collect();
        let lengths: Vec<usize> = upserts.iter().map(|u| u.value.len()).collect();
        let mut change_ids = Vec::new();
        for batch in planner::batches(&lengths) {
            let written = self
                .route53
                .upsert(
                    &self.config.hosted_zone_id,
                    &self.config.record_name,
                    self.config.ttl,
                    &upserts[batch.clone()],
                )
                .await;
            let change_id = match written {
                Ok(id) => id,
                Err(e) => {
                    report.error(ErrorCode::Route53Failed, e.to_string());
                    break;
                }
            };
            let ledger: Vec<RecordChange> = report.changes[batch]
                .iter()
                .map(|c| RecordChange {
                    set_identifier: c.set_identifier.clone(),
                    target: c.to.clone(),
                })
                .collect();
            let now = geoprov_shared::clock::now_epoch_millis() / 1000;
            if let Err(e) = self.store.record_changes(&ledger, now, &change_id).await {
                report.error(
                    ErrorCode::StateUnavailable,
                    format!("records changed in {change_id} but their change times were not stored: {e}"),
                );
            }
            change_ids.push(change_id);
        }
        report.change_id = change_ids.first().cloned();
        report.change_ids = change_ids.clone();
        report.applied = report.count(ErrorCode::Route53Failed) == 0;
        report.applied.then_some(change_ids)
    }

    /// Polls GetChange, with doubling waits, until every change is INSYNC or
    /// the bound is reached.
    async fn wait_insync(&self, change_ids: &[String], report: &mut Report) {
        let deadline = Instant::now() + self.bounds.insync_timeout;
        let mut wait = self.bounds.insync_poll;
        let mut pending: Vec<&String> = change_ids.iter().collect();
        loop {
            let mut still = Vec::new();
            for id in pending {
                match self.route53.is_insync(id).await {
                    Ok(true) => {}
                    Ok(false) => still.push(id),
                    Err(e) => {
                        tracing::warn!(change_id = %id, error = %e, "GetChange failed; polling on");
                        still.push(id);
                    }
                }
            }
            pending = still;
            if pending.is_empty() {
                report.insync = Some(true);
                return;
            }
            let now = Instant::now();
            if now >= deadline {
                report.insync = Some(false);
                report.error(
                    ErrorCode::NotInsync,
                    format!(
                        "{} not INSYNC after {} s; Route 53 will finish propagating it",
                        pending
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", "),
                        self.bounds.insync_timeout.as_secs()
                    ),
                );
                return;
            }
            tokio::time::sleep(wait.min(deadline - now)).await;
            wait = (wait * 2).min(Duration::from_secs(10));
        }
    }

    fn emit_metrics(&self, report: &Report, elapsed: Duration) {
        let applied = if report.applied {
            report.changes.len()
        } else {
            0
        };
        MetricLine::new(SERVICE)
            .metric("RecordsChanged", applied as f64, Unit::Count)
            .metric(
                "NoHealthyRegion",
                report.count(ErrorCode::NoHealthyRegion) as f64,
                Unit::Count,
            )
            .metric("FailoverErrors", report.errors.len() as f64, Unit::Count)
            .metric(
                "FailoverLatency",
                elapsed.as_secs_f64() * 1000.0,
                Unit::Milliseconds,
            )
            .property("trigger", report.trigger)
            .emit();
        for (region, status) in &report.health {
            MetricLine::new(SERVICE)
                .dimension("Region", region.as_str())
                .metric(
                    "RegionAvailable",
                    f64::from(u8::from(*status == health::Status::Healthy)),
                    Unit::Count,
                )
                .emit();
        }
    }
}
