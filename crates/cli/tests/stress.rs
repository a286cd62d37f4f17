//! Concurrency stress through the real FUSE mount: 8 threads write random
//! `state`/`online` values to random blocks while another hot-adds and
//! unplugs DIMMs through the control socket (with auto-online). It must end
//! with no deadlock and no panic, every block's `online` agreeing with its
//! `state`, present pages agreeing with the online blocks, and the uevent
//! log agreeing with the final states. `MEMHP_STRESS_SECS` sets the length
//! (default 30 s).

use memhp_control::ControlClient;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;

use common::Machine;

fn rng(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[test]
fn eight_writers_and_hotplug_end_consistent_without_deadlock() {
    let secs: u64 = std::env::var("MEMHP_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let m = Machine::mount(
        "stress",
        &[
            "--mem",
            "2G,slots=8,maxmem=16G",
            "--cmdline",
            "memhp_default_state=online_movable",
            "--event-buffer",
            "1000000",
        ],
    );
    let (root, sock) = (m.root.clone(), m.sock.clone());
    let mem = root.join("sys/devices/system/memory");
    let stop = Arc::new(AtomicBool::new(false));
    let writes = Arc::new(AtomicU64::new(0));

    // The uevent listener.
    let mut listener = ControlClient::connect(&sock).unwrap();
    let stop_l = Arc::clone(&stop);
    let events = std::thread::spawn(move || {
        let mut last: BTreeMap<String, String> = BTreeMap::new();
        loop {
            match listener.next_event(Duration::from_millis(200)) {
                Ok(ev) if ev["event"] == "UEVENT" => {
                    last.insert(
                        ev["data"]["DEVPATH"].as_str().unwrap_or("").to_string(),
                        ev["data"]["ACTION"].as_str().unwrap_or("").to_string(),
                    );
                }
                Ok(_) => {}
                Err(_) if stop_l.load(Ordering::Acquire) => return last,
                Err(_) => {}
            }
        }
    });

    let mut writers = Vec::new();
    for t in 0..8u64 {
        let (mem, stop, writes) = (mem.clone(), Arc::clone(&stop), Arc::clone(&writes));
        writers.push(std::thread::spawn(move || {
            let mut seed = 0x9e37_79b9_7f4a_7c15 ^ (t + 1);
            let values: [(&str, &str); 7] = [
                ("state", "online"),
                ("state", "offline"),
                ("state", "online_movable"),
                ("state", "online_kernel"),
                ("online", "1"),
                ("online", "0"),
                ("state", "bogus"),
            ];
            while !stop.load(Ordering::Acquire) {
                let names: Vec<PathBuf> = match std::fs::read_dir(&mem) {
                    Ok(rd) => rd
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| {
                            p.file_name()
                                .is_some_and(|n| n.to_string_lossy().starts_with("memory"))
                        })
                        .collect(),
                    Err(_) => continue,
                };
                if names.is_empty() {
                    continue;
                }
                let b = &names[(rng(&mut seed) % names.len() as u64) as usize];
                let (file, value) = values[(rng(&mut seed) % values.len() as u64) as usize];
                // Errors are expected (EINVAL, EBUSY, ENOENT for removed blocks).
                let _ = std::fs::write(b.join(file), value);
                writes.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let mut ctl = ControlClient::connect(&sock).unwrap();
    let started = Instant::now();
    let mut n = 0u64;
    let mut seed = 42u64;
    while started.elapsed() < Duration::from_secs(secs) {
        let id = format!("d{n}");
        let size = ["128M", "256M", "512M"][(rng(&mut seed) % 3) as usize];
        let r = ctl
            .execute("hotadd", json!({"id": id, "size": size}))
            .unwrap();
        if r.get("return").is_some() {
            std::thread::sleep(Duration::from_millis(20));
            let _ = ctl.execute("unplug", json!({"id": id})).unwrap();
        }
        n += 1;
    }
    stop.store(true, Ordering::Release);
    for w in writers {
        w.join().expect("a writer panicked");
    }
    let last = events.join().expect("the listener panicked");
    let q = ctl.execute("query", json!({})).unwrap()["return"].clone();
    assert_eq!(q["offline_in_flight"], Value::Null);

    // online ⟺ state, per block, as user space reads them.
    let mut present_by_node: BTreeMap<u64, u64> = BTreeMap::new();
    for b in q["blocks"].as_array().unwrap() {
        let id = b["id"].as_u64().unwrap();
        let state = std::fs::read_to_string(mem.join(format!("memory{id}/state"))).unwrap();
        let online = std::fs::read_to_string(mem.join(format!("memory{id}/online"))).unwrap();
        assert_eq!(
            online == "1\n",
            state == "online\n",
            "memory{id}: state {state:?} online {online:?}"
        );
        if state == "online\n" {
            *present_by_node
                .entry(b["node"].as_u64().unwrap())
                .or_default() += b["pages"]["present"].as_u64().unwrap();
            if !b["early"].as_bool().unwrap() {
                assert!(b["zone"].is_string(), "memory{id} online without a zone");
            }
        }
        // The last uevent of a hot-added block agrees with its state.
        if let Some(action) = last.get(&format!("/devices/system/memory/memory{id}")) {
            let expect = if state == "online\n" {
                "online"
            } else {
                "offline-or-add"
            };
            let ok = match expect {
                "online" => action == "online",
                _ => action == "offline" || action == "add",
            };
            assert!(ok, "memory{id}: state {state:?} but last uevent {action}");
        }
    }
    for node in q["nodes"].as_array().unwrap() {
        let present: u64 = node["zones"]
            .as_array()
            .unwrap()
            .iter()
            .map(|z| z["present"].as_u64().unwrap())
            .sum();
        assert_eq!(
            present,
            present_by_node
                .get(&node["id"].as_u64().unwrap())
                .copied()
                .unwrap_or(0),
            "node present pages"
        );
    }
    assert!(
        writes.load(Ordering::Relaxed) > 100,
        "writers made progress"
    );
    assert!(n > 5, "hotplug made progress");
}
