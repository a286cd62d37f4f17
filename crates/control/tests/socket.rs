//! The control socket over a real Unix socket: greeting, commands, QMP
//! errors for bad input, events, owner-only permissions.

use memhp_control::{ControlClient, ControlServer, EventBus};
use memhp_drivers::host::Host;
use memhp_model::machine::QemuPc;
use memhp_model::KernelVersion;
use serde_json::json;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

fn server(tag: &str, cmdline: &str) -> (ControlServer, std::path::PathBuf) {
    let spec = QemuPc::default()
        .machine(cmdline, KernelVersion::V6_1)
        .unwrap();
    let host = Arc::new(Host::boot(&spec).unwrap());
    let path = std::env::temp_dir().join(format!("memhp-test-{}-{tag}.sock", std::process::id()));
    let srv = ControlServer::start(host, Arc::new(EventBus::default()), &path).unwrap();
    (srv, path)
}

#[test]
fn socket_is_owner_only() {
    let (_srv, path) = server("perm", "");
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn bad_json_and_unknown_commands_get_qmp_errors_and_the_server_keeps_going() {
    let (_srv, path) = server("bad", "");
    let s = UnixStream::connect(&path).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.contains("\"QMP\""));
    for (input, class) in [
        ("{not json", "GenericError"),
        ("[1,2]", "GenericError"),
        ("{\"execute\": \"frobnicate\"}", "CommandNotFound"),
        (
            "{\"execute\": \"hotadd\", \"arguments\": {\"id\": \"x\"}}",
            "GenericError",
        ),
    ] {
        writeln!(w, "{input}").unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["error"]["class"], class, "{input}: {line}");
    }
    writeln!(w, "{{\"execute\": \"qmp_capabilities\", \"id\": 7}}").unwrap();
    line.clear();
    r.read_line(&mut line).unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&line).unwrap(),
        json!({"return": {}, "id": 7})
    );
}

#[test]
fn hotadd_reports_blocks_and_ost_and_uevents_in_order() {
    let (_srv, path) = server("hotadd", "memhp_default_state=online");
    let mut c = ControlClient::connect(&path).unwrap();
    let r = c
        .execute("hotadd", json!({"id": "d1", "size": "256M"}))
        .unwrap();
    assert_eq!(r["return"]["addr"], json!(0x1_0000_0000u64));
    assert_eq!(
        r["return"]["blocks"],
        json!([{"id": 32, "state": "online"}, {"id": 33, "state": "online"}])
    );
    let mut names = Vec::new();
    while names.len() < 5 {
        let ev = c.next_event(Duration::from_secs(5)).unwrap();
        let desc = match ev["event"].as_str().unwrap() {
            "UEVENT" => format!(
                "{} {}",
                ev["data"]["ACTION"].as_str().unwrap(),
                ev["data"]["DEVPATH"].as_str().unwrap()
            ),
            other => other.to_string(),
        };
        names.push(desc);
    }
    assert_eq!(
        names,
        vec![
            "add /devices/system/memory/memory32",
            "add /devices/system/memory/memory33",
            "online /devices/system/memory/memory32",
            "online /devices/system/memory/memory33",
            "ACPI_DEVICE_OST",
        ]
    );
    let q = c.execute("query", json!({})).unwrap();
    assert_eq!(q["return"]["blocks"].as_array().unwrap().len(), 10);
    let e = c.execute("unplug", json!({"id": "nope"})).unwrap();
    assert_eq!(e["error"]["desc"], "Device 'nope' not found");
}

