//! What a test can tell the emulator over its admin HTTP API: the faults of
//! an outage, and the clock that ownership tokens expire by.
//!
//! - `GET /faults`, `PUT /faults` with any of
//!   `{"refuseConnections","hookTimeout","stallPublishes"}` (booleans);
//!   `refuseConnections` is a region's outage: new connections are refused
//!   and, as it begins, every open one is closed
//!   (`SERVER_INITIATED_DISCONNECT`);
//! - `POST /clock` with `{"advanceSeconds": N}`;
//! - `GET /quotas`: each rate quota's rate, units spent and requests
//!   throttled (`quotas`);
//! - `GET /invocations`: each rule-invoked function's asynchronous queue:
//!   events queued and running, attempts that succeeded or failed, events
//!   discarded (`invoke`);
//! - `GET /health`: 200 once the emulator serves.
//!
//! The admin API listens on loopback only and is not part of IoT.

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;

use crate::quotas::Quotas;
use crate::rules::Rules;
use serde_json::json;

/// The faults in force.
#[derive(Debug)]
pub struct Faults {
    refuse_connections: AtomicBool,
    hook_timeout: AtomicBool,
    stall_publishes: AtomicBool,
    /// Counts the outages begun (refuseConnections turned on): each ends
    /// every open connection, as a region's loss does.
    outages: tokio::sync::watch::Sender<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            refuse_connections: AtomicBool::default(),
            hook_timeout: AtomicBool::default(),
            stall_publishes: AtomicBool::default(),
            outages: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Faults {
    /// Changes when an outage begins: a connection's session ends then.
    pub fn outages(&self) -> tokio::sync::watch::Receiver<u64> {
        self.outages.subscribe()
    }

    fn set_refuse_connections(&self, refuse: bool) {
        let was = self.refuse_connections.swap(refuse, Ordering::Relaxed);
        if refuse && !was {
            self.outages.send_modify(|n| *n += 1);
        }
    }

    pub fn refuse_connections(&self) -> bool {
        self.refuse_connections.load(Ordering::Relaxed)
    }
    pub fn hook_timeout(&self) -> bool {
        self.hook_timeout.load(Ordering::Relaxed)
    }
    pub fn stall_publishes(&self) -> bool {
        self.stall_publishes.load(Ordering::Relaxed)
    }

    fn describe(&self) -> serde_json::Value {
        json!({
            "refuseConnections": self.refuse_connections(),
            "hookTimeout": self.hook_timeout(),
            "stallPublishes": self.stall_publishes(),
        })
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FaultChange {
    refuse_connections: Option<bool>,
    hook_timeout: Option<bool>,
    stall_publishes: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ClockChange {
    advance_seconds: i64,
}

/// Wall-clock time plus an offset a test may advance.
#[derive(Debug, Default)]
pub struct Clock {
    offset_secs: AtomicI64,
}

impl Clock {
    pub fn now_millis(&self) -> i64 {
        let real = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        real.saturating_add(
            self.offset_secs
                .load(Ordering::Relaxed)
                .saturating_mul(1000),
        )
    }

    pub fn now_secs(&self) -> i64 {
        self.now_millis() / 1000
    }

    /// Moves the clock by up to ten years either way.
    fn advance(&self, seconds: i64) {
        const TEN_YEARS: i64 = 10 * 366 * 86_400;
        self.offset_secs
            .fetch_add(seconds.clamp(-TEN_YEARS, TEN_YEARS), Ordering::Relaxed);
    }
}

/// Starts the admin API on `listen` in a thread of its own; returns the
/// address it listens on.
pub fn serve_admin(
    listen: SocketAddr,
    faults: Arc<Faults>,
    clock: Arc<Clock>,
    quotas: Arc<Quotas>,
    rules: Rules,
) -> std::io::Result<SocketAddr> {
    let server = tiny_http::Server::http(listen).map_err(std::io::Error::other)?;
    let address = server
        .server_addr()
        .to_ip()
        .ok_or_else(|| std::io::Error::other("the admin API has no IP address"))?;
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            for mut request in server.incoming_requests() {
                let mut body = String::new();
                let _ = request
                    .as_reader()
                    .take(64 * 1024)
                    .read_to_string(&mut body);
                let (status, answer) = route(
                    request.method(),
                    request.url(),
                    &body,
                    &faults,
                    &clock,
                    &quotas,
                    &rules,
                );
                let response = tiny_http::Response::from_string(answer.to_string())
                    .with_status_code(status)
                    .with_header(
                        "Content-Type: application/json"
                            .parse::<tiny_http::Header>()
                            .expect("static header"),
                    );
                let _ = request.respond(response);
            }
        })?;
    Ok(address)
}

fn route(
    method: &tiny_http::Method,
    url: &str,
    body: &str,
    faults: &Faults,
    clock: &Clock,
    quotas: &Quotas,
    rules: &Rules,
) -> (u16, serde_json::Value) {
    use tiny_http::Method;
    match (method, url) {
        (Method::Get, "/health") => (200, json!({"ok": true})),
        (Method::Get, "/faults") => (200, faults.describe()),
        (Method::Get, "/quotas") => (200, quotas.describe()),
        (Method::Get, "/invocations") => (200, rules.invocations()),
        (Method::Put, "/faults") => match serde_json::from_str::<FaultChange>(body) {
            Ok(change) => {
                let set = |flag: &AtomicBool, value: Option<bool>| {
                    if let Some(v) = value {
                        flag.store(v, Ordering::Relaxed);
                    }
                };
                if let Some(refuse) = change.refuse_connections {
                    faults.set_refuse_connections(refuse);
                }
                set(&faults.hook_timeout, change.hook_timeout);
                set(&faults.stall_publishes, change.stall_publishes);
                tracing::info!(faults = %faults.describe(), "faults changed");
                (200, faults.describe())
            }
            Err(e) => (400, json!({"error": e.to_string()})),
        },
        (Method::Post, "/clock") => match serde_json::from_str::<ClockChange>(body) {
            Ok(change) => {
                clock.advance(change.advance_seconds);
                (200, json!({"nowMillis": clock.now_millis()}))
            }
            Err(e) => (400, json!({"error": e.to_string()})),
        },
        _ => (404, json!({"error": "no such admin resource"})),
    }
}
