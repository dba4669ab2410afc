//! Schema fingerprints from layouts, not type names.
//!
//! A block's payload is described by what a reader in any language needs to decode it: per
//! zone (the slots, and the flexible zone), the zone's size and alignment and its fields, each a
//! name, a scalar type, a byte offset and an element count. That description has one canonical
//! text ([`SchemaLayout::canonical`]), and the **fingerprint** is BLAKE2b-256 of that text,
//! written `DHS01_<64 hex digits>`: a scheme version, as ROS 2's REP-2011 type hashes
//! (`RIHS01_...`) carry one, so a later scheme can change the text without two versions ever
//! comparing equal by accident.
//!
//! Two programs agree on a fingerprint when they describe the same bytes: the same fields at the
//! same offsets with the same types, in a zone of the same size and alignment. Type names,
//! module paths, compilers and languages do not enter it. A Rust `#[repr(C)]` [`bytemuck::Pod`]
//! struct gets its layout from [`describe!`](crate::describe) (offsets from `core::mem::offset_of!`); a
//! hand-written [`ZoneLayout`] of the same fields (what a numpy dtype gives) has the same
//! fingerprint.
//!
//! # The canonical text (scheme 1)
//! ```text
//! datahub-schema 1
//! zone slot size=24 align=8
//! x:f64:0:8
//! y:f64:8:8
//! ids:u32:16:8:2
//! ```
//! One header line; per zone present (`slot` first, then `flex`), a `zone` line and its fields
//! in offset order, one per line as `name:type:offset:size` with `:count` appended for an array
//! (count > 1); `size` is the field's bytes (element size × count). Every line ends with `\n`.
//! Types: `u8 i8 u16 i16 u32 i32 u64 i64 f32 f64` (little endian, as DataHub is). Nested structs
//! are flattened with dotted names (`pose.x`).

use std::fmt;

use blake2::digest::consts::U32;
use blake2::{Blake2b, Digest};

/// The first line of every canonical text: the scheme and its version.
pub const SCHEME: &str = "datahub-schema 1";
/// The prefix of a fingerprint's text form (scheme version 01).
pub const FINGERPRINT_PREFIX: &str = "DHS01_";
/// Longest field name, bytes.
pub const MAX_FIELD_NAME: usize = 128;
/// Most fields in one zone.
pub const MAX_FIELDS: usize = 4096;

/// A field's element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scalar {
    /// `u8` (also raw bytes).
    U8,
    /// `i8`.
    I8,
    /// `u16`.
    U16,
    /// `i16`.
    I16,
    /// `u32`.
    U32,
    /// `i32`.
    I32,
    /// `u64`.
    U64,
    /// `i64`.
    I64,
    /// `f32`, IEEE 754 binary32.
    F32,
    /// `f64`, IEEE 754 binary64.
    F64,
}

impl Scalar {
    /// Every scalar, in the order of their names in the canonical text's list.
    pub const ALL: [Scalar; 10] = [
        Scalar::U8,
        Scalar::I8,
        Scalar::U16,
        Scalar::I16,
        Scalar::U32,
        Scalar::I32,
        Scalar::U64,
        Scalar::I64,
        Scalar::F32,
        Scalar::F64,
    ];

    /// The name in the canonical text (`u8`, ..., `f64`).
    pub fn name(self) -> &'static str {
        match self {
            Scalar::U8 => "u8",
            Scalar::I8 => "i8",
            Scalar::U16 => "u16",
            Scalar::I16 => "i16",
            Scalar::U32 => "u32",
            Scalar::I32 => "i32",
            Scalar::U64 => "u64",
            Scalar::I64 => "i64",
            Scalar::F32 => "f32",
            Scalar::F64 => "f64",
        }
    }

    /// Size in bytes, which is also its alignment in a `#[repr(C)]` layout.
    pub fn size(self) -> u64 {
        match self {
            Scalar::U8 | Scalar::I8 => 1,
            Scalar::U16 | Scalar::I16 => 2,
            Scalar::U32 | Scalar::I32 | Scalar::F32 => 4,
            Scalar::U64 | Scalar::I64 | Scalar::F64 => 8,
        }
    }

    /// The scalar named `name` in the canonical text.
    pub fn from_name(name: &str) -> Option<Scalar> {
        Scalar::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// One field of a zone.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Field {
    /// Name: ASCII letters, digits, `_` and `.` (for flattened nesting), not starting with a
    /// digit or `.`, at most [`MAX_FIELD_NAME`] bytes.
    pub name: String,
    /// Element type.
    pub ty: Scalar,
    /// Byte offset of the first element in the zone.
    pub offset: u64,
    /// Elements (1 for a scalar field, N for `[T; N]`).
    pub count: u64,
}

