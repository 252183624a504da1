//! Lambda's asynchronous invocation, as a rule's Lambda action uses it.
//!
//! From the AWS Lambda developer guide, "How Lambda handles errors and
//! retries with asynchronous invocation":
//! - "Lambda manages your function's asynchronous event queue": an event is
//!   queued, and the function takes events from the queue as far as its
//!   concurrency allows ("If the function doesn't have enough concurrency
//!   available to process all events, additional requests are throttled").
//! - "If the function returns an error, by default Lambda attempts to run it
//!   two more times, with a one-minute wait between the first two attempts,
//!   and two minutes between the second and third attempts. Function errors
//!   include errors returned by the function's code and errors returned by
//!   the function's runtime, such as timeouts."
//! - "For throttling errors (429) and system errors (500-series), Lambda
//!   returns the event to the queue and attempts to run the function again
//!   for up to 6 hours by default. The retry interval increases
//!   exponentially from 1 second after the first attempt to a maximum of 5
//!   minutes."
//!
//! Here a function's concurrency is the execution environments that serve
//! it locally (`--async-concurrency`): that many invocations run at once,
//! and the rest wait in the queue, not in a thread each. A connection the
//! function's endpoint refuses is a system error. Duplicate deliveries
//! ("the queue itself is eventually consistent") are not emulated: each
//! event is delivered until it succeeds, fails three times, or ages out.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::{Mutex, mpsc};

/// How asynchronous invocations are retried and how many run at once.
#[derive(Debug, Clone)]
pub struct AsyncPolicy {
    /// Invocations of one function at once.
    pub concurrency: usize,
    /// How long one attempt may take: the longest Timeout of the template's
    /// functions that rules invoke (device activation's 30 s).
    pub timeout: Duration,
    /// The waits before the second and third attempts after a function
    /// error: one minute, then two.
    pub retry_waits: [Duration; 2],
    /// The first wait after a throttling or system error; it doubles up to
    /// `max_requeue_wait`.
    pub first_requeue_wait: Duration,
    pub max_requeue_wait: Duration,
    /// An event older than this is discarded: 6 hours by default.
    pub max_event_age: Duration,
}

impl Default for AsyncPolicy {
    fn default() -> Self {
        AsyncPolicy {
            concurrency: 4,
            timeout: Duration::from_secs(30),
            retry_waits: [Duration::from_secs(60), Duration::from_secs(120)],
            first_requeue_wait: Duration::from_secs(1),
            max_requeue_wait: Duration::from_secs(300),
            max_event_age: Duration::from_secs(6 * 3600),
        }
    }
}

/// What became of one attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Succeeded,
    /// The function's code or runtime failed, or it timed out: retried at
    /// most twice.
    FunctionError(String),
    /// Throttled (429), a 5xx without a function error, or no connection:
    /// back to the queue.
    SystemError(String),
}

/// One event on its way to a function.
#[derive(Debug, Clone)]
struct Event {
    rule: String,
    payload: Value,
    queued_at: Instant,
    /// Function errors so far.
    function_errors: usize,
    /// Throttling or system errors so far.
    system_errors: u32,
}

/// Counts of one function's asynchronous invocations, for the admin API.
#[derive(Debug, Default)]
pub struct Counts {
    pub queued: AtomicU64,
    pub running: AtomicU64,
    pub succeeded: AtomicU64,
    pub function_errors: AtomicU64,
    pub system_errors: AtomicU64,
    pub discarded: AtomicU64,
    /// The most events ever waiting at once.
    pub max_queued: AtomicU64,
}

impl Counts {
    fn describe(&self) -> Value {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        json!({
            "queued": get(&self.queued),
            "running": get(&self.running),
            "succeeded": get(&self.succeeded),
            "functionErrors": get(&self.function_errors),
            "systemErrors": get(&self.system_errors),
            "discarded": get(&self.discarded),
            "maxQueued": get(&self.max_queued),
        })
    }

    fn enqueued(&self) {
        let now = self.queued.fetch_add(1, Ordering::Relaxed) + 1;
        self.max_queued.fetch_max(now, Ordering::Relaxed);
    }
}

