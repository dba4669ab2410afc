//! The request workload of the real-input test (`tslab demo` runs the full version): one JSON
//! document is one request; its tree is copied into objects allocated in the request's epoch
//! (strings, arrays and objects as `allocator_api2` vectors on an [`Epoch`]), walked to count
//! every object key in an epoch-allocated `hashbrown` map, then dropped. Parsing is serde_json's.

use allocator_api2::vec::Vec as EVec;
use hashbrown::HashMap;
use temporal_slab::Epoch;

/// A JSON value whose every byte lives in an epoch.
pub enum Node<'e> {
    Null,
    Bool(bool),
    Number(f64),
    String(EVec<u8, &'e Epoch<'e>>),
    Array(EVec<Node<'e>, &'e Epoch<'e>>),
    Object(EVec<(EVec<u8, &'e Epoch<'e>>, Node<'e>), &'e Epoch<'e>>),
}

fn bytes<'e>(s: &str, epoch: &'e Epoch<'e>) -> EVec<u8, &'e Epoch<'e>> {
    let mut v = EVec::with_capacity_in(s.len(), epoch);
    v.extend_from_slice(s.as_bytes());
    v
}

/// Copies `value` into the epoch.
pub fn build<'e>(value: &serde_json::Value, epoch: &'e Epoch<'e>) -> Node<'e> {
    use serde_json::Value;
    match value {
        Value::Null => Node::Null,
        Value::Bool(b) => Node::Bool(*b),
        Value::Number(n) => Node::Number(n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => Node::String(bytes(s, epoch)),
        Value::Array(items) => {
            let mut v = EVec::with_capacity_in(items.len(), epoch);
            v.extend(items.iter().map(|i| build(i, epoch)));
            Node::Array(v)
        }
        Value::Object(map) => {
            let mut v = EVec::with_capacity_in(map.len(), epoch);
            v.extend(map.iter().map(|(k, i)| (bytes(k, epoch), build(i, epoch))));
            Node::Object(v)
        }
    }
}

/// What walking one request's tree found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// JSON values of any kind.
    pub values: u64,
    /// Object keys (with repeats).
    pub keys: u64,
    /// Distinct object keys.
    pub distinct_keys: u64,
    /// Occurrences of the most frequent key.
    pub top_key_count: u64,
    /// Bytes of all string values.
    pub string_bytes: u64,
    /// Finite numbers.
    pub numbers: u64,
    /// `true` values.
    pub trues: u64,
}

/// Walks the tree, counting keys in a map allocated in the same epoch.
pub fn count<'e>(root: &Node<'e>, epoch: &'e Epoch<'e>) -> Counts {
    let mut per_key: HashMap<&[u8], u64, _, &'e Epoch<'e>> =
        HashMap::with_hasher_in(hashbrown::DefaultHashBuilder::default(), epoch);
    let mut counts = Counts::default();
    let mut stack: EVec<&Node<'e>, &'e Epoch<'e>> = EVec::new_in(epoch);
    stack.push(root);
    while let Some(node) = stack.pop() {
        counts.values += 1;
        match node {
            Node::Array(items) => stack.extend(items.iter()),
            Node::Object(fields) => {
                for (k, v) in fields.iter() {
                    counts.keys += 1;
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
    counts
}

/// The same counts computed on serde_json's own tree, with std collections: the reference.
pub fn reference_counts(value: &serde_json::Value) -> Counts {
    let mut per_key = std::collections::HashMap::<&str, u64>::new();
    let mut counts = Counts::default();
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        counts.values += 1;
        match v {
            serde_json::Value::Array(items) => stack.extend(items.iter()),
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    counts.keys += 1;
                    *per_key.entry(k.as_str()).or_insert(0) += 1;
                    stack.push(v);
                }
            }
            serde_json::Value::String(text) => counts.string_bytes += text.len() as u64,
            serde_json::Value::Number(n) => {
                counts.numbers += u64::from(n.as_f64().unwrap_or(f64::NAN).is_finite())
            }
            serde_json::Value::Bool(b) => counts.trues += u64::from(*b),
            serde_json::Value::Null => {}
        }
    }
    counts.distinct_keys = per_key.len() as u64;
    counts.top_key_count = per_key.values().copied().max().unwrap_or(0);
    counts
}
