//! The MQTT 3.1.1 broker of one emulated region, on rumqttc's MQTT codec.
//!
//! What it does, after the IoT developer guide:
//! - "Authentication" / "X.509 client certificates": a client certificate
//!   is accepted when it is registered and ACTIVE in this region (and within
//!   its validity period);
//! - "Just-in-time provisioning": an unregistered certificate signed by a
//!   registered, ACTIVE CA with auto-registration on is registered
//!   PENDING_ACTIVATION, `$aws/events/certificates/registered/<caId>` is
//!   published, the connection is dropped and the CA's template runs; a
//!   PENDING_ACTIVATION certificate that connects again gets the event
//!   again and is dropped;
//! - "MQTT" ("AWS IoT differences from MQTT specifications"): a CONNECT the
//!   policy refuses is closed without a CONNACK (IoT does not send return
//!   code 5); a SUBSCRIBE or PUBLISH the policy refuses closes the
//!   connection (the behaviour AWS states for MQTT 3.1.1, the strict one);
//!   QoS 2 is not supported; a second connection with the same client id
//!   takes over and the first is closed; messages are at most 128 KB;
//! - "Authorization" / policies: every CONNECT, PUBLISH, SUBSCRIBE and each
//!   delivery (`iot:Receive`) is evaluated against the certificate's
//!   policies (`policy`);
//! - "Lifecycle events": `$aws/events/presence/connected|disconnected/
//!   <clientId>` and `connect_failed` (none for client ids with `#` or `+`);
//! - IoT's rate quotas (`quotas`): a CONNECT over the account's rate is
//!   closed without a CONNACK, and so is a certificate over the
//!   auto-registration rate, unregistered;
//! - "Device provisioning MQTT API": requests on the provisioning topics go
//!   to `provisioning`, and answers only to the connection that asked.
//!
//! Sessions are not persisted and retained messages are not kept: neither
//! is part of provisioning.

mod admit;
mod connection;
mod packet;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::Codec;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Framed;

use crate::faults::{Clock, Faults};
use crate::policy::Action;
use crate::provisioning::Provisioning;
use crate::quotas::Quotas;
use crate::registry::{Certificate, Registry};
use crate::rules::Rules;
use crate::topics::matches;

use admit::SessionAuth;

/// Messages waiting for a connection that does not read; past this, new
/// deliveries to it are dropped.
const OUTBOX: usize = 1024;

/// One connection's MQTT stream: the codec over the TLS session.
type Transport = Framed<tokio_rustls::server::TlsStream<TcpStream>, Codec>;

/// What the session loop is told from outside.
enum Outgoing {
    Deliver {
        topic: String,
        payload: Bytes,
        qos: QoS,
    },
    Close(&'static str),
}

struct Subscription {
    session: u64,
    filter: String,
    qos: QoS,
    auth: Arc<SessionAuth>,
    tx: mpsc::Sender<Outgoing>,
}

/// One admitted connection, as its packets see it: its entry in the
/// session table, what it may do, and who it is.
struct Session {
    id: u64,
    tx: mpsc::Sender<Outgoing>,
    auth: Arc<SessionAuth>,
    client_id: String,
    certificate_id: String,
    certificate: Certificate,
}

/// One region's MQTT endpoint.
pub struct Broker {
    arn_prefix: String,
    registry: Registry,
    provisioning: Provisioning,
    rules: Rules,
    faults: Arc<Faults>,
    quotas: Arc<Quotas>,
    clock: Arc<Clock>,
    tls: TlsAcceptor,
    subscriptions: Mutex<Vec<Subscription>>,
    sessions: Mutex<HashMap<String, (u64, mpsc::Sender<Outgoing>)>>,
    next_session: AtomicU64,
}

impl Broker {
    pub fn new(
        registry: Registry,
        provisioning: Provisioning,
        rules: Rules,
        faults: Arc<Faults>,
        quotas: Arc<Quotas>,
        clock: Arc<Clock>,
        tls: Arc<rustls::ServerConfig>,
    ) -> Self {
        Broker {
            arn_prefix: format!(
                "arn:aws:iot:{}:{}:",
                provisioning.region, provisioning.account_id
            ),
            registry,
            provisioning,
            rules,
            faults,
            quotas,
            clock,
            tls: TlsAcceptor::from(tls),
            subscriptions: Mutex::new(Vec::new()),
            sessions: Mutex::new(HashMap::new()),
            next_session: AtomicU64::new(1),
        }
    }

    /// Accepts connections until the process ends.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "accept");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let broker = self.clone();
            tokio::spawn(async move { broker.connection(tcp, peer).await });
        }
    }

    /// Enters an admitted connection in the session table; a connection
    /// already there with the same client id is told to close.
    fn open_session(
        &self,
        client_id: String,
        certificate_id: String,
        certificate: Certificate,
        auth: Arc<SessionAuth>,
    ) -> (Session, mpsc::Receiver<Outgoing>) {
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(OUTBOX);
        let previous = self
            .sessions
            .lock()
            .expect("sessions lock")
            .insert(client_id.clone(), (session, tx.clone()));
        if let Some((_, old)) = previous {
            // A full outbox means the old connection does not read: its
            // keep-alive ends it.
            let _ = old.try_send(Outgoing::Close("DUPLICATE_CLIENTID"));
        }
        let session = Session {
            id: session,
            tx,
            auth,
            client_id,
            certificate_id,
            certificate,
        };
        (session, rx)
    }

    /// Delivers a message to every matching subscription whose connection
    /// may receive it (once per connection), or only to `only` when given.
    fn route(&self, topic: &str, payload: Bytes, qos: QoS, only: Option<u64>) {
        // An answer to one connection is no published message: no rule sees it.
        if only.is_none() {
            self.rules.dispatch(topic, &payload);
        }
        let subscriptions = self.subscriptions.lock().expect("subscriptions lock");
        let mut chosen: BTreeMap<u64, (QoS, &Subscription)> = BTreeMap::new();
        for s in subscriptions.iter() {
            if only.is_some_and(|o| o != s.session) || !matches(topic, &s.filter) {
                continue;
            }
            let granted = if s.qos == QoS::AtLeastOnce && qos == QoS::AtLeastOnce {
                QoS::AtLeastOnce
            } else {
                QoS::AtMostOnce
            };
            let entry = chosen.entry(s.session).or_insert((granted, s));
            if granted == QoS::AtLeastOnce {
                entry.0 = QoS::AtLeastOnce;
            }
        }
        for (qos, s) in chosen.into_values() {
            if self.allowed(&s.auth, Action::Receive, topic) {
                let delivery = Outgoing::Deliver {
                    topic: topic.to_owned(),
                    payload: payload.clone(),
                    qos,
                };
                if s.tx.try_send(delivery).is_err() {
                    tracing::info!(topic, "a connection that does not read: message dropped");
                }
            }
        }
    }

    fn end_session(&self, session: u64, client_id: &str) {
        self.subscriptions
            .lock()
            .expect("subscriptions lock")
            .retain(|s| s.session != session);
        let mut sessions = self.sessions.lock().expect("sessions lock");
        if sessions.get(client_id).is_some_and(|(s, _)| *s == session) {
            sessions.remove(client_id);
        }
    }
}