/// One function's event queue and the invocations that drain it.
#[derive(Debug, Clone)]
struct Queue {
    tx: mpsc::UnboundedSender<Event>,
    counts: Arc<Counts>,
}

/// The asynchronous event queues of the functions rules invoke.
#[derive(Debug, Clone, Default)]
pub struct AsyncInvoker {
    queues: BTreeMap<String, Queue>,
}

impl AsyncInvoker {
    /// A queue per function (`name` → Invoke URL) and `policy.concurrency`
    /// invocations draining each. Needs a Tokio runtime.
    pub fn start(
        functions: &BTreeMap<String, String>,
        policy: AsyncPolicy,
    ) -> Result<Self, String> {
        if policy.concurrency == 0 {
            return Err("a function's asynchronous concurrency must be at least 1".into());
        }
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| "asynchronous invocation needs a Tokio runtime".to_owned())?;
        let policy = Arc::new(policy);
        let mut queues = BTreeMap::new();
        for (function, url) in functions {
            let (tx, rx) = mpsc::unbounded_channel();
            let rx = Arc::new(Mutex::new(rx));
            let counts = Arc::new(Counts::default());
            let queue = Queue { tx, counts };
            for _ in 0..policy.concurrency {
                runtime.spawn(drain(
                    function.clone(),
                    url.clone(),
                    rx.clone(),
                    queue.clone(),
                    policy.clone(),
                ));
            }
            queues.insert(function.clone(), queue);
        }
        Ok(AsyncInvoker { queues })
    }

    /// Queues `payload` for `function` (a rule's action); false when the
    /// function has no queue.
    pub fn invoke(&self, rule: &str, function: &str, payload: Value) -> bool {
        let Some(queue) = self.queues.get(function) else {
            return false;
        };
        queue.counts.enqueued();
        let event = Event {
            rule: rule.to_owned(),
            payload,
            queued_at: Instant::now(),
            function_errors: 0,
            system_errors: 0,
        };
        queue.tx.send(event).is_ok()
    }

    /// Every function's counts, by name.
    pub fn describe(&self) -> Value {
        Value::Object(
            self.queues
                .iter()
                .map(|(name, q)| (name.clone(), q.counts.describe()))
                .collect(),
        )
    }
}

/// One of a function's concurrent invocations: takes the next event, runs
/// it, and settles what follows from the attempt.
async fn drain(
    function: String,
    url: String,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Event>>>,
    queue: Queue,
    policy: Arc<AsyncPolicy>,
) {
    loop {
        let Some(mut event) = rx.lock().await.recv().await else {
            return;
        };
        let counts = &queue.counts;
        counts.queued.fetch_sub(1, Ordering::Relaxed);
        if event.queued_at.elapsed() > policy.max_event_age {
            counts.discarded.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                rule = event.rule,
                function,
                "rule action: the event aged out, discarded"
            );
            continue;
        }
        counts.running.fetch_add(1, Ordering::Relaxed);
        let (post_url, payload, timeout) = (url.clone(), event.payload.clone(), policy.timeout);
        let attempt = tokio::task::spawn_blocking(move || post(&post_url, &payload, timeout))
            .await
            .unwrap_or_else(|e| Attempt::SystemError(e.to_string()));
        counts.running.fetch_sub(1, Ordering::Relaxed);
        let wait = match &attempt {
            Attempt::Succeeded => {
                counts.succeeded.fetch_add(1, Ordering::Relaxed);
                tracing::info!(rule = event.rule, function, "rule action invoked");
                None
            }
            Attempt::FunctionError(why) => {
                counts.function_errors.fetch_add(1, Ordering::Relaxed);
                let wait = policy.retry_waits.get(event.function_errors).copied();
                event.function_errors += 1;
                tracing::warn!(
                    rule = event.rule,
                    function,
                    why,
                    retried = wait.is_some(),
                    "rule action: the function failed"
                );
                if wait.is_none() {
                    counts.discarded.fetch_add(1, Ordering::Relaxed);
                }
                wait
            }
            Attempt::SystemError(why) => {
                counts.system_errors.fetch_add(1, Ordering::Relaxed);
                let wait = requeue_wait(&policy, event.system_errors);
                event.system_errors += 1;
                tracing::warn!(
                    rule = event.rule,
                    function,
                    why,
                    "rule action: not run, back to the queue"
                );
                Some(wait)
            }
        };
        if let Some(wait) = wait {
            let queue = queue.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                queue.counts.enqueued();
                let _ = queue.tx.send(event);
            });
        }
    }
}