#[test]
fn a_client_that_does_not_read_loses_events_and_they_are_counted() {
    let mut q = QemuPc::default();
    q.parse_mem_option("32G,slots=4,maxmem=200G").unwrap();
    let host = Arc::new(
        Host::boot(
            &q.machine("memhp_default_state=online", KernelVersion::V6_1)
                .unwrap(),
        )
        .unwrap(),
    );
    let path = std::env::temp_dir().join(format!("memhp-test-{}-drop.sock", std::process::id()));
    let bus = Arc::new(EventBus::default().with_capacity(16));
    let _srv = ControlServer::start(host, Arc::clone(&bus), &path).unwrap();
    // A listener that never reads: its socket buffer and then its queue fill.
    let _idle = UnixStream::connect(&path).unwrap();
    let mut c = ControlClient::connect(&path).unwrap();
    let r = c
        .execute("hotadd", json!({"id": "big", "size": "128G"}))
        .unwrap();
    assert_eq!(r["return"]["blocks"].as_array().unwrap().len(), 1024);
    let stats = c.execute("event-stats", json!({})).unwrap();
    assert_eq!(stats["return"]["capacity"], 16);
    let dropped = stats["return"]["dropped"].as_u64().unwrap();
    assert!(dropped > 0, "the idle listener must overflow: {stats}");
    assert_eq!(bus.stats().1, dropped);
}

#[test]
fn greeting_is_the_first_line_even_while_events_flood() {
    let (_srv, path) = server("flood", "memhp_default_state=online");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = {
        let (path, stop) = (path.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut c = ControlClient::connect(&path).unwrap();
            while !stop.load(std::sync::atomic::Ordering::Acquire) {
                c.execute("hotadd", json!({"id": "f", "size": "128M"}))
                    .unwrap();
                c.execute("unplug", json!({"id": "f"})).unwrap();
                c.events.clear();
            }
        })
    };
    for _ in 0..200 {
        let stream = UnixStream::connect(&path).unwrap();
        let mut first = String::new();
        BufReader::new(stream).read_line(&mut first).unwrap();
        assert!(first.starts_with("{\"QMP\""), "first line: {first}");
    }
    stop.store(true, std::sync::atomic::Ordering::Release);
    flood.join().unwrap();
}

/// QEMU's way: a memory backend first (`object-add`), then a DIMM naming it
/// (`device_add memdev=`); the backend cannot be shared or deleted while
/// the DIMM uses it, and can be once the DIMM is gone.
#[test]
fn object_add_device_add_device_del_object_del_like_qemu() {
    let (_srv, path) = server("objects", "memhp_default_state=online_movable");
    let mut c = ControlClient::connect(&path).unwrap();
    let ok = |r: serde_json::Value| assert!(r.get("return").is_some(), "{r}");
    let err = |r: serde_json::Value| r["error"]["desc"].as_str().unwrap().to_string();
    ok(c.execute(
        "object-add",
        json!({"qom-type": "memory-backend-ram", "id": "m1", "size": 268435456}),
    )
    .unwrap());
    assert_eq!(
        err(c
            .execute(
                "object-add",
                json!({"qom-type": "memory-backend-ram", "id": "m1", "size": 1})
            )
            .unwrap()),
        "attempt to add duplicate property 'm1' to object (type 'container')"
    );
    assert_eq!(
        err(c
            .execute(
                "device_add",
                json!({"driver": "pc-dimm", "id": "q0", "memdev": "nope"})
            )
            .unwrap()),
        "Property 'pc-dimm.memdev' can't find value 'nope'"
    );
    let r = c
        .execute(
            "device_add",
            json!({"driver": "pc-dimm", "id": "q1", "memdev": "m1"}),
        )
        .unwrap();
    assert_eq!(r["return"]["size"], json!(268435456));
    assert_eq!(
        err(c
            .execute(
                "device_add",
                json!({"driver": "pc-dimm", "id": "q2", "memdev": "m1"})
            )
            .unwrap()),
        "can't use already busy memdev: m1"
    );
    assert_eq!(
        err(c.execute("object-del", json!({"id": "m1"})).unwrap()),
        "object 'm1' is in use, can not be deleted"
    );
    let q = c.execute("query-memory-devices", json!({})).unwrap();
    assert_eq!(q["return"][0]["data"]["memdev"], "/objects/m1");
    ok(c.execute("device_del", json!({"id": "q1"})).unwrap());
    ok(c.execute("object-del", json!({"id": "m1"})).unwrap());
    assert_eq!(
        err(c.execute("object-del", json!({"id": "m1"})).unwrap()),
        "object 'm1' not found"
    );
}

