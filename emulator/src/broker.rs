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
//! - "Device provisioning MQTT API": requests on the provisioning topics go
//!   to `provisioning`, and answers only to the connection that asked.
//!
//! Sessions are not persisted and retained messages are not kept: neither
//! is part of provisioning.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rumqttc::mqttbytes::v4::{
    Codec, ConnAck, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode,
    UnsubAck,
};
use rumqttc::mqttbytes::{Protocol, QoS};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::Framed;

use crate::faults::{Clock, Faults};
use crate::policy::{self, Action, ConnectionContext};
use crate::provisioning::{self, Caller, Provisioning};
use crate::registry::{Certificate, Registry};
use crate::rules::Rules;
use crate::topics::matches;

/// IoT's largest MQTT message.
const MAX_PACKET: usize = 128 * 1024;
/// How long a client has for the TLS handshake and its CONNECT.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);
/// IoT's limits ("AWS IoT Core message broker and protocol limits"): topic
/// filters per SUBSCRIBE, subscriptions per connection, topic bytes and
/// forward slashes.
const MAX_FILTERS_PER_SUBSCRIBE: usize = 8;
const MAX_SUBSCRIPTIONS: usize = 50;
const MAX_TOPIC_BYTES: usize = 256;
const MAX_TOPIC_SLASHES: usize = 7;
/// Messages waiting for a connection that does not read; past this, new
/// deliveries to it are dropped.
const OUTBOX: usize = 1024;

