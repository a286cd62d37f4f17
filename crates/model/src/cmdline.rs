//! The kernel command line parameters that shape memory hotplug
//! (spec 01 §5.2, §7.2).

use crate::block::OnlineType;
use crate::kstr;
use serde::{Deserialize, Serialize};

/// `memory_hotplug.online_policy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OnlinePolicy {
    ContigZones,
    AutoMovable,
}

impl OnlinePolicy {
    pub const fn as_str(self) -> &'static str {
        match self {
            OnlinePolicy::ContigZones => "contig-zones",
            OnlinePolicy::AutoMovable => "auto-movable",
        }
    }

    /// `sysfs_match_string` over the two names.
    pub fn from_sysfs(buf: &[u8]) -> Option<OnlinePolicy> {
        [OnlinePolicy::ContigZones, OnlinePolicy::AutoMovable]
            .into_iter()
            .find(|p| kstr::sysfs_streq(buf, p.as_str().as_bytes()))
    }
}

/// `memory_hotplug.memmap_on_memory`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemmapOnMemory {
    Off,
    On,
    /// ML only (≈6.6+).
    Force,
}

/// `kernelcore=` / `movablecore=` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CoreSpec {
    /// A size in pages (from a byte value).
    Pages(u64),
    /// A percentage of all memory.
    Percent(u64),
    /// `kernelcore=mirror`.
    Mirror,
}

/// The parsed command line. Unknown words are kept in `raw` only.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelCmdline {
    pub raw: String,
    pub memhp_default_state: Option<OnlineType>,
    pub online_policy: Option<OnlinePolicy>,
    pub auto_movable_ratio: Option<u32>,
    pub auto_movable_numa_aware: Option<bool>,
    pub memmap_on_memory: Option<MemmapOnMemory>,
    pub kernelcore: Option<CoreSpec>,
    pub movablecore: Option<CoreSpec>,
    pub movable_node: bool,
    /// `memblock=debug`: memblock reports every operation.
    #[serde(default)]
    pub memblock_debug: bool,
    /// `mem=` limit in bytes.
    pub mem_limit: Option<u64>,
    /// Module parameters whose value their setter refused, as (value,
    /// name), in command-line order: `parse_args` logs each ("Booting
    /// kernel: `bar' invalid for parameter `memory_hotplug.online_policy'").
    pub invalid_params: Vec<(String, String)>,
    pub acpi_no_memhotplug: bool,
    /// `transparent_hugepage=never`: no khugepaged, so nothing raises
    /// `min_free_kbytes` for THP.
    #[serde(default)]
    pub thp_never: bool,
    /// `hugepages=N`: huge pages of the default size (2 MiB) the kernel
    /// allocates while it boots (`hugetlb_init`).
    #[serde(default)]
    pub hugepages: Option<u64>,
    /// What parsing `hugepagesz=`, `default_hugepagesz=` and `hugepages=`
    /// printed (only 2 MiB pages exist: QEMU's default CPU has no 1 GiB
    /// pages).
    #[serde(default)]
    pub hugetlb_messages: Vec<String>,
    /// `transparent_hugepage=always|madvise|never`: THP's `enabled` choice.
    #[serde(default)]
    pub thp_enabled: Option<usize>,
}

fn parse_core(value: &str) -> Option<CoreSpec> {
    if value == "mirror" {
        return Some(CoreSpec::Mirror);
    }
    let (n, _) = kstr::memparse(value)?;
    // cmdline_parse_core: an integer followed by '%' is a percentage,
    // otherwise the whole value is re-parsed as a byte count.
    if let Some((pct, tail)) = parse_percent(value) {
        if tail.starts_with('%') {
            return Some(CoreSpec::Percent(pct));
        }
    }
    Some(CoreSpec::Pages(n >> crate::units::PAGE_SHIFT))
}

fn parse_percent(value: &str) -> Option<(u64, &str)> {
    let end = value
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(value.len());
    if end == 0 {
        return None;
    }
    Some((value[..end].parse().ok()?, &value[end..]))
}

/// The state of hugetlb's command-line parsing (`parsed_valid_hugepagesz`
/// and friends).
struct HugetlbSetup {
    parsed_valid: bool,
    /// The 2 MiB hstate was added by a size parameter.
    hstate: bool,
    parsed_default: bool,
    /// Which count the last `hugepages=` set: the default hstate's
    /// (`false`) or the parsed hstate's (`true`).
    last: Option<bool>,
}

impl Default for HugetlbSetup {
    fn default() -> Self {
        HugetlbSetup {
            parsed_valid: true,
            hstate: false,
            parsed_default: false,
            last: None,
        }
    }
}

/// The one huge page size x86 offers here.
const HPAGE_BYTES: u64 = 2 << 20;

