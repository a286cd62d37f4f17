//! Transparent huge pages' sysfs settings (`/sys/kernel/mm/
//! transparent_hugepage`): the choices of `enabled`, `defrag` and
//! `shmem_enabled`, `use_zero_page` and khugepaged's tunables. Only
//! `enabled` reaches the rest of the model: khugepaged starts or stops,
//! which moves `min_free_kbytes` ([`crate::wmark`]).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `enabled`'s choices.
pub const ENABLED: [&str; 3] = ["always", "madvise", "never"];
/// `defrag`'s choices.
pub const DEFRAG: [&str; 5] = ["always", "defer", "defer+madvise", "madvise", "never"];
/// `shmem_enabled`'s choices.
pub const SHMEM_ENABLED: [&str; 6] = ["always", "within_size", "advise", "never", "deny", "force"];

/// khugepaged's tunables: name, writable, default, smallest and largest
/// value a write may set (`kstrtouint`/`kstrtoul` then the store's check).
pub const KHUGEPAGED: [(&str, bool, u64, u64, u64); 9] = [
    ("alloc_sleep_millisecs", true, 60000, 0, u32::MAX as u64),
    ("defrag", true, 1, 0, 1),
    ("full_scans", false, 0, 0, 0),
    ("max_ptes_none", true, 511, 0, 511),
    ("max_ptes_shared", true, 256, 0, 511),
    ("max_ptes_swap", true, 64, 0, 511),
    ("pages_collapsed", false, 0, 0, 0),
    ("pages_to_scan", true, 4096, 1, u32::MAX as u64),
    ("scan_sleep_millisecs", true, 10000, 0, u32::MAX as u64),
];

/// The settings, as indexes into the choice lists.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Thp {
    pub enabled: usize,
    pub defrag: usize,
    pub shmem_enabled: usize,
    pub use_zero_page: bool,
    /// khugepaged tunables that were written.
    #[serde(default)]
    pub khugepaged: BTreeMap<String, u64>,
}

impl Default for Thp {
    /// Debian's build: `always`, `madvise`, shmem `never`, the zero page.
    fn default() -> Self {
        Thp {
            enabled: 0,
            defrag: 3,
            shmem_enabled: 3,
            use_zero_page: true,
            khugepaged: BTreeMap::new(),
        }
    }
}

impl Thp {
    /// After boot: `transparent_hugepage=` sets `enabled`; below 512 MiB
    /// `hugepage_init` clears every flag (`enabled` and `defrag` read
    /// `never`, no zero page).
    pub fn at_boot(cmdline_enabled: Option<usize>, small: bool) -> Self {
        let mut t = Thp::default();
        if small {
            t.enabled = 2;
            t.defrag = 4;
            t.use_zero_page = false;
            t.khugepaged.insert("defrag".into(), 0);
        } else if let Some(e) = cmdline_enabled {
            t.enabled = e;
        }
        t
    }

    /// khugepaged runs (`hugepage_flags_enabled`).
    pub fn khugepaged_running(&self) -> bool {
        self.enabled != 2
    }

    /// A khugepaged tunable's value.
    pub fn khugepaged_value(&self, name: &str) -> Option<u64> {
        let (_, _, default, _, _) = KHUGEPAGED.iter().find(|k| k.0 == name)?;
        Some(self.khugepaged.get(name).copied().unwrap_or(*default))
    }
}

/// A choice file's content: every choice, the current one bracketed.
pub fn render_choices(choices: &[&str], current: usize) -> String {
    let words: Vec<String> = choices
        .iter()
        .enumerate()
        .map(|(i, c)| match i == current {
            true => format!("[{c}]"),
            false => (*c).to_string(),
        })
        .collect();
    format!("{}\n", words.join(" "))
}
