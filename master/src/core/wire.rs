//! Offers encoded once, in the allocation cycle.
//!
//! The fields of an offer that come from its agent (id, hostname,
//! attributes, HTTP address) are encoded when the agent registers, and the
//! framework id when the framework subscribes. An offer is then a handful of
//! byte copies: its id, those two pieces, its role and its resources
//! (`agora_proto::wire`). Offers for one framework are appended to one
//! buffer, which is the body of an `Offers` message, and go out as an
//! [`OutEvent::Offers`] without being decoded or re-encoded.

use agora_proto::Resources;
use agora_proto::v1::{self, AgentInfo, Event, event};
use agora_proto::wire::{
    delimited_len, prefixed_number_len, put_delimited_header, put_prefixed_number, put_resources,
    put_string, string_len,
};
use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;

// Field numbers of `agora.v1.Offer`, `agora.v1.Offers` and `agora.v1.Event`.
const OFFER_ID: u32 = 1;
const OFFER_FRAMEWORK_ID: u32 = 2;
const OFFER_AGENT_ID: u32 = 3;
const OFFER_HOSTNAME: u32 = 4;
const OFFER_RESOURCES: u32 = 5;
const OFFER_ATTRIBUTES: u32 = 6;
const OFFER_ROLE: u32 = 7;
const OFFER_HTTP_ADDRESS: u32 = 8;
const OFFERS_OFFERS: u32 = 1;
const EVENT_OFFERS: u32 = 2;

/// The encoded fields of an offer that come from its agent.
pub fn agent_offer_fields(info: &AgentInfo) -> Bytes {
    let mut buf = Vec::new();
    put_string(&mut buf, OFFER_AGENT_ID, &info.id);
    put_string(&mut buf, OFFER_HOSTNAME, &info.hostname);
    for a in &info.attributes {
        prost::encoding::message::encode(OFFER_ATTRIBUTES, a, &mut buf);
    }
    put_string(&mut buf, OFFER_HTTP_ADDRESS, &info.http_address);
    Bytes::from(buf)
}

/// The encoded fields of an offer of all of an agent's resources: its
/// agent fields and `total` (the common case of a free agent, encoded once).
pub fn agent_full_offer_fields(agent_fields: &[u8], total: &Resources) -> Bytes {
    let mut buf = agent_fields.to_vec();
    put_resources(&mut buf, OFFER_RESOURCES, total);
    Bytes::from(buf)
}

/// The encoded framework id field of an offer.
pub fn framework_offer_field(framework_id: &str) -> Bytes {
    let mut buf = Vec::with_capacity(framework_id.len() + 2);
    put_string(&mut buf, OFFER_FRAMEWORK_ID, framework_id);
    Bytes::from(buf)
}

/// Offers for one framework, encoded: the body of an `Offers` message.
#[derive(Debug, Default, Clone)]
pub struct EncodedOffers {
    /// How many offers `bytes` holds.
    pub count: usize,
    pub bytes: BytesMut,
}

impl EncodedOffers {
    /// Appends one offer. `agent_fields` are the agent's encoded fields;
    /// `resources`, when given, are encoded after them (into `scratch`, a
    /// reusable buffer, so each resource's length is worked out once); when
    /// `None`, `agent_fields` already hold the resources.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        scratch: &mut Vec<u8>,
        offer_prefix: &str,
        seq: u64,
        framework_field: &[u8],
        agent_fields: &[u8],
        role: &str,
        resources: Option<&Resources>,
    ) {
        scratch.clear();
        if let Some(r) = resources {
            put_resources(scratch, OFFER_RESOURCES, r);
        }
        let body = prefixed_number_len(OFFER_ID, offer_prefix, seq)
            + framework_field.len()
            + agent_fields.len()
            + scratch.len()
            + string_len(OFFER_ROLE, role);
        let needed = delimited_len(OFFERS_OFFERS, body);
        if self.bytes.capacity() - self.bytes.len() < needed {
            // Grow geometrically: a batch is appended to offer by offer.
            self.bytes.reserve(needed.max(self.bytes.len()).max(4096));
        }
        put_delimited_header(&mut self.bytes, OFFERS_OFFERS, body);
        put_prefixed_number(&mut self.bytes, OFFER_ID, offer_prefix, seq);
        self.bytes.put_slice(framework_field);
        self.bytes.put_slice(agent_fields);
        self.bytes.put_slice(scratch);
        put_string(&mut self.bytes, OFFER_ROLE, role);
        self.count += 1;
    }

    /// The offers as messages (for tests and tools; the master never needs
    /// this on its own path).
    pub fn decode(&self) -> Vec<v1::Offer> {
        v1::Offers::decode(&self.bytes[..])
            .map(|o| o.offers)
            .unwrap_or_default()
    }
}

/// One event for a framework's stream.
#[derive(Debug, Clone)]
pub enum OutEvent {
    /// Any event, as a message.
    Event(Event),
    /// Offers already encoded.
    Offers(EncodedOffers),
}

impl OutEvent {
    /// The event as a message (decoding encoded offers).
    pub fn to_event(&self) -> Event {
        match self {
            OutEvent::Event(e) => e.clone(),
            OutEvent::Offers(o) => Event {
                event: Some(event::Event::Offers(v1::Offers { offers: o.decode() })),
            },
        }
    }

    /// Writes the event's encoding (the bytes of an `Event` message) into a
    /// growable buffer.
    pub fn encode(&self, buf: &mut impl BufMut) -> Result<(), prost::EncodeError> {
        match self {
            OutEvent::Event(e) => e.encode(buf),
            OutEvent::Offers(o) => {
                put_delimited_header(buf, EVENT_OFFERS, o.bytes.len());
                buf.put_slice(&o.bytes);
                Ok(())
            }
        }
    }
}

impl From<Event> for OutEvent {
    fn from(e: Event) -> Self {
        OutEvent::Event(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_offers_decode_as_offer_messages() {
        let info = AgentInfo {
            id: "m-S3".into(),
            hostname: "host3".into(),
            http_address: "10.0.0.3:5051".into(),
            attributes: agora_proto::parse_attributes("rack:r1;level:2").unwrap(),
            ..Default::default()
        };
        let agent = agent_offer_fields(&info);
        let fw = framework_offer_field("m-0007");
        let r = Resources::parse("cpus:4;mem:1024;ports:[31000-31009];cpus(web):1").unwrap();
        let mut offers = EncodedOffers::default();
        let mut scratch = Vec::new();
        offers.push(&mut scratch, "m-O", 9, &fw, &agent, "web", Some(&r));
        let mem = Resources::parse("mem:1").unwrap();
        let full = agent_full_offer_fields(&agent, &mem);
        offers.push(&mut scratch, "m-O", 10, &fw, &full, "*", None);
        let decoded = offers.decode();
        assert_eq!(offers.count, 2);
        assert_eq!(
            decoded[0],
            v1::Offer {
                id: "m-O9".into(),
                framework_id: "m-0007".into(),
                agent_id: "m-S3".into(),
                hostname: "host3".into(),
                resources: r.to_proto(),
                attributes: info.attributes.clone(),
                role: "web".into(),
                agent_http_address: "10.0.0.3:5051".into(),
            }
        );
        assert_eq!(decoded[1].id, "m-O10");

        let event = OutEvent::Offers(offers);
        let mut bytes = Vec::new();
        event.encode(&mut bytes).unwrap();
        assert_eq!(Event::decode(bytes.as_slice()).unwrap(), event.to_event());
    }
}
