//! What the kernel logs while an offline's migration loop fails with
//! -ENOMEM, in virtual time (spec 02 §7.2): each pass of the loop fails
//! every page still in the block; `do_migrate_range` reports each failed
//! page ("migrating pfn ... failed ret:-12" and a page dump) under a
//! ratelimit of 10 messages per 5 s, and the failing target allocation
//! reports itself through `warn_alloc` (a "page allocation failure" with
//! `show_mem`) under a ratelimit of 1 per 10 s. When a window reopens, the
//! number of messages the previous one suppressed is logged first
//! ("callbacks suppressed").
//!
//! memhp's time is virtual: the loop makes one pass per [`PASS_MS`] of
//! virtual time, and virtual time moves when the host says so
//! ([`System::advance_clock`]: a scenario's `wa S` alarm moves it by S
//! seconds before it interrupts the write).

use crate::events::Task;
use crate::hotplug::HotplugError;
use crate::hugetlb::HPAGE_PAGES;
use crate::pages::{MigrateType, PageState, PAGEBLOCK_PAGES};
use crate::system::System;
use crate::zone::{ZoneType, MAX_NR_ZONES};
use crate::KernelVersion;
use serde::{Deserialize, Serialize};

/// The most virtual time one `advance_clock` may move.
pub const MAX_ADVANCE_MS: u64 = 86_400_000;

/// Virtual time of one pass of the migration loop (measured under TCG in
/// the oracle: ~1.9 M failed pages per 5 s window at ~22.6 k pages a pass).
pub const PASS_MS: u64 = 60;

/// `struct ratelimit_state` in virtual milliseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct RateLimit {
    interval_ms: u64,
    burst: u64,
    begin_ms: Option<u64>,
    printed: u64,
    missed: u64,
}

impl RateLimit {
    const fn new(interval_ms: u64, burst: u64) -> Self {
        RateLimit {
            interval_ms,
            burst,
            begin_ms: None,
            printed: 0,
            missed: 0,
        }
    }

    /// Whether this window has printed all it may.
    fn exhausted(&self) -> bool {
        self.printed >= self.burst
    }

    /// The last moment of the current window (calls after it reopen one).
    fn window_end(&self) -> u64 {
        self.begin_ms.map_or(0, |b| b + self.interval_ms)
    }

    /// `n` calls of `___ratelimit` at `now`: how many may print, and the
    /// suppressed count to report first (when a window reopened).
    fn calls(&mut self, now: u64, n: u64) -> (u64, Option<u64>) {
        let begin = *self.begin_ms.get_or_insert(now);
        let mut reopened = None;
        if now > begin + self.interval_ms {
            if self.missed > 0 {
                reopened = Some(self.missed);
            }
            self.begin_ms = Some(now);
            self.printed = 0;
            self.missed = 0;
        }
        let ok = n.min(self.burst - self.printed);
        self.printed += ok;
        self.missed += n - ok;
        (ok, reopened)
    }
}

/// The reporting state of an offline whose migration keeps failing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryLog {
    pub block: u64,
    /// The writer (`current`).
    pub task: Task,
    /// Virtual time of the next pass.
    next_pass_ms: u64,
    migrate_rs: RateLimit,
    nopage_rs: RateLimit,
}

