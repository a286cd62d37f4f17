//! The hugetlb pool on a live mount (`memhp ctl hugetlb ...`): what
//! /proc/meminfo shows, and an offline that dissolves free huge pages or
//! fails with EBUSY when they are all reserved.

mod common;

use common::Machine;

const M: &str = "sys/devices/system/memory";

fn meminfo_huge(m: &Machine) -> Vec<String> {
    m.read("proc/meminfo")
        .lines()
        .filter(|l| {
            l.starts_with("HugePages_") || l.starts_with("Hugepagesize") || l.starts_with("Hugetlb")
        })
        .map(str::to_string)
        .collect()
}

#[test]
fn offline_dissolves_the_pool_pages_of_a_block_and_reserved_ones_refuse_with_ebusy() {
    let m = Machine::mount(
        "hugetlb",
        &["--cmdline", "memhp_default_state=online_movable"],
    );
    m.ctl(&["hotadd", "d1", "512M"]);
    let out: serde_json::Value =
        serde_json::from_str(&m.ctl(&["hugetlb", "grow", "8", "block=33"])).unwrap();
    assert_eq!(out["nr_hugepages"], 8);
    assert_eq!(
        meminfo_huge(&m),
        [
            "HugePages_Total:       8",
            "HugePages_Free:        8",
            "HugePages_Rsvd:        0",
            "HugePages_Surp:        0",
            "Hugepagesize:       2048 kB",
            "Hugetlb:           16384 kB"
        ]
    );
    assert_eq!(m.write(&format!("{M}/memory33/online"), "0"), Ok(()));
    assert_eq!(meminfo_huge(&m)[0], "HugePages_Total:       0");

    m.ctl(&["hugetlb", "grow", "4", "block=34"]);
    m.ctl(&["hugetlb", "reserve", "4"]);
    assert_eq!(
        m.write(&format!("{M}/memory34/state"), "offline"),
        Err(libc::EBUSY)
    );
    assert_eq!(m.read(&format!("{M}/memory34/state")), "online\n");
    assert_eq!(meminfo_huge(&m)[2], "HugePages_Rsvd:        4");
    let (_, err) = m.ctl_fails(&["hugetlb", "grow", "many", "block=34"]);
    assert!(
        err.contains("COUNT must be a number of huge pages"),
        "{err}"
    );
    let (_, err) = m.ctl_fails(&["hugetlb", "sell", "1", "block=34"]);
    assert!(err.contains("unknown op 'sell'"), "{err}");
}
