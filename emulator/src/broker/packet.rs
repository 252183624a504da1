//! The packets of an admitted connection, after its CONNECT: one function
//! per packet type, each answering it on the connection and saying whether
//! the session goes on ("MQTT" in the developer guide, and its "AWS IoT
//! differences from MQTT specifications").

use std::time::Duration;

use bytes::Bytes;
use futures::SinkExt;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{
    Packet, PubAck, Publish, SubAck, Subscribe, SubscribeReasonCode, UnsubAck, Unsubscribe,
};

use super::{Broker, Session, Subscription, Transport};
use crate::policy::Action;
use crate::provisioning::{self, Caller};

/// IoT's limits ("AWS IoT Core message broker and protocol limits"): topic
/// filters per SUBSCRIBE, subscriptions per connection, topic bytes and
/// forward slashes.
const MAX_FILTERS_PER_SUBSCRIBE: usize = 8;
const MAX_SUBSCRIPTIONS: usize = 50;
const MAX_TOPIC_BYTES: usize = 256;
const MAX_TOPIC_SLASHES: usize = 7;

/// Whether the session goes on after a packet; if not, the disconnect
/// reason and whether the client asked.
pub(super) enum Step {
    Continue,
    Close(&'static str, bool),
}

impl Broker {
    /// One packet of an admitted connection.
    pub(super) async fn packet(
        &self,
        packet: Packet,
        session: &Session,
        framed: &mut Transport,
    ) -> Step {
        match packet {
            Packet::Publish(publish) => self.publish(publish, session, framed).await,
            Packet::Subscribe(subscribe) => self.subscribe(subscribe, session, framed).await,
            Packet::Unsubscribe(unsubscribe) => {
                self.unsubscribe(&unsubscribe, session, framed).await
            }
            Packet::PingReq => ping(framed).await,
            Packet::PubAck(_) => Step::Continue,
            Packet::Disconnect => Step::Close("CLIENT_INITIATED_DISCONNECT", true),
            // A second CONNECT, or a packet only a server sends.
            _ => Step::Close("CLIENT_ERROR", false),
        }
    }

    /// PUBLISH: a message to route, or a request to the provisioning API
    /// whose answer goes only to this connection.
    async fn publish(&self, publish: Publish, session: &Session, framed: &mut Transport) -> Step {
        let client_id = session.client_id.as_str();
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
        let reserved =
            publish.topic.starts_with("$aws/") && !provisioning::is_request_topic(&publish.topic);
        if reserved || !self.allowed(&session.auth, Action::Publish, &publish.topic) {
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
                certificate_id: &session.certificate.id,
            };
            let (topic, body) = self
                .provisioning
                .handle(&publish.topic, &publish.payload, &caller)
                .await;
            self.route(
                &topic,
                Bytes::from(body.to_string()),
                QoS::AtLeastOnce,
                Some(session.id),
            );
        } else {
            self.route(&publish.topic, publish.payload.clone(), publish.qos, None);
        }
        Step::Continue
    }

    /// SUBSCRIBE: within IoT's limits and allowed for every filter, or the
    /// connection closes; QoS 2 is granted as QoS 1.
    async fn subscribe(
        &self,
        subscribe: Subscribe,
        session: &Session,
        framed: &mut Transport,
    ) -> Step {
        let client_id = session.client_id.as_str();
        let held = self
            .subscriptions
            .lock()
            .expect("subscriptions lock")
            .iter()
            .filter(|s| s.session == session.id)
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
                || !self.allowed(&session.auth, Action::Subscribe, &filter.path)
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
                subscriptions.retain(|s| !(s.session == session.id && s.filter == filter.path));
                subscriptions.push(Subscription {
                    session: session.id,
                    filter: filter.path.clone(),
                    qos: *qos,
                    auth: session.auth.clone(),
                    tx: session.tx.clone(),
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

    /// UNSUBSCRIBE: this connection's subscriptions to those filters end.
    async fn unsubscribe(
        &self,
        unsubscribe: &Unsubscribe,
        session: &Session,
        framed: &mut Transport,
    ) -> Step {
        self.subscriptions
            .lock()
            .expect("subscriptions lock")
            .retain(|s| !(s.session == session.id && unsubscribe.topics.contains(&s.filter)));
        if framed
            .send(Packet::UnsubAck(UnsubAck::new(unsubscribe.pkid)))
            .await
            .is_err()
        {
            return Step::Close("CONNECTION_LOST", false);
        }
        Step::Continue
    }
}

/// PINGREQ: a PINGRESP.
async fn ping(framed: &mut Transport) -> Step {
    if framed.send(Packet::PingResp).await.is_err() {
        return Step::Close("CONNECTION_LOST", false);
    }
    Step::Continue
}

fn within_topic_limits(topic: &str) -> bool {
    topic.len() <= MAX_TOPIC_BYTES && topic.matches('/').count() <= MAX_TOPIC_SLASHES
}

/// A topic a PUBLISH may name: no wildcards, not empty, within IoT's limits.
fn valid_topic(topic: &str) -> bool {
    !topic.is_empty() && rumqttc::mqttbytes::valid_topic(topic) && within_topic_limits(topic)
}
