//! Offers encoded once, in the allocation cycle.
//!
//! The fields of an offer that come from its agent (id, hostname,
//! attributes, HTTP address) are encoded when the agent registers, and the
//! framework id when the framework subscribes. An offer is then its id, the
//! framework id, its role and (when it is not the agent's total) its
//! resources, written by `agora_proto::wire`, followed by a copy of its
//! agent's fields. Offers for one framework make the body of one `Offers`
//! message, which goes out as an [`OutEvent::Offers`] without being decoded
//! or re-encoded.

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

fn put_agent_fields(buf: &mut impl BufMut, info: &AgentInfo) {
    put_string(buf, OFFER_AGENT_ID, &info.id);
    put_string(buf, OFFER_HOSTNAME, &info.hostname);
    for a in &info.attributes {
        prost::encoding::message::encode(OFFER_ATTRIBUTES, a, buf);
    }
    put_string(buf, OFFER_HTTP_ADDRESS, &info.http_address);
}

/// An agent's encoded offer fields: its agent fields followed by its total
/// resources, so that an offer of the whole agent copies them in one piece.
#[derive(Debug, Clone)]
pub struct AgentFields {
    bytes: Bytes,
    fields_len: usize,
}

impl AgentFields {
    /// The agent's fields and its total resources.
    pub fn full(&self) -> &[u8] {
        &self.bytes
    }

    /// The agent's fields, without resources.
    pub fn fields(&self) -> &[u8] {
        &self.bytes[..self.fields_len]
    }
}

/// Size of the chunks a [`FieldArena`] writes agents' fields into.
const ARENA_CHUNK: usize = 256 * 1024;

/// Every agent's encoded offer fields, written one after another into
/// shared chunks.
///
/// The allocation cycle visits agents in slot order; with their fields laid
/// out in that order it reads them as one stream the processor prefetches,
/// instead of one scattered allocation per agent. Each agent's fields are a
/// slice of a shared chunk, so the cycle holds them without borrowing the
/// arena. (Handing the slices to the stream by reference count instead of
/// copying them was measured slower: an atomic increment per offer.) An
/// agent that registers again gets fresh space; the old space is garbage
/// until [`FieldArena::compact`] lays the live ones out again.
#[derive(Debug, Default)]
pub struct FieldArena {
    tail: BytesMut,
    /// Bytes handed out, live or not.
    len: usize,
    live: usize,
}

impl FieldArena {
    /// Encodes an agent's fields and `total` at the end of the arena.
    pub fn push(&mut self, info: &AgentInfo, total: &Resources) -> AgentFields {
        let mut scratch = Vec::new();
        put_agent_fields(&mut scratch, info);
        let fields_len = scratch.len();
        put_resources(&mut scratch, OFFER_RESOURCES, total);
        self.put(&scratch, fields_len)
    }

    fn put(&mut self, encoded: &[u8], fields_len: usize) -> AgentFields {
        if self.tail.capacity() - self.tail.len() < encoded.len() {
            self.tail = BytesMut::with_capacity(ARENA_CHUNK.max(encoded.len()));
        }
        self.tail.extend_from_slice(encoded);
        self.len += encoded.len();
        self.live += encoded.len();
        AgentFields {
            bytes: self.tail.split().freeze(),
            fields_len,
        }
    }

    /// Marks an agent's space as garbage.
    pub fn release(&mut self, f: &AgentFields) {
        self.live = self.live.saturating_sub(f.bytes.len());
    }

    /// Bytes handed out, live or not.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether half the arena or more (and at least 1 MiB) is garbage.
    pub fn wants_compaction(&self) -> bool {
        let garbage = self.len - self.live;
        garbage >= 1 << 20 && garbage * 2 >= self.len
    }

    /// Lays out the live fields again, in the order given, in fresh chunks
    /// (the old ones are freed when the last offer sharing them is sent).
    /// Every live entry must be given once.
    pub fn compact<'a>(&mut self, live: impl Iterator<Item = &'a mut AgentFields>) {
        *self = FieldArena::default();
        for f in live {
            *f = self.put(&f.bytes, f.fields_len);
        }
    }
}

/// The framework id field of an offer, encoded.
pub fn framework_offer_field(framework_id: &str) -> Bytes {
    let mut buf = Vec::with_capacity(framework_id.len() + 2);
    put_string(&mut buf, OFFER_FRAMEWORK_ID, framework_id);
    Bytes::from(buf)
}

/// Offers for one framework, encoded: the body of an `Offers` message, as
/// ranges of the cycle's buffer (one per offer: its own fields, then a copy
/// of its agent's); the stream writes the ranges out one after another.
///
/// The offers of a whole allocation cycle are written into one
/// buffer of the master's, which it reuses from cycle to cycle (its memory
/// stays warm): [`EncodedOffers::push`] writes there and remembers where,
/// and [`EncodedOffers::seal`] gives the batch its share of the buffer once
/// the cycle is done. Until then the batch cannot be written out.
#[derive(Debug, Default, Clone)]
pub struct EncodedOffers {
    /// How many offers there are.
    pub count: usize,
    /// The cycle's buffer of offers (each offer's length-delimited header,
    /// id, framework id, role, its resources when they are not the agent's
    /// total, and its agent's fields); set by `seal`.
    heads: Bytes,
    /// Per offer: where it is in `heads`.
    parts: Vec<(u32, u32)>,
    /// The encoded length of the `Offers` body.
    len: usize,
    /// Whether `heads` is this batch's own copy (see [`EncodedOffers::detach`]).
    owned: bool,
}