impl HugetlbSetup {
    fn valid(v: &str) -> bool {
        kstr::memparse(v).is_some_and(|(n, _)| n == HPAGE_BYTES)
    }

    /// `hugepagesz_setup`.
    fn hugepagesz(&mut self, v: &str, c: &mut KernelCmdline) {
        self.parsed_valid = false;
        if !Self::valid(v) {
            c.hugetlb_messages
                .push(format!("HugeTLB: unsupported hugepagesz={v}"));
            return;
        }
        if self.hstate && (!self.parsed_default || c.hugepages.is_some()) {
            c.hugetlb_messages
                .push(format!("HugeTLB: hugepagesz={v} specified twice, ignoring"));
            return;
        }
        self.hstate = true;
        self.parsed_valid = true;
    }

    /// `default_hugepagesz_setup`.
    fn default_hugepagesz(&mut self, v: &str, c: &mut KernelCmdline) {
        self.parsed_valid = false;
        if self.parsed_default {
            c.hugetlb_messages.push(format!(
                "HugeTLB: default_hugepagesz previously specified, ignoring {v}"
            ));
            return;
        }
        if !Self::valid(v) {
            c.hugetlb_messages
                .push(format!("HugeTLB: unsupported default_hugepagesz={v}"));
            return;
        }
        self.hstate = true;
        self.parsed_valid = true;
        self.parsed_default = true;
    }

    /// `hugepages_setup` (a plain count; node lists are not modelled).
    fn hugepages(&mut self, v: &str, c: &mut KernelCmdline) {
        if !self.parsed_valid {
            c.hugetlb_messages.push(format!(
                "HugeTLB: hugepages={v} does not follow a valid hugepagesz, ignoring"
            ));
            self.parsed_valid = true;
            return;
        }
        let which = self.hstate;
        if self.last == Some(which) {
            c.hugetlb_messages.push(format!(
                "HugeTLB: hugepages= specified twice without interleaving hugepagesz=, ignoring hugepages={v}"
            ));
            return;
        }
        match v.parse::<u64>() {
            Ok(n) => c.hugepages = Some(n),
            Err(_) => {
                c.hugetlb_messages
                    .push(format!("HugeTLB: Invalid hugepages parameter {v}"));
                c.hugepages = None;
            }
        }
        self.last = Some(which);
    }
}

impl KernelCmdline {
    /// Parse a command line the way the early parameter handlers would: the
    /// last occurrence of a parameter wins, invalid values are ignored.
    fn refuse(&mut self, value: &str, name: &str) {
        self.invalid_params
            .push((value.to_string(), name.to_string()));
    }

