//! The live endpoint: /metrics in both formats, /stats.json, live values, errors, shutdown.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tslab::Snapshot;

fn get(url: &str, accept: Option<&str>) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut req = agent.get(url);
    if let Some(a) = accept {
        req = req.header("Accept", a);
    }
    let mut r = req.call().expect("request");
    let ct = r
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (
        r.status().as_u16(),
        ct,
        r.body_mut().read_to_string().unwrap(),
    )
}

#[test]
fn serves_metrics_and_stats_of_a_live_allocator() {
    let alloc = Arc::new(common::workload());
    let ep = tslab::endpoint::serve("127.0.0.1:0".parse().unwrap(), alloc.clone()).unwrap();
    let base = format!("http://{}", ep.local_addr());
    assert_ne!(ep.local_addr().port(), 0);

    let (status, ct, body) = get(&format!("{base}/metrics"), None);
    assert_eq!(status, 200);
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    assert!(body.contains("# TYPE temporal_slab_class_allocs_total counter"));
    assert!(!body.contains("# EOF"));

    // What Prometheus sends: OpenMetrics preferred.
    let prom_accept = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (status, ct, body) = get(&format!("{base}/metrics"), Some(prom_accept));
    assert_eq!(status, 200);
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    assert!(body.ends_with("# EOF\n"));

    let (status, ct, body) = get(&format!("{base}/stats.json"), None);
    assert_eq!((status, ct.as_str()), (200, "application/json"));
    let first = Snapshot::from_json(&body, "endpoint").unwrap();
    assert_eq!(first.pid, std::process::id());

    // Live: allocations made after the endpoint started show up in the next scrape.
    let e = alloc.epoch_current();
    for _ in 0..1000 {
        alloc.alloc(96, e).unwrap();
    }
    let (_, _, body) = get(&format!("{base}/stats.json"), None);
    let second = Snapshot::from_json(&body, "endpoint").unwrap();
    let class96 = |s: &Snapshot| {
        s.classes
            .iter()
            .find(|c| c.object_size == 96)
            .unwrap()
            .allocs
    };
    assert_eq!(class96(&second) - class96(&first), 1000);

    let (status, _, _) = get(&format!("{base}/nope"), None);
    assert_eq!(status, 404);
    ep.shutdown();
    assert!(
        ureq::get(&format!("{base}/metrics")).call().is_err(),
        "the port is closed after shutdown"
    );
}

#[test]
fn address_in_use_is_an_error() {
    let alloc = Arc::new(temporal_slab::SlabAllocator::new().unwrap());
    let ep = tslab::endpoint::serve("127.0.0.1:0".parse().unwrap(), alloc.clone()).unwrap();
    let err = tslab::endpoint::serve(ep.local_addr(), alloc).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains(&ep.local_addr().to_string()));
}

#[test]
fn scrapes_while_threads_allocate() {
    let alloc = Arc::new(temporal_slab::SlabAllocator::new().unwrap());
    let ep = tslab::endpoint::serve("127.0.0.1:0".parse().unwrap(), alloc.clone()).unwrap();
    let url = format!("http://{}/stats.json", ep.local_addr());
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..2)
        .map(|t| {
            let (alloc, stop) = (alloc.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut done = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let e = alloc.epoch_current();
                    let hs: Vec<_> = (0..500)
                        .filter_map(|i| alloc.alloc(64 + (i + t) % 700, e).ok())
                        .collect();
                    for h in hs {
                        alloc.free(h).unwrap();
                        done += 1;
                    }
                }
                done
            })
        })
        .collect();
    let mut last = 0;
    for _ in 0..20 {
        let (_, _, body) = get(&url, None);
        let s = Snapshot::from_json(&body, "live").unwrap();
        assert!(s.allocs() >= last, "counters never go backwards");
        assert!(s.classes.iter().all(|c| c.frees <= c.allocs + 1000));
        last = s.allocs();
    }
    stop.store(true, Ordering::Relaxed);
    let frees: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    assert!(frees > 0);
    let end = Snapshot::of(&alloc);
    assert_eq!(
        end.allocs(),
        frees,
        "every allocation was freed and counted"
    );
}
