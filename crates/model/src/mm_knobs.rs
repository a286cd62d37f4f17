//! The other knobs of `/sys/kernel/mm`: KSM's (`ksm/`), the multi-gen
//! LRU's (`lru_gen/`), NUMA demotion's (`numa/`) and swap readahead's
//! (`swap/`), with 6.1's defaults and their stores' parsing and bounds.
//! KSM's daemon and the LRU generations are not simulated: KSM's counters
//! stay 0 (no process asks for merging here).

use crate::kstr::{kstrtobool, kstrtouint, kstrtoul_dec};
use serde::{Deserialize, Serialize};

/// Why a store was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KnobError {
    #[error("invalid value")]
    Invalid,
}

impl KnobError {
    pub fn errno(self) -> i32 {
        match self {
            KnobError::Invalid => 22,
        }
    }
}

/// `CONFIG_HZ` of the Debian image: `min_ttl_ms` is kept in jiffies.
const HZ: u64 = 250;
/// The multi-gen LRU capabilities x86 has: the core, page-table walks
/// (hardware accessed bits), non-leaf PMD accessed bits.
const LRU_GEN_CAPS: u32 = 0x7;

/// The directories and their files: (name, writable).
pub const DIRS: [(&str, &[(&str, bool)]); 4] = [
    (
        "ksm",
        &[
            ("full_scans", false),
            ("max_page_sharing", true),
            ("merge_across_nodes", true),
            ("pages_shared", false),
            ("pages_sharing", false),
            ("pages_to_scan", true),
            ("pages_unshared", false),
            ("pages_volatile", false),
            ("run", true),
            ("sleep_millisecs", true),
            ("stable_node_chains", false),
            ("stable_node_chains_prune_millisecs", true),
            ("stable_node_dups", false),
            ("use_zero_pages", true),
        ],
    ),
    ("lru_gen", &[("enabled", true), ("min_ttl_ms", true)]),
    ("numa", &[("demotion_enabled", true)]),
    ("swap", &[("vma_ra_enabled", true)]),
];

/// The knobs' values.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmKnobs {
    pub ksm_run: u32,
    pub ksm_sleep_millisecs: u32,
    pub ksm_pages_to_scan: u32,
    pub ksm_max_page_sharing: i32,
    pub ksm_merge_across_nodes: bool,
    pub ksm_stable_node_chains_prune_millisecs: u32,
    pub ksm_use_zero_pages: bool,
    pub lru_gen_caps: u32,
    pub lru_gen_min_ttl_jiffies: u64,
    pub numa_demotion_enabled: bool,
    pub swap_vma_ra_enabled: bool,
}

impl Default for MmKnobs {
    /// A booted 6.1 guest (`conformance/behaviour/kernel-mm`).
    fn default() -> Self {
        MmKnobs {
            ksm_run: 0,
            ksm_sleep_millisecs: 20,
            ksm_pages_to_scan: 100,
            ksm_max_page_sharing: 256,
            ksm_merge_across_nodes: true,
            ksm_stable_node_chains_prune_millisecs: 2000,
            ksm_use_zero_pages: false,
            lru_gen_caps: 0,
            lru_gen_min_ttl_jiffies: 0,
            numa_demotion_enabled: false,
            swap_vma_ra_enabled: true,
        }
    }
}

fn tf(b: bool) -> String {
    format!("{b}\n")
}

/// Base-10 `kstrtouint`.
fn uint_dec(data: &[u8]) -> Result<u32, KnobError> {
    kstrtoul_dec(data)
        .ok()
        .and_then(|v| u32::try_from(v).ok())
        .ok_or(KnobError::Invalid)
}

impl MmKnobs {
    /// `dir/file`'s content, `None` if there is no such knob.
    pub fn read(&self, dir: &str, file: &str) -> Option<String> {
        Some(match (dir, file) {
            ("ksm", "run") => format!("{}\n", self.ksm_run),
            ("ksm", "sleep_millisecs") => format!("{}\n", self.ksm_sleep_millisecs),
            ("ksm", "pages_to_scan") => format!("{}\n", self.ksm_pages_to_scan),
            ("ksm", "max_page_sharing") => format!("{}\n", self.ksm_max_page_sharing),
            ("ksm", "merge_across_nodes") => format!("{}\n", u8::from(self.ksm_merge_across_nodes)),
            ("ksm", "stable_node_chains_prune_millisecs") => {
                format!("{}\n", self.ksm_stable_node_chains_prune_millisecs)
            }
            ("ksm", "use_zero_pages") => format!("{}\n", u8::from(self.ksm_use_zero_pages)),
            (
                "ksm",
                "full_scans" | "pages_shared" | "pages_sharing" | "pages_unshared"
                | "pages_volatile" | "stable_node_chains" | "stable_node_dups",
            ) => "0\n".to_string(),
            ("lru_gen", "enabled") => format!("{:#06x}\n", self.lru_gen_caps),
            ("lru_gen", "min_ttl_ms") => {
                format!("{}\n", self.lru_gen_min_ttl_jiffies * 1000 / HZ)
            }
            ("numa", "demotion_enabled") => tf(self.numa_demotion_enabled),
            ("swap", "vma_ra_enabled") => tf(self.swap_vma_ra_enabled),
            _ => return None,
        })
    }

