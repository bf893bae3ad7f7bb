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

fn put_agent_fields(buf: &mut Vec<u8>, info: &AgentInfo) {
    put_string(buf, OFFER_AGENT_ID, &info.id);
    put_string(buf, OFFER_HOSTNAME, &info.hostname);
    for a in &info.attributes {
        prost::encoding::message::encode(OFFER_ATTRIBUTES, a, buf);
    }
    put_string(buf, OFFER_HTTP_ADDRESS, &info.http_address);
}

/// Where an agent's encoded offer fields are in a [`FieldArena`]: its agent
/// fields, followed by its total resources (so that an offer of the whole
/// agent is one copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentFields {
    start: usize,
    fields_end: usize,
    end: usize,
}

impl AgentFields {
    fn len(&self) -> usize {
        self.end - self.start
    }
}

/// Every agent's encoded offer fields, one after another in one buffer.
///
/// The allocation cycle visits agents in slot order; with the fields laid
/// out in that order too, it reads them as one stream the processor
/// prefetches, instead of one scattered allocation per agent. An agent that
/// registers again gets fresh space; the old space is garbage until
/// [`FieldArena::compact`] lays the live ones out again.
#[derive(Debug, Default)]
pub struct FieldArena {
    bytes: Vec<u8>,
    live: usize,
}

impl FieldArena {
    /// Encodes an agent's fields and `total` at the end of the arena.
    pub fn push(&mut self, info: &AgentInfo, total: &Resources) -> AgentFields {
        let start = self.bytes.len();
        put_agent_fields(&mut self.bytes, info);
        let fields_end = self.bytes.len();
        put_resources(&mut self.bytes, OFFER_RESOURCES, total);
        let f = AgentFields {
            start,
            fields_end,
            end: self.bytes.len(),
        };
        self.live += f.len();
        f
    }

    /// The agent's fields, without resources.
    pub fn fields(&self, f: AgentFields) -> &[u8] {
        &self.bytes[f.start..f.fields_end]
    }

    /// The agent's fields and its total resources.
    pub fn full(&self, f: AgentFields) -> &[u8] {
        &self.bytes[f.start..f.end]
    }

    /// Marks an agent's space as garbage.
    pub fn release(&mut self, f: AgentFields) {
        self.live = self.live.saturating_sub(f.len());
    }

    /// Bytes in the arena, live or not.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Whether half the arena or more (and at least 1 MiB) is garbage.
    pub fn wants_compaction(&self) -> bool {
        let garbage = self.bytes.len() - self.live;
        garbage >= 1 << 20 && garbage * 2 >= self.bytes.len()
    }

    /// Lays out the live fields again, in the order given, and moves each
    /// entry to its new place. Every live entry must be given once.
    pub fn compact<'a>(&mut self, live: impl Iterator<Item = &'a mut AgentFields>) {
        let mut bytes = Vec::with_capacity(self.live);
        for f in live {
            let start = bytes.len();
            bytes.extend_from_slice(&self.bytes[f.start..f.end]);
            *f = AgentFields {
                start,
                fields_end: start + (f.fields_end - f.start),
                end: bytes.len(),
            };
        }
        self.live = bytes.len();
        self.bytes = bytes;
    }
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
        let mem = Resources::parse("mem:1").unwrap();
        let mut arena = FieldArena::default();
        let agent = arena.push(&info, &mem);
        let fw = framework_offer_field("m-0007");
        let r = Resources::parse("cpus:4;mem:1024;ports:[31000-31009];cpus(web):1").unwrap();
        let mut offers = EncodedOffers::default();
        let mut scratch = Vec::new();
        offers.push(
            &mut scratch,
            "m-O",
            9,
            &fw,
            arena.fields(agent),
            "web",
            Some(&r),
        );
        offers.push(&mut scratch, "m-O", 10, &fw, arena.full(agent), "*", None);
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
        assert_eq!(decoded[1].resources, mem.to_proto());
        assert_eq!(decoded[1].hostname, "host3");

        let event = OutEvent::Offers(offers);
        let mut bytes = Vec::new();
        event.encode(&mut bytes).unwrap();
        assert_eq!(Event::decode(bytes.as_slice()).unwrap(), event.to_event());
    }

    #[test]
    fn the_arena_compacts_to_the_live_fields_in_the_order_given() {
        let info = |i: usize| AgentInfo {
            id: format!("m-S{i}"),
            hostname: "h".repeat(1000),
            ..Default::default()
        };
        let total = Resources::parse("cpus:4").unwrap();
        let mut arena = FieldArena::default();
        let mut live: Vec<AgentFields> = (0..4000).map(|i| arena.push(&info(i), &total)).collect();
        let expected: Vec<Vec<u8>> = live.iter().map(|f| arena.full(*f).to_vec()).collect();
        assert!(!arena.wants_compaction());
        // Every agent registers again: the first copies are garbage.
        for (i, f) in live.iter_mut().enumerate() {
            arena.release(*f);
            *f = arena.push(&info(i), &total);
        }
        assert!(arena.wants_compaction());
        let before = arena.len();
        live.reverse();
        arena.compact(live.iter_mut());
        assert_eq!(arena.len() * 2, before);
        assert!(!arena.wants_compaction());
        live.reverse();
        for (f, want) in live.iter().zip(&expected) {
            assert_eq!(arena.full(*f), want.as_slice());
            assert!(want.starts_with(arena.fields(*f)));
        }
        // Laid out in the order given (here: the reverse of the agents').
        assert!(live[0].start > live[1].start);
    }
}