/// The 6.1 Debian build's frames for `warn_alloc` called from the offline
/// migration loop, innermost first, as its unwinder prints them: with the
/// `?` entries (stale return addresses it cannot vouch for) that most of the
/// 33 reports recorded on the real kernel show. Three are left by the
/// allocator's slow path and the migration loop itself and appear in every
/// report; the others, after `do_syscall_64`, are the writer's page faults
/// before its `write(2)` (vvar's pfn mapping, the fault path) and appear in
/// most. The rest of what the recordings show varies from report to report
/// (timer interrupts, the writer's history) and is left out.
const WARN_ALLOC_TRACE_6_1: [&str; 28] = [
    "dump_stack_lvl+0x44/0x5c",
    "warn_alloc+0x151/0x170",
    "? unreserve_highatomic_pageblock+0x1e9/0x230",
    "__alloc_pages_slowpath.constprop.0+0xd04/0xe70",
    "__alloc_pages+0x305/0x330",
    "__folio_alloc+0x17/0x50",
    "alloc_migration_target+0xb8/0x160",
    "migrate_pages_batch+0x2fb/0xc70",
    "? do_pages_stat+0x360/0x360",
    "migrate_pages+0xb1e/0xc00",
    "? do_pages_stat+0x360/0x360",
    "do_migrate_range.isra.0+0x2c3/0x750",
    "offline_pages+0x629/0x7a8",
    "memory_subsys_offline+0x88/0x160",
    "device_offline+0xc7/0x120",
    "state_store+0x65/0xa0",
    "kernfs_fop_write_iter+0x12e/0x200",
    "vfs_write+0x235/0x3f0",
    "ksys_write+0x6b/0xf0",
    "do_syscall_64+0x5d/0xb0",
    "? vmf_insert_pfn_prot+0x96/0x1a0",
    "? __do_fault+0x33/0x110",
    "? do_fault+0x1b9/0x410",
    "? __handle_mm_fault+0x660/0xfa0",
    "? handle_mm_fault+0xdb/0x2d0",
    "? do_user_addr_fault+0x1b0/0x570",
    "? exit_to_user_mode_prepare+0x44/0x240",
    "entry_SYSCALL_64_after_hwframe+0x6e/0xd8",
];

impl System {
    /// Move virtual time forward by `ms`; an offline whose migration keeps
    /// failing makes its passes meanwhile (and logs what they report).
    ///
    /// At most [`MAX_ADVANCE_MS`] at a time (EINVAL beyond). Passes that
    /// cannot print (both ratelimit windows used up) are counted, not made
    /// one by one.
    pub fn advance_clock(&mut self, ms: u64) -> Result<(), HotplugError> {
        if ms > MAX_ADVANCE_MS {
            return Err(HotplugError::Invalid(
                "clock-advance: at most one day at a time",
            ));
        }
        let until = self.clock_ms + ms;
        while let Some(at) = self.retry_log.as_ref().map(|l| l.next_pass_ms) {
            if at > until {
                break;
            }
            if self.skip_quiet_passes(until) {
                continue;
            }
            self.clock_ms = at;
            self.failed_migration_pass();
        }
        self.clock_ms = until;
        Ok(())
    }

    /// While both ratelimit windows are used up, the passes up to the end
    /// of the first of them (and not beyond `until`) only add to what is
    /// suppressed: count them at once. Whether any were skipped.
    fn skip_quiet_passes(&mut self, until: u64) -> bool {
        let Some(log) = self.retry_log.as_mut() else {
            return false;
        };
        let (m, w) = (&log.migrate_rs, &log.nopage_rs);
        if !m.exhausted() || !w.exhausted() {
            return false;
        }
        let quiet_until = m.window_end().min(w.window_end()).min(until);
        if log.next_pass_ms > quiet_until {
            return false;
        }
        let passes = (quiet_until - log.next_pass_ms) / PASS_MS + 1;
        let stuck = self.blocks[&log.block].pages.migratable_pages();
        let log = self.retry_log.as_mut().expect("checked");
        log.migrate_rs.missed += passes * stuck;
        log.nopage_rs.missed += passes * u64::from(stuck > 0);
        log.next_pass_ms += passes * PASS_MS;
        true
    }

    /// The migration loop of the offline in flight failed with -ENOMEM for
    /// the first time: start reporting, with a pass now.
    pub(crate) fn start_retry_log(&mut self, block: u64) {
        if self.retry_log.as_ref().is_some_and(|l| l.block == block) {
            return;
        }
        self.retry_log = Some(RetryLog {
            block,
            task: self
                .current_task
                .as_ref()
                .and_then(|t| t.resolve())
                .unwrap_or_default(),
            next_pass_ms: self.clock_ms,
            migrate_rs: RateLimit::new(5000, 10),
            nopage_rs: RateLimit::new(10_000, 1),
        });
        self.failed_migration_pass();
    }

