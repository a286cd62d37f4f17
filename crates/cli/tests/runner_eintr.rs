//! The scenario runner end to end: a pinned page makes an offline retry for
//! ever; the guest's `wa 60` alarm interrupts it at once in virtual time and
//! the write reports EINTR after "60000 ms", as the real kernel did in the
//! oracle's `offline-busy-slab` run. The block stays online.

use std::process::Command;

const MEMHP: &str = env!("CARGO_BIN_EXE_memhp");

#[test]
fn endless_offline_retry_ends_with_eintr_on_the_virtual_alarm() {
    let dir = std::env::temp_dir().join(format!("memhp-eintr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let scn = dir.join("pinned.scn");
    std::fs::write(
        &scn,
        "mem: 1G,slots=4,maxmem=4G\nsteps:\n\"$MEMHP\" ctl --socket \"$MEMHP_SOCK\" workload alloc pinned 16 block=4 > /dev/null\n\
         wa 60 $M/memory4/state offline\nr $M/memory4/state\nw $M/memory5/state offline\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = Command::new(MEMHP)
        .args(["scenario", "run"])
        .arg(&scn)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        started.elapsed().as_secs() < 20,
        "the alarm must not take real seconds"
    );
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(
        t.contains(
            "write /sys/devices/system/memory/memory4/state \"offline\" -> EINTR(4) [60000 ms]\n"
        ),
        "{t}"
    );
    assert!(
        t.contains("read /sys/devices/system/memory/memory4/state = \"online\\n\"\n"),
        "{t}"
    );
    assert!(
        t.contains("write /sys/devices/system/memory/memory5/state \"offline\" -> OK (ret=7)\n"),
        "{t}"
    );
    assert!(t.contains("=== END: complete"), "{t}");
}
