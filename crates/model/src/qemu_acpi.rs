//! The firmware side of QEMU 7.2's `pc` machine with SeaBIOS, as the boot
//! log shows it: the ACPI tables (where SeaBIOS puts them and how long
//! QEMU builds them), the MP table, and the initrd QEMU loads below them.
//!
//! Table lengths follow QEMU's builders: APIC (MADT) grows by one local APIC
//! entry per CPU, SRAT by one CPU affinity entry per CPU and one memory
//! affinity entry per RAM range (padded to nodes + 2, plus the hotplug
//! region). The DSDT's AML length was measured on the real QEMU (oracle runs
//! with 1–8 CPUs, 0–16 DIMM slots, with and without NUMA) and is modelled by
//! the rule those measurements fit; beyond that range it is extrapolated.

use serde::{Deserialize, Serialize};

/// What of a QEMU pc machine shapes its ACPI tables.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QemuAcpi {
    /// `-smp` (possible CPUs).
    pub cpus: u32,
    /// `-m ...,slots=N`.
    pub mem_slots: u32,
    /// NUMA is on: `-numa` given, or enabled by QEMU itself because of
    /// memory hotplug (`auto_enable_numa_with_memhp`/`_with_memdev`).
    pub numa: bool,
    /// The node of each CPU (index = CPU), for `_PXM`.
    pub cpu_nodes: Vec<u32>,
    /// Device memory (the DIMM/virtio-mem region) exists: SRAT has its
    /// hotplug entry.
    pub device_memory: bool,
    /// Memory affinity entries for RAM (pieces around the 640 KiB and PCI
    /// holes), before padding.
    pub ram_entries: u32,
    /// `-numa` nodes (1 when NUMA was enabled automatically).
    pub nodes: u32,
    /// Guest RAM above 4 GiB (SeaBIOS then puts the RSDP lower).
    pub ram_above_4g: bool,
    /// Size of the initrd QEMU loads (the oracle's initramfs by default).
    pub initrd_bytes: u64,
    /// Nodes of the SLIT (`-numa dist`); 0: no SLIT.
    #[serde(default)]
    pub slit_nodes: u32,
}

/// The initramfs the oracle boots: `RAMDISK: [mem 0x3fe79000-0x3ffdffff]`,
/// "Freeing initrd memory: 1436K".
pub const ORACLE_INITRD_BYTES: u64 = 1436 << 10;

/// QEMU's SRAT memory affinity entries for a node's RAM range: the
/// 640 KiB hole is cut out of a range that starts at 0.
pub fn srat_pieces(s: u64, e: u64) -> Vec<(u64, u64)> {
    if s == 0 && e > 0x100000 {
        vec![(0, 0xa0000), (0x100000, e)]
    } else {
        vec![(s, e)]
    }
}

/// One table in guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Table {
    pub sig: &'static str,
    pub addr: u64,
    pub len: u64,
}

/// `Name (_PXM, n)`: 6 bytes, 7 once `n` needs a BytePrefix.
fn pxm_bytes(node: u32) -> u64 {
    if node <= 1 {
        6
    } else {
        7
    }
}

impl QemuAcpi {
    /// The DSDT's length (measured rule, see the module doc).
    pub fn dsdt_len(&self) -> u64 {
        let mut cpus = 0; // what the CPUs add to the 1-CPU table
        for i in 1..u64::from(self.cpus.max(1)) {
            cpus += match i {
                1 => 83,
                4 => 87,
                _ => 86,
            };
        }
        if self.numa {
            cpus += self.cpu_nodes.iter().map(|&n| pxm_bytes(n)).sum::<u64>();
        }
        // The CPU container and the scope around it each take a third
        // package-length byte past 4 KiB: recorded at 35 and 37 CPUs with
        // NUMA, 37 and 40 without (the exact points lie in 3041-3094 and
        // 3267-3316 bytes of CPUs).
        cpus += u64::from(cpus >= 3068) + u64::from(cpus >= 3292);
        let mut len = 0x1926 + cpus; // 1 CPU, no memory hotplug, no NUMA
        if self.mem_slots > 0 {
            let s = u64::from(self.mem_slots);
            // The notify method's package length takes a second byte
            // from 5 slots, the slot container's a third from 27.
            len += 1107 + 123 * (s - 1) + u64::from(s >= 5) + u64::from(s >= 27);
        }
        len
    }

    /// The SRAT's length, if there is one.
    pub fn srat_len(&self) -> Option<u64> {
        if !self.numa {
            return None;
        }
        let mem = u64::from(self.ram_entries.max(self.nodes + 2)) + u64::from(self.device_memory);
        Some(48 + 16 * u64::from(self.cpus) + 40 * mem)
    }

