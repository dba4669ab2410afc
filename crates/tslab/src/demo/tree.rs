//! One request's document as a tree whose every node lives in one allocator: the request's
//! epoch in `tslab demo`, or any other `allocator_api2` allocator (`bench demo` builds the same
//! tree in a bumpalo arena per request).
//!
//! serde_json parses the text and drives [`NodeSeed`] (a `DeserializeSeed` and `Visitor`), which
//! builds the tree straight into `allocator_api2` vectors allocated on the allocator `A` (an
//! [`Epoch`] in the demo): there is no JSON parser of ours and no intermediate
//! `serde_json::Value`. [`walk`] then counts every object key in a `hashbrown` map allocated in
//! the same allocator. [`reference()`] computes the same figures on a `serde_json::Value` with std
//! collections, and [`count_value`] the same without copying the keys; the tests check they
//! agree.
//!
//! The tree is generic over the allocator (`Node<A: Allocator + Copy>`, `A` a reference such as
//! `&Epoch` or `&bumpalo::Bump`): each allocator gets its own monomorphised code, so the demo's
//! epoch tree costs what it cost when it named `&Epoch` directly.
//!
//! Allocation failures inside the epoch (a CLOSING or stale epoch, an exhausted reservation) are
//! reported as errors ([`AllocFailed`], or a serde error while parsing) instead of aborting: every
//! growth goes through `try_reserve`.

use std::fmt;

use allocator_api2::alloc::Allocator;
use allocator_api2::vec::Vec as AVec;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use temporal_slab::Epoch;

/// A vector allocated in an epoch.
pub type EVec<'e, T> = AVec<T, &'e Epoch<'e>>;

/// The demo's tree: every node in an epoch.
pub type EpochNode<'e> = Node<&'e Epoch<'e>>;

/// A JSON value whose every byte lives in the allocator `A` (with an [`Epoch`], vectors over
/// 768 bytes go to the system allocator, as [`Epoch`] does for any large request).
///
/// Object members keep the document's order, and duplicate keys are all kept (serde_json's
/// `Value` keeps only the last one).
#[derive(Debug)]
pub enum Node<A: Allocator + Copy> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// Any number, as `f64` (integers beyond 2^53 lose precision, as `Value::as_f64` does).
    Number(f64),
    /// A string, UTF-8 bytes.
    String(AVec<u8, A>),
    /// An array.
    Array(AVec<Node<A>, A>),
    /// An object: (key bytes, value) in document order.
    Object(AVec<(AVec<u8, A>, Node<A>), A>),
}

/// An allocation in the epoch (or arena) failed (the epoch is CLOSING or stale, or memory ran
/// out).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("allocation in the request's epoch failed")]
pub struct AllocFailed;

fn push<T, A: Allocator>(v: &mut AVec<T, A>, item: T) -> Result<(), AllocFailed> {
    v.try_reserve(1).map_err(|_| AllocFailed)?;
    v.push(item);
    Ok(())
}

fn bytes_in<A: Allocator>(s: &[u8], alloc: A) -> Result<AVec<u8, A>, AllocFailed> {
    let mut v = AVec::new_in(alloc);
    v.try_reserve_exact(s.len()).map_err(|_| AllocFailed)?;
    v.extend_from_slice(s);
    Ok(v)
}

/// Builds a [`Node`] in the allocator `self.0` (an epoch in the demo) from any serde
/// deserializer (serde_json's in the demo).
#[derive(Clone, Copy, Debug)]
pub struct NodeSeed<A>(pub A);

