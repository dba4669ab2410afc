//! One request's document as a tree whose every node lives in the request's epoch.
//!
//! serde_json parses the text and drives [`NodeSeed`] (a `DeserializeSeed` and `Visitor`), which
//! builds the tree straight into `allocator_api2` vectors allocated on an [`Epoch`]: there is no
//! JSON parser of ours and no intermediate `serde_json::Value`. [`walk`] then counts every
//! object key in a `hashbrown` map allocated in the same epoch. [`reference()`] computes the same
//! figures on a `serde_json::Value` with std collections; the tests check the two agree.
//!
//! Allocation failures inside the epoch (a CLOSING or stale epoch, an exhausted reservation) are
//! reported as errors ([`AllocFailed`], or a serde error while parsing) instead of aborting: every
//! growth goes through `try_reserve`.

use std::fmt;

use allocator_api2::vec::Vec as AVec;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use temporal_slab::Epoch;

/// A vector allocated in an epoch.
pub type EVec<'e, T> = AVec<T, &'e Epoch<'e>>;

/// A JSON value whose every byte lives in an epoch (vectors over 768 bytes go to the system
/// allocator, as [`Epoch`] does for any large request).
///
/// Object members keep the document's order, and duplicate keys are all kept (serde_json's
/// `Value` keeps only the last one).
#[derive(Debug)]
pub enum Node<'e> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// Any number, as `f64` (integers beyond 2^53 lose precision, as `Value::as_f64` does).
    Number(f64),
    /// A string, UTF-8 bytes.
    String(EVec<'e, u8>),
    /// An array.
    Array(EVec<'e, Node<'e>>),
    /// An object: (key bytes, value) in document order.
    Object(EVec<'e, (EVec<'e, u8>, Node<'e>)>),
}

/// An allocation in the epoch failed (the epoch is CLOSING or stale, or memory ran out).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("allocation in the request's epoch failed")]
pub struct AllocFailed;

fn push<'e, T>(v: &mut EVec<'e, T>, item: T) -> Result<(), AllocFailed> {
    v.try_reserve(1).map_err(|_| AllocFailed)?;
    v.push(item);
    Ok(())
}

fn bytes_in<'e>(s: &[u8], epoch: &'e Epoch<'e>) -> Result<EVec<'e, u8>, AllocFailed> {
    let mut v = EVec::new_in(epoch);
    v.try_reserve_exact(s.len()).map_err(|_| AllocFailed)?;
    v.extend_from_slice(s);
    Ok(v)
}

/// Builds a [`Node`] in `self.0`'s epoch from any serde deserializer (serde_json's in the demo).
#[derive(Clone, Copy, Debug)]
pub struct NodeSeed<'e>(pub &'e Epoch<'e>);

