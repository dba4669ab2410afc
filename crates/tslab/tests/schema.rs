//! The stats JSON: schema validation (jsonschema crate) of snapshots with and without epochs,
//! backward compatibility, version checks, and label round-trips.

mod common;

use proptest::prelude::*;
use tslab::snapshot::{SCHEMA_JSON, SCHEMA_VERSION};
use tslab::{Error, Snapshot};

fn validator() -> jsonschema::Validator {
    let schema: serde_json::Value = serde_json::from_str(SCHEMA_JSON).unwrap();
    jsonschema::draft202012::new(&schema).expect("the schema is a valid 2020-12 schema")
}

fn errors(v: &serde_json::Value) -> Vec<String> {
    validator()
        .iter_errors(v)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect()
}

#[test]
fn real_snapshot_with_epochs_is_valid() {
    let snap = common::snapshot();
    let epochs = snap.epochs.as_ref().expect("a live snapshot has epochs");
    assert_eq!(epochs.len(), 3, "three ring slots were opened");
    let v = serde_json::to_value(&snap).unwrap();
    assert_eq!(errors(&v), Vec::<String>::new());
    assert_eq!(v["schema_version"], 1);
    // The original layout's epoch fields are all there.
    for key in [
        "epoch_id",
        "epoch_era",
        "state",
        "age_sec",
        "refcount",
        "label",
        "total_partial_slabs",
        "total_full_slabs",
        "total_reclaimable_slabs",
        "estimated_rss_bytes",
        "live_objects",
        "rss_before_close",
        "rss_after_close",
    ] {
        assert!(v["epochs"][0].get(key).is_some(), "epochs[0] lacks {key}");
    }
    assert_eq!(v["epochs"][0]["state"], "CLOSING");
    assert_eq!(v["epochs"][1]["refcount"], 2);
}

#[test]
fn snapshot_without_epochs_is_valid_and_parses() {
    let mut v = serde_json::to_value(common::snapshot()).unwrap();
    v.as_object_mut().unwrap().remove("epochs");
    assert_eq!(errors(&v), Vec::<String>::new());
    let snap = Snapshot::from_json(&v.to_string(), "old.json").expect("parses");
    assert!(snap.epochs.is_none());
    // And serializing it again does not invent an epochs array.
    assert!(serde_json::to_value(&snap).unwrap().get("epochs").is_none());
}

#[test]
fn epoch_advance_refused_is_optional_and_defaults_to_0() {
    let mut v = serde_json::to_value(common::snapshot()).unwrap();
    assert_eq!(v["epoch_advance_refused"], 0, "a live snapshot writes it");
    v["epoch_advance_refused"] = serde_json::json!(7);
    assert_eq!(errors(&v), Vec::<String>::new());
    assert_eq!(
        Snapshot::from_json(&v.to_string(), "new.json")
            .unwrap()
            .epoch_advance_refused,
        7
    );
    v["epoch_advance_refused"] = serde_json::json!(-1);
    assert!(
        errors(&v)
            .iter()
            .any(|e| e.starts_with("/epoch_advance_refused")),
        "{:?}",
        errors(&v)
    );
    // A snapshot written before the field existed: still valid, read as 0.
    v.as_object_mut().unwrap().remove("epoch_advance_refused");
    assert_eq!(errors(&v), Vec::<String>::new());
    let old = Snapshot::from_json(&v.to_string(), "old.json").expect("parses");
    assert_eq!(old.epoch_advance_refused, 0);
}

#[test]
fn original_minimal_layout_parses() {
    // A snapshot as the original C stats_dump wrote it: integer age, only its own fields.
    let text = r#"{
      "schema_version": 1, "timestamp_ns": 1, "pid": 7, "page_size": 4096, "epoch_count": 16,
      "label_registry": {"count": 0, "max_labels": 16, "labels": []},
      "classes": [{"class": 0, "object_size": 64, "slow_path_hits": 5, "new_slab_count": 2}],
      "epochs": [{"epoch_id": 12, "epoch_era": 150, "state": "ACTIVE", "age_sec": 600,
                  "refcount": 2, "label": "background-worker-3", "total_partial_slabs": 100,
                  "total_full_slabs": 50, "total_reclaimable_slabs": 25,
                  "estimated_rss_bytes": 50331648}]
    }"#;
    let v: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(errors(&v), Vec::<String>::new());
    let snap = Snapshot::from_json(text, "orig.json").unwrap();
    assert_eq!(snap.epoch_advance_refused, 0);
    assert_eq!(snap.epochs()[0].label, "background-worker-3");
    assert_eq!(snap.epochs()[0].age_sec, 600);
    assert_eq!(
        snap.classes[0].net_slabs, 2,
        "derived fields are recomputed"
    );
}

