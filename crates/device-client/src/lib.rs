//! A geoprov device: MQTT 3.1.1 over mutual TLS with the SNI of the global
//! name, on rumqttc's MQTT codec and rustls. It drives its session itself so
//! that each step reports what the broker did: refused the connection
//! (IoT closes it without a CONNACK), or closed it at a publish or a
//! subscribe its policy refused.
//!
//! `provision` runs fleet provisioning by claim over the Device
//! provisioning MQTT API (CreateKeysAndCertificate or
//! CreateCertificateFromCsr, then RegisterThing).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    Codec, Connect, ConnectReturnCode, Packet, Publish, Subscribe, SubscribeReasonCode,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Framed;

pub mod backoff;
pub mod provision;

pub use backoff::Backoff;

/// How long one step (a handshake, an acknowledgement) may take.
pub const STEP_LIMIT: Duration = Duration::from_secs(10);

/// Where the device connects and whom it trusts.
#[derive(Clone)]
pub struct Endpoint {
    /// The name given as SNI and checked in the server certificate: the
    /// global name.
    pub server_name: String,
    /// The address the TCP connection goes to.
    pub address: SocketAddr,
    /// The CA certificates (PEM) the server certificate must chain to.
    pub ca_pem: String,
}

/// A device's certificate and key, PEM. The key never leaves the struct's
/// owner except into the TLS configuration.
#[derive(Clone)]
pub struct Identity {
    pub certificate_pem: String,
    pub private_key_pem: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Identity { .. }")
    }
}

/// What went wrong at one step.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("the CA file or the device certificate or key does not parse: {0}")]
    Material(String),
    #[error("TCP connection to {0} failed: {1}")]
    Tcp(SocketAddr, std::io::Error),
    #[error("TLS handshake failed: {0}")]
    Tls(std::io::Error),
    #[error(
        "the broker closed the connection without a CONNACK (IoT's answer to a refused certificate or client id)"
    )]
    ConnectRefused,
    #[error("the broker answered CONNECT with {0:?}")]
    ConnAck(ConnectReturnCode),
    #[error(
        "the broker closed the connection during {0} (IoT's answer to a refused publish or subscribe)"
    )]
    Closed(&'static str),
    #[error("the broker refused the subscription to {0}")]
    SubscriptionRefused(String),
    #[error("no answer within {0:?} during {1}")]
    Timeout(Duration, &'static str),
    #[error("MQTT: {0}")]
    Protocol(String),
}

/// A message the device received.
#[derive(Debug, Clone)]
pub struct Message {
    pub topic: String,
    pub payload: Bytes,
}

impl Message {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.payload).ok()
    }
}

/// A connected device.
pub struct Device {
    framed: Framed<TlsStream<TcpStream>, Codec>,
    next_pkid: u16,
    inbox: VecDeque<Message>,
}