impl<'de, 'e> DeserializeSeed<'de> for NodeSeed<'e> {
    type Value = Node<'e>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Node<'e>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, 'e> Visitor<'de> for NodeSeed<'e> {
    type Value = Node<'e>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node<'e>, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node<'e>, E> {
        Ok(Node::Number(v as f64))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node<'e>, E> {
        Ok(Node::Number(v as f64))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node<'e>, E> {
        Ok(Node::Number(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node<'e>, E> {
        bytes_in(v.as_bytes(), self.0)
            .map(Node::String)
            .map_err(E::custom)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node<'e>, E> {
        Ok(Node::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node<'e>, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Node<'e>, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'e>, A::Error> {
        let mut items = EVec::new_in(self.0);
        if let Some(n) = seq.size_hint() {
            items
                .try_reserve(n)
                .map_err(|_| de::Error::custom(AllocFailed))?;
        }
        while let Some(item) = seq.next_element_seed(self)? {
            push(&mut items, item).map_err(de::Error::custom)?;
        }
        Ok(Node::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'e>, A::Error> {
        let mut fields = EVec::new_in(self.0);
        while let Some(key) = map.next_key_seed(KeySeed(self.0))? {
            let value = map.next_value_seed(self)?;
            push(&mut fields, (key, value)).map_err(de::Error::custom)?;
        }
        Ok(Node::Object(fields))
    }
}

/// Builds an object key (string bytes) in the epoch.
#[derive(Clone, Copy)]
struct KeySeed<'e>(&'e Epoch<'e>);

impl<'de, 'e> DeserializeSeed<'de> for KeySeed<'e> {
    type Value = EVec<'e, u8>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<EVec<'e, u8>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'e> Visitor<'_> for KeySeed<'e> {
    type Value = EVec<'e, u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<EVec<'e, u8>, E> {
        bytes_in(v.as_bytes(), self.0).map_err(E::custom)
    }
}

/// Parses one JSON document (the whole of `text`, surrounding whitespace allowed) into a tree in
/// `epoch`.
///
/// # Errors
/// serde_json's error for malformed JSON (with line and column inside `text`) or for a failed
/// allocation in the epoch.
pub fn parse_in<'e>(text: &[u8], epoch: &'e Epoch<'e>) -> Result<Node<'e>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let node = NodeSeed(epoch).deserialize(&mut de)?;
    de.end()?;
    Ok(node)
}

/// What walking one document found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// JSON values of any kind (containers included).
    pub values: u64,
    /// Object keys, repeats included.
    pub keys: u64,
    /// Distinct object keys.
    pub distinct_keys: u64,
    /// Occurrences of the most frequent key.
    pub top_key_count: u64,
    /// Bytes of all string values (keys excluded).
    pub string_bytes: u64,
    /// Finite numbers.
    pub numbers: u64,
    /// `true` values.
    pub trues: u64,
}

impl Counts {
    /// Adds `other`'s sums to these (`distinct_keys` and `top_key_count` take the maximum).
    pub fn accumulate(&mut self, other: &Counts) {
        self.values += other.values;
        self.keys += other.keys;
        self.distinct_keys = self.distinct_keys.max(other.distinct_keys);
        self.top_key_count = self.top_key_count.max(other.top_key_count);
        self.string_bytes += other.string_bytes;
        self.numbers += other.numbers;
        self.trues += other.trues;
    }
}

/// Occurrences per object key, in a map allocated in the epoch; keys borrow the tree.
pub type KeyCounts<'t, 'e> =
    hashbrown::HashMap<&'t [u8], u64, hashbrown::DefaultHashBuilder, &'e Epoch<'e>>;

/// The result of [`walk`]: the counts and the per-key map they summarise.
#[derive(Debug)]
pub struct Walk<'t, 'e> {
    /// The figures.
    pub counts: Counts,
    /// Occurrences of every object key.
    pub per_key: KeyCounts<'t, 'e>,
}

/// Walks the tree (iteratively, with a stack in the epoch), counting values and every object
/// key in a map allocated in `epoch`.
///
/// # Errors
/// [`AllocFailed`] when the epoch refuses an allocation.
pub fn walk<'t, 'e>(root: &'t Node<'e>, epoch: &'e Epoch<'e>) -> Result<Walk<'t, 'e>, AllocFailed> {
    let mut per_key: KeyCounts<'t, 'e> =
        hashbrown::HashMap::with_hasher_in(hashbrown::DefaultHashBuilder::default(), epoch);
    let mut counts = Counts::default();
    let mut stack: EVec<'e, &'t Node<'e>> = EVec::new_in(epoch);
    push(&mut stack, root)?;
    while let Some(node) = stack.pop() {
        counts.values += 1;
        match node {
            Node::Array(items) => {
                stack.try_reserve(items.len()).map_err(|_| AllocFailed)?;
                stack.extend(items.iter());
            }
            Node::Object(fields) => {
                stack.try_reserve(fields.len()).map_err(|_| AllocFailed)?;
                for (k, v) in fields.iter() {
                    counts.keys += 1;
                    per_key.try_reserve(1).map_err(|_| AllocFailed)?;
                    *per_key.entry(k.as_slice()).or_insert(0) += 1;
                    stack.push(v);
                }
            }
            Node::String(bytes) => counts.string_bytes += bytes.len() as u64,
            Node::Number(n) => counts.numbers += u64::from(n.is_finite()),
            Node::Bool(b) => counts.trues += u64::from(*b),
            Node::Null => {}
        }
    }
    counts.distinct_keys = per_key.len() as u64;
    counts.top_key_count = per_key.values().copied().max().unwrap_or(0);
    Ok(Walk { counts, per_key })
}

/// [`walk`]'s counts; the per-key map is dropped (freed in the epoch) before returning.
///
/// # Errors
/// As [`walk`].
pub fn count<'e>(root: &Node<'e>, epoch: &'e Epoch<'e>) -> Result<Counts, AllocFailed> {
    walk(root, epoch).map(|w| w.counts)
}

/// The reference: the same figures computed on serde_json's own tree with std collections.
/// Returns the counts and the occurrences per key.
pub fn reference(value: &serde_json::Value) -> (Counts, std::collections::HashMap<String, u64>) {
    use serde_json::Value;
    let mut per_key = std::collections::HashMap::<String, u64>::new();
    let mut counts = Counts::default();
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        counts.values += 1;
        match v {
            Value::Array(items) => stack.extend(items.iter()),
            Value::Object(map) => {
                for (k, v) in map {
                    counts.keys += 1;
                    *per_key.entry(k.clone()).or_insert(0) += 1;
                    stack.push(v);
                }
            }
            Value::String(text) => counts.string_bytes += text.len() as u64,
            Value::Number(n) => {
                counts.numbers += u64::from(n.as_f64().unwrap_or(f64::NAN).is_finite())
            }
            Value::Bool(b) => counts.trues += u64::from(*b),
            Value::Null => {}
        }
    }
    counts.distinct_keys = per_key.len() as u64;
    counts.top_key_count = per_key.values().copied().max().unwrap_or(0);
    (counts, per_key)
}