impl Field {
    /// Bytes the field covers: element size × count.
    pub fn size(&self) -> u64 {
        self.ty.size() * self.count
    }
}

/// Why a layout was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// A field name is empty, too long, or has a character outside `[A-Za-z0-9_.]` (or starts
    /// with a digit or `.`).
    #[error("field name {0:?} is not a valid field name")]
    BadName(String),
    /// Two fields have one name.
    #[error("field {0:?} appears twice")]
    DuplicateName(String),
    /// A field's count is 0, or its bytes reach past the zone.
    #[error(
        "field {name:?} (offset {offset}, {size} bytes) does not fit in a zone of {zone} bytes"
    )]
    OutOfZone {
        /// The field.
        name: String,
        /// Its offset.
        offset: u64,
        /// Its size.
        size: u64,
        /// The zone's size.
        zone: u64,
    },
    /// A field is not aligned to its element size (`#[repr(C)]` packing).
    #[error("field {name:?} at offset {offset} is not aligned to its {align}-byte type")]
    Misaligned {
        /// The field.
        name: String,
        /// Its offset.
        offset: u64,
        /// Its element size.
        align: u64,
    },
    /// Two fields share bytes.
    #[error("fields {0:?} and {1:?} overlap")]
    Overlap(String, String),
    /// The zone's alignment is not a power of two, is below a field's, or the size is not a
    /// multiple of it; or the zone is empty.
    #[error("zone of {size} bytes aligned to {align} is not a valid repr(C) zone")]
    BadZone {
        /// Zone size.
        size: u64,
        /// Zone alignment.
        align: u64,
    },
    /// More than [`MAX_FIELDS`] fields.
    #[error("more than {MAX_FIELDS} fields")]
    TooManyFields,
    /// A described type's fields do not cover it (a field was left out of [`describe!`](crate::describe)).
    #[error("the fields cover {covered} of the type's {size} bytes (a field is missing)")]
    Incomplete {
        /// Bytes the fields cover.
        covered: u64,
        /// The type's size.
        size: u64,
    },
}

/// The layout of one zone: its size, alignment and fields. Built with [`ZoneLayout::new`] and
/// [`ZoneLayout::field`] / [`ZoneLayout::array`], checked by [`ZoneLayout::check`] (which
/// [`SchemaLayout::fingerprint`] and the canonical text require).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ZoneLayout {
    /// Zone size in bytes (`size_of::<T>()` for a struct).
    pub size: u64,
    /// Zone alignment in bytes (`align_of::<T>()`).
    pub align: u64,
    /// Fields, in any order (the canonical text sorts them by offset).
    pub fields: Vec<Field>,
}

impl ZoneLayout {
    /// An empty zone of `size` bytes aligned to `align`.
    pub fn new(size: u64, align: u64) -> ZoneLayout {
        ZoneLayout {
            size,
            align,
            fields: Vec::new(),
        }
    }

    /// Adds a scalar field.
    #[must_use]
    pub fn field(self, name: &str, ty: Scalar, offset: u64) -> ZoneLayout {
        self.array(name, ty, offset, 1)
    }

    /// Adds an array field of `count` elements.
    #[must_use]
    pub fn array(mut self, name: &str, ty: Scalar, offset: u64, count: u64) -> ZoneLayout {
        self.fields.push(Field {
            name: name.to_owned(),
            ty,
            offset,
            count,
        });
        self
    }

