//! `memsys.datahub.Schema`: block schemas from names, field lists and numpy dtypes.

use pyo3::prelude::*;
use pyo3::types::PyTuple;

use datahub::Schema;
use datahub::schema::{Scalar, SchemaLayout, ZoneLayout};

use super::errors;

/// Most nesting levels of a structured dtype that `from_dtype` flattens.
const MAX_DEPTH: usize = 8;

/// A block schema: a 32-byte hash and a version, checked at attach.
///
/// - `Schema.from_dtype(dtype, version=1)`: the layout fingerprint of a numpy structured
///   dtype, equal to `datahub::Schema::of::<T>(version)` for the `#[repr(C)]` Rust struct `T`
///   with the same fields at the same offsets (docs/datahub-format.md, "Schema
///   fingerprints"). Nested structured fields are flattened with dotted names (`pos.x`).
/// - `Schema.from_fields(fields, size, align, version=1)`: the same from a list of
///   `(name, scalar, offset, count)` with scalar one of u8 i8 u16 i16 u32 i32 u64 i64 f32 f64.
/// - `Schema.named(text, version=1)`: BLAKE2b-256 of free text (`datahub pub` uses this).
#[pyclass(module = "memsys.datahub", name = "Schema", frozen, eq)]
#[derive(PartialEq)]
pub(crate) struct PySchema {
    schema: Schema,
    /// The canonical layout text, for layout schemas.
    canonical: Option<String>,
}

impl PySchema {
    pub(crate) fn schema(&self) -> Schema {
        self.schema
    }

    fn from_layout(zone: ZoneLayout, version: u32) -> PyResult<PySchema> {
        let layout = SchemaLayout::slots(zone);
        let canonical = layout
            .canonical()
            .map_err(|e| errors::invalid_schema(e.to_string()))?;
        let schema = Schema::from_layout(&layout, version)
            .map_err(|e| errors::invalid_schema(e.to_string()))?;
        Ok(PySchema {
            schema,
            canonical: Some(canonical),
        })
    }
}

/// The scalar of a numpy base dtype (`kind`, `itemsize`, `byteorder`).
fn scalar_of(base: &Bound<'_, PyAny>, field: &str) -> PyResult<Scalar> {
    let kind: String = base.getattr("kind")?.extract()?;
    let size: u64 = base.getattr("itemsize")?.extract()?;
    let order: String = base.getattr("byteorder")?.extract()?;
    let little =
        matches!(order.as_str(), "<" | "|") || (order == "=" && cfg!(target_endian = "little"));
    if !little {
        return Err(errors::invalid_schema(format!(
            "field {field:?}: big-endian types are not DataHub scalars (use '<' byte order)"
        )));
    }
    let s = match (kind.as_str(), size) {
        ("u", 1) => Scalar::U8,
        ("i", 1) => Scalar::I8,
        ("u", 2) => Scalar::U16,
        ("i", 2) => Scalar::I16,
        ("u", 4) => Scalar::U32,
        ("i", 4) => Scalar::I32,
        ("u", 8) => Scalar::U64,
        ("i", 8) => Scalar::I64,
        ("f", 4) => Scalar::F32,
        ("f", 8) => Scalar::F64,
        _ => {
            return Err(errors::invalid_schema(format!(
                "field {field:?}: numpy kind {kind:?} of {size} bytes is not a DataHub scalar (u8..u64, i8..i64, f32, f64)"
            )));
        }
    };
    Ok(s)
}