    /// The tables in memory order from `base` (the reserved area at the
    /// end of low RAM): FACS, DSDT, FACP, APIC, HPET, SRAT, WAET, RSDT.
    pub fn tables(&self, base: u64) -> Vec<Table> {
        let mut out = Vec::new();
        let mut at = base;
        let mut put = |sig: &'static str, len: u64| {
            out.push(Table { sig, addr: at, len });
            at += len;
        };
        put("FACS", 0x40);
        put("DSDT", self.dsdt_len());
        put("FACP", 0x74);
        put("APIC", 0x70 + 8 * u64::from(self.cpus));
        put("HPET", 0x38);
        if let Some(len) = self.srat_len() {
            put("SRAT", len);
        }
        let slit = u64::from(self.slit_nodes);
        if slit > 0 {
            put("SLIT", 44 + slit * slit);
        }
        put("WAET", 0x28);
        // The RSDT points at all but FACS and DSDT.
        let entries = 4 + u64::from(self.srat_len().is_some()) + u64::from(slit > 0);
        put("RSDT", 36 + 4 * entries);
        out
    }

    /// The RSDP in the BIOS area.
    pub fn rsdp(&self) -> u64 {
        if self.ram_above_4g {
            0xf59b0
        } else {
            0xf59d0
        }
    }

    /// The boot-log lines of the tables (`acpi_table_print_info`, then
    /// `acpi_table_reserve`'s "Reserving" lines).
    pub fn log_lines(&self, base: u64) -> Vec<String> {
        let tables = self.tables(base);
        let header = "(v01 BOCHS  BXPC     00000001 BXPC 00000001)";
        let mut l = vec![
            "ACPI: Early table checksum verification disabled".to_string(),
            format!("ACPI: RSDP 0x{:016X} 000014 (v00 BOCHS )", self.rsdp()),
        ];
        let order = [
            "RSDT", "FACP", "DSDT", "FACS", "APIC", "HPET", "SRAT", "SLIT", "WAET",
        ];
        for sig in order {
            if let Some(t) = tables.iter().find(|t| t.sig == sig) {
                if sig == "FACS" {
                    l.push(format!("ACPI: FACS 0x{:016X} {:06X}", t.addr, t.len));
                } else {
                    l.push(format!(
                        "ACPI: {sig} 0x{:016X} {:06X} {header}",
                        t.addr, t.len
                    ));
                }
            }
        }
        for sig in order.iter().skip(1) {
            if let Some(t) = tables.iter().find(|t| t.sig == *sig) {
                l.push(format!(
                    "ACPI: Reserving {sig} table memory at [mem {:#010x}-{:#010x}]",
                    t.addr,
                    t.addr + t.len - 1
                ));
            }
        }
        l
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acpi(cpus: u32, slots: u32, numa_nodes: Option<Vec<u32>>) -> QemuAcpi {
        let explicit = numa_nodes.is_some();
        let cpu_nodes = numa_nodes.unwrap_or_else(|| vec![0; cpus as usize]);
        let nodes = cpu_nodes.iter().max().map_or(1, |m| m + 1);
        QemuAcpi {
            cpus,
            mem_slots: slots,
            numa: explicit || slots > 0,
            cpu_nodes,
            device_memory: slots > 0,
            ram_entries: 2,
            nodes,
            ram_above_4g: false,
            initrd_bytes: ORACLE_INITRD_BYTES,
            slit_nodes: 0,
        }
    }

    /// DSDT lengths the real QEMU 7.2 produced (oracle runs).
    #[test]
    fn dsdt_length_matches_every_measured_configuration() {
        for (cpus, slots, nodes, len) in [
            (1, 0, None, 0x1926),
            (2, 0, None, 0x1979),
            (2, 0, Some(vec![0, 1]), 0x1985),
            (1, 1, None, 0x1d7f),
            (1, 2, None, 0x1dfa),
            (1, 3, None, 0x1e75),
            (1, 4, None, 0x1ef0),
            (1, 5, None, 0x1f6c),
            (1, 6, None, 0x1fe7),
            (1, 7, None, 0x2062),
            (1, 8, None, 0x20dd),
            (2, 4, None, 0x1f49),
            (2, 4, Some(vec![0, 1]), 0x1f49),
            (3, 4, None, 0x1fa5),
            (3, 4, Some(vec![0, 1, 2]), 0x1fa6),
            (4, 4, None, 0x2001),
            (4, 4, Some(vec![0, 0, 1, 1]), 0x2001),
            (5, 4, None, 0x205e),
            (6, 4, None, 0x20ba),
            (7, 4, None, 0x2116),
            (8, 4, None, 0x2172),
            (2, 16, None, 0x250e),
            // Behaviour recordings: slot and CPU counts around the package
            // length thresholds (one-CPU runs with N slots; N CPUs with 4
            // slots; N CPUs without memory hotplug and NUMA).
            (1, 12, None, 0x22c9),
            (1, 16, None, 0x24b5),
            (1, 26, None, 0x2983),
            (1, 27, None, 0x29ff),
            (1, 28, None, 0x2a7a),
            (1, 30, None, 0x2b70),
            (1, 32, None, 0x2c66),
            (2, 200, None, 0x7d77),
            (20, 4, None, 0x25c2),
            (32, 4, None, 0x2a12),
            (33, 4, None, 0x2a6e),
            (34, 4, None, 0x2aca),
            (35, 4, None, 0x2b27),
            (36, 4, None, 0x2b83),
            (37, 4, None, 0x2be0),
            (38, 4, None, 0x2c3c),
            (40, 4, None, 0x2cf4),
            (48, 4, None, 0x2fd4),
            (64, 4, None, 0x3594),
            (72, 4, None, 0x3874),
            (36, 0, None, 0x24e6),
            (37, 0, None, 0x253d),
            (38, 0, None, 0x2593),
            (39, 0, None, 0x25e9),
            (40, 0, None, 0x2640),
        ] {
            let a = acpi(cpus, slots, nodes.clone());
            assert_eq!(a.dsdt_len(), len, "{cpus} CPUs, {slots} slots, {nodes:?}");
        }
    }

    #[test]
    fn oracle_boot_baseline_tables() {
        let lines = acpi(1, 4, None).log_lines(0x3ffe0000);
        assert!(lines.contains(
            &"ACPI: SRAT 0x000000003FFE2054 0000E0 (v01 BOCHS  BXPC     00000001 BXPC 00000001)"
                .to_string()
        ));
        assert_eq!(
            &lines[lines.len() - 7..],
            [
                "ACPI: Reserving FACP table memory at [mem 0x3ffe1f30-0x3ffe1fa3]",
                "ACPI: Reserving DSDT table memory at [mem 0x3ffe0040-0x3ffe1f2f]",
                "ACPI: Reserving FACS table memory at [mem 0x3ffe0000-0x3ffe003f]",
                "ACPI: Reserving APIC table memory at [mem 0x3ffe1fa4-0x3ffe201b]",
                "ACPI: Reserving HPET table memory at [mem 0x3ffe201c-0x3ffe2053]",
                "ACPI: Reserving SRAT table memory at [mem 0x3ffe2054-0x3ffe2133]",
                "ACPI: Reserving WAET table memory at [mem 0x3ffe2134-0x3ffe215b]"
            ]
        );
        assert_eq!(
            lines[2],
            "ACPI: RSDT 0x000000003FFE215C 000038 (v01 BOCHS  BXPC     00000001 BXPC 00000001)"
        );
    }

    #[test]
    fn no_srat_without_numa_and_a_shorter_rsdt() {
        let t = acpi(1, 0, None).tables(0x3ffe0000);
        assert!(t.iter().all(|t| t.sig != "SRAT"));
        let rsdt = t.iter().find(|t| t.sig == "RSDT").unwrap();
        assert_eq!((rsdt.addr, rsdt.len), (0x3ffe1ab2, 0x34));
    }
}

