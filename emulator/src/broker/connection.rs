//! One connection's lifecycle: the TLS handshake, its CONNECT and admission,
//! the read/write loop of the session, its end, and the lifecycle events
//! ("Lifecycle events") that mark it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use rumqttc::mqttbytes::v4::{Codec, ConnAck, Connect, ConnectReturnCode, Packet, Publish};
use rumqttc::mqttbytes::{Protocol, QoS};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_util::codec::Framed;

use super::admit::Refusal;
use super::packet::Step;
use super::{Broker, Outgoing, Session, Transport};

/// IoT's largest MQTT message.
const MAX_PACKET: usize = 128 * 1024;
/// How long a client has for the TLS handshake and its CONNECT.
const HANDSHAKE_LIMIT: Duration = Duration::from_secs(10);

impl Broker {
    /// One connection, from its TLS handshake to the end of its session.
    pub(super) async fn connection(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr) {
        let Some((tls, der)) = self.tls_accept(tcp, peer).await else {
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
        let Some(connect) = read_connect(&mut framed, peer).await else {
            return;
        };
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
        let (session, rx) = self.open_session(client_id, certificate_id, certificate, auth);
        self.session(framed, rx, &session, peer, connect.keep_alive)
            .await;
    }

    /// The TLS handshake, and the client certificate it presented (DER).
    async fn tls_accept(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
    ) -> Option<(TlsStream<TcpStream>, Vec<u8>)> {
        if self.faults.refuse_connections() {
            tracing::info!(%peer, "refused: the refuseConnections fault is on");
            return None;
        }
        let _ = tcp.set_nodelay(true);
        let tls = match tokio::time::timeout(HANDSHAKE_LIMIT, self.tls.accept(tcp)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::info!(%peer, error = %e, "TLS handshake failed");
                return None;
            }
            Err(_) => return None,
        };
        let der = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.as_ref().to_vec())?;
        Some((tls, der))
    }

    /// An admitted connection from its CONNACK to its end.
    async fn session(
        &self,
        mut framed: Transport,
        mut rx: mpsc::Receiver<Outgoing>,
        session: &Session,
        peer: SocketAddr,
        keep_alive: u16,
    ) {
        let Session {
            id,
            client_id,
            certificate_id,
            ..
        } = session;
        if framed
            .send(Packet::ConnAck(ConnAck::new(
                ConnectReturnCode::Success,
                false,
            )))
            .await
            .is_err()
        {
            self.end_session(*id, client_id);
            return;
        }
        tracing::info!(%peer, client_id, certificate_id, "connected");
        self.presence(client_id, certificate_id, "connected", Some(peer), None);

        let reason = self
            .exchange(&mut framed, &mut rx, session, keep_alive)
            .await;
        let _ = framed.get_mut().shutdown().await;
        self.end_session(*id, client_id);
        tracing::info!(client_id, reason = reason.0, "disconnected");
        self.presence(
            client_id,
            certificate_id,
            "disconnected",
            None,
            Some(reason),
        );
    }

    /// The read/write loop: the client's packets, and what the session is
    /// told from outside, until one ends it; returns why (the disconnect
    /// reason), and whether the client asked.
    async fn exchange(
        &self,
        framed: &mut Transport,
        rx: &mut mpsc::Receiver<Outgoing>,
        session: &Session,
        keep_alive: u16,
    ) -> (&'static str, bool) {
        let keep_alive = match keep_alive {
            0 => Duration::from_secs(1200),
            k => Duration::from_millis(u64::from(k) * 1500),
        };
        let mut next_pkid: u16 = 0;
        let mut outages = self.faults.outages();
        outages.mark_unchanged();
        // Admitted as an outage began: it ends with the others.
        if self.faults.refuse_connections() {
            return ("SERVER_INITIATED_DISCONNECT", false);
        }
        // Only what the client sends keeps the connection alive.
        let mut heard = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = outages.changed() => break ("SERVER_INITIATED_DISCONNECT", false),
                incoming = tokio::time::timeout_at(heard + keep_alive, framed.next()) => {
                    heard = tokio::time::Instant::now();
                    let packet = match incoming {
                        Err(_) => break ("MQTT_KEEP_ALIVE_TIMEOUT", false),
                        Ok(None) => break ("CONNECTION_LOST", false),
                        Ok(Some(Err(_))) => break ("CLIENT_ERROR", false),
                        Ok(Some(Ok(packet))) => packet,
                    };
                    match self.packet(packet, session, framed).await {
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
        }
    }

    /// The `connected` and `disconnected` lifecycle events.
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

    /// The `connect_failed` lifecycle event of a CONNECT the policies refuse.
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

/// The client's CONNECT, within the handshake limit; `None` when the
/// connection is to be dropped.
async fn read_connect(framed: &mut Transport, peer: SocketAddr) -> Option<Connect> {
    let connect = match tokio::time::timeout(HANDSHAKE_LIMIT, framed.next()).await {
        Ok(Some(Ok(Packet::Connect(connect)))) => connect,
        _ => return None,
    };
    if connect.protocol != Protocol::V4 {
        // MQTT 3.1.1 only (MQTT 5 is optional and not emulated).
        let refusal = ConnAck::new(ConnectReturnCode::RefusedProtocolVersion, false);
        let _ = framed.send(Packet::ConnAck(refusal)).await;
        return None;
    }
    if connect.last_will.is_some() {
        tracing::info!(%peer, "refused: a last will is not emulated");
        return None;
    }
    Some(connect)
}
