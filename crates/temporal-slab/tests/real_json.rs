//! The request workload on real JSON (../shared/data/json): trees built in an epoch give the
//! same key counts as serde_json's own tree, everything is freed, and closing recycles it all.

#[path = "support/workload.rs"]
#[allow(dead_code)]
mod workload;

use temporal_slab::SlabAllocator;

#[path = "support/shared_data.rs"]
mod shared_data;
use shared_data::shared_data;

#[test]
fn real_json_documents_count_the_same_in_an_epoch_and_free_everything() {
    let Some(dir) = shared_data() else { return };
    let slab = SlabAllocator::new().unwrap();
    for name in ["twitter.json", "citm_catalog.json", "canada.json"] {
        let text = std::fs::read_to_string(dir.join("json").join(name)).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let id = slab.epoch_current();
        slab.set_label(id, name).unwrap();
        let epoch = slab.epoch(id);
        let expected = workload::reference_counts(&value);
        let got = {
            let tree = workload::build(&value, &epoch);
            let during = slab.stats();
            assert!(
                during.epochs[id.index()].live_objects > 1000,
                "{name}: tree lives in the epoch"
            );
            workload::count(&tree, &epoch)
        };
        assert_eq!(got, expected, "{name}");
        assert!(expected.values > 10_000, "{name} is a real document");
        let snap = slab.stats();
        assert_eq!(snap.epochs[id.index()].live_objects, 0, "{name}: all freed");
        assert_eq!(snap.epochs[id.index()].label, name);
        slab.epoch_advance().unwrap();
        let recycled = slab.epoch_close(id).unwrap();
        let after = slab.stats();
        assert_eq!(
            recycled,
            snap.epochs[id.index()].total_partial_slabs,
            "{name}: every slab recycled"
        );
        assert_eq!(after.epochs[id.index()].estimated_rss_bytes, 0);
    }
}