#[test]
fn schema_rejects_what_it_should() {
    let good = serde_json::to_value(common::snapshot()).unwrap();
    let broken = |path: &[&str], value: serde_json::Value| {
        let mut v = good.clone();
        let mut at = &mut v;
        for p in &path[..path.len() - 1] {
            at = match p.parse::<usize>() {
                Ok(i) => &mut at[i],
                Err(_) => &mut at[*p],
            };
        }
        at[path[path.len() - 1]] = value;
        v
    };
    for (path, value, pointer) in [
        (
            &["schema_version"][..],
            serde_json::json!(2),
            "/schema_version",
        ),
        (
            &["epochs", "0", "state"][..],
            serde_json::json!("OPEN"),
            "/epochs/0/state",
        ),
        (
            &["epochs", "0", "refcount"][..],
            serde_json::json!(-1),
            "/epochs/0/refcount",
        ),
        (
            &["epochs", "0", "epoch_id"][..],
            serde_json::json!(16),
            "/epochs/0/epoch_id",
        ),
        (
            &["classes", "0", "allocs"][..],
            serde_json::json!("many"),
            "/classes/0/allocs",
        ),
        (
            &["label_registry", "labels"][..],
            serde_json::json!("x"),
            "/label_registry/labels",
        ),
    ] {
        let errs = errors(&broken(path, value));
        assert!(
            errs.iter().any(|e| e.starts_with(pointer)),
            "expected an error at {pointer}, got {errs:?}"
        );
    }
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("classes");
    assert!(!errors(&missing).is_empty());
}

#[test]
fn version_and_syntax_errors_are_typed() {
    assert!(matches!(
        Snapshot::from_json("{\"schema_version\": 2}", "x"),
        Err(Error::UnknownSchemaVersion { found, .. }) if found == "2"
    ));
    assert!(matches!(
        Snapshot::from_json("{\"schema_version\": \"1\"}", "x"),
        Err(Error::UnknownSchemaVersion { .. })
    ));
    assert!(matches!(
        Snapshot::from_json("{\"pid\": 1}", "x"),
        Err(Error::MissingSchemaVersion { .. })
    ));
    let err = Snapshot::from_json("{\"schema_version\": 1,", "snap.json").unwrap_err();
    assert!(matches!(err, Error::Json { .. }));
    assert!(
        err.to_string()
            .starts_with("snap.json: malformed stats JSON"),
        "{err}"
    );
    // Right version, wrong field type: a JSON error naming the line.
    let err = Snapshot::from_json("{\"schema_version\": 1, \"pid\": \"x\"}", "s").unwrap_err();
    assert!(matches!(err, Error::Json { .. }), "{err}");
    assert_eq!(SCHEMA_VERSION, 1);
}

#[test]
fn validate_names_the_failing_path() {
    let mut v = serde_json::to_value(common::snapshot()).unwrap();
    v["epochs"][1]["label"] = serde_json::json!("x".repeat(40));
    let err = tslab::source::validate(&v.to_string(), "f.json").unwrap_err();
    match err {
        Error::Schema { instance_path, .. } => assert_eq!(instance_path, "/epochs/1/label"),
        other => panic!("expected a schema error, got {other}"),
    }
}

#[test]
fn nasty_label_round_trips() {
    let snap = common::snapshot();
    assert_eq!(snap.epochs()[1].label, common::NASTY_LABEL);
    let text = snap.to_json_pretty();
    assert!(!text.contains('\u{1}'), "control characters are escaped");
    let back = Snapshot::from_json(&text, "rt").unwrap();
    assert_eq!(back, snap);
    assert_eq!(back.label_registry.labels[1], common::NASTY_LABEL);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    /// Any label the allocator accepts survives JSON and stays schema-valid.
    #[test]
    fn any_label_round_trips(label in "\\PC{0,12}[\"\\\\\\n\\t\\u{0}-\\u{1f}]{0,6}") {
        let alloc = temporal_slab::SlabAllocator::new().unwrap();
        let e = alloc.epoch_current();
        alloc.set_label(e, &label).unwrap();
        let stored = alloc.label(e).unwrap();
        let snap = Snapshot::of(&alloc);
        let text = serde_json::to_string(&snap).unwrap();
        let back = Snapshot::from_json(&text, "p").unwrap();
        prop_assert_eq!(&back.epochs()[0].label, &stored);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        prop_assert!(errors(&v).is_empty());
    }
}