    /// One pass in which every movable page left in the block fails.
    fn failed_migration_pass(&mut self) {
        let Some(mut log) = self.retry_log.take() else {
            return;
        };
        let now = self.clock_ms;
        log.next_pass_ms = now + PASS_MS;
        let start = self.block_start_pfn(log.block);
        let stuck: Vec<u64> = self.blocks[&log.block]
            .pages
            .runs()
            .filter(|r| matches!(r.2, PageState::Movable | PageState::Balloon))
            .flat_map(|(s, n, _)| s..s + n)
            .take(10)
            .map(|off| start + off)
            .collect();
        let n = self.blocks[&log.block].pages.migratable_pages();
        if n > 0 {
            let (ok, missed) = log.nopage_rs.calls(now, 1);
            if let Some(m) = missed {
                self.events
                    .log(format!("warn_alloc: {m} callbacks suppressed"));
            }
            if ok == 1 {
                // Balloon pages are not on the LRU: not "isolated_anon".
                let lru = self.blocks[&log.block].pages.count(PageState::Movable);
                self.warn_alloc(&log, lru);
            }
            let (ok, missed) = log.migrate_rs.calls(now, n);
            if let Some(m) = missed {
                self.events
                    .log(format!("do_migrate_range: {m} callbacks suppressed"));
            }
            for &pfn in stuck.iter().take(ok as usize) {
                self.events
                    .log(format!("migrating pfn {pfn:x} failed ret:-12"));
                self.dump_movable_page(log.block, pfn);
            }
        }
        self.retry_log = Some(log);
    }

    /// `dump_page` of a shmem or balloon page whose migration failed
    /// (pointer values of a real dump are not modelled).
    fn dump_movable_page(&mut self, block: u64, pfn: u64) {
        let b = &self.blocks[&block];
        let nid = b.nid.unwrap_or(0);
        let zone = self.page_zone(b, pfn).unwrap_or(ZoneType::Normal).idx();
        let off = pfn - self.block_start_pfn(block);
        let balloon = b.pages.state_at(off) == Some(PageState::Balloon);
        let (head, flags, names) = match balloon {
            true => (
                "refcount:2 mapcount:-256 mapping:0000000000000000 index:0x1",
                crate::pages::dumped_flags(nid, zone, 0x4_0000),
                "reclaim",
            ),
            false => (
                "refcount:2 mapcount:0 mapping:(____ptrval____) index:0x0",
                crate::pages::dumped_flags(nid, zone, 0x8_000e),
                "referenced|uptodate|dirty|swapbacked",
            ),
        };
        self.events
            .log(format!("page:(____ptrval____) {head} pfn:{pfn:#x}"));
        self.events.log(format!(
            "flags: {flags:#x}({names}|node={nid}|zone={zone}|lastcpupid=0x1fffff)"
        ));
        self.events.log("page dumped because: migration failure");
    }

    /// `warn_alloc` for the failing migration target allocation, with
    /// `show_mem`; `isolated` pages are in the failing batch.
    fn warn_alloc(&mut self, log: &RetryLog, isolated: u64) {
        let zone = self.blocks[&log.block].zone.unwrap_or(ZoneType::Normal);
        let (mode, names) = match zone {
            // A target for a page of ZONE_MOVABLE may be highmem; the
            // printer names the largest composite first (recorded).
            ZoneType::Movable => (
                0x144cca,
                "GFP_HIGHUSER_MOVABLE|__GFP_RETRY_MAYFAIL|__GFP_COMP",
            ),
            _ => (
                0x144cc8,
                "GFP_USER|__GFP_RETRY_MAYFAIL|__GFP_COMP|__GFP_MOVABLE",
            ),
        };
        let nodemask = node_list(&self.migration_nodes(log.block));
        let mems: Vec<u32> = self
            .nodes
            .values()
            .filter(|n| n.has_memory)
            .map(|n| n.id)
            .collect();
        let t = &log.task;
        let mut lines = vec![
            format!(
                "{}: page allocation failure: order:0, mode:{mode:#x}({names}), nodemask={nodemask},cpuset=/,mems_allowed={}",
                t.comm,
                node_list(&mems)
            ),
            format!(
                "CPU: 0 PID: {} Comm: {} Not tainted {}",
                t.pid,
                t.comm,
                self.version.dump_stack_build()
            ),
        ];
        if let Some(hw) = &self.hardware_name {
            lines.push(format!("Hardware name: {hw}"));
        }
        if self.version == KernelVersion::V6_1 {
            lines.push("Call Trace:".into());
            lines.push(" <TASK>".into());
            lines.extend(WARN_ALLOC_TRACE_6_1.iter().map(|f| format!(" {f}")));
            lines.push(" </TASK>".into());
        }
        lines.extend(self.show_mem(log.block, isolated));
        for l in lines {
            self.events.log(l);
        }
    }

