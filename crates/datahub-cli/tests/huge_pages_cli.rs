//! `datahub inspect` and `datahub metrics` show the pages backing a block (header byte 1152,
//! format 1.1), including a 1.0 block whose field is zero.

mod common;

use std::os::unix::fs::FileExt;

use common::{Block, run};
use datahub::{Config, Policy, Producer};

/// Overwrites the block's backing code (as a producer of another build would have left it).
fn set_backing_code(name: &str, code: u32) {
    let dir = datahub::shm_dir();
    std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join(name))
        .unwrap()
        .write_all_at(&code.to_le_bytes(), 1152)
        .unwrap();
}

fn huge_pages_series(name: &str) -> String {
    let prom = run(&["metrics", name, "--prometheus"])
        .expect(0, "metrics --prometheus")
        .text();
    prom.lines()
        .filter(|l| l.starts_with("datahub_block_huge_pages{"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn inspect_and_metrics_show_the_backing_the_creator_recorded() {
    let b = Block::new("pages");
    let _p = Producer::create(b.name(), Config::new(Policy::Latest)).unwrap();

    let text = run(&["inspect", b.name()]).expect(0, "inspect").text();
    assert!(
        text.contains("\npages        small (4 KiB pages)\n"),
        "{text}"
    );
    let json = run(&["inspect", b.name(), "--json"])
        .expect(0, "inspect --json")
        .json();
    assert_eq!(json["backing"], "small");
    assert_eq!(json["version"], "1.2");
    assert_eq!(
        huge_pages_series(b.name()),
        format!(
            "datahub_block_huge_pages{{block=\"{}\",backing=\"small\"}} 0",
            b.name()
        )
    );

    set_backing_code(b.name(), 3);
    let json = run(&["inspect", b.name(), "--json"])
        .expect(0, "inspect")
        .json();
    assert_eq!(json["backing"], "thp");
    assert_eq!(
        huge_pages_series(b.name()),
        format!(
            "datahub_block_huge_pages{{block=\"{}\",backing=\"thp\"}} 1",
            b.name()
        )
    );

    set_backing_code(b.name(), 2);
    let text = run(&["inspect", b.name()]).expect(0, "inspect").text();
    assert!(text.contains("pages        thp_requested (transparent huge pages advised, not seen mapped at creation)"), "{text}");
    assert!(huge_pages_series(b.name()).ends_with("backing=\"thp_requested\"} 0"));
}

#[test]
fn a_format_1_0_block_shows_unknown_pages() {
    let b = Block::new("oldpages");
    let _p = Producer::create(b.name(), Config::new(Policy::Sequential)).unwrap();
    set_backing_code(b.name(), 0);
    let text = run(&["inspect", b.name()]).expect(0, "inspect").text();
    assert!(
        text.contains("pages        unknown (not recorded: a format 1.0 block)"),
        "{text}"
    );
    let json = run(&["inspect", b.name(), "--json"])
        .expect(0, "inspect")
        .json();
    assert_eq!(json["backing"], "unknown");
    assert!(huge_pages_series(b.name()).ends_with("backing=\"unknown\"} 0"));
}