/// QEMU 7.2 as recorded (`conformance/other-build/qmp-ids`): ids must be
/// identifiers (a letter, then letters, digits, `-`, `.`, `_`), checked
/// before anything else; the oracle's hot-add of `1bad` creates its
/// backend `mem-1bad` and only the `device_add` fails.
#[test]
fn malformed_ids_are_refused_like_qemu_and_the_backend_of_a_refused_dimm_stays() {
    let (_srv, path) = server("ids", "");
    let mut c = ControlClient::connect(&path).unwrap();
    let err = |r: serde_json::Value| r["error"]["desc"].as_str().unwrap().to_string();
    const BAD_ID: &str = "Parameter 'id' expects an identifier";
    for id in ["9x", "", "has space"] {
        let r = c
            .execute(
                "object-add",
                json!({"qom-type": "memory-backend-ram", "id": id, "size": 134217728}),
            )
            .unwrap();
        assert_eq!(err(r), BAD_ID, "object-add id {id:?}");
    }
    let r = c
        .execute("hotadd", json!({"id": "1bad", "size": "128M"}))
        .unwrap();
    assert_eq!(err(r), BAD_ID);
    // mem-1bad exists now: a DIMM can use it.
    let r = c
        .execute(
            "device_add",
            json!({"driver": "pc-dimm", "id": "good", "memdev": "mem-1bad"}),
        )
        .unwrap();
    assert_eq!(r["return"]["addr"], json!(0x1_0000_0000u64), "{r}");
    // The id is checked before the (busy) backend.
    let r = c
        .execute(
            "device_add",
            json!({"driver": "pc-dimm", "id": "", "memdev": "mem-1bad"}),
        )
        .unwrap();
    assert_eq!(err(r), BAD_ID);
    let r = c.execute("device_del", json!({"id": "1bad"})).unwrap();
    assert_eq!(
        r["error"],
        json!({"class": "DeviceNotFound", "desc": "Device '1bad' not found"})
    );
    let r = c.execute("device_del", json!({"id": ""})).unwrap();
    assert_eq!(
        r["error"],
        json!({"class": "GenericError", "desc": " is not a hotpluggable device"})
    );
}