/// QEMU's ACPI memory hotplug devices as the guest enumerates them: the
/// container `\_SB_.MHPC` (PNP0A06) and one PNP0C80 device per DIMM slot
/// (`\_SB_.MHPC.MPxx`), whose `_STA` reports whether a DIMM is plugged.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryHotplugDevices {
    /// `-m ...,slots=N`: one device per slot, present or not.
    pub slots: u32,
    /// Slots holding a DIMM (`_STA` 0xF; 0 otherwise).
    pub plugged: std::collections::BTreeSet<u32>,
    /// Slots whose device the memory hotplug scan handler took (its memory
    /// was added): the devices that can be ejected.
    #[serde(default)]
    pub attached: std::collections::BTreeSet<u32>,
    /// The container's platform device was taken offline (its `online`
    /// file).
    #[serde(default)]
    pub container_offline: bool,
}

impl MemoryHotplugDevices {
    /// The devices of a machine with `slots` DIMM slots (none without).
    pub fn for_slots(slots: u32) -> Option<Self> {
        (slots > 0).then(|| MemoryHotplugDevices {
            slots,
            ..Default::default()
        })
    }

    /// `_STA` of slot `slot`'s device: present, enabled, shown and
    /// functioning with a DIMM in it, else 0.
    pub fn status(&self, slot: u32) -> u32 {
        if self.plugged.contains(&slot) {
            0xf
        } else {
            0
        }
    }
}

/// The container's directory under `/sys/devices` (its instance number is
/// the fifth PNP0A06 device of QEMU's pc DSDT).
pub const MEMORY_CONTAINER_DIR: [&str; 3] = ["LNXSYSTM:00", "LNXSYBUS:00", "PNP0A06:04"];

/// The ACPI device name of slot `slot` (`PNP0C80:%02x`, the instance
/// number in enumeration order).
pub fn memory_device_name(slot: u32) -> String {
    format!("PNP0C80:{slot:02x}")
}

/// The `firmware_node` link of a block bound to slot `slot`'s device.
pub fn memory_device_link(slot: u32) -> String {
    format!(
        "../../../{}/{}",
        MEMORY_CONTAINER_DIR.join("/"),
        memory_device_name(slot)
    )
}
