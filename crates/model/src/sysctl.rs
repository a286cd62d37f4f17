//! `/proc/sys/vm` of the 6.1 Debian build: every sysctl with its mode,
//! default and the range its handler accepts, and the values as written.
//! Those that change what memhp shows take effect: `watermark_scale_factor`
//! (watermarks, pcp `high`), `lowmem_reserve_ratio` (protection),
//! `overcommit_ratio`/`overcommit_kbytes` (`CommitLimit`),
//! `percpu_pagelist_high_fraction` (pcp `high`); `min_free_kbytes` and the
//! hugetlb ones are handled by the watermark and hugetlb models. The others
//! are kept and read back: what they steer (writeback, reclaim, OOM, mmap
//! layout) is outside the model.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How a sysctl parses a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `proc_dointvec_minmax`: one int in `[min, max]`.
    Int { min: i64, max: i64 },
    /// `proc_doulongvec_minmax` without bounds: one unsigned long.
    ULong,
    /// `proc_dointvec` over an array of `n` ints (`lowmem_reserve_ratio`).
    IntVec(usize),
    /// A string (`numa_zonelist_order`: 6.1 accepts and ignores writes).
    Text,
    /// Read by someone else (`hugetlb`, `min_free_kbytes`): see the
    /// watermark and hugetlb models.
    Model,
}

/// One sysctl: name, mode, parser, default (as read back, without the
/// newline).
pub struct Sysctl {
    pub name: &'static str,
    pub mode: u16,
    pub kind: Kind,
    pub default: &'static str,
}

const INT_MAX: i64 = i32::MAX as i64;

const fn int(name: &'static str, min: i64, max: i64, default: &'static str) -> Sysctl {
    Sysctl {
        name,
        mode: 0o644,
        kind: Kind::Int { min, max },
        default,
    }
}

const fn ulong(name: &'static str, default: &'static str) -> Sysctl {
    Sysctl {
        name,
        mode: 0o644,
        kind: Kind::ULong,
        default,
    }
}

/// One whose value the watermark or hugetlb model keeps.
const fn model(name: &'static str) -> Sysctl {
    Sysctl {
        name,
        mode: 0o644,
        kind: Kind::Model,
        default: "",
    }
}

const fn with_mode(s: Sysctl, mode: u16) -> Sysctl {
    Sysctl { mode, ..s }
}

/// Every `/proc/sys/vm` entry of the recorded guest, in listing order.
pub const VM_SYSCTLS: [Sysctl; 50] = [
    ulong("admin_reserve_kbytes", "8192"),
    with_mode(int("compact_memory", 1, 1, ""), 0o200),
    int("compact_unevictable_allowed", 0, 1, "1"),
    int("compaction_proactiveness", 0, 100, "20"),
    ulong("dirty_background_bytes", "0"),
    int("dirty_background_ratio", 0, 100, "10"),
    ulong("dirty_bytes", "0"),
    int("dirty_expire_centisecs", 0, INT_MAX, "3000"),
    int("dirty_ratio", 0, 100, "20"),
    int("dirty_writeback_centisecs", 0, INT_MAX, "500"),
    int("dirtytime_expire_seconds", 0, INT_MAX, "43200"),
    with_mode(int("drop_caches", 1, 4, ""), 0o200),
    int("extfrag_threshold", 0, 1000, "500"),
    int("hugetlb_optimize_vmemmap", 0, 1, "0"),
    int("hugetlb_shm_group", i32::MIN as i64, INT_MAX, "0"),
    int("laptop_mode", i32::MIN as i64, INT_MAX, "0"),
    int("legacy_va_layout", 0, INT_MAX, "0"),
    Sysctl {
        name: "lowmem_reserve_ratio",
        mode: 0o644,
        kind: Kind::IntVec(5),
        default: "256\t256\t32\t0\t0",
    },
    int("max_map_count", 0, INT_MAX, "65530"),
    int("memory_failure_early_kill", 0, 1, "0"),
    int("memory_failure_recovery", 0, 1, "1"),
    model("min_free_kbytes"),
    int("min_slab_ratio", 0, 100, "5"),
    int("min_unmapped_ratio", 0, 100, "1"),
    ulong("mmap_min_addr", "65536"),
    with_mode(int("mmap_rnd_bits", 28, 32, "28"), 0o600),
    with_mode(int("mmap_rnd_compat_bits", 8, 16, "8"), 0o600),
    model("nr_hugepages"),
    model("nr_hugepages_mempolicy"),
    model("nr_overcommit_hugepages"),
    int("numa_stat", 0, 1, "1"),
    Sysctl {
        name: "numa_zonelist_order",
        mode: 0o644,
        kind: Kind::Text,
        default: "Node",
    },
    int("oom_dump_tasks", i32::MIN as i64, INT_MAX, "1"),
    int("oom_kill_allocating_task", i32::MIN as i64, INT_MAX, "0"),
    ulong("overcommit_kbytes", "0"),
    int("overcommit_memory", 0, 2, "0"),
    int("overcommit_ratio", i32::MIN as i64, INT_MAX, "50"),
    int("page-cluster", 0, 31, "3"),
    int("page_lock_unfairness", 0, INT_MAX, "5"),
    int("panic_on_oom", 0, 2, "0"),
    int("percpu_pagelist_high_fraction", 0, INT_MAX, "0"),
    int("stat_interval", i32::MIN as i64, INT_MAX, "1"),
    with_mode(int("stat_refresh", i32::MIN as i64, INT_MAX, ""), 0o600),
    int("swappiness", 0, 200, "60"),
    int("unprivileged_userfaultfd", 0, 1, "0"),
    ulong("user_reserve_kbytes", ""),
    int("vfs_cache_pressure", 0, INT_MAX, "100"),
    int("watermark_boost_factor", 0, INT_MAX, "15000"),
    int("watermark_scale_factor", 1, 3000, "10"),
    int("zone_reclaim_mode", 0, INT_MAX, "0"),
];

