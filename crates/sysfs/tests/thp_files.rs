//! `/sys/kernel/mm/transparent_hugepage` as Linux 6.1 showed it on 1 GiB
//! and 448 MiB guests (`conformance/behaviour` `thp-files`,
//! `thp-files-448M`): the choices, their parsing, and `min_free_kbytes` as
//! khugepaged starts and stops.

use memhp_model::machine::QemuPc;
use memhp_model::shared::Shared;
use memhp_model::{KernelVersion, System};
use memhp_sysfs::vfs::{Cancel, Errno, Tree};
use memhp_sysfs::SysfsTree;
use std::sync::Arc;

const THP: &str = "sys/kernel/mm/transparent_hugepage";

fn tree(mem: &str) -> SysfsTree {
    let mut q = QemuPc::default();
    q.parse_mem_option(mem).unwrap();
    let sys = System::boot(&q.machine("", KernelVersion::V6_1).unwrap()).unwrap();
    SysfsTree::new(Arc::new(Shared::new(sys)))
}

fn read(t: &SysfsTree, p: &str) -> String {
    String::from_utf8(t.read(p).unwrap()).unwrap()
}

fn write(t: &SysfsTree, p: &str, v: &str) -> Result<usize, Errno> {
    t.open(p, false, true)?;
    t.write(p, v.as_bytes(), &Cancel::new())
}

fn min_free(t: &SysfsTree) -> String {
    read(t, "proc/sys/vm/min_free_kbytes")
}

#[test]
fn the_settings_read_as_debians_build_sets_them() {
    let t = tree("1G,slots=4,maxmem=4G");
    assert_eq!(
        read(&t, &format!("{THP}/enabled")),
        "[always] madvise never\n"
    );
    assert_eq!(
        read(&t, &format!("{THP}/defrag")),
        "always defer defer+madvise [madvise] never\n"
    );
    assert_eq!(
        read(&t, &format!("{THP}/shmem_enabled")),
        "always within_size advise [never] deny force\n"
    );
    assert_eq!(read(&t, &format!("{THP}/hpage_pmd_size")), "2097152\n");
    assert_eq!(
        read(&t, &format!("{THP}/khugepaged/pages_to_scan")),
        "4096\n"
    );
    assert_eq!(
        t.open(&format!("{THP}/hpage_pmd_size"), false, true),
        Err(Errno::EACCES)
    );
}

/// Turning THP off stops khugepaged and computes `min_free_kbytes` anew
/// (3687 on 1 GiB); on again it is raised for THP (45056), with a message
/// once a value was written to the sysctl.
#[test]
fn enabled_starts_and_stops_khugepaged_and_min_free_kbytes_follows() {
    let t = tree("1G,slots=4,maxmem=4G");
    assert_eq!(min_free(&t), "45056\n");
    assert_eq!(write(&t, &format!("{THP}/enabled"), "never"), Ok(5));
    assert_eq!(
        read(&t, &format!("{THP}/enabled")),
        "always madvise [never]\n"
    );
    assert_eq!(min_free(&t), "3687\n");
    assert_eq!(write(&t, &format!("{THP}/enabled"), "always"), Ok(6));
    assert_eq!(min_free(&t), "45056\n");
    write(&t, "proc/sys/vm/min_free_kbytes", "1024").unwrap();
    t.shared().modify(|s| s.events.take_klog());
    assert_eq!(write(&t, &format!("{THP}/enabled"), "madvise"), Ok(7));
    assert_eq!(min_free(&t), "45056\n");
    assert_eq!(
        t.shared().modify(|s| s.events.take_klog()),
        ["khugepaged: raising min_free_kbytes from 1024 to 45056 to help transparent hugepage allocations"]
    );
}

#[test]
fn writes_are_parsed_as_the_stores_do() {
    let t = tree("1G,slots=4,maxmem=4G");
    let w = |f: &str, v: &str| write(&t, &format!("{THP}/{f}"), v);
    assert_eq!(w("enabled", "always\n"), Ok(7));
    assert_eq!(w("enabled", "Always"), Err(Errno::EINVAL));
    assert_eq!(w("enabled", "[always]"), Err(Errno::EINVAL));
    assert_eq!(w("defrag", "defer+madvise"), Ok(13));
    assert_eq!(w("defrag", "foo"), Err(Errno::EINVAL));
    assert_eq!(w("shmem_enabled", "force"), Ok(5));
    assert_eq!(w("shmem_enabled", "bogus"), Err(Errno::EINVAL));
    assert_eq!(w("use_zero_page", "2"), Err(Errno::EINVAL));
    assert_eq!(w("use_zero_page", "0"), Ok(1));
    assert_eq!(w("khugepaged/pages_to_scan", "0"), Err(Errno::EINVAL));
    assert_eq!(w("khugepaged/pages_to_scan", "1024"), Ok(4));
    assert_eq!(w("khugepaged/max_ptes_none", "512"), Err(Errno::EINVAL));
    assert_eq!(
        read(&t, &format!("{THP}/shmem_enabled")),
        "always within_size advise never deny [force]\n"
    );
    assert_eq!(read(&t, &format!("{THP}/use_zero_page")), "0\n");
}

/// Below 512 MiB `hugepage_init` clears every flag; the machine's DIMM
/// region (4 GiB - 448 MiB + a GiB per slot) need not end on a section.
#[test]
fn a_448m_guest_boots_with_thp_off() {
    let t = tree("448M,slots=4,maxmem=4G");
    assert_eq!(
        read(&t, &format!("{THP}/enabled")),
        "always madvise [never]\n"
    );
    assert_eq!(
        read(&t, &format!("{THP}/defrag")),
        "always defer defer+madvise madvise [never]\n"
    );
    assert_eq!(read(&t, &format!("{THP}/use_zero_page")), "0\n");
    assert_eq!(read(&t, &format!("{THP}/khugepaged/defrag")), "0\n");
    assert_eq!(write(&t, &format!("{THP}/enabled"), "always"), Ok(6));
    let raised: u64 = min_free(&t).trim().parse().unwrap();
    assert!(raised > 10_000, "{raised}");
}