/// What the session loop is told from outside.
enum Outgoing {
    Deliver {
        topic: String,
        payload: Bytes,
        qos: QoS,
    },
    Close(&'static str),
}

/// What a connection may do: its policies and its policy variables.
struct SessionAuth {
    documents: Vec<Value>,
    context: ConnectionContext,
}

struct Subscription {
    session: u64,
    filter: String,
    qos: QoS,
    auth: Arc<SessionAuth>,
    tx: mpsc::Sender<Outgoing>,
}

/// One region's MQTT endpoint.
pub struct Broker {
    arn_prefix: String,
    registry: Registry,
    provisioning: Provisioning,
    rules: Rules,
    faults: Arc<Faults>,
    clock: Arc<Clock>,
    tls: TlsAcceptor,
    subscriptions: Mutex<Vec<Subscription>>,
    sessions: Mutex<HashMap<String, (u64, mpsc::Sender<Outgoing>)>>,
    next_session: AtomicU64,
}

/// Why a connection was refused before CONNACK.
#[derive(Debug, thiserror::Error)]
enum Refusal {
    #[error("the certificate is not registered, nor signed by a CA with auto-registration")]
    Unknown,
    #[error("the certificate is {0}, not ACTIVE")]
    NotActive(String),
    #[error("the certificate is outside its validity period")]
    Expired,
    #[error("the certificate was auto-registered PENDING_ACTIVATION")]
    JustRegistered(Box<JitpJob>),
    #[error("the policies do not allow iot:Connect for this client id")]
    NotAuthorized,
    #[error("the client id is empty or longer than 128 characters")]
    BadClientId,
    #[error("{0}")]
    Registry(String),
}

impl Broker {
    pub fn new(
        registry: Registry,
        provisioning: Provisioning,
        rules: Rules,
        faults: Arc<Faults>,
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

    async fn connection(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr) {
        if self.faults.refuse_connections() {
            tracing::info!(%peer, "refused: the refuseConnections fault is on");
            return;
        }
        let _ = tcp.set_nodelay(true);
        let tls = match tokio::time::timeout(HANDSHAKE_LIMIT, self.tls.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::info!(%peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => return,
        };
        let Some(der) = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())
        else {
            return;
        };
        let certificate_id = hex::encode(Sha256::digest(&der));
        let mut framed = Framed::new(
            tls,
            Codec {
                max_incoming_size: MAX_PACKET,
                max_outgoing_size: MAX_PACKET,
            },
        );
        let connect = match tokio::time::timeout(HANDSHAKE_LIMIT, framed.next()).await {
            Ok(Some(Ok(Packet::Connect(connect)))) => connect,
            _ => return,
        };
        if connect.protocol != Protocol::V4 {
            // MQTT 3.1.1 only (MQTT 5 is optional and not emulated).
            let refusal = ConnAck::new(ConnectReturnCode::RefusedProtocolVersion, false);
            let _ = framed.send(Packet::ConnAck(refusal)).await;
            return;
        }
        if connect.last_will.is_some() {
            tracing::info!(%peer, "refused: a last will is not emulated");
            return;
        }
        let client_id = connect.client_id.clone();
        let (certificate, auth) = match self.admit(&der, &certificate_id, &client_id).await {
            Ok(admitted) => admitted,
            Err(Refusal::JustRegistered(job)) => {
                // Dropped first; the CA's template runs after.
                drop(framed);
                tracing::info!(%peer, client_id, certificate_id, "auto-registered; connection dropped");
                self.provision_just_in_time(*job).await;
                return;
            }
            Err(refusal) => {
                tracing::info!(%peer, client_id, certificate_id, %refusal, "connection refused");
                if matches!(refusal, Refusal::NotAuthorized) {
                    self.presence_failed(&client_id, &certificate_id);
                }
                return;
            }
        };
        let session = self.next_session.fetch_add(1, Ordering::Relaxed);
        let (tx, mut rx) = mpsc::channel(OUTBOX);
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
        if framed
            .send(Packet::ConnAck(ConnAck::new(
                ConnectReturnCode::Success,
                false,
            )))
            .await
            .is_err()
        {
            self.end_session(session, &client_id);
            return;
        }
        tracing::info!(%peer, client_id, certificate_id, "connected");
        self.presence(&client_id, &certificate_id, "connected", Some(peer), None);

        let keep_alive = match connect.keep_alive {
            0 => Duration::from_secs(1200),
            k => Duration::from_millis(u64::from(k) * 1500),
        };
        let mut next_pkid: u16 = 0;
        // Only what the client sends keeps the connection alive.
        let mut heard = tokio::time::Instant::now();
        let reason = loop {
            tokio::select! {
                incoming = tokio::time::timeout_at(heard + keep_alive, framed.next()) => {
                    heard = tokio::time::Instant::now();
                    let packet = match incoming {
                        Err(_) => break ("MQTT_KEEP_ALIVE_TIMEOUT", false),
                        Ok(None) => break ("CONNECTION_LOST", false),
                        Ok(Some(Err(_))) => break ("CLIENT_ERROR", false),
                        Ok(Some(Ok(packet))) => packet,
                    };
                    match self.packet(packet, session, &tx, &auth, &client_id, &certificate, &mut framed).await {
                        Step::Continue => {}
                        Step::Close(reason, by_client) => break (reason, by_client),
                    }
                }
                outgoing = rx.recv() => match outgoing {
                    Some(Outgoing::Deliver { topic, payload, qos }) => {
                        let mut publish = Publish::from_bytes(topic, qos, payload);
                        if qos != QoS::AtMostOnce {
                            next_pkid = next_pkid.checked_add(1).unwrap_or(1);
                            publish.pkid = next_pkid;
                        }
                        if framed.send(Packet::Publish(publish)).await.is_err() {
                            break ("CONNECTION_LOST", false);
                        }
                    }
                    Some(Outgoing::Close(reason)) => break (reason, false),
                    None => break ("SERVER_ERROR", false),
                },
            }
        };
        let _ = framed.get_mut().shutdown().await;
        self.end_session(session, &client_id);
        tracing::info!(client_id, reason = reason.0, "disconnected");
        self.presence(
            &client_id,
            &certificate_id,
            "disconnected",
            None,
            Some(reason),
        );
    }

    #[allow(clippy::too_many_arguments)]
    async fn packet(
        &self,
        packet: Packet,
        session: u64,
        tx: &mpsc::Sender<Outgoing>,
        auth: &Arc<SessionAuth>,
        client_id: &str,
        certificate: &Certificate,
        framed: &mut Framed<tokio_rustls::server::TlsStream<TcpStream>, Codec>,
    ) -> Step {
        match packet {
            Packet::Publish(publish) => {
                while self.faults.stall_publishes() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if publish.qos == QoS::ExactlyOnce {
                    return Step::Close("CLIENT_ERROR", false);
                }
                if !valid_topic(&publish.topic) {
                    tracing::info!(
                        client_id,
                        topic = publish.topic,
                        "publish to an invalid topic"
                    );
                    return Step::Close("CLIENT_ERROR", false);
                }
                // Of IoT's reserved topics a device publishes only requests;
                // the answers and events are IoT's own.
                let reserved = publish.topic.starts_with("$aws/")
                    && !provisioning::is_request_topic(&publish.topic);
                if reserved || !self.allowed(auth, Action::Publish, &publish.topic) {
                    tracing::info!(
                        client_id,
                        topic = publish.topic,
                        "publish refused by policy"
                    );
                    return Step::Close("FORBIDDEN_ACCESS", false);
                }
                if publish.qos == QoS::AtLeastOnce
                    && framed
                        .send(Packet::PubAck(PubAck::new(publish.pkid)))
                        .await
                        .is_err()
                {
                    return Step::Close("CONNECTION_LOST", false);
                }
                if provisioning::is_request_topic(&publish.topic) {
                    let caller = Caller {
                        client_id,
                        certificate_id: &certificate.id,
                    };
                    let (topic, body) = self
                        .provisioning
                        .handle(&publish.topic, &publish.payload, &caller)
                        .await;
                    self.route(
                        &topic,
                        Bytes::from(body.to_string()),
                        QoS::AtLeastOnce,
                        Some(session),
                    );
                } else {
                    self.route(&publish.topic, publish.payload.clone(), publish.qos, None);
                }
                Step::Continue
            }
            Packet::Subscribe(subscribe) => {
                let held = self
                    .subscriptions
                    .lock()
                    .expect("subscriptions lock")
                    .iter()
                    .filter(|s| s.session == session)
                    .count();
                if subscribe.filters.len() > MAX_FILTERS_PER_SUBSCRIBE
                    || held + subscribe.filters.len() > MAX_SUBSCRIPTIONS
                {
                    tracing::info!(client_id, "subscribe over IoT's limits");
                    return Step::Close("CLIENT_ERROR", false);
                }
                let mut codes = Vec::new();
                for filter in &subscribe.filters {
                    if !rumqttc::mqttbytes::valid_filter(&filter.path)
                        || !within_topic_limits(&filter.path)
                        || !self.allowed(auth, Action::Subscribe, &filter.path)
                    {
                        tracing::info!(
                            client_id,
                            filter = filter.path,
                            "subscribe refused by policy"
                        );
                        return Step::Close("FORBIDDEN_ACCESS", false);
                    }
                    let qos = if filter.qos == QoS::AtMostOnce {
                        QoS::AtMostOnce
                    } else {
                        QoS::AtLeastOnce
                    };
                    codes.push(SubscribeReasonCode::Success(qos));
                }
                {
                    let mut subscriptions = self.subscriptions.lock().expect("subscriptions lock");
                    for (filter, code) in subscribe.filters.iter().zip(&codes) {
                        let SubscribeReasonCode::Success(qos) = code else {
                            continue;
                        };
                        subscriptions
                            .retain(|s| !(s.session == session && s.filter == filter.path));
                        subscriptions.push(Subscription {
                            session,
                            filter: filter.path.clone(),
                            qos: *qos,
                            auth: auth.clone(),
                            tx: tx.clone(),
                        });
                    }
                }
                if framed
                    .send(Packet::SubAck(SubAck::new(subscribe.pkid, codes)))
                    .await
                    .is_err()
                {
                    return Step::Close("CONNECTION_LOST", false);
                }
                Step::Continue
            }
            Packet::Unsubscribe(unsubscribe) => {
                self.subscriptions
                    .lock()
                    .expect("subscriptions lock")
                    .retain(|s| !(s.session == session && unsubscribe.topics.contains(&s.filter)));
                if framed
                    .send(Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)))
                    .await
                    .is_err()
                {
                    return Step::Close("CONNECTION_LOST", false);
                }
                Step::Continue
            }
            Packet::PingReq => {
                if framed.send(Packet::PingResp).await.is_err() {
                    return Step::Close("CONNECTION_LOST", false);
                }
                Step::Continue
            }
            Packet::PubAck(_) => Step::Continue,
            Packet::Disconnect => Step::Close("CLIENT_INITIATED_DISCONNECT", true),
            // A second CONNECT, or a packet only a server sends.
            _ => Step::Close("CLIENT_ERROR", false),
        }
    }