    /// `show_mem` (6.1 `__show_free_areas` and the summary after it);
    /// `isolated` pages of `block` are off the LRU for migration.
    fn show_mem(&self, block: u64, isolated: u64) -> Vec<String> {
        let k = |p: u64| p * 4;
        let nodes: Vec<u32> = self.online_nodes().map(|n| n.id).collect();
        let lru: u64 = nodes.iter().map(|&n| self.node_lru_pages(n)).sum();
        let r = &self.runtime;
        let active = r.active.min(lru);
        let inactive = lru.saturating_sub(isolated + active);
        let shmem = self.shmem_pages();
        let (sr, su) = self.slab_pages();
        let free = self.nr_free_pages();
        let mut out = vec![
            "Mem-Info:".to_string(),
            format!("active_anon:{active} inactive_anon:{inactive} isolated_anon:{isolated}"),
            " active_file:0 inactive_file:0 isolated_file:0".into(),
            " unevictable:0 dirty:0 writeback:0".into(),
            format!(" slab_reclaimable:{sr} slab_unreclaimable:{su}"),
            format!(
                " mapped:{} shmem:{shmem} pagetables:{}",
                r.mapped, r.pagetables
            ),
            " sec_pagetables:0 bounce:0".into(),
            " kernel_misc_reclaimable:0".into(),
            format!(" free:{free} free_pcp:0 free_cma:0"),
        ];
        for &nid in &nodes {
            out.push(format!(
                "Node {nid} active_anon:{}kB inactive_anon:{}kB active_file:0kB inactive_file:0kB unevictable:0kB isolated(anon):{}kB isolated(file):0kB mapped:{}kB dirty:0kB writeback:0kB shmem:{}kB shmem_thp: 0kB shmem_pmdmapped: 0kB anon_thp: 0kB writeback_tmp:0kB kernel_stack:{}kB pagetables:{}kB sec_pagetables:0kB all_unreclaimable? yes",
                k(active), k(inactive), k(isolated), k(r.mapped), k(shmem), k(r.kernel_stack), k(r.pagetables)
            ));
        }
        let populated = |nid: u32| {
            let node = &self.nodes[&nid];
            ZoneType::ALL
                .into_iter()
                .filter(move |&z| node.zone(z).populated())
        };
        for &nid in &nodes {
            for z in populated(nid) {
                let zone = self.nodes[&nid].zone(z);
                let lru = self.zone_pages_in(nid, z, |s| {
                    matches!(s, PageState::Movable | PageState::Pinned)
                });
                let in_zone = |b: &crate::block::MemoryBlock| self.zone_window(b, z).is_some();
                let b = &self.blocks[&block];
                let anon = match b.nid == Some(nid) && in_zone(b) {
                    true => lru.saturating_sub(isolated),
                    false => lru,
                };
                out.push(format!(
                    "Node {nid} {} free:{}kB boost:0kB min:{}kB low:{}kB high:{}kB reserved_highatomic:0KB active_anon:0kB inactive_anon:{}kB active_file:0kB inactive_file:0kB unevictable:0kB writepending:0kB present:{}kB managed:{}kB mlocked:0kB bounce:0kB free_pcp:0kB local_pcp:0kB free_cma:0kB",
                    z.name(),
                    k(self.zone_free_pages(nid, z)),
                    k(self.wmark.min_pages(nid, z)),
                    k(self.wmark.low_pages(nid, z)),
                    k(self.wmark.high_pages(nid, z)),
                    k(anon),
                    k(zone.present),
                    k(zone.managed)
                ));
                let reserve: Vec<String> = self
                    .lowmem_reserves(nid, z)
                    .iter()
                    .map(u64::to_string)
                    .collect();
                out.push(format!("lowmem_reserve[]: {}", reserve.join(" ")));
            }
        }
        for &nid in &nodes {
            for z in populated(nid) {
                out.push(self.buddy_line(nid, z));
            }
        }
        for &nid in &nodes {
            let (total, free) = self.node_huge_pages(nid);
            out.push(format!(
                "Node {nid} hugepages_total={total} hugepages_free={free} hugepages_surp=0 hugepages_size={}kB",
                k(HPAGE_PAGES)
            ));
        }
        let (present, managed) = nodes
            .iter()
            .flat_map(|&n| ZoneType::ALL.map(move |z| (n, z)))
            .map(|(n, z)| self.nodes[&n].zone(z))
            .fold((0, 0), |(p, m), z| (p + z.present, m + z.managed));
        let poisoned = self.hwpoison.count;
        out.extend([
            format!("{shmem} total pagecache pages"),
            "0 pages in swap cache".into(),
            "Free swap  = 0kB".into(),
            "Total swap = 0kB".into(),
            format!("{present} pages RAM"),
            "0 pages HighMem/MovableOnly".into(),
            format!("{} pages reserved", present - managed),
            format!("{poisoned} pages hwpoisoned"),
        ]);
        out
    }