fn tls_config(
    endpoint: &Endpoint,
    identity: &Identity,
) -> Result<rustls::ClientConfig, DeviceError> {
    let material = |e: &dyn std::fmt::Display| DeviceError::Material(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(endpoint.ca_pem.as_bytes()) {
        roots
            .add(cert.map_err(|e| material(&e))?)
            .map_err(|e| material(&e))?;
    }
    let chain = CertificateDer::pem_slice_iter(identity.certificate_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| material(&e))?;
    // The key's own parse error names no key material.
    let key = PrivateKeyDer::from_pem_slice(identity.private_key_pem.as_bytes()).map_err(|_| {
        DeviceError::Material("the private key is not PEM PKCS#8, PKCS#1 or SEC1".into())
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| material(&e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| material(&e))
}

impl Device {
    /// Connects as `client_id`; Ok once the broker accepted the CONNECT.
    pub async fn connect(
        endpoint: &Endpoint,
        identity: &Identity,
        client_id: &str,
    ) -> Result<Device, DeviceError> {
        let config = tls_config(endpoint, identity)?;
        let name = ServerName::try_from(endpoint.server_name.clone())
            .map_err(|e| DeviceError::Material(format!("server name: {e}")))?;
        let tcp = tokio::time::timeout(STEP_LIMIT, TcpStream::connect(endpoint.address))
            .await
            .map_err(|_| DeviceError::Timeout(STEP_LIMIT, "TCP connect"))?
            .map_err(|e| DeviceError::Tcp(endpoint.address, e))?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio::time::timeout(
            STEP_LIMIT,
            TlsConnector::from(Arc::new(config)).connect(name, tcp),
        )
        .await
        .map_err(|_| DeviceError::Timeout(STEP_LIMIT, "TLS handshake"))?
        .map_err(DeviceError::Tls)?;
        let mut framed = Framed::new(
            tls,
            Codec {
                max_incoming_size: 128 * 1024,
                max_outgoing_size: 128 * 1024,
            },
        );
        let mut connect = Connect::new(client_id);
        connect.keep_alive = 60;
        connect.clean_session = true;
        // With TLS 1.3 a refused client certificate surfaces at the first read.
        if framed.send(Packet::Connect(connect)).await.is_err() {
            return Err(DeviceError::ConnectRefused);
        }
        match tokio::time::timeout(STEP_LIMIT, framed.next()).await {
            Err(_) => Err(DeviceError::Timeout(STEP_LIMIT, "CONNECT")),
            Ok(None) | Ok(Some(Err(_))) => Err(DeviceError::ConnectRefused),
            Ok(Some(Ok(Packet::ConnAck(ack)))) if ack.code == ConnectReturnCode::Success => {
                Ok(Device {
                    framed,
                    next_pkid: 0,
                    inbox: VecDeque::new(),
                })
            }
            Ok(Some(Ok(Packet::ConnAck(ack)))) => Err(DeviceError::ConnAck(ack.code)),
            Ok(Some(Ok(other))) => Err(DeviceError::Protocol(format!(
                "expected CONNACK, got {other:?}"
            ))),
        }
    }

    /// Connects, retrying while the broker refuses the connection (closed
    /// without a CONNACK), up to `attempts` attempts, after a capped
    /// exponential backoff with full jitter ([`Backoff::DEVICE`]): a JITR
    /// certificate's first connection registers it and is dropped, and IoT
    /// closes a CONNECT over its rate quota so too. Returns the device and
    /// the attempts it took.
    pub async fn connect_retrying(
        endpoint: &Endpoint,
        identity: &Identity,
        client_id: &str,
        attempts: u32,
    ) -> Result<(Device, u32), DeviceError> {
        let mut attempt = 1;
        loop {
            match Device::connect(endpoint, identity, client_id).await {
                Ok(device) => return Ok((device, attempt)),
                Err(DeviceError::ConnectRefused) if attempt < attempts => {
                    tokio::time::sleep(Backoff::DEVICE.delay(attempt - 1)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn pkid(&mut self) -> u16 {
        self.next_pkid = self.next_pkid.checked_add(1).unwrap_or(1);
        self.next_pkid
    }

    /// Reads packets until `want` picks one, keeping publishes for later.
    async fn until<T>(
        &mut self,
        step: &'static str,
        mut want: impl FnMut(&Packet) -> Option<T>,
    ) -> Result<T, DeviceError> {
        let deadline = Instant::now() + STEP_LIMIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let packet = match tokio::time::timeout(left, self.framed.next()).await {
                Err(_) => return Err(DeviceError::Timeout(STEP_LIMIT, step)),
                Ok(None) | Ok(Some(Err(_))) => return Err(DeviceError::Closed(step)),
                Ok(Some(Ok(packet))) => packet,
            };
            if let Some(found) = want(&packet) {
                return Ok(found);
            }
            self.keep(packet).await?;
        }
    }

    async fn keep(&mut self, packet: Packet) -> Result<(), DeviceError> {
        if let Packet::Publish(publish) = packet {
            if publish.qos == QoS::AtLeastOnce {
                self.send(
                    Packet::PubAck(rumqttc::mqttbytes::v4::PubAck::new(publish.pkid)),
                    "PUBACK",
                )
                .await?;
            }
            self.inbox.push_back(Message {
                topic: publish.topic,
                payload: publish.payload,
            });
        }
        Ok(())
    }

    async fn send(&mut self, packet: Packet, step: &'static str) -> Result<(), DeviceError> {
        self.framed
            .send(packet)
            .await
            .map_err(|_| DeviceError::Closed(step))
    }

    /// Subscribes at QoS 1; Err when the broker refuses or closes.
    pub async fn subscribe(&mut self, filters: &[&str]) -> Result<(), DeviceError> {
        let pkid = self.pkid();
        let mut subscribe = Subscribe::new_many(filters.iter().map(|f| {
            rumqttc::mqttbytes::v4::SubscribeFilter::new((*f).to_owned(), QoS::AtLeastOnce)
        }));
        subscribe.pkid = pkid;
        self.send(Packet::Subscribe(subscribe), "SUBSCRIBE").await?;
        let codes = self
            .until("SUBSCRIBE", |p| match p {
                Packet::SubAck(ack) if ack.pkid == pkid => Some(ack.return_codes.clone()),
                _ => None,
            })
            .await?;
        if codes.len() != filters.len() {
            return Err(DeviceError::Protocol(format!(
                "SUBACK has {} codes for {} filters",
                codes.len(),
                filters.len()
            )));
        }
        for (code, filter) in codes.iter().zip(filters) {
            if *code == SubscribeReasonCode::Failure {
                return Err(DeviceError::SubscriptionRefused((*filter).to_owned()));
            }
        }
        Ok(())
    }

    /// Publishes at QoS 1 and waits for the PUBACK.
    pub async fn publish(
        &mut self,
        topic: &str,
        payload: impl Into<Vec<u8>>,
    ) -> Result<(), DeviceError> {
        let pkid = self.pkid();
        let mut publish = Publish::new(topic, QoS::AtLeastOnce, payload.into());
        publish.pkid = pkid;
        self.send(Packet::Publish(publish), "PUBLISH").await?;
        self.until("PUBLISH", |p| {
            matches!(p, Packet::PubAck(ack) if ack.pkid == pkid).then_some(())
        })
        .await
    }

    /// The next message whose topic `accept` takes, waiting up to `limit`.
    pub async fn receive(
        &mut self,
        limit: Duration,
        accept: impl Fn(&str) -> bool,
    ) -> Result<Message, DeviceError> {
        if let Some(i) = self.inbox.iter().position(|m| accept(&m.topic)) {
            return Ok(self.inbox.remove(i).expect("index in range"));
        }
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.framed.next()).await {
                Err(_) => return Err(DeviceError::Timeout(limit, "receive")),
                Ok(None) | Ok(Some(Err(_))) => return Err(DeviceError::Closed("receive")),
                Ok(Some(Ok(packet))) => {
                    self.keep(packet).await?;
                    if let Some(i) = self.inbox.iter().position(|m| accept(&m.topic)) {
                        return Ok(self.inbox.remove(i).expect("index in range"));
                    }
                }
            }
        }
    }

    /// Sends PINGREQ and waits for the PINGRESP: what keeps an idle
    /// connection alive (the broker ends one not heard from for 1.5 times
    /// its keep-alive), and tells a device its connection still holds.
    pub async fn ping(&mut self) -> Result<(), DeviceError> {
        self.send(Packet::PingReq, "PINGREQ").await?;
        self.until("PINGREQ", |p| matches!(p, Packet::PingResp).then_some(()))
            .await
    }

    /// Sends DISCONNECT and closes.
    pub async fn disconnect(mut self) {
        let _ = self.framed.send(Packet::Disconnect).await;
        let _ = futures::SinkExt::close(&mut self.framed).await;
    }
}