    fn allowed(&self, auth: &SessionAuth, action: Action, object: &str) -> bool {
        let resource = action.resource(&self.arn_prefix, object);
        policy::evaluate(&auth.documents, action, &resource, &auth.context).allowed()
    }

    /// Authenticates the certificate and authorizes the CONNECT.
    async fn admit(
        &self,
        der: &[u8],
        certificate_id: &str,
        client_id: &str,
    ) -> Result<(Certificate, Arc<SessionAuth>), Refusal> {
        if client_id.is_empty() || client_id.len() > 128 {
            return Err(Refusal::BadClientId);
        }
        let registry_error = |e: crate::registry::RegistryError| Refusal::Registry(e.to_string());
        let parsed = x509_parser::parse_x509_certificate(der)
            .map(|(_, c)| c)
            .map_err(|_| Refusal::Unknown)?;
        let now = x509_parser::time::ASN1Time::from_timestamp(self.clock.now_secs())
            .map_err(|_| Refusal::Expired)?;
        if !parsed.validity().is_valid_at(now) {
            return Err(Refusal::Expired);
        }
        let certificate = match self
            .registry
            .certificate(certificate_id)
            .await
            .map_err(registry_error)?
        {
            Some(c) if c.status == "ACTIVE" => c,
            Some(c) => {
                if c.status == "PENDING_ACTIVATION" {
                    if let Some(ca) = self.issuing_ca(&parsed).await.map_err(registry_error)? {
                        let (topic, event) =
                            self.provisioning.registered_event(&ca.id, certificate_id);
                        self.route(
                            &topic,
                            Bytes::from(event.to_string()),
                            QoS::AtLeastOnce,
                            None,
                        );
                    }
                }
                return Err(Refusal::NotActive(c.status));
            }
            None => {
                let job = self.register_just_in_time(der, &parsed).await?;
                return Err(Refusal::JustRegistered(Box::new(job)));
            }
        };
        let things = self
            .registry
            .things_of(&certificate.arn)
            .await
            .map_err(registry_error)?;
        let documents = self
            .registry
            .policies_of(&certificate.arn)
            .await
            .map_err(registry_error)?;
        let auth = Arc::new(SessionAuth {
            documents,
            context: ConnectionContext {
                client_id: client_id.to_owned(),
                thing_name: things.iter().find(|t| *t == client_id).cloned(),
            },
        });
        if !self.allowed(&auth, Action::Connect, client_id) {
            return Err(Refusal::NotAuthorized);
        }
        Ok((certificate, auth))
    }