    pub fn parse(raw: &str, version: crate::KernelVersion) -> KernelCmdline {
        let mut c = KernelCmdline {
            raw: raw.split_whitespace().collect::<Vec<_>>().join(" "),
            ..Default::default()
        };
        let mut huge = HugetlbSetup::default();
        for word in raw.split_whitespace() {
            let (key, value) = match word.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (word, None),
            };
            match (key, value) {
                ("memhp_default_state", Some(v)) => {
                    if let Some(t) = OnlineType::from_sysfs(v.as_bytes()) {
                        c.memhp_default_state = Some(t);
                    }
                }
                ("memory_hotplug.online_policy", Some(v)) => {
                    match OnlinePolicy::from_sysfs(v.as_bytes()) {
                        Some(p) => c.online_policy = Some(p),
                        None => c.refuse(v, key),
                    }
                }
                ("memory_hotplug.auto_movable_ratio", Some(v)) => {
                    match kstr::kstrtouint(v.as_bytes()) {
                        Ok(r) => c.auto_movable_ratio = Some(r),
                        Err(_) => c.refuse(v, key),
                    }
                }
                ("memory_hotplug.auto_movable_numa_aware", v) => {
                    match v.map_or(Ok(true), |v| kstr::kstrtobool(v.as_bytes())) {
                        Ok(b) => c.auto_movable_numa_aware = Some(b),
                        Err(_) => c.refuse(v.unwrap_or(""), key),
                    }
                }
                ("memory_hotplug.memmap_on_memory", v) => {
                    let v = v.unwrap_or("1");
                    let force = matches!(version, crate::KernelVersion::Mainline)
                        && (kstr::sysfs_streq(v.as_bytes(), b"force")
                            || kstr::sysfs_streq(v.as_bytes(), b"FORCE"));
                    if force {
                        c.memmap_on_memory = Some(MemmapOnMemory::Force);
                    } else if let Ok(b) = kstr::kstrtobool(v.as_bytes()) {
                        c.memmap_on_memory = Some(if b {
                            MemmapOnMemory::On
                        } else {
                            MemmapOnMemory::Off
                        });
                    } else {
                        c.refuse(v, key);
                    }
                }
                ("kernelcore", Some(v)) => {
                    if let Some(s) = parse_core(v) {
                        c.kernelcore = Some(s);
                    }
                }
                ("movablecore", Some(v)) => {
                    if let Some(s @ (CoreSpec::Pages(_) | CoreSpec::Percent(_))) = parse_core(v) {
                        c.movablecore = Some(s);
                    }
                }
                ("movable_node", None) => c.movable_node = true,
                ("memblock", Some(v)) => c.memblock_debug |= v.contains("debug"),
                ("acpi_no_memhotplug", None) => c.acpi_no_memhotplug = true,
                ("hugepagesz", Some(v)) => huge.hugepagesz(v, &mut c),
                ("default_hugepagesz", Some(v)) => huge.default_hugepagesz(v, &mut c),
                ("hugepages", Some(v)) => huge.hugepages(v, &mut c),
                ("transparent_hugepage", Some(v)) => {
                    c.thp_never = v == "never";
                    if let Some(i) = crate::thp::ENABLED.iter().position(|e| *e == v) {
                        c.thp_enabled = Some(i);
                    }
                }
                ("mem", Some(v)) => {
                    if let Some((n, _)) = kstr::memparse(v) {
                        c.mem_limit = Some(n);
                    }
                }
                _ => {}
            }
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::KernelVersion;

    #[test]
    fn hotplug_parameters_parse_like_the_kernel() {
        let c = KernelCmdline::parse(
            "console=ttyS0 memhp_default_state=online memory_hotplug.online_policy=auto-movable \
             memory_hotplug.auto_movable_ratio=0x10 memory_hotplug.auto_movable_numa_aware=n \
             memory_hotplug.memmap_on_memory=1 movablecore=256M movable_node",
            KernelVersion::V6_1,
        );
        assert_eq!(c.memhp_default_state, Some(OnlineType::Online));
        assert_eq!(c.online_policy, Some(OnlinePolicy::AutoMovable));
        assert_eq!(c.auto_movable_ratio, Some(16));
        assert_eq!(c.auto_movable_numa_aware, Some(false));
        assert_eq!(c.memmap_on_memory, Some(MemmapOnMemory::On));
        assert_eq!(c.movablecore, Some(CoreSpec::Pages(65536)));
        assert!(c.movable_node);
    }

    #[test]
    fn refused_module_parameters_are_listed_in_order_for_the_boot_log() {
        let c = KernelCmdline::parse(
            "memory_hotplug.online_policy=bar memory_hotplug.auto_movable_ratio=abc \
             memory_hotplug.memmap_on_memory=2 memory_hotplug.auto_movable_numa_aware=maybe \
             memory_hotplug.auto_movable_ratio=0x20",
            KernelVersion::V6_1,
        );
        let refused: Vec<(&str, &str)> = c
            .invalid_params
            .iter()
            .map(|(v, n)| (v.as_str(), n.as_str()))
            .collect();
        assert_eq!(
            refused,
            [
                ("bar", "memory_hotplug.online_policy"),
                ("abc", "memory_hotplug.auto_movable_ratio"),
                ("2", "memory_hotplug.memmap_on_memory"),
                ("maybe", "memory_hotplug.auto_movable_numa_aware"),
            ]
        );
        assert_eq!(c.auto_movable_ratio, Some(32));
    }

    #[test]
    fn invalid_default_state_is_silently_ignored() {
        let c = KernelCmdline::parse("memhp_default_state=bogus", KernelVersion::V6_1);
        assert_eq!(c.memhp_default_state, None);
    }

    #[test]
    fn kernelcore_percent_bytes_and_mirror() {
        let c = KernelCmdline::parse("kernelcore=50%", KernelVersion::V6_1);
        assert_eq!(c.kernelcore, Some(CoreSpec::Percent(50)));
        let c = KernelCmdline::parse("kernelcore=2G", KernelVersion::V6_1);
        assert_eq!(c.kernelcore, Some(CoreSpec::Pages(524288)));
        let c = KernelCmdline::parse("kernelcore=mirror", KernelVersion::V6_1);
        assert_eq!(c.kernelcore, Some(CoreSpec::Mirror));
    }

    #[test]
    fn memmap_on_memory_force_exists_only_on_mainline() {
        let c = KernelCmdline::parse("memory_hotplug.memmap_on_memory=force", KernelVersion::V6_1);
        // 6.1 parses it with kstrtobool: 'f' is false.
        assert_eq!(c.memmap_on_memory, Some(MemmapOnMemory::Off));
        let c = KernelCmdline::parse(
            "memory_hotplug.memmap_on_memory=force",
            KernelVersion::Mainline,
        );
        assert_eq!(c.memmap_on_memory, Some(MemmapOnMemory::Force));
    }
}