impl<'de, A: Allocator + Copy> DeserializeSeed<'de> for NodeSeed<A> {
    type Value = Node<A>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Node<A>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, A: Allocator + Copy> Visitor<'de> for NodeSeed<A> {
    type Value = Node<A>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Node<A>, E> {
        Ok(Node::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Node<A>, E> {
        Ok(Node::Number(v as f64))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Node<A>, E> {
        Ok(Node::Number(v as f64))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Node<A>, E> {
        Ok(Node::Number(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Node<A>, E> {
        bytes_in(v.as_bytes(), self.0)
            .map(Node::String)
            .map_err(E::custom)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Node<A>, E> {
        Ok(Node::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Node<A>, E> {
        Ok(Node::Null)
    }

    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Node<A>, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Node<A>, S::Error> {
        let mut items = AVec::new_in(self.0);
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

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Node<A>, M::Error> {
        let mut fields = AVec::new_in(self.0);
        while let Some(key) = map.next_key_seed(KeySeed(self.0))? {
            let value = map.next_value_seed(self)?;
            push(&mut fields, (key, value)).map_err(de::Error::custom)?;
        }
        Ok(Node::Object(fields))
    }
}

/// Builds an object key (string bytes) in the epoch.
#[derive(Clone, Copy)]
struct KeySeed<A>(A);

impl<'de, A: Allocator + Copy> DeserializeSeed<'de> for KeySeed<A> {
    type Value = AVec<u8, A>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<AVec<u8, A>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<A: Allocator + Copy> Visitor<'_> for KeySeed<A> {
    type Value = AVec<u8, A>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<AVec<u8, A>, E> {
        bytes_in(v.as_bytes(), self.0).map_err(E::custom)
    }
}

/// Parses one JSON document (the whole of `text`, surrounding whitespace allowed) into a tree in
/// `alloc` (the request's epoch in the demo).
///
/// # Errors
/// serde_json's error for malformed JSON (with line and column inside `text`) or for a failed
/// allocation in the epoch.
pub fn parse_in<A: Allocator + Copy>(text: &[u8], alloc: A) -> Result<Node<A>, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let node = NodeSeed(alloc).deserialize(&mut de)?;
    de.end()?;
    Ok(node)
}

/// What walking one document found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// Occurrences per object key, in a map allocated in the tree's allocator; keys borrow the tree.
pub type KeyCounts<'t, A> = hashbrown::HashMap<&'t [u8], u64, hashbrown::DefaultHashBuilder, A>;

/// The result of [`walk`]: the counts and the per-key map they summarise.
#[derive(Debug)]
pub struct Walk<'t, A: Allocator> {
    /// The figures.
    pub counts: Counts,
    /// Occurrences of every object key.
    pub per_key: KeyCounts<'t, A>,
}

/// Walks the tree (iteratively, with a stack in `alloc`), counting values and every object key in
/// a map allocated in `alloc` (the tree's epoch in the demo).
///
/// # Errors
/// [`AllocFailed`] when the allocator refuses an allocation.
pub fn walk<'t, A: Allocator + Copy>(
    root: &'t Node<A>,
    alloc: A,
) -> Result<Walk<'t, A>, AllocFailed> {
    let mut per_key: KeyCounts<'t, A> =
        hashbrown::HashMap::with_hasher_in(hashbrown::DefaultHashBuilder::default(), alloc);
    let mut counts = Counts::default();
    let mut stack: AVec<&'t Node<A>, A> = AVec::new_in(alloc);
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

/// [`walk`]'s counts; the per-key map is dropped (freed in `alloc`) before returning.
///
/// # Errors
/// As [`walk`].
pub fn count<A: Allocator + Copy>(root: &Node<A>, alloc: A) -> Result<Counts, AllocFailed> {
    walk(root, alloc).map(|w| w.counts)
}

/// The reference: the same figures computed on serde_json's own tree with std collections.
/// Returns the counts and the occurrences per key.
pub fn reference(value: &serde_json::Value) -> (Counts, std::collections::HashMap<String, u64>) {
    let mut per_key = std::collections::HashMap::<&str, u64>::new();
    let counts = count_value_into(value, &mut per_key);
    let per_key = per_key
        .into_iter()
        .map(|(k, n)| (k.to_owned(), n))
        .collect();
    (counts, per_key)
}

/// The same figures as [`reference()`], on serde_json's tree with std collections, without
/// copying the keys: the per-key map (a std `HashMap` with hashbrown's default hasher, the hasher
/// [`walk`] uses, so the two differ only in where they allocate) borrows them from `value`. This
/// is what `tslab demo --alloc global` and `bench demo`'s `serde_json::Value` peers count with.
pub fn count_value(value: &serde_json::Value) -> Counts {
    let mut per_key = std::collections::HashMap::<&str, u64, _>::with_hasher(
        hashbrown::DefaultHashBuilder::default(),
    );
    count_value_into(value, &mut per_key)
}

/// Walks `value` once, counting into `per_key` (occurrences per key, borrowed from `value`).
fn count_value_into<'v, S: std::hash::BuildHasher>(
    value: &'v serde_json::Value,
    per_key: &mut std::collections::HashMap<&'v str, u64, S>,
) -> Counts {
    use serde_json::Value;
    let mut counts = Counts::default();
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        counts.values += 1;
        match v {
            Value::Array(items) => stack.extend(items.iter()),
            Value::Object(map) => {
                for (k, v) in map {
                    counts.keys += 1;
                    *per_key.entry(k.as_str()).or_insert(0) += 1;
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
    counts
}
