//! virtio-balloon through a real `memhp mount --balloon`: the guest driver
//! loaded with `memhp ctl module-load`, the target set with `memhp ctl
//! balloon` (QMP `balloon`), and what the guest shows in the mounted
//! `/proc/zoneinfo` and `/proc/meminfo`: inflated pages leave ZONE_DMA32's
//! `managed` count and `MemTotal` (as the 6.1 guest showed in
//! `conformance/behaviour/virtio-balloon`), deflating brings them back.

mod common;

use common::Machine;

/// `actual` of `memhp ctl query-balloon`.
fn actual(m: &Machine) -> u64 {
    let v: serde_json::Value = serde_json::from_str(&m.ctl(&["query-balloon"])).unwrap();
    v["actual"].as_u64().unwrap()
}

fn mem_total_kb(m: &Machine) -> u64 {
    let meminfo = m.read("proc/meminfo");
    let line = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn dma32_managed(m: &Machine) -> u64 {
    let zoneinfo = m.read("proc/zoneinfo");
    let dma32 = zoneinfo.split("zone    DMA32").nth(1).unwrap();
    let line = dma32
        .lines()
        .find(|l| l.trim().starts_with("managed"))
        .unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[test]
fn inflating_takes_pages_out_of_managed_and_memtotal_and_deflating_returns_them() {
    let m = Machine::mount("balloon", &["--balloon"]);
    assert_eq!(actual(&m), 1 << 30);
    let (before_total, before_dma32) = (mem_total_kb(&m), dma32_managed(&m));
    assert_eq!((before_total, before_dma32), (917440, 225520));

    // The target is kept until the driver binds.
    m.ctl(&["balloon", "768M"]);
    assert_eq!(mem_total_kb(&m), before_total);
    m.ctl(&["module-load", "virtio_pci"]);
    m.ctl(&["module-load", "virtio_balloon"]);
    assert_eq!(mem_total_kb(&m), before_total - 256 * 1024);
    assert_eq!(dma32_managed(&m), before_dma32 - 65536);
    assert_eq!(actual(&m), 768 << 20);

    m.ctl(&["balloon", "1G"]);
    assert_eq!(mem_total_kb(&m), before_total);
    assert_eq!(dma32_managed(&m), before_dma32);
}

#[test]
fn a_machine_without_a_balloon_refuses_balloon_commands() {
    let m = Machine::mount("noballoon", &[]);
    let (code, err) = m.ctl_fails(&["balloon", "512M"]);
    assert_ne!(code, Some(0));
    assert!(
        err.contains("No balloon device has been activated"),
        "{err}"
    );
}