impl EncodedOffers {
    /// Appends one offer, writing it at the end of `heads`.
    /// With `resources`, the offer carries them and the agent's fields
    /// without its total; without, the agent's total. `scratch` is a
    /// reusable buffer.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        heads: &mut BytesMut,
        scratch: &mut Vec<u8>,
        offer_prefix: &str,
        seq: u64,
        framework_field: &[u8],
        agent: &AgentFields,
        role: &str,
        resources: Option<&Resources>,
    ) {
        scratch.clear();
        let agent_part = match resources {
            Some(r) => {
                put_resources(scratch, OFFER_RESOURCES, r);
                agent.fields()
            }
            None => agent.full(),
        };
        let body = prefixed_number_len(OFFER_ID, offer_prefix, seq)
            + framework_field.len()
            + string_len(OFFER_ROLE, role)
            + scratch.len()
            + agent_part.len();
        let start = heads.len();
        put_delimited_header(heads, OFFERS_OFFERS, body);
        put_prefixed_number(heads, OFFER_ID, offer_prefix, seq);
        heads.extend_from_slice(framework_field);
        put_string(heads, OFFER_ROLE, role);
        heads.extend_from_slice(scratch);
        heads.extend_from_slice(agent_part);
        let end = heads.len();
        self.parts.push((start as u32, end as u32));
        self.len += delimited_len(OFFERS_OFFERS, body);
        self.count += 1;
    }

    /// Gives the batch the buffer its offers were written to
    /// (frozen, from the start of the cycle).
    pub fn seal(&mut self, heads: &Bytes) {
        self.heads = heads.clone();
    }

    /// Gives the batch its own copy of its offers, so that it no longer
    /// keeps the cycle's buffer alive (for a batch that waits for a slow
    /// reader). Whether it shared the buffer before.
    pub fn detach(&mut self) -> bool {
        if self.owned || self.heads.is_empty() {
            return false;
        }
        let mut own = BytesMut::with_capacity(self.len);
        let mut parts = Vec::with_capacity(self.parts.len());
        for (start, end) in &self.parts {
            let at = own.len() as u32;
            own.extend_from_slice(&self.heads[*start as usize..*end as usize]);
            parts.push((at, own.len() as u32));
        }
        self.heads = own.freeze();
        self.parts = parts;
        self.owned = true;
        true
    }

    /// The encoded length of the `Offers` message body.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Writes the body of the `Offers` message.
    ///
    /// # Panics
    /// If the batch was not sealed.
    pub fn put(&self, buf: &mut impl BufMut) {
        for (start, end) in &self.parts {
            buf.put_slice(&self.heads[*start as usize..*end as usize]);
        }
    }

    /// The offers as messages (for tests and tools; the master never needs
    /// this on its own path).
    pub fn decode(&self) -> Vec<v1::Offer> {
        let mut body = Vec::with_capacity(self.len);
        self.put(&mut body);
        v1::Offers::decode(body.as_slice())
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

    /// The length of the event's encoding.
    pub fn encoded_len(&self) -> usize {
        match self {
            OutEvent::Event(e) => e.encoded_len(),
            OutEvent::Offers(o) => delimited_len(EVENT_OFFERS, o.len()),
        }
    }

    /// Writes the event's encoding (the bytes of an `Event` message) into a
    /// growable buffer.
    pub fn encode(&self, buf: &mut impl BufMut) -> Result<(), prost::EncodeError> {
        match self {
            OutEvent::Event(e) => e.encode(buf),
            OutEvent::Offers(o) => {
                put_delimited_header(buf, EVENT_OFFERS, o.len());
                o.put(buf);
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
        // The cycle's buffer, already holding another batch's offer.
        let mut heads = BytesMut::from(&b"elsewhere"[..]);
        offers.push(
            &mut heads,
            &mut scratch,
            "m-O",
            9,
            &fw,
            &agent,
            "web",
            Some(&r),
        );
        offers.push(&mut heads, &mut scratch, "m-O", 10, &fw, &agent, "*", None);
        offers.seal(&heads.freeze());
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

        let mut event = OutEvent::Offers(offers);
        let mut bytes = Vec::new();
        event.encode(&mut bytes).unwrap();
        assert_eq!(bytes.len(), event.encoded_len());
        assert_eq!(Event::decode(bytes.as_slice()).unwrap(), event.to_event());
        // Detached, it has its own copy (without the buffer's other bytes)
        // and encodes the same.
        let OutEvent::Offers(o) = &mut event else {
            unreachable!()
        };
        assert!(o.detach());
        assert!(!o.detach());
        assert_eq!(o.heads.len(), o.len());
        let mut again = Vec::new();
        event.encode(&mut again).unwrap();
        assert_eq!(again, bytes);
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
        let expected: Vec<Vec<u8>> = live.iter().map(|f| f.full().to_vec()).collect();
        // Neighbours share a chunk.
        assert_eq!(
            live[1].full().as_ptr(),
            live[0].full().as_ptr().wrapping_add(live[0].full().len())
        );
        assert!(!arena.wants_compaction());
        // Every agent registers again: the first copies are garbage.
        for (i, f) in live.iter_mut().enumerate() {
            arena.release(f);
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
            assert_eq!(f.full(), want.as_slice());
            assert!(want.starts_with(f.fields()));
            assert!(f.fields().len() < want.len());
        }
        // Laid out in the order given (here: the reverse of the agents').
        assert_eq!(
            live[0].full().as_ptr(),
            live[1].full().as_ptr().wrapping_add(live[1].full().len())
        );
    }
}
