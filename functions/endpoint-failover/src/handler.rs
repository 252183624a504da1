//! One invocation: the event's signal or command is applied to the stored
//! health, the record tree is planned from it, and the changes are written by
//! the one invocation that holds the fenced lease.
//!
//! Nothing here is needed to move devices off a failed region: the health
//! checks on the records do that. This is the control plane: it builds and
//! repairs the tree, keeps recovered regions out until they are stable, and
//! applies drains. Every Route 53 call is bounded, so with Route 53's API down
//! an invocation reports the error and ends.

use std::collections::BTreeSet;
use std::future::Future;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use geoprov_shared::device::RegionName;
use geoprov_shared::telemetry::{self, MetricLine, Unit};
use route53_answer::{ClientLocation, RecordSet, Zone};
use serde_json::Value;

use crate::SERVICE;
use crate::event::{self, Action, Command, Trigger};
use geoprov_failover::alarms::RegionAlarms;
use geoprov_failover::config::{Bounds, FailoverConfig};
use geoprov_failover::health::{self, RegionHealth, Signal};
use geoprov_failover::report::{
    ChainStep, ChangeSummary, Deferred, ErrorCode, LocationState, Report,
};
use geoprov_failover::route53::{Route53, Route53Error};
use geoprov_failover::state::{
    FailoverStore, Lease, LedgerEntry, LedgerError, RegionUpdate, StoredState, UpdateOutcome,
};
use geoprov_failover::tree::{self, TreePlan};

const LOCK_POLL: Duration = Duration::from_millis(200);

/// The failover function, with its configuration and adapters.
pub struct Failover<R, S, A> {
    config: FailoverConfig,
    route53: R,
    store: S,
    alarms: A,
    bounds: Bounds,
}

fn now_seconds() -> i64 {
    geoprov_shared::clock::now_epoch_millis() / 1000
}