/// Appends the fields of structured dtype `dt` at `base` offset, names prefixed.
fn flatten(
    dt: &Bound<'_, PyAny>,
    prefix: &str,
    base: u64,
    depth: usize,
    out: &mut Vec<(String, Scalar, u64, u64)>,
) -> PyResult<()> {
    if depth > MAX_DEPTH {
        return Err(errors::invalid_schema(format!(
            "structured dtype nested deeper than {MAX_DEPTH} levels"
        )));
    }
    let names = dt.getattr("names")?;
    if names.is_none() {
        return Err(errors::invalid_schema(
            "not a structured dtype (it has no named fields)".to_owned(),
        ));
    }
    let names: Vec<String> = names.extract()?;
    // `dtype.fields` is a mapping proxy: read it through the mapping protocol.
    let fields = dt.getattr("fields")?;
    for name in names {
        let entry = fields.get_item(&name).map_err(|_| {
            errors::invalid_schema(format!("dtype.fields has no entry for {name:?}"))
        })?;
        let entry = entry.cast::<PyTuple>()?;
        let sub = entry.get_item(0)?;
        let offset: u64 = base + entry.get_item(1)?.extract::<u64>()?;
        let full = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        // A sub-array: `subdtype` is (base dtype, shape).
        let (elem, count) = match sub.getattr("subdtype")? {
            s if s.is_none() => (sub.clone(), 1u64),
            s => {
                let s = s.cast::<PyTuple>()?;
                let shape: Vec<u64> = s.get_item(1)?.extract()?;
                let count = shape
                    .iter()
                    .try_fold(1u64, |a, &d| a.checked_mul(d))
                    .ok_or_else(|| errors::invalid_schema(format!("{full:?}: shape too large")))?;
                (s.get_item(0)?, count)
            }
        };
        if !elem.getattr("names")?.is_none() {
            if count != 1 {
                return Err(errors::invalid_schema(format!(
                    "field {full:?}: arrays of structures are not DataHub fields"
                )));
            }
            flatten(&elem, &full, offset, depth + 1, out)?;
        } else {
            out.push((full.clone(), scalar_of(&elem, &full)?, offset, count));
        }
    }
    Ok(())
}

#[pymethods]
impl PySchema {
    /// The layout schema of a numpy structured dtype (names, formats, offsets, itemsize).
    /// Alignment is the largest field's, as `#[repr(C)]` gives it. Raises: InvalidSchema (not
    /// structured, a type that is not a DataHub scalar, big-endian, overlapping or misaligned
    /// fields, padding left uncovered is allowed only where Rust would have it).
    #[staticmethod]
    #[pyo3(signature = (dtype, version = 1))]
    fn from_dtype(dtype: &Bound<'_, PyAny>, version: u32) -> PyResult<PySchema> {
        let mut fields = Vec::new();
        flatten(dtype, "", 0, 0, &mut fields)?;
        let size: u64 = dtype.getattr("itemsize")?.extract()?;
        let align = fields.iter().map(|f| f.1.size()).max().unwrap_or(1);
        let mut zone = ZoneLayout::new(size, align);
        for (name, ty, offset, count) in fields {
            zone = zone.array(&name, ty, offset, count);
        }
        PySchema::from_layout(zone, version)
    }

    /// The layout schema of `fields`, a list of `(name, scalar, offset, count)`, in a zone of
    /// `size` bytes aligned to `align`. Raises: InvalidSchema.
    #[staticmethod]
    #[pyo3(signature = (fields, size, align, version = 1))]
    fn from_fields(
        fields: Vec<(String, String, u64, u64)>,
        size: u64,
        align: u64,
        version: u32,
    ) -> PyResult<PySchema> {
        let mut zone = ZoneLayout::new(size, align);
        for (name, ty, offset, count) in fields {
            let s = Scalar::from_name(&ty).ok_or_else(|| {
                errors::invalid_schema(format!("field {name:?}: unknown scalar {ty:?}"))
            })?;
            zone = zone.array(&name, s, offset, count);
        }
        PySchema::from_layout(zone, version)
    }

    /// A schema named by free text (BLAKE2b-256 of its UTF-8 bytes).
    #[staticmethod]
    #[pyo3(signature = (text, version = 1))]
    fn named(text: &str, version: u32) -> PySchema {
        PySchema {
            schema: Schema::named(text, version),
            canonical: None,
        }
    }

    /// The fingerprint, `DHS01_` and 64 hex digits (layout schemas), as the broker shows it.
    #[getter]
    fn fingerprint(&self) -> String {
        self.schema.fingerprint().to_string()
    }

    /// The 32-byte hash in hex (what `datahub inspect` prints as the schema).
    #[getter]
    fn hex(&self) -> String {
        self.schema.hex()
    }

    /// The schema's version.
    #[getter]
    fn version(&self) -> u32 {
        self.schema.version
    }

    /// The canonical layout text hashed into the fingerprint (None for named schemas).
    #[getter]
    fn canonical(&self) -> Option<&str> {
        self.canonical.as_deref()
    }

    fn __repr__(&self) -> String {
        format!(
            "<Schema {} v{}>",
            self.schema.fingerprint(),
            self.schema.version
        )
    }
}