    /// Pages of a zone whose state satisfies `pred`.
    pub fn zone_pages_in(&self, nid: u32, zone: ZoneType, pred: impl Fn(PageState) -> bool) -> u64 {
        self.blocks
            .values()
            .filter(|b| b.nid == Some(nid))
            .filter_map(|b| {
                let (lo, hi) = self.zone_window(b, zone)?;
                Some(
                    b.pages
                        .runs()
                        .filter(|r| pred(r.2))
                        .map(|(s, n, _)| (s + n).min(hi).saturating_sub(s.max(lo)))
                        .sum::<u64>(),
                )
            })
            .sum()
    }

    /// The zone's free lists: each free range split into the aligned
    /// power-of-two chunks the buddy allocator holds; per order, how many
    /// and which migratetypes they sit in (`/proc/buddyinfo`, show_mem).
    pub fn free_area(&self, nid: u32, zone: ZoneType) -> FreeArea {
        let mut nr = [0u64; MAX_ORDER];
        let mut by_type = [[0u64; MAX_ORDER]; BUDDY_TYPES.len()];
        for b in self.blocks.values().filter(|b| b.nid == Some(nid)) {
            let Some((lo, hi)) = self.zone_window(b, zone) else {
                continue;
            };
            let base = self.block_start_pfn(b.id);
            for (mut a, end) in b.pages.free_ranges(lo, hi) {
                while a < end {
                    let pfn = base + a;
                    let mut order = 0;
                    while order + 1 < MAX_ORDER
                        && (pfn >> (order + 1)) << (order + 1) == pfn
                        && a + (2 << order) <= end
                    {
                        order += 1;
                    }
                    nr[order] += 1;
                    let mt = b.pages.migratetype(a / PAGEBLOCK_PAGES);
                    if let Some(i) = BUDDY_TYPES.iter().position(|t| t.0 == mt) {
                        by_type[i][order] += 1;
                    }
                    a += 1 << order;
                }
            }
        }
        FreeArea { nr, by_type }
    }

