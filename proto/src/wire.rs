//! Hand-written protobuf encoding for the master's hot path.
//!
//! An allocation cycle turns thousands of decisions into offers. Building an
//! `Offer` message first means a dozen owned strings per offer (ids, names,
//! roles), then prost encodes it again when it is sent. Instead the master
//! writes each offer's bytes once, straight from its records, with the
//! helpers here. What they write decodes to exactly the message the
//! prost-built path would send (the tests below check it).

use prost::bytes::BufMut;
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

use crate::resources::{Resource, Resources, Value};

/// The encoded length of a length-delimited field (key, length, body).
pub fn delimited_len(tag: u32, body: usize) -> usize {
    key_len(tag) + encoded_len_varint(body as u64) + body
}

/// Writes the key and length of a length-delimited field; its body follows.
pub fn put_delimited_header(buf: &mut impl BufMut, tag: u32, body: usize) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(body as u64, buf);
}

/// The encoded length of a proto3 string field (nothing when empty).
pub fn string_len(tag: u32, s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        delimited_len(tag, s.len())
    }
}

/// Writes a proto3 string field (nothing when empty).
pub fn put_string(buf: &mut impl BufMut, tag: u32, s: &str) {
    if !s.is_empty() {
        put_delimited_header(buf, tag, s.len());
        buf.put_slice(s.as_bytes());
    }
}

/// The decimal digits of `n`, written into `scratch`.
pub fn decimal(n: u64, scratch: &mut [u8; 20]) -> &[u8] {
    let mut i = scratch.len();
    let mut n = n;
    loop {
        i -= 1;
        scratch[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &scratch[i..]
}

/// Writes a string field whose value is `prefix` followed by the decimal
/// digits of `n` (ids like `<master id>-O42`), without building the string.
pub fn put_prefixed_number(buf: &mut impl BufMut, tag: u32, prefix: &str, n: u64) {
    let mut scratch = [0u8; 20];
    let digits = decimal(n, &mut scratch);
    put_delimited_header(buf, tag, prefix.len() + digits.len());
    buf.put_slice(prefix.as_bytes());
    buf.put_slice(digits);
}

/// The encoded length of [`put_prefixed_number`]'s field.
pub fn prefixed_number_len(tag: u32, prefix: &str, n: u64) -> usize {
    let mut scratch = [0u8; 20];
    delimited_len(tag, prefix.len() + decimal(n, &mut scratch).len())
}

fn varint_field_len(tag: u32, v: u64) -> usize {
    if v == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(v)
    }
}

fn put_varint_field(buf: &mut impl BufMut, tag: u32, v: u64) {
    if v != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(v, buf);
    }
}

/// `agora.v1.Range`'s body length.
fn range_len(begin: u64, end: u64) -> usize {
    varint_field_len(1, begin) + varint_field_len(2, end)
}

/// `agora.v1.Resource`'s body length (fields as `Resources::to_proto` sets
/// them: name, type unless SCALAR, scalar, ranges, set, role).
fn resource_len(r: &Resource) -> usize {
    let mut n = string_len(1, &r.name) + string_len(6, &r.role);
    match &r.value {
        Value::Scalar(s) => {
            if s.as_f64() != 0.0 {
                n += key_len(3) + 8;
            }
        }
        Value::Ranges(rs) => {
            n += varint_field_len(2, 1);
            for &(b, e) in rs.ranges() {
                n += delimited_len(4, range_len(b, e));
            }
        }
        Value::Set(items) => {
            n += varint_field_len(2, 2);
            for item in items {
                n += delimited_len(5, item.len());
            }
        }
    }
    n
}

fn put_resource(buf: &mut impl BufMut, r: &Resource) {
    put_string(buf, 1, &r.name);
    match &r.value {
        Value::Scalar(s) => {
            let x = s.as_f64();
            if x != 0.0 {
                encode_key(3, WireType::SixtyFourBit, buf);
                buf.put_f64_le(x);
            }
        }
        Value::Ranges(rs) => {
            put_varint_field(buf, 2, 1);
            for &(b, e) in rs.ranges() {
                put_delimited_header(buf, 4, range_len(b, e));
                put_varint_field(buf, 1, b);
                put_varint_field(buf, 2, e);
            }
        }
        Value::Set(items) => {
            put_varint_field(buf, 2, 2);
            for item in items {
                put_delimited_header(buf, 5, item.len());
                buf.put_slice(item.as_bytes());
            }
        }
    }
    put_string(buf, 6, &r.role);
}

/// The encoded length of `resources` as the repeated `Resource` field `tag`.
pub fn resources_len(tag: u32, resources: &Resources) -> usize {
    resources
        .iter()
        .map(|r| delimited_len(tag, resource_len(r)))
        .sum()
}

/// Writes `resources` as the repeated `Resource` field `tag`.
pub fn put_resources(buf: &mut impl BufMut, tag: u32, resources: &Resources) {
    for r in resources.iter() {
        put_delimited_header(buf, tag, resource_len(r));
        put_resource(buf, r);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1;
    use proptest::prelude::*;
    use prost::Message;

    /// A message with `resources` as field 5 and an id as field 1, like `Offer`.
    fn encode_by_hand(prefix: &str, n: u64, r: &Resources) -> Vec<u8> {
        let mut buf = Vec::new();
        put_prefixed_number(&mut buf, 1, prefix, n);
        put_resources(&mut buf, 5, r);
        assert_eq!(
            buf.len(),
            prefixed_number_len(1, prefix, n) + resources_len(5, r)
        );
        buf
    }

    #[test]
    fn decodes_like_the_prost_message() {
        let r = Resources::parse(
            "cpus:4;mem(web):8192.5;disk:0.001;ports:[0-0,31000-32000];s:{a,b};ports(web):[7-9]",
        )
        .unwrap();
        let bytes = encode_by_hand("m-O", 42, &r);
        let offer = v1::Offer::decode(bytes.as_slice()).unwrap();
        assert_eq!(offer.id, "m-O42");
        assert_eq!(offer.resources, r.to_proto());
        assert_eq!(Resources::from_proto(&offer.resources).unwrap(), r);
    }

    #[test]
    fn numbers() {
        let mut s = [0u8; 20];
        assert_eq!(decimal(0, &mut s), b"0");
        assert_eq!(decimal(u64::MAX, &mut s), b"18446744073709551615");
    }

    fn arb_resources() -> impl Strategy<Value = Resources> {
        let item = (
            prop::sample::select(vec!["cpus", "mem", "ports", "gpus"]),
            prop::sample::select(vec!["*", "web"]),
            0u32..100_000,
            prop::collection::vec((0u64..70_000, 0u64..50), 0..3),
        )
            .prop_map(|(name, role, milli, ranges)| {
                let text = if name == "ports" {
                    let rs: Vec<String> = ranges
                        .iter()
                        .map(|(b, l)| format!("{b}-{}", b + l))
                        .collect();
                    format!("{name}({role}):[{}]", rs.join(","))
                } else {
                    format!("{name}({role}):{}", milli as f64 / 1000.0)
                };
                text.replace("(*)", "")
            });
        prop::collection::vec(item, 0..6)
            .prop_map(|items| Resources::parse(&items.join(";")).unwrap())
    }

    proptest! {
        #[test]
        fn any_resources_decode_as_to_proto(r in arb_resources(), n in any::<u64>()) {
            let bytes = encode_by_hand("abc-O", n, &r);
            let offer = v1::Offer::decode(bytes.as_slice()).unwrap();
            prop_assert_eq!(offer.id, format!("abc-O{n}"));
            prop_assert_eq!(offer.resources, r.to_proto());
        }
    }
}