    /// The registered, ACTIVE CA with auto-registration on that signed
    /// `certificate`, if any.
    async fn issuing_ca(
        &self,
        certificate: &x509_parser::certificate::X509Certificate<'_>,
    ) -> Result<Option<crate::registry::CaCertificate>, crate::registry::RegistryError> {
        for ca in self.registry.ca_certificates().await? {
            if !(ca.active && ca.auto_registration) {
                continue;
            }
            let Ok(block) = pem::parse(&ca.pem) else {
                continue;
            };
            let Ok((_, ca_cert)) = x509_parser::parse_x509_certificate(block.contents()) else {
                continue;
            };
            if certificate.issuer() == ca_cert.subject()
                && certificate
                    .verify_signature(Some(ca_cert.public_key()))
                    .is_ok()
            {
                return Ok(Some(ca));
            }
        }
        Ok(None)
    }

    /// Auto-registration: the certificate PENDING_ACTIVATION under its CA
    /// and the registered event; the template runs once the connection is
    /// dropped.
    async fn register_just_in_time(
        &self,
        der: &[u8],
        parsed: &x509_parser::certificate::X509Certificate<'_>,
    ) -> Result<JitpJob, Refusal> {
        let registry_error = |e: crate::registry::RegistryError| Refusal::Registry(e.to_string());
        let Some(ca) = self.issuing_ca(parsed).await.map_err(registry_error)? else {
            return Err(Refusal::Unknown);
        };
        let pem = pem::encode(&pem::Pem::new("CERTIFICATE", der.to_vec()));
        let certificate_id = self
            .registry
            .register_under_ca(&pem, &ca.pem)
            .await
            .map_err(registry_error)?;
        let (topic, event) = self.provisioning.registered_event(&ca.id, &certificate_id);
        self.route(
            &topic,
            Bytes::from(event.to_string()),
            QoS::AtLeastOnce,
            None,
        );
        Ok(JitpJob {
            ca,
            certificate_id,
            subject: subject_parameters(parsed),
        })
    }