    /// Checks the layout: valid unique names, every field inside the zone, aligned to its
    /// element size, no two overlapping, a power-of-two zone alignment at least every field's,
    /// and a size that is a non-zero multiple of it.
    ///
    /// # Errors
    /// The first [`LayoutError`] found.
    pub fn check(&self) -> Result<(), LayoutError> {
        if self.fields.len() > MAX_FIELDS {
            return Err(LayoutError::TooManyFields);
        }
        let bad_zone = LayoutError::BadZone {
            size: self.size,
            align: self.align,
        };
        if self.size == 0 || !self.align.is_power_of_two() || self.size % self.align != 0 {
            return Err(bad_zone);
        }
        let mut names = std::collections::HashSet::new();
        for f in &self.fields {
            if !valid_name(&f.name) {
                return Err(LayoutError::BadName(f.name.clone()));
            }
            if !names.insert(f.name.as_str()) {
                return Err(LayoutError::DuplicateName(f.name.clone()));
            }
            let end =
                f.ty.size()
                    .checked_mul(f.count)
                    .and_then(|n| n.checked_add(f.offset));
            if f.count == 0 || end.is_none_or(|e| e > self.size) {
                return Err(LayoutError::OutOfZone {
                    name: f.name.clone(),
                    offset: f.offset,
                    size: f.ty.size().saturating_mul(f.count),
                    zone: self.size,
                });
            }
            if f.offset % f.ty.size() != 0 {
                return Err(LayoutError::Misaligned {
                    name: f.name.clone(),
                    offset: f.offset,
                    align: f.ty.size(),
                });
            }
            if f.ty.size() > self.align {
                return Err(bad_zone);
            }
        }
        let sorted = self.sorted();
        for w in sorted.windows(2) {
            if w[0].offset + w[0].size() > w[1].offset {
                return Err(LayoutError::Overlap(w[0].name.clone(), w[1].name.clone()));
            }
        }
        Ok(())
    }

    /// Bytes covered by fields (padding excluded).
    pub fn covered(&self) -> u64 {
        self.fields.iter().map(Field::size).sum()
    }

    fn sorted(&self) -> Vec<&Field> {
        let mut v: Vec<&Field> = self.fields.iter().collect();
        v.sort_by_key(|f| (f.offset, f.name.as_str()));
        v
    }

    fn write_canonical(&self, zone: &str, out: &mut String) {
        use std::fmt::Write as _;
        // Writing to a String cannot fail.
        let _ = writeln!(out, "zone {zone} size={} align={}", self.size, self.align);
        for f in self.sorted() {
            let _ = write!(out, "{}:{}:{}:{}", f.name, f.ty.name(), f.offset, f.size());
            if f.count > 1 {
                let _ = write!(out, ":{}", f.count);
            }
            out.push('\n');
        }
    }
}

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_FIELD_NAME
        && !b[0].is_ascii_digit()
        && b[0] != b'.'
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.')
}

/// A block's payload layout: the slots' zone and, if the block has one, the flexible zone's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct SchemaLayout {
    /// What one slot holds.
    pub slot: Option<ZoneLayout>,
    /// What the flexible zone holds.
    pub flex: Option<ZoneLayout>,
}

impl SchemaLayout {
    /// A layout of slots only.
    pub fn slots(slot: ZoneLayout) -> SchemaLayout {
        SchemaLayout {
            slot: Some(slot),
            flex: None,
        }
    }

    /// With a flexible-zone layout.
    #[must_use]
    pub fn with_flex(mut self, flex: ZoneLayout) -> SchemaLayout {
        self.flex = Some(flex);
        self
    }

    /// The canonical text (module docs).
    ///
    /// # Errors
    /// A zone that fails [`ZoneLayout::check`].
    pub fn canonical(&self) -> Result<String, LayoutError> {
        let mut out = String::from(SCHEME);
        out.push('\n');
        for (zone, l) in [("slot", &self.slot), ("flex", &self.flex)] {
            if let Some(l) = l {
                l.check()?;
                l.write_canonical(zone, &mut out);
            }
        }
        Ok(out)
    }

    /// BLAKE2b-256 of [`SchemaLayout::canonical`].
    ///
    /// # Errors
    /// As [`SchemaLayout::canonical`].
    pub fn fingerprint(&self) -> Result<Fingerprint, LayoutError> {
        Ok(Fingerprint(
            Blake2b::<U32>::digest(self.canonical()?.as_bytes()).into(),
        ))
    }
}