/// The wait after the `n`th throttling or system error (from 0): 1 s
/// doubling, at most 5 minutes.
pub fn requeue_wait(policy: &AsyncPolicy, n: u32) -> Duration {
    policy
        .first_requeue_wait
        .saturating_mul(2u32.saturating_pow(n.min(20)))
        .min(policy.max_requeue_wait)
}

/// One attempt: the event POSTed to the function's Invoke API.
fn post(url: &str, payload: &Value, timeout: Duration) -> Attempt {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .build()
        .into();
    match agent.post(url).send_json(payload) {
        Ok(r) if r.headers().contains_key("x-amz-function-error") => {
            Attempt::FunctionError(format!("HTTP {}, the function failed", r.status()))
        }
        Ok(r) if r.status().is_success() => Attempt::Succeeded,
        Ok(mut r) if r.status().is_server_error() => {
            // cargo-lambda's Invoke answers a function's error with a 500
            // and Lambda's error payload, without X-Amz-Function-Error.
            let status = r.status();
            let body: Option<Value> = r.body_mut().read_json().ok();
            match body.as_ref().and_then(|b| b.get("errorType")) {
                Some(kind) => Attempt::FunctionError(format!("HTTP {status}, {kind}")),
                None => Attempt::SystemError(format!("HTTP {status}")),
            }
        }
        Ok(r) if r.status().as_u16() == 429 => Attempt::SystemError("HTTP 429".into()),
        Ok(r) => Attempt::FunctionError(format!("HTTP {}", r.status())),
        Err(ureq::Error::Timeout(_)) => {
            Attempt::FunctionError(format!("no answer within {} s", timeout.as_secs()))
        }
        Err(e) => Attempt::SystemError(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttled_events_come_back_after_1_s_doubling_to_5_minutes() {
        // "The retry interval increases exponentially from 1 second after
        // the first attempt to a maximum of 5 minutes."
        let policy = AsyncPolicy::default();
        let waits: Vec<u64> = (0..12)
            .map(|n| requeue_wait(&policy, n).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(requeue_wait(&policy, u32::MAX).as_secs(), 300);
    }

    #[test]
    fn a_function_error_is_retried_after_one_then_two_minutes() {
        // "a one-minute wait between the first two attempts, and two
        // minutes between the second and third attempts"
        let policy = AsyncPolicy::default();
        assert_eq!(
            policy.retry_waits,
            [Duration::from_secs(60), Duration::from_secs(120)]
        );
        assert_eq!(policy.max_event_age, Duration::from_secs(6 * 3600));
    }

    #[test]
    fn without_a_runtime_or_concurrency_no_queue_starts() {
        let functions = BTreeMap::from([("F".to_owned(), "http://127.0.0.1:1".to_owned())]);
        assert!(AsyncInvoker::start(&functions, AsyncPolicy::default()).is_err());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let none = AsyncPolicy {
            concurrency: 0,
            ..AsyncPolicy::default()
        };
        assert!(AsyncInvoker::start(&functions, none).is_err());
    }
}

#[cfg(test)]
mod queue_tests {
    //! The queue against a function served on 127.0.0.1 (tiny_http) that
    //! answers by the event's `mode`.
    use std::collections::HashMap;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    struct Function {
        url: String,
        attempts: Arc<std::sync::Mutex<HashMap<String, usize>>>,
        max_running: Arc<AtomicUsize>,
    }

    fn serve() -> Function {
        let server = Arc::new(tiny_http::Server::http("127.0.0.1:0").unwrap());
        let url = format!("http://{}/invoke", server.server_addr().to_ip().unwrap());
        let attempts = Arc::new(std::sync::Mutex::new(HashMap::<String, usize>::new()));
        let (running, max_running) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (a, r, m) = (attempts.clone(), running.clone(), max_running.clone());
        std::thread::spawn(move || {
            for mut request in server.incoming_requests() {
                let (a, r, m) = (a.clone(), r.clone(), m.clone());
                std::thread::spawn(move || {
                    let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(now, Ordering::SeqCst);
                    let event: Value = serde_json::from_reader(request.as_reader()).unwrap();
                    let id = event["id"].as_str().unwrap().to_owned();
                    let attempt = {
                        let mut attempts = a.lock().unwrap();
                        let n = attempts.entry(id).or_default();
                        *n += 1;
                        *n
                    };
                    std::thread::sleep(Duration::from_millis(40));
                    let ok = tiny_http::Response::from_string("{}");
                    let failed = tiny_http::Response::from_string("{\"errorMessage\":\"boom\"}")
                        .with_header(
                            "X-Amz-Function-Error: Unhandled"
                                .parse::<tiny_http::Header>()
                                .unwrap(),
                        );
                    let payload = tiny_http::Response::from_string(
                        "{\"errorType\":\"IotUnavailable\",\"errorMessage\":\"boom\"}",
                    )
                    .with_status_code(500);
                    let response = match (event["mode"].as_str().unwrap(), attempt) {
                        ("error-once", 1) | ("error", _) => failed,
                        ("error-500-once", 1) => payload,
                        ("system-once", 1) => ok.with_status_code(503),
                        ("throttle-once", 1) => ok.with_status_code(429),
                        _ => ok,
                    };
                    r.fetch_sub(1, Ordering::SeqCst);
                    let _ = request.respond(response);
                });
            }
        });
        Function {
            url,
            attempts,
            max_running,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn events_queue_behind_the_concurrency_and_errors_are_retried_as_lambda_retries() {
        let function = serve();
        let policy = AsyncPolicy {
            concurrency: 2,
            timeout: Duration::from_secs(5),
            retry_waits: [Duration::from_millis(100), Duration::from_millis(200)],
            first_requeue_wait: Duration::from_millis(50),
            max_requeue_wait: Duration::from_millis(200),
            max_event_age: Duration::from_secs(60),
        };
        let functions = BTreeMap::from([("F".to_owned(), function.url.clone())]);
        let invoker = AsyncInvoker::start(&functions, policy).unwrap();
        for i in 0..10 {
            assert!(invoker.invoke("R", "F", json!({"id": format!("ok-{i}"), "mode": "ok"})));
        }
        for mode in [
            "error-once",
            "throttle-once",
            "error",
            "error-500-once",
            "system-once",
        ] {
            assert!(invoker.invoke("R", "F", json!({"id": mode, "mode": mode})));
        }
        assert!(!invoker.invoke("R", "G", json!({})), "G has no queue");

        let settled = |d: &Value| {
            d["F"]["queued"] == 0
                && d["F"]["running"] == 0
                && d["F"]["succeeded"].as_u64().unwrap() + d["F"]["discarded"].as_u64().unwrap()
                    == 15
        };
        let started = Instant::now();
        while !settled(&invoker.describe()) && started.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let counts = invoker.describe()["F"].clone();
        assert_eq!(counts["succeeded"], 14, "{counts}");
        // error-once and error-500-once (a runtime emulator's 500 with
        // Lambda's error payload) failed once; error failed three times,
        // then was discarded.
        assert_eq!(counts["functionErrors"], 5, "{counts}");
        assert_eq!(counts["discarded"], 1, "{counts}");
        // A 429 and a 503 without an error payload: back to the queue.
        assert_eq!(counts["systemErrors"], 2, "{counts}");
        assert!(counts["maxQueued"].as_u64().unwrap() >= 11, "{counts}");
        let attempts = function.attempts.lock().unwrap().clone();
        assert_eq!(attempts["error"], 3, "two retries, then no more");
        assert_eq!(attempts["error-once"], 2);
        assert_eq!(attempts["throttle-once"], 2);
        assert_eq!(attempts["error-500-once"], 2);
        assert_eq!(attempts["system-once"], 2);
        assert!((0..10).all(|i| attempts[&format!("ok-{i}")] == 1));
        assert_eq!(
            function.max_running.load(Ordering::SeqCst),
            2,
            "the concurrency bounds the function"
        );
    }
}