impl<R, S, A> Failover<R, S, A>
where
    R: Route53 + Sync,
    S: FailoverStore + Sync,
    A: RegionAlarms + Sync,
{
    pub fn new(config: FailoverConfig, route53: R, store: S, alarms: A, bounds: Bounds) -> Self {
        Failover {
            config,
            route53,
            store,
            alarms,
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

    /// A Route 53 call within `call_timeout`, retries included.
    async fn bounded<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, Route53Error>>,
    ) -> Result<T, Route53Error> {
        match tokio::time::timeout(self.bounds.call_timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(Route53Error {
                operation,
                code: None,
                message: format!(
                    "no answer within {} ms",
                    self.bounds.call_timeout.as_millis()
                ),
                attempts: 0,
            }),
        }
    }

    async fn run(&self, trigger: Trigger, request_id: &str) -> Report {
        let writes_nothing = trigger.writes_nothing();
        let mut report = Report::new(trigger.name(), writes_nothing);
        let now = now_seconds();
        let updates = self.updates_for(&trigger, now, &mut report).await;

        let mut state = match self.store.load().await {
            Ok(state) => state,
            Err(e) => {
                report.error(ErrorCode::StateUnavailable, e.to_string());
                return report;
            }
        };
        let dropped = [
            ErrorCode::UnknownAlarm,
            ErrorCode::UnknownRegion,
            ErrorCode::StaleEvent,
        ];
        if dropped.iter().any(|code| report.count(*code) > 0) {
            // An event this deployment cannot place, or too old: report, change nothing.
            self.fill_health(&mut report, &state, now);
            return report;
        }
        if self
            .store_updates(&trigger, updates, &mut state, now, &mut report)
            .await
            .is_break()
        {
            return report;
        }

        let Some((current, plan)) = self.plan(&state, now, &mut report).await else {
            return report;
        };
        if plan.changes.is_empty() || writes_nothing {
            self.describe(&mut report, &state, &current, &plan, now);
            return report;
        }

        // Changes to make: one invocation at a time re-reads, plans and writes.
        let Some(lease) = self.lock(request_id).await else {
            self.describe(&mut report, &state, &current, &plan, now);
            report.error(
                ErrorCode::LockTimeout,
                format!(
                    "another invocation held the change lease for over {} s; nothing written",
                    self.bounds.lock_wait.as_secs()
                ),
            );
            return report;
        };
        let applied = self.apply_locked(&lease, &mut report).await;
        if let Err(e) = self.store.unlock(&lease).await {
            tracing::warn!(error = %e, "change lease not released; it expires by itself");
        }
        if let Some(change_ids) = applied {
            self.wait_insync(&change_ids, &mut report).await;
        }
        report
    }

    /// Stores each health update (in memory only if writing nothing); `Break` ends the invocation.
    async fn store_updates(
        &self,
        trigger: &Trigger,
        updates: Vec<(RegionName, RegionUpdate, Option<String>)>,
        state: &mut StoredState,
        now: i64,
        report: &mut Report,
    ) -> ControlFlow<()> {
        let writes_nothing = trigger.writes_nothing();
        for (region, update, event_id) in updates {
            let current = state.health.get(&region).copied().unwrap_or_default();
            let outcome = match writes_nothing {
                true if update.is_stale_for(&current) => UpdateOutcome::Stale(current),
                true => UpdateOutcome::Applied(update.apply(current)),
                false => match self
                    .store
                    .update_region(&region, update, event_id.as_deref())
                    .await
                {
                    Ok(outcome) => outcome,
                    Err(e) => {
                        // The signal is not stored: acting on it would break the
                        // hysteresis the stored health promises.
                        report.region_error(
                            ErrorCode::StateUnavailable,
                            region.as_str(),
                            e.to_string(),
                        );
                        self.fill_health(report, state, now);
                        return ControlFlow::Break(());
                    }
                },
            };
            if let UpdateOutcome::Stale(health) = outcome {
                report.region_error(
                    ErrorCode::StaleEvent,
                    region.as_str(),
                    format!(
                        "a newer signal (of {} ms) was applied already; this one is dropped",
                        health.last_signal_at.unwrap_or_default()
                    ),
                );
                // A stale alarm event changes nothing; a schedule goes on
                // with the other regions.
                if !matches!(trigger, Trigger::Schedule { .. }) {
                    self.fill_health(report, state, now);
                    return ControlFlow::Break(());
                }
                continue;
            }
            state.health.insert(region, outcome.health());
        }
        ControlFlow::Continue(())
    }

    /// The health updates the trigger asks for, each with the id of the
    /// event it comes from (so a redelivered event is not counted twice).
    async fn updates_for(
        &self,
        trigger: &Trigger,
        now: i64,
        report: &mut Report,
    ) -> Vec<(RegionName, RegionUpdate, Option<String>)> {
        let now_ms = now.saturating_mul(1000);
        match trigger {
            Trigger::Alarm {
                alarm_name,
                state,
                event_id,
                region: source,
                time,
                changed_at,
            } => {
                let Some(region) =
                    self.alarm_region(alarm_name, source.as_deref(), *time, now, report)
                else {
                    return Vec::new();
                };
                let signal = health::signal_from_alarm_state(state);
                // An event from the future (clock skew) counts as of now.
                vec![(
                    region.clone(),
                    self.observe(signal, (*changed_at).min(now_ms), now),
                    event_id.clone(),
                )]
            }
            Trigger::Schedule { event_id } => self.schedule_updates(event_id, now, report).await,
            Trigger::Command(command) => self.command_updates(command, report),
        }
    }

    /// The update observing `signal` at `at` (epoch ms), applied at `now` (epoch s).
    fn observe(&self, signal: Signal, at: i64, now: i64) -> RegionUpdate {
        RegionUpdate::Observe {
            signal,
            thresholds: self.config.thresholds(),
            at,
            now,
        }
    }

    /// The region of an alarm event's alarm, unless it is unknown, from elsewhere, or too old.
    fn alarm_region(
        &self,
        alarm_name: &str,
        source: Option<&str>,
        time: i64,
        now: i64,
        report: &mut Report,
    ) -> Option<&RegionName> {
        let Some(region) = self.config.region_of_alarm(alarm_name) else {
            report.error(
                ErrorCode::UnknownAlarm,
                format!("alarm {alarm_name:?} is no region's health alarm"),
            );
            return None;
        };
        if let Some(source) = source.filter(|s| *s != region.as_str()) {
            report.region_error(
                ErrorCode::UnknownAlarm,
                source,
                format!("alarm {alarm_name:?} is {region}'s, but the event comes from {source}"),
            );
            return None;
        }
        let age = now - time;
        if age > self.config.max_event_age_seconds as i64 {
            report.region_error(
                ErrorCode::StaleEvent,
                region.as_str(),
                format!(
                    "the event is {age} s old, more than maxEventAgeSeconds ({}); dropped",
                    self.config.max_event_age_seconds
                ),
            );
            return None;
        }
        Some(region)
    }

    /// Every region's signal read from its health alarm, UNKNOWN when it cannot be read.
    async fn schedule_updates(
        &self,
        event_id: &Option<String>,
        now: i64,
        report: &mut Report,
    ) -> Vec<(RegionName, RegionUpdate, Option<String>)> {
        let now_ms = now.saturating_mul(1000);
        let reads = self
            .config
            .regions
            .iter()
            .map(|(region, target)| async move {
                (region, self.alarms.read(region, &target.alarm_name).await)
            });
        let mut updates = Vec::new();
        for (region, result) in futures::future::join_all(reads).await {
            let signal = match result {
                Ok(Some(reading)) => health::signal_from_alarm_state(&reading.state),
                Ok(None) => {
                    let alarm = &self.config.regions[region].alarm_name;
                    report.region_error(
                        ErrorCode::HealthReadFailed,
                        region.as_str(),
                        format!("alarm {alarm} does not exist in {region}; its signal is UNKNOWN"),
                    );
                    Signal::Unknown
                }
                Err(e) => {
                    report.region_error(
                        ErrorCode::HealthReadFailed,
                        region.as_str(),
                        format!("{e}; its signal is UNKNOWN"),
                    );
                    Signal::Unknown
                }
            };
            updates.push((
                region.clone(),
                self.observe(signal, now_ms, now),
                event_id.clone(),
            ));
        }
        updates
    }

    /// The drain or undrain a command asks for, if any, of a configured region.
    fn command_updates(
        &self,
        command: &Command,
        report: &mut Report,
    ) -> Vec<(RegionName, RegionUpdate, Option<String>)> {
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

    fn health_of(state: &StoredState, region: &RegionName) -> RegionHealth {
        state.health.get(region).copied().unwrap_or_default()
    }

    fn fill_health(&self, report: &mut Report, state: &StoredState, now: i64) {
        let hold = self.config.min_change_interval_seconds as i64;
        report.health = self
            .config
            .regions
            .keys()
            .map(|r| (r.clone(), Self::health_of(state, r).status()))
            .collect();
        report.deferred = self
            .config
            .regions
            .keys()
            .filter_map(|r| {
                let until = Self::health_of(state, r).held_until(now, hold)?;
                Some(Deferred {
                    region: r.clone(),
                    not_before: until,
                })
            })
            .collect();
    }

    /// Reads the records and plans the tree; `None` when Route 53 cannot be read.
    async fn plan(
        &self,
        state: &StoredState,
        now: i64,
        report: &mut Report,
    ) -> Option<(Vec<RecordSet>, TreePlan)> {
        self.fill_health(report, state, now);
        let listed = self
            .bounded(
                "ListResourceRecordSets",
                self.route53
                    .records(&self.config.hosted_zone_id, &self.config.record_name),
            )
            .await;
        let current = match listed {
            Ok(records) => records,
            Err(e) => {
                report.error(ErrorCode::Route53Failed, e.to_string());
                return None;
            }
        };
        let hold = self.config.min_change_interval_seconds as i64;
        let admitted = |r: &RegionName| Self::health_of(state, r).admitted(now, hold);
        let plan = tree::plan(&self.config, &current, &admitted);
        Some((current, plan))
    }

    /// Puts the plan in the report: its changes, conflicts, stranded
    /// locations, and each location's chain and answer once the changes are
    /// made (or as the zone is, when they are not).
    fn describe(
        &self,
        report: &mut Report,
        state: &StoredState,
        current: &[RecordSet],
        plan: &TreePlan,
        now: i64,
    ) {
        let hold = self.config.min_change_interval_seconds as i64;
        report
            .errors
            .retain(|e| !matches!(e.code, ErrorCode::NoHealthyRegion | ErrorCode::Conflict));
        report.changes = plan
            .changes
            .iter()
            .zip(&plan.change_locations)
            .map(|(change, location)| {
                let id = location.map(|i| self.config.locations[i].set_identifier.clone());
                ChangeSummary::of(change, id)
            })
            .collect();
        for conflict in &plan.conflicts {
            let error = report.error(ErrorCode::Conflict, conflict.message.clone());
            error.set_identifier = Some(conflict.set_identifier.clone());
            error.name = Some(conflict.name.clone());
        }
        let unhealthy: BTreeSet<&str> = self
            .config
            .regions
            .iter()
            .filter(|(r, _)| Self::health_of(state, r).unhealthy)
            .map(|(_, target)| target.health_check_id.as_str())
            .collect();
        let zone = Zone::new(tree::apply(current, &plan.changes));
        let healthy = |id: &str| !unhealthy.contains(id);
        report.locations = Vec::with_capacity(self.config.locations.len());
        for (location, (chain, stranded)) in self.config.locations.iter().zip(&plan.chains) {
            if *stranded {
                report.error(
                    ErrorCode::NoHealthyRegion,
                    "every region of its preference is held out; the chain keeps them all and the health checks decide",
                )
                .set_identifier = Some(location.set_identifier.clone());
            }
            let answer = zone
                .resolve(
                    &self.config.record_name,
                    &ClientLocation::within(&location.geo_location),
                    &healthy,
                )
                .answer
                .and_then(|value| self.config.region_of_endpoint(&value).cloned());
            let steps = location
                .preference
                .iter()
                .map(|region| {
                    let health = Self::health_of(state, region);
                    ChainStep {
                        region: region.clone(),
                        status: health.status(),
                        in_chain: chain.contains(region),
                        held_until: health.held_until(now, hold),
                    }
                })
                .collect();
            report.locations.push(LocationState {
                set_identifier: location.set_identifier.clone(),
                steps,
                answer,
            });
        }
    }

    async fn lock(&self, owner: &str) -> Option<Lease> {
        let deadline = Instant::now() + self.bounds.lock_wait;
        loop {
            match self.store.try_lock(owner, self.bounds.lease).await {
                Ok(Some(lease)) => return Some(lease),
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "change lease could not be taken"),
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(LOCK_POLL).await;
        }
    }

    /// Whether the lease still holds, with time left for one more bounded
    /// call and the margin: no write of ours may land after the lease lapsed.
    /// The time left is taken after the lease is read, so the read's own time
    /// is not counted twice.
    async fn lease_ok(&self, lease: &Lease, report: &mut Report) -> bool {
        match self.store.holds(lease).await {
            Ok(true) => {}
            Ok(false) => {
                report.error(
                    ErrorCode::LeaseLost,
                    format!(
                        "the change lease (fence {}) passed to another invocation; stopped",
                        lease.fence
                    ),
                );
                return false;
            }
            Err(e) => {
                report.error(
                    ErrorCode::StateUnavailable,
                    format!("the change lease could not be checked: {e}"),
                );
                return false;
            }
        }
        let left = lease.expires_at - geoprov_shared::clock::now_epoch_millis();
        let needed = (self.bounds.call_timeout + self.bounds.lease_margin).as_millis() as i64;
        if left < needed {
            report.error(
                ErrorCode::LeaseLost,
                format!("{left} ms of the change lease left, less than one Route 53 call and the margin ({needed} ms); stopped"),
            );
            return false;
        }
        true
    }

    /// Under the lease: reads everything again, plans and writes, checking
    /// the fence before each request. Returns the change ids when every
    /// batch was written.
    async fn apply_locked(&self, lease: &Lease, report: &mut Report) -> Option<Vec<String>> {
        let now = now_seconds();
        let state = match self.store.load().await {
            Ok(state) => state,
            Err(e) => {
                report.error(ErrorCode::StateUnavailable, e.to_string());
                return None;
            }
        };
        let (current, plan) = self.plan(&state, now, report).await?;
        self.describe(report, &state, &current, &plan, now);
        if plan.changes.is_empty() {
            // Another invocation made these changes while this one waited.
            return None;
        }
        let mut change_ids = Vec::new();
        let mut written = 0;
        for batch in tree::batches(&plan.changes) {
            if !self.lease_ok(lease, report).await {
                break;
            }
            let sent = self
                .bounded(
                    "ChangeResourceRecordSets",
                    self.route53
                        .change(&self.config.hosted_zone_id, &plan.changes[batch.clone()]),
                )
                .await;
            match sent {
                Ok(id) => change_ids.push(id),
                Err(e) => {
                    report.error(ErrorCode::Route53Failed, e.to_string());
                    break;
                }
            }
            written = batch.end;
        }
        // The ledger names every location all of whose changes were written.
        let unwritten: BTreeSet<usize> = plan.change_locations[written..]
            .iter()
            .flatten()
            .copied()
            .collect();
        let entries: Vec<LedgerEntry> = plan.change_locations[..written]
            .iter()
            .flatten()
            .copied()
            .collect::<BTreeSet<usize>>()
            .difference(&unwritten)
            .map(|&i| LedgerEntry {
                set_identifier: self.config.locations[i].set_identifier.clone(),
                chain: plan.chains[i].0.clone(),
            })
            .collect();
        if let Some(first) = change_ids.first() {
            match self.store.record_changes(lease, &entries, now, first).await {
                Ok(()) => {}
                Err(LedgerError::LeaseLost(fence)) => {
                    report.error(
                        ErrorCode::LeaseLost,
                        format!("records changed in {first}, but the lease (fence {fence}) lapsed before the ledger write"),
                    );
                }
                Err(LedgerError::Store(e)) => {
                    report.error(
                        ErrorCode::StateUnavailable,
                        format!("records changed in {first} but the ledger was not written: {e}"),
                    );
                }
            }
        }
        report.change_id = change_ids.first().cloned();
        report.change_ids = change_ids.clone();
        report.applied = written == plan.changes.len();
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
                match self.bounded("GetChange", self.route53.is_insync(id)).await {
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
            // A region never observed is UNKNOWN, never counted as available.
            let unknown = *status == health::Status::Unknown;
            let line = MetricLine::new(SERVICE)
                .dimension("Region", region.as_str())
                .metric("RegionUnknown", f64::from(u8::from(unknown)), Unit::Count);
            match unknown {
                true => line,
                false => line.metric(
                    "RegionAvailable",
                    f64::from(u8::from(*status == health::Status::Healthy)),
                    Unit::Count,
                ),
            }
            .emit();
        }
    }
}