    /// How many pageblocks of the zone are of each of [`BUDDY_TYPES`]'
    /// migratetypes, counted as `/proc/pagetypeinfo` does: one pageblock
    /// every `pageblock_nr_pages` from the zone's start pfn to its end,
    /// skipping pfns that are not online (holes between sections, offline
    /// blocks) or belong to another zone.
    pub fn pageblock_types(&self, nid: u32, zone: ZoneType) -> [u64; BUDDY_TYPES.len()] {
        let mut counts = [0; BUDDY_TYPES.len()];
        let Some(node) = self.nodes.get(&nid) else {
            return counts;
        };
        let z = node.zone(zone);
        let mut pfn = z.start_pfn;
        while pfn < z.end_pfn() {
            let id = self.pfn_to_block_id(pfn);
            // Skip to the first step in the next block when this one is
            // missing, offline or elsewhere.
            let next_block = self.block_start_pfn(id + 1);
            let window = self
                .blocks
                .get(&id)
                .filter(|b| b.nid == Some(nid))
                .and_then(|b| Some((b, self.zone_window(b, zone)?)));
            match window {
                Some((b, (lo, hi))) => {
                    let off = pfn - self.block_start_pfn(id);
                    if (lo..hi).contains(&off) {
                        let mt = b.pages.migratetype(off / PAGEBLOCK_PAGES);
                        if let Some(i) = BUDDY_TYPES.iter().position(|t| t.0 == mt) {
                            counts[i] += 1;
                        }
                    }
                    pfn += PAGEBLOCK_PAGES;
                }
                None => {
                    let steps = (next_block.max(pfn + 1) - pfn).div_ceil(PAGEBLOCK_PAGES);
                    pfn += steps * PAGEBLOCK_PAGES;
                }
            }
        }
        counts
    }

    /// show_mem's free-list line ("Node 0 DMA32: 19*4kB (U) ...").
    fn buddy_line(&self, nid: u32, zone: ZoneType) -> String {
        let FreeArea { nr, by_type } = self.free_area(nid, zone);
        let mut line = format!("Node {nid} {}: ", zone.name());
        let mut total = 0;
        for order in 0..MAX_ORDER {
            line.push_str(&format!("{}*{}kB ", nr[order], 4u64 << order));
            total += nr[order] * (4u64 << order);
            if nr[order] > 0 {
                let t: String = BUDDY_TYPES
                    .iter()
                    .zip(by_type)
                    .filter(|(_, n)| n[order] > 0)
                    .map(|(t, _)| t.1)
                    .collect();
                line.push_str(&format!("({t}) "));
            }
        }
        line.push_str(&format!("= {total}kB"));
        line
    }
}

/// `MAX_ORDER` of 6.1 x86-64: orders 0..=10.
pub const MAX_ORDER: usize = 11;

/// The migratetypes the page model knows, with show_mem's letters.
pub const BUDDY_TYPES: [(MigrateType, char); 3] = [
    (MigrateType::Unmovable, 'U'),
    (MigrateType::Movable, 'M'),
    (MigrateType::Isolate, 'I'),
];

/// A zone's free lists by order.
pub struct FreeArea {
    /// Free chunks of each order.
    pub nr: [u64; MAX_ORDER],
    /// Free chunks of each order in pageblocks of each of
    /// [`BUDDY_TYPES`]' migratetypes (`/proc/pagetypeinfo`).
    pub by_type: [[u64; MAX_ORDER]; BUDDY_TYPES.len()],
}

/// A node list as `%*pbl` prints it ("0", "0-1", "0,2").
fn node_list(nids: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < nids.len() {
        let mut j = i;
        while j + 1 < nids.len() && nids[j + 1] == nids[j] + 1 {
            j += 1;
        }
        parts.push(match i == j {
            true => nids[i].to_string(),
            false => format!("{}-{}", nids[i], nids[j]),
        });
        i = j + 1;
    }
    parts.join(",")
}

const _: () = assert!(MAX_NR_ZONES == 5);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratelimit_prints_a_burst_per_window_and_reports_what_it_suppressed() {
        let mut rs = RateLimit::new(5000, 10);
        assert_eq!(rs.calls(0, 25), (10, None));
        assert_eq!(rs.calls(5000, 25), (0, None));
        assert_eq!(rs.calls(5060, 25), (10, Some(40)));
    }

    #[test]
    fn node_lists_print_ranges() {
        assert_eq!(node_list(&[0]), "0");
        assert_eq!(node_list(&[0, 1, 2, 4]), "0-2,4");
    }
}