    async fn provision_just_in_time(&self, job: JitpJob) {
        match self
            .provisioning
            .provision_just_in_time(&job.ca, &job.certificate_id, &job.subject)
            .await
        {
            Ok(None) if job.ca.template_name.is_none() => tracing::info!(
                certificate_id = job.certificate_id,
                "JITR: registered PENDING_ACTIVATION, the event published"
            ),
            Ok(thing) => tracing::info!(
                certificate_id = job.certificate_id,
                thing = thing.unwrap_or_default(),
                "JITP provisioned"
            ),
            Err(rejection) => tracing::info!(
                certificate_id = job.certificate_id,
                code = rejection.code,
                message = rejection.message,
                "JITP failed"
            ),
        }
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

    fn presence(
        &self,
        client_id: &str,
        certificate_id: &str,
        event: &str,
        peer: Option<SocketAddr>,
        disconnect: Option<(&str, bool)>,
    ) {
        if client_id.contains(['#', '+']) {
            return;
        }
        let mut body = json!({
            "clientId": client_id,
            "timestamp": self.clock.now_millis(),
            "eventType": event,
            "sessionIdentifier": format!("{:032x}", fastrand::u128(..)),
            "principalIdentifier": certificate_id,
            "versionNumber": 0,
        });
        if let Some(peer) = peer {
            body["ipAddress"] = json!(peer.ip().to_string());
        }
        if let Some((reason, by_client)) = disconnect {
            body["clientInitiatedDisconnect"] = json!(by_client);
            body["disconnectReason"] = json!(reason);
        }
        let topic = format!("$aws/events/presence/{event}/{client_id}");
        self.route(
            &topic,
            Bytes::from(body.to_string()),
            QoS::AtLeastOnce,
            None,
        );
    }

    fn presence_failed(&self, client_id: &str, certificate_id: &str) {
        if client_id.is_empty() || client_id.contains(['#', '+']) {
            return;
        }
        let body = json!({
            "clientId": client_id,
            "timestamp": self.clock.now_millis(),
            "eventType": "connect_failed",
            "connectFailureReason": "AUTHORIZATION_FAILED",
            "principalIdentifier": certificate_id,
        });
        let topic = format!("$aws/events/presence/connect_failed/{client_id}");
        self.route(
            &topic,
            Bytes::from(body.to_string()),
            QoS::AtLeastOnce,
            None,
        );
    }
}

/// A certificate just auto-registered, and what its CA's template needs.
#[derive(Debug)]
struct JitpJob {
    ca: crate::registry::CaCertificate,
    certificate_id: String,
    subject: BTreeMap<String, String>,
}

fn within_topic_limits(topic: &str) -> bool {
    topic.len() <= MAX_TOPIC_BYTES && topic.matches('/').count() <= MAX_TOPIC_SLASHES
}

/// A topic a PUBLISH may name: no wildcards, not empty, within IoT's limits.
fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && rumqttc::mqttbytes::valid_topic(topic) && within_topic_limits(topic)
}

enum Step {
    Continue,
    Close(&'static str, bool),
}

/// The `AWS::IoT::Certificate::*` parameters IoT gives a JITP template,
/// from the certificate's subject; an attribute the subject lacks is absent.
fn subject_parameters(
    certificate: &x509_parser::certificate::X509Certificate<'_>,
) -> BTreeMap<String, String> {
    let names = [
        ("2.5.4.3", "CommonName"),
        ("2.5.4.6", "Country"),
        ("2.5.4.10", "Organization"),
        ("2.5.4.11", "OrganizationalUnit"),
        ("2.5.4.46", "DistinguishedNameQualifier"),
        ("2.5.4.8", "StateName"),
        ("2.5.4.5", "SerialNumber"),
    ];
    let mut parameters = BTreeMap::new();
    for attribute in certificate.subject().iter_attributes() {
        let oid = attribute.attr_type().to_id_string();
        if let Some((_, name)) = names.iter().find(|(o, _)| *o == oid) {
            if let Ok(value) = attribute.as_str() {
                parameters.insert(format!("AWS::IoT::Certificate::{name}"), value.to_owned());
            }
        }
    }
    parameters
}