/// A `device_add` without an id makes an anonymous device
/// (`/machine/peripheral-anon/device[N]`): QMP reports it without an id,
/// `device_del` reaches it by its path, and `query-memory-devices` lists
/// every device by address, not by name.
#[test]
fn a_dimm_added_without_an_id_is_anonymous_and_listed_by_address() {
    let (_srv, path) = server("anon", "memhp_default_state=online_movable");
    let mut c = ControlClient::connect(&path).unwrap();
    let ok = |r: serde_json::Value| assert!(r.get("return").is_some(), "{r}");
    ok(c.execute("hotadd", json!({"id": "zz", "size": "128M"}))
        .unwrap());
    ok(c.execute(
        "object-add",
        json!({"qom-type": "memory-backend-ram", "id": "m1", "size": 134217728}),
    )
    .unwrap());
    let r = c
        .execute("device_add", json!({"driver": "pc-dimm", "memdev": "m1"}))
        .unwrap();
    assert_eq!(r["return"]["addr"], json!(0x1_0800_0000u64), "{r}");
    ok(c.execute("hotadd", json!({"id": "aa", "size": "128M"}))
        .unwrap());
    let q = c.execute("query-memory-devices", json!({})).unwrap();
    let listed: Vec<(Option<&str>, u64)> = q["return"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["data"]["id"].as_str(),
                d["data"]["addr"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![
            (Some("zz"), 0x1_0000_0000),
            (None, 0x1_0800_0000),
            (Some("aa"), 0x1_1000_0000),
        ]
    );
    let mut ost = None;
    while ost.is_none() {
        let ev = c.next_event(Duration::from_secs(5)).unwrap();
        if ev["event"] == "ACPI_DEVICE_OST" && ev["data"]["info"]["slot"] == "1" {
            ost = Some(ev["data"]["info"].clone());
        }
    }
    assert_eq!(
        ost.unwrap(),
        json!({"slot": "1", "slot-type": "DIMM", "source": 1, "status": 0})
    );
    ok(c.execute(
        "device_del",
        json!({"id": "/machine/peripheral-anon/device[0]"}),
    )
    .unwrap());
    let deleted = loop {
        let ev = c.next_event(Duration::from_secs(5)).unwrap();
        if ev["event"] == "DEVICE_DELETED" {
            break ev["data"].clone();
        }
    };
    assert_eq!(
        deleted,
        json!({"path": "/machine/peripheral-anon/device[0]"})
    );
    ok(
        c.execute("device_del", json!({"id": "/machine/peripheral/zz"}))
            .unwrap(),
    );
}

/// `query-acpi-ospm-status` and `query-memory-size-summary` as QEMU 7.2
/// answered them (`conformance/other-build/ospm-status`): every DIMM slot
/// with its last `_OST` and the DIMM in it, then every possible CPU; an
/// eject that removed its DIMM leaves (source, 0) on a slot that names no
/// device, a refused one (3, 0x82) with the DIMM.
#[test]
fn ospm_status_keeps_each_slots_last_ost_and_the_summary_counts_plugged_memory() {
    let mut q = QemuPc::default();
    q.parse_mem_option("1G,slots=3,maxmem=4G").unwrap();
    q.smp = 2;
    q.maxcpus = 3;
    let spec = q
        .machine("memhp_default_state=online_movable", KernelVersion::V6_1)
        .unwrap();
    let host = Arc::new(Host::boot(&spec).unwrap());
    let path = std::env::temp_dir().join(format!("memhp-test-{}-ospm.sock", std::process::id()));
    let _srv = ControlServer::start(host, Arc::new(EventBus::default()), &path).unwrap();
    let mut c = ControlClient::connect(&path).unwrap();
    let cpus = [
        json!({"slot": "0", "slot-type": "CPU", "source": 0, "status": 0}),
        json!({"slot": "1", "slot-type": "CPU", "source": 0, "status": 0}),
        json!({"slot": "2", "slot-type": "CPU", "source": 0, "status": 0}),
    ];
    let dimm = |slot: u32, source: u32, status: u32, device: Option<&str>| {
        let mut v = json!({"slot": slot.to_string(), "slot-type": "DIMM", "source": source, "status": status});
        if let Some(d) = device {
            v["device"] = json!(d);
        }
        v
    };
    let status = |c: &mut ControlClient| {
        c.execute("query-acpi-ospm-status", json!({})).unwrap()["return"].clone()
    };
    let mut want = vec![
        dimm(0, 0, 0, None),
        dimm(1, 0, 0, None),
        dimm(2, 0, 0, None),
    ];
    want.extend(cpus.clone());
    assert_eq!(status(&mut c), json!(want));
    assert_eq!(
        c.execute("query-memory-size-summary", json!({})).unwrap()["return"],
        json!({"base-memory": 1u64 << 30, "plugged-memory": 0})
    );
    for id in ["d1", "d2"] {
        c.execute("hotadd", json!({"id": id, "size": "256M"}))
            .unwrap();
    }
    assert_eq!(
        c.execute("query-memory-size-summary", json!({})).unwrap()["return"],
        json!({"base-memory": 1u64 << 30, "plugged-memory": 512u64 << 20})
    );
    // d1 goes; d2 holds an unmovable page, so its eject is refused.
    assert!(c
        .execute("unplug", json!({"id": "d1"}))
        .unwrap()
        .get("return")
        .is_some());
    let r = c
        .execute(
            "workload",
            json!({"op": "alloc", "kind": "unmovable", "pages": 1, "block": 34}),
        )
        .unwrap();
    assert!(r.get("return").is_some(), "{r}");
    let mut want = vec![
        dimm(0, 3, 0, None),
        dimm(1, 1, 0, Some("d2")),
        dimm(2, 0, 0, None),
    ];
    want.extend(cpus.clone());
    assert_eq!(status(&mut c), json!(want));
    c.execute("unplug", json!({"id": "d2"})).unwrap();
    let mut want = vec![
        dimm(0, 3, 0, None),
        dimm(1, 3, 0x82, Some("d2")),
        dimm(2, 0, 0, None),
    ];
    want.extend(cpus);
    assert_eq!(status(&mut c), json!(want));
    assert_eq!(
        c.execute("query-memory-size-summary", json!({})).unwrap()["return"],
        json!({"base-memory": 1u64 << 30, "plugged-memory": 256u64 << 20})
    );
}

/// `qom-set`/`qom-get` refusals and `query-memdev` as QEMU 7.2 answered
/// (`conformance/other-build/qmp-props`, `qmp-vmem-misc`).
#[test]
fn qom_set_refusals_and_query_memdev_match_qemu() {
    let q = QemuPc {
        virtio_mem: vec![memhp_model::machine::VirtioMemSpec {
            id: "vm0".into(),
            node: 0,
            region_size: 1 << 30,
            block_size: 2 << 20,
            requested_size: 0,
        }],
        ..QemuPc::default()
    };
    let spec = q.machine("", KernelVersion::V6_1).unwrap();
    let host = Arc::new(Host::boot(&spec).unwrap());
    let path = std::env::temp_dir().join(format!("memhp-test-{}-qom.sock", std::process::id()));
    let _srv = ControlServer::start(host, Arc::new(EventBus::default()), &path).unwrap();
    let mut c = ControlClient::connect(&path).unwrap();
    let set = |c: &mut ControlClient, path: &str, prop: &str, value: serde_json::Value| {
        c.execute(
            "qom-set",
            json!({"path": path, "property": prop, "value": value}),
        )
        .unwrap()["error"]
            .clone()
    };
    let generic = |desc: &str| json!({"class": "GenericError", "desc": desc});
    let vm0 = "/machine/peripheral/vm0";
    for (prop, value, want) in [
        (
            "requested-size",
            json!(3145728),
            "'requested-size' has to be multiples of 'block-size' (0x200000)",
        ),
        (
            "requested-size",
            json!(2147483648u64),
            "'requested-size' cannot exceed the memory backend size(0x40000000)",
        ),
        (
            "requested-size",
            json!(-1),
            "'requested-size' has to be multiples of 'block-size' (0x200000)",
        ),
        (
            "requested-size",
            json!("x"),
            "Parameter 'requested-size' expects uint64",
        ),
        ("block-size", json!(4194304), "'block-size' cannot be changed"),
        ("size", json!(0), "Property 'virtio-mem.size' is not writable"),
        (
            "node",
            json!(1),
            "Attempt to set property 'node' on anonymous device (type 'virtio-mem') after it was realized",
        ),
        ("nosuch", json!(0), "Property 'virtio-mem-pci.nosuch' not found"),
    ] {
        assert_eq!(set(&mut c, vm0, prop, value), generic(want), "{prop}");
    }
    assert_eq!(
        set(
            &mut c,
            "/machine/peripheral/nosuch",
            "requested-size",
            json!(0)
        ),
        json!({"class": "DeviceNotFound", "desc": "Device '/machine/peripheral/nosuch' not found"})
    );
    c.execute("hotadd", json!({"id": "zz", "size": "128M"}))
        .unwrap();
    c.execute("hotadd", json!({"id": "aa", "size": "256M"}))
        .unwrap();
    assert_eq!(
        set(&mut c, "/machine/peripheral/zz", "addr", json!(0)),
        generic(
            "Attempt to set property 'addr' on device 'zz' (type 'pc-dimm') after it was realized"
        )
    );
    let r = c
        .execute(
            "qom-get",
            json!({"path": "/machine/peripheral/zz", "property": "nosuch"}),
        )
        .unwrap();
    assert_eq!(r["error"], generic("Property 'pc-dimm.nosuch' not found"));
    let memdev = |id: &str, size: u64| json!({"dump": true, "host-nodes": [], "id": id, "merge": true, "policy": "default", "prealloc": false, "reserve": true, "share": false, "size": size});
    assert_eq!(
        c.execute("query-memdev", json!({})).unwrap()["return"],
        json!([
            memdev("mem-aa", 256 << 20),
            memdev("mem-zz", 128 << 20),
            memdev("pc.ram", 1 << 30)
        ])
    );
}