    /// A write to `dir/file`: the bytes taken, or why not. `None` if there
    /// is no such writable knob.
    pub fn store(
        &mut self,
        dir: &str,
        file: &str,
        data: &[u8],
    ) -> Option<Result<usize, KnobError>> {
        let bool_of = |d: &[u8]| kstrtobool(d).map_err(|_| KnobError::Invalid);
        let r = match (dir, file) {
            // run_store: 0 stop, 1 run, 2 unmerge.
            ("ksm", "run") => uint_dec(data).and_then(|v| match v {
                0..=2 => {
                    self.ksm_run = v;
                    Ok(())
                }
                _ => Err(KnobError::Invalid),
            }),
            ("ksm", "sleep_millisecs") => uint_dec(data).map(|v| self.ksm_sleep_millisecs = v),
            ("ksm", "pages_to_scan") => uint_dec(data).map(|v| self.ksm_pages_to_scan = v),
            ("ksm", "stable_node_chains_prune_millisecs") => {
                uint_dec(data).map(|v| self.ksm_stable_node_chains_prune_millisecs = v)
            }
            // At least 2 (nothing is shared, so never EBUSY here).
            ("ksm", "max_page_sharing") => kstrtoul_dec(data)
                .ok()
                .and_then(|v| i32::try_from(v).ok())
                .filter(|&v| v >= 2)
                .map(|v| self.ksm_max_page_sharing = v)
                .ok_or(KnobError::Invalid),
            ("ksm", "merge_across_nodes") => match kstrtoul_dec(data) {
                Ok(v @ 0..=1) => {
                    self.ksm_merge_across_nodes = v == 1;
                    Ok(())
                }
                _ => Err(KnobError::Invalid),
            },
            ("ksm", "use_zero_pages") => bool_of(data).map(|v| self.ksm_use_zero_pages = v),
            // A number (any base) of capabilities, or y/n by the first
            // letter; the ones x86 lacks do not exist.
            ("lru_gen", "enabled") => {
                let caps = match kstrtouint(data) {
                    Ok(v) => Ok(v),
                    Err(_) => match data.first().map(u8::to_ascii_lowercase) {
                        Some(b'n') => Ok(0),
                        Some(b'y') => Ok(u32::MAX),
                        _ => Err(KnobError::Invalid),
                    },
                };
                caps.map(|c| self.lru_gen_caps = c & LRU_GEN_CAPS)
            }
            // msecs_to_jiffies rounds up.
            ("lru_gen", "min_ttl_ms") => kstrtouint(data)
                .map(|ms| self.lru_gen_min_ttl_jiffies = (u64::from(ms) * HZ).div_ceil(1000))
                .map_err(|_| KnobError::Invalid),
            ("numa", "demotion_enabled") => bool_of(data).map(|v| self.numa_demotion_enabled = v),
            ("swap", "vma_ra_enabled") => bool_of(data).map(|v| self.swap_vma_ra_enabled = v),
            _ => return None,
        };
        Some(r.map(|()| data.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_parse_and_bound_as_the_kernel() {
        let mut k = MmKnobs::default();
        assert_eq!(k.store("ksm", "run", b"1"), Some(Ok(1)));
        assert_eq!(k.read("ksm", "run").as_deref(), Some("1\n"));
        assert_eq!(k.store("ksm", "run", b"3"), Some(Err(KnobError::Invalid)));
        assert_eq!(
            k.store("ksm", "sleep_millisecs", b"x"),
            Some(Err(KnobError::Invalid))
        );
        assert_eq!(
            k.store("ksm", "max_page_sharing", b"1"),
            Some(Err(KnobError::Invalid))
        );
        assert_eq!(k.store("lru_gen", "enabled", b"y\n"), Some(Ok(2)));
        assert_eq!(k.read("lru_gen", "enabled").as_deref(), Some("0x0007\n"));
        assert_eq!(k.store("lru_gen", "enabled", b"0x9"), Some(Ok(3)));
        assert_eq!(k.read("lru_gen", "enabled").as_deref(), Some("0x0001\n"));
        // HZ=250: 1 ms is a jiffy, 4 ms.
        assert_eq!(k.store("lru_gen", "min_ttl_ms", b"1"), Some(Ok(1)));
        assert_eq!(k.read("lru_gen", "min_ttl_ms").as_deref(), Some("4\n"));
        assert_eq!(
            k.store("numa", "demotion_enabled", b"maybe"),
            Some(Err(KnobError::Invalid))
        );
        assert_eq!(k.store("ksm", "full_scans", b"1"), None);
    }
}
