//! An offline whose migration runs out of memory retries until a signal,
//! and what the kernel logs meanwhile follows its ratelimits in virtual
//! time (the `offline-busy-slab` oracle scenario, at the model level).

use memhp_model::events::{CurrentTask, Task};
use memhp_model::machine::QemuPc;
use memhp_model::pages::PageState;
use memhp_model::{DeviceOutcome, HotplugError, KernelVersion, OfflineProgress, System};

/// The 1 GiB pc machine with 40000 files and 256 MiB in its tmpfs, boot
/// blocks 2-5 offline and block 6's offline retrying for want of memory.
fn retrying_offline_of_block_6() -> System {
    let mut q = QemuPc::default();
    q.parse_mem_option("1G,slots=4,maxmem=4G").unwrap();
    let mut s = System::boot(&q.machine("", KernelVersion::V6_1).unwrap()).unwrap();
    s.set_tmpfs_usage(40003, (256 << 20) + 8192).unwrap();
    for id in 2..=5 {
        assert_eq!(s.device_offline_nowait(id), Ok(DeviceOutcome::Changed));
    }
    s.events.take_klog();
    s.current_task = Some(CurrentTask::Known(Task {
        pid: 111,
        comm: "ohelper".into(),
    }));
    assert!(matches!(
        s.device_offline(6),
        OfflineProgress::Retrying { .. }
    ));
    s
}

fn count(log: &[String], pat: &str) -> usize {
    log.iter().filter(|l| l.contains(pat)).count()
}

#[test]
fn the_first_pass_reports_the_allocation_failure_and_ten_pages() {
    let mut s = retrying_offline_of_block_6();
    let log = s.events.take_klog();
    assert_eq!(
        log[0],
        "ohelper: page allocation failure: order:0, mode:0x144cc8(GFP_USER|__GFP_RETRY_MAYFAIL|__GFP_COMP|__GFP_MOVABLE), nodemask=0,cpuset=/,mems_allowed=0"
    );
    assert_eq!(
        log[1],
        "CPU: 0 PID: 111 Comm: ohelper Not tainted 6.1.0-56-amd64 #1  Debian 6.1.192-2"
    );
    assert_eq!(count(&log, "migrating pfn"), 10);
    // The call trace carries the unwinder's `?` entries every recorded
    // report shows: the slow path's and the migration loop's leftovers,
    // and the writer's earlier page faults.
    let trace: Vec<&str> = log
        .iter()
        .skip_while(|l| *l != " <TASK>")
        .skip(1)
        .take_while(|l| *l != " </TASK>")
        .map(String::as_str)
        .collect();
    assert_eq!(trace.len(), 28, "{trace:#?}");
    assert_eq!(trace[2], " ? unreserve_highatomic_pageblock+0x1e9/0x230");
    assert_eq!(trace[8], " ? do_pages_stat+0x360/0x360");
    assert_eq!(trace[9], " migrate_pages+0xb1e/0xc00");
    assert_eq!(trace[10], " ? do_pages_stat+0x360/0x360");
    assert_eq!(trace[19], " do_syscall_64+0x5d/0xb0");
    assert_eq!(trace[26], " ? exit_to_user_mode_prepare+0x44/0x240");
    assert_eq!(trace[27], " entry_SYSCALL_64_after_hwframe+0x6e/0xd8");
    let first = s.blocks[&6]
        .pages
        .first(|st| st == PageState::Movable)
        .unwrap();
    let pfn = s.block_start_pfn(6) + first;
    assert!(log.contains(&format!("migrating pfn {pfn:x} failed ret:-12")));
    // show_mem's totals follow the zones.
    assert!(log.contains(&"130942 pages RAM".to_string()), "{log:#?}");
    assert!(log.contains(&"32654 pages reserved".to_string()));
    assert!(log.contains(&"lowmem_reserve[]: 0 368 368 368 368".to_string()));
}

#[test]
fn sixty_virtual_seconds_log_twelve_bursts_and_six_failure_reports() {
    let mut s = retrying_offline_of_block_6();
    s.advance_clock(60_000).unwrap();
    let log = s.events.take_klog();
    assert_eq!(count(&log, "page allocation failure"), 6);
    assert_eq!(count(&log, "migrating pfn"), 120);
    assert_eq!(count(&log, "do_migrate_range: "), 11);
    assert_eq!(count(&log, "warn_alloc: "), 5);
    // Nothing more until the clock moves again.
    s.offline_retry();
    assert_eq!(s.events.take_klog(), Vec::<String>::new());
    assert_eq!(
        s.offline_signal(),
        OfflineProgress::Done(Err(HotplugError::Interrupted))
    );
    assert!(s.retry_log.is_none());
    s.advance_clock(60_000).unwrap();
    assert_eq!(s.events.take_klog(), Vec::<String>::new());
}

#[test]
fn freed_memory_lets_the_retrying_offline_finish_and_stops_the_reports() {
    let mut s = retrying_offline_of_block_6();
    s.set_tmpfs_usage(40003, 0).unwrap();
    assert_eq!(
        s.offline_retry(),
        OfflineProgress::Done(Ok(DeviceOutcome::Changed))
    );
    assert!(s.retry_log.is_none());
}

#[test]
fn the_log_is_the_same_however_the_clock_is_moved() {
    let mut once = retrying_offline_of_block_6();
    once.advance_clock(60_000).unwrap();
    let mut steps = retrying_offline_of_block_6();
    for _ in 0..1000 {
        steps.advance_clock(60).unwrap();
    }
    let (a, b) = (once.events.take_klog(), steps.events.take_klog());
    assert_eq!(a, b);
    // A window's suppressed count is its passes times the stuck pages,
    // less the 10 it printed (passes every 60 ms, windows reopen after
    // 5 s: 84 passes in the first window).
    let stuck = once.blocks[&6].pages.count(PageState::Movable);
    let first = a
        .iter()
        .find_map(|l| l.strip_prefix("do_migrate_range: "))
        .unwrap();
    assert_eq!(first, format!("{} callbacks suppressed", 84 * stuck - 10));
}

#[test]
fn a_day_at_most_per_clock_move() {
    let mut s = retrying_offline_of_block_6();
    assert_eq!(s.advance_clock(u64::MAX).map_err(|e| e.errno()), Err(22));
    s.advance_clock(86_400_000).unwrap();
    assert_eq!(s.clock_ms, 86_400_000);
}