/// A schema fingerprint: BLAKE2b-256 of a canonical layout text. Displayed (and parsed) as
/// `DHS01_` followed by 64 lower-case hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(FINGERPRINT_PREFIX)?;
        f.write_str(&crate::checksum::hex(&self.0))
    }
}

impl std::str::FromStr for Fingerprint {
    type Err = String;

    /// Parses `DHS01_<64 hex>` (hex in either case).
    fn from_str(s: &str) -> Result<Fingerprint, String> {
        let hex = s
            .strip_prefix(FINGERPRINT_PREFIX)
            .ok_or_else(|| format!("a fingerprint starts with {FINGERPRINT_PREFIX}"))?;
        if hex.len() != 64 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err("a fingerprint has 64 hex digits after its prefix".into());
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|e| e.to_string())?;
        }
        Ok(Fingerprint(out))
    }
}

/// A field type [`describe!`](crate::describe) accepts: a scalar, or an array of scalars (`[T; N]`, nested
/// arrays flattened).
pub trait FieldType {
    /// Element type.
    const SCALAR: Scalar;
    /// Elements.
    const COUNT: u64;
}

macro_rules! scalar_field_type {
    ($($t:ty => $s:ident),*) => {$(
        impl FieldType for $t {
            const SCALAR: Scalar = Scalar::$s;
            const COUNT: u64 = 1;
        }
    )*};
}
scalar_field_type!(u8 => U8, i8 => I8, u16 => U16, i16 => I16, u32 => U32, i32 => I32,
    u64 => U64, i64 => I64, f32 => F32, f64 => F64);

impl<T: FieldType, const N: usize> FieldType for [T; N] {
    const SCALAR: Scalar = T::SCALAR;
    const COUNT: u64 = T::COUNT * N as u64;
}

/// A `#[repr(C)]` [`bytemuck::Pod`] type with a described layout, implemented by [`describe!`](crate::describe).
/// [`crate::Schema::of`] and the typed blocks use it.
pub trait Described: bytemuck::Pod {
    /// The type's zone layout (checked: [`ZoneLayout::check`] passes and the fields cover the
    /// whole type, which for a `Pod` type, having no padding, means none was left out).
    ///
    /// # Errors
    /// [`LayoutError`] when the description is wrong.
    fn zone_layout() -> Result<ZoneLayout, LayoutError>;
}

/// Checks a described type's layout: what [`describe!`](crate::describe)'s implementation returns through.
///
/// # Errors
/// [`ZoneLayout::check`]'s, and [`LayoutError::Incomplete`] when the fields do not cover the
/// type.
pub fn checked(layout: ZoneLayout) -> Result<ZoneLayout, LayoutError> {
    layout.check()?;
    if layout.covered() != layout.size {
        return Err(LayoutError::Incomplete {
            covered: layout.covered(),
            size: layout.size,
        });
    }
    Ok(layout)
}