/// The entry named `name`.
pub fn sysctl(name: &str) -> Option<&'static Sysctl> {
    VM_SYSCTLS.iter().find(|s| s.name == name)
}

/// `percpu_pagelist_high_fraction`'s smallest non-zero value.
pub const MIN_PERCPU_PAGELIST_HIGH_FRACTION: i64 = 8;

/// `user_reserve_kbytes` and `admin_reserve_kbytes` with their maxima
/// (128 MiB and 8 MiB).
pub const RESERVES: [(&str, u64); 2] = [
    ("user_reserve_kbytes", 1 << 17),
    ("admin_reserve_kbytes", 1 << 13),
];

/// `init_user_reserve`/`init_admin_reserve`: 1/32 of the free memory, at
/// most the reserve's maximum.
pub fn init_reserve(free_kb: u64, max: u64) -> u64 {
    (free_kb / 32).min(max)
}

/// The values written to the sysctls (those never written read their
/// default).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSysctls {
    values: BTreeMap<String, Vec<i64>>,
    /// `user_reserve_kbytes` as `init_user_reserve` set it: 3 % of the
    /// free memory then, at most 128 MiB.
    #[serde(default)]
    pub user_reserve_default: u64,
}

impl VmSysctls {
    /// The values of `name` (one for scalars), or its default.
    pub fn ints(&self, name: &str) -> Vec<i64> {
        if let Some(v) = self.values.get(name) {
            return v.clone();
        }
        if name == "user_reserve_kbytes" {
            return vec![self.user_reserve_default as i64];
        }
        sysctl(name)
            .map(|s| {
                s.default
                    .split('\t')
                    .filter_map(|v| v.parse().ok())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The single value of `name`.
    pub fn int(&self, name: &str) -> i64 {
        self.ints(name).first().copied().unwrap_or(0)
    }

    /// Set `name` (no check: the store parsed and checked it).
    pub fn set(&mut self, name: &str, values: Vec<i64>) {
        self.values.insert(name.to_string(), values);
    }

    /// What `name` reads (`%d` values separated by tabs, then a newline;
    /// `stat_refresh` reads empty).
    pub fn render(&self, name: &str) -> String {
        if name == "stat_refresh" {
            return String::new();
        }
        match sysctl(name).map(|s| s.kind) {
            Some(Kind::Text) => {
                format!("{}\n", sysctl(name).map(|s| s.default).unwrap_or_default())
            }
            _ => {
                let v: Vec<String> = self.ints(name).iter().map(i64::to_string).collect();
                format!("{}\n", v.join("\t"))
            }
        }
    }
}