/// Implements [`Described`] for a `#[repr(C)]` `bytemuck::Pod` struct from its field list:
///
/// ```
/// #[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
/// #[repr(C)]
/// struct Pose { x: f64, y: f64, ids: [u32; 2] }
/// datahub::describe!(Pose { x: f64, y: f64, ids: [u32; 2] });
///
/// use datahub::schema::{Described, Scalar, SchemaLayout, ZoneLayout};
/// let by_hand = ZoneLayout::new(24, 8)
///     .field("x", Scalar::F64, 0)
///     .field("y", Scalar::F64, 8)
///     .array("ids", Scalar::U32, 16, 2);
/// assert_eq!(
///     SchemaLayout::slots(Pose::zone_layout()?).fingerprint()?,
///     SchemaLayout::slots(by_hand).fingerprint()?,
/// );
/// # Ok::<(), datahub::schema::LayoutError>(())
/// ```
///
/// Offsets come from `core::mem::offset_of!`; each listed type is checked against the field's
/// real type at compile time; a field left out is [`LayoutError::Incomplete`] at run time.
/// The macro takes scalar and array fields only: describe a struct with nested structs by hand
/// ([`ZoneLayout`], dotted names).
#[macro_export]
macro_rules! describe {
    ($t:ty { $($f:ident : $ft:ty),+ $(,)? }) => {
        impl $crate::schema::Described for $t {
            fn zone_layout()
                -> ::core::result::Result<$crate::schema::ZoneLayout, $crate::schema::LayoutError>
            {
                // Each listed type must be the field's own type.
                $( let _: fn(&$t) -> &$ft = |v: &$t| &v.$f; )+
                let layout = $crate::schema::ZoneLayout::new(
                    ::core::mem::size_of::<$t>() as u64,
                    ::core::mem::align_of::<$t>() as u64,
                )
                $(
                    .array(
                        stringify!($f),
                        <$ft as $crate::schema::FieldType>::SCALAR,
                        ::core::mem::offset_of!($t, $f) as u64,
                        <$ft as $crate::schema::FieldType>::COUNT,
                    )
                )+;
                $crate::schema::checked(layout)
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pose() -> ZoneLayout {
        ZoneLayout::new(24, 8)
            .field("x", Scalar::F64, 0)
            .field("y", Scalar::F64, 8)
            .array("ids", Scalar::U32, 16, 2)
    }

    #[test]
    fn canonical_text_is_sorted_by_offset_and_names_arrays() {
        let l = ZoneLayout::new(24, 8)
            .array("ids", Scalar::U32, 16, 2)
            .field("y", Scalar::F64, 8)
            .field("x", Scalar::F64, 0);
        assert_eq!(
            SchemaLayout::slots(l).canonical().unwrap(),
            "datahub-schema 1\nzone slot size=24 align=8\nx:f64:0:8\ny:f64:8:8\nids:u32:16:8:2\n"
        );
    }

    #[test]
    fn a_reordered_resized_or_retyped_field_changes_the_fingerprint() {
        let base = SchemaLayout::slots(pose()).fingerprint().unwrap();
        let swapped = ZoneLayout::new(24, 8)
            .field("y", Scalar::F64, 0)
            .field("x", Scalar::F64, 8)
            .array("ids", Scalar::U32, 16, 2);
        let resized = ZoneLayout::new(24, 8)
            .field("x", Scalar::F64, 0)
            .field("y", Scalar::F64, 8)
            .array("ids", Scalar::U16, 16, 4);
        let retyped = ZoneLayout::new(24, 8)
            .field("x", Scalar::F64, 0)
            .field("y", Scalar::I64, 8)
            .array("ids", Scalar::U32, 16, 2);
        for other in [swapped, resized, retyped] {
            assert_ne!(SchemaLayout::slots(other).fingerprint().unwrap(), base);
        }
        let with_flex =
            SchemaLayout::slots(pose()).with_flex(ZoneLayout::new(8, 8).field("n", Scalar::U64, 0));
        assert_ne!(with_flex.fingerprint().unwrap(), base);
    }

    #[test]
    fn bad_layouts_are_refused() {
        let cases = [
            (ZoneLayout::new(8, 8).field("1x", Scalar::U8, 0), "name"),
            (
                ZoneLayout::new(8, 8)
                    .field("a", Scalar::U8, 0)
                    .field("a", Scalar::U8, 1),
                "duplicate",
            ),
            (
                ZoneLayout::new(8, 8).field("a", Scalar::U64, 4),
                "misaligned",
            ),
            (ZoneLayout::new(8, 8).array("a", Scalar::U32, 4, 2), "out"),
            (
                ZoneLayout::new(8, 8)
                    .field("a", Scalar::U32, 0)
                    .array("b", Scalar::U16, 2, 2),
                "overlap",
            ),
            (ZoneLayout::new(12, 8).field("a", Scalar::U32, 0), "zone"),
        ];
        for (l, what) in cases {
            assert!(l.check().is_err(), "{what}: {l:?}");
            assert!(SchemaLayout::slots(l).fingerprint().is_err(), "{what}");
        }
        assert!(pose().check().is_ok());
    }

    #[test]
    fn fingerprints_print_and_parse_with_their_scheme_prefix() {
        let f = SchemaLayout::slots(pose()).fingerprint().unwrap();
        let text = f.to_string();
        assert!(text.starts_with("DHS01_") && text.len() == 6 + 64, "{text}");
        assert_eq!(text.parse::<Fingerprint>().unwrap(), f);
        assert!("RIHS01_00".parse::<Fingerprint>().is_err());
        assert!(
            format!("DHS01_{}", "g".repeat(64))
                .parse::<Fingerprint>()
                .is_err()
        );
    }
}
