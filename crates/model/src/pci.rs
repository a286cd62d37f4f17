//! The PCI functions of a QEMU pc guest (i440FX host bridge, PIIX3,
//! `-nodefaults`) and of its virtio devices, as the kernel knows them: IDs,
//! the firmware's BARs and interrupt lines, whether a driver enabled and
//! bound a function, and the virtio device the transport registered on it.
//! Recorded on a 6.1 guest under QEMU 7.2 (`conformance/other-build/
//! pci-sysfs*`); the sysfs view (`memhp_sysfs::pci`) renders it.

use serde::{Deserialize, Serialize};

/// The virtio vendor (and QEMU's subsystem vendor).
pub const VIRTIO_VENDOR: u16 = 0x1af4;

/// What a function is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PciKind {
    /// 00.0: i440FX host bridge.
    HostBridge,
    /// 01.0: PIIX3 ISA bridge.
    IsaBridge,
    /// 01.1: PIIX3 IDE.
    Ide,
    /// 01.3: PIIX4 ACPI (power management).
    Acpi,
    /// `virtio-mem-pci` (modern only).
    VirtioMem,
    /// `virtio-balloon-pci` (transitional).
    VirtioBalloon,
}

/// (vendor, device, class, revision, subsystem device) of each kind.
struct Ids {
    vendor: u16,
    device: u16,
    class: u32,
    revision: u8,
    subsystem_device: u16,
}

impl PciKind {
    fn ids(self) -> Ids {
        let (vendor, device, class, revision, subsystem_device) = match self {
            PciKind::HostBridge => (0x8086, 0x1237, 0x06_0000, 2, 0x1100),
            PciKind::IsaBridge => (0x8086, 0x7000, 0x06_0100, 0, 0x1100),
            PciKind::Ide => (0x8086, 0x7010, 0x01_0180, 0, 0x1100),
            PciKind::Acpi => (0x8086, 0x7113, 0x06_8000, 3, 0x1100),
            PciKind::VirtioMem => (VIRTIO_VENDOR, 0x1058, 0x00_ff00, 1, 0x1100),
            PciKind::VirtioBalloon => (VIRTIO_VENDOR, 0x1002, 0x00_ff00, 0, 0x0005),
        };
        Ids {
            vendor,
            device,
            class,
            revision,
            subsystem_device,
        }
    }

    /// The virtio device ID (`virtio:dNNNNNNNN`) of a virtio function.
    pub fn virtio_device(self) -> Option<u16> {
        match self {
            PciKind::VirtioMem => Some(0x18),
            PciKind::VirtioBalloon => Some(0x05),
            _ => None,
        }
    }

    /// The features the virtio driver negotiates with QEMU 7.2's device
    /// (bit N is character N of the `features` file).
    fn negotiated_features(self) -> u64 {
        // VIRTIO_RING_F_INDIRECT_DESC, VIRTIO_RING_F_EVENT_IDX,
        // VIRTIO_F_VERSION_1, VIRTIO_F_RING_RESET... as recorded.
        let common = (1 << 28) | (1 << 29) | (1 << 32) | (1 << 40);
        match self {
            // VIRTIO_MEM_F_ACPI_PXM
            PciKind::VirtioMem => common | 1,
            // VIRTIO_BALLOON_F_STATS_VQ
            PciKind::VirtioBalloon => common | (1 << 1),
            _ => 0,
        }
    }
}

/// A resource of a function (the `resource` file's line `index`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciBar {
    pub index: u8,
    pub start: u64,
    pub size: u64,
    /// The kernel's resource flags (the line's third number).
    pub flags: u64,
}

/// `IORESOURCE_IO | IORESOURCE_SIZEALIGN` and the 32-bit I/O BAR bit.
pub const BAR_IO: u64 = 0x4_0101;
/// A legacy IDE port range (`IORESOURCE_IO | IORESOURCE_PCI_FIXED`).
pub const BAR_LEGACY_IO: u64 = 0x110;
/// A 64-bit prefetchable memory BAR.
pub const BAR_MEM64_PREF: u64 = 0x14_220c;
/// A virtio PCI function's notification/config BAR (BAR 4).
pub const VIRTIO_BAR_SIZE: u64 = 0x4000;

/// The virtio device the transport registered on a function.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioFunction {
    /// `virtioN`.
    pub index: u32,
    /// The virtio driver bound to it (`virtio_mem`, `virtio_balloon`).
    pub driver: Option<String>,
}

/// One PCI function on bus 0.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciFunction {
    pub slot: u8,
    pub func: u8,
    pub kind: PciKind,
    pub bars: Vec<PciBar>,
    /// What the firmware wrote to Interrupt Line (0 for a hot-plugged
    /// function, which it never saw).
    pub interrupt_line: u8,
    /// The `irq` file.
    pub irq: u32,
    /// Hot-plugged after boot (no firmware setup, no `waiting_for_supplier`).
    pub hotplugged: bool,
    /// The PCI driver bound to it (`virtio-pci`).
    pub driver: Option<String>,
    pub virtio: Option<VirtioFunction>,
}

/// The PCI bus of a QEMU pc machine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciBus {
    pub functions: Vec<PciFunction>,
    /// The interrupt links (LNKA..LNKD) the kernel enabled.
    pub links_enabled: [bool; 4],
}

/// SeaBIOS's routing of LNKA..LNKD.
pub const LINK_IRQS: [u8; 4] = [10, 10, 11, 11];
/// The first I/O port SeaBIOS assigns to BARs.
const IO_BASE: u64 = 0xc000;

impl PciFunction {
    fn new(slot: u8, func: u8, kind: PciKind) -> PciFunction {
        PciFunction {
            slot,
            func,
            kind,
            bars: Vec::new(),
            interrupt_line: 0,
            irq: 0,
            hotplugged: false,
            driver: None,
            virtio: None,
        }
    }

    /// A virtio function in `slot` with its BAR 4 at `bar4`.
    pub fn virtio(slot: u8, kind: PciKind, bar4: u64, hotplugged: bool) -> PciFunction {
        let mut f = PciFunction::new(slot, 0, kind);
        f.hotplugged = hotplugged;
        f.bars.push(PciBar {
            index: 4,
            start: bar4,
            size: VIRTIO_BAR_SIZE,
            flags: BAR_MEM64_PREF,
        });
        if !hotplugged {
            // The PCI core reads the firmware's Interrupt Line into `irq`.
            f.interrupt_line = LINK_IRQS[PciBus::link_of(slot)];
            f.irq = u32::from(f.interrupt_line);
        }
        f
    }

    /// `0000:00:SS.F`.
    pub fn name(&self) -> String {
        format!("0000:00:{:02x}.{}", self.slot, self.func)
    }

    pub fn vendor(&self) -> u16 {
        self.kind.ids().vendor
    }
    pub fn device(&self) -> u16 {
        self.kind.ids().device
    }
    pub fn class(&self) -> u32 {
        self.kind.ids().class
    }
    pub fn revision(&self) -> u8 {
        self.kind.ids().revision
    }
    pub fn subsystem_vendor(&self) -> u16 {
        VIRTIO_VENDOR
    }
    pub fn subsystem_device(&self) -> u16 {
        self.kind.ids().subsystem_device
    }

    /// Enabled by its driver (`pci_enable_device`).
    pub fn enabled(&self) -> bool {
        self.driver.is_some()
    }

    /// The ACPI companion: function 0 of each slot is `device:SS` of the
    /// host bridge's namespace node.
    pub fn firmware_node(&self) -> Option<String> {
        (self.func == 0).then(|| {
            format!(
                "../../LNXSYSTM:00/LNXSYBUS:00/PNP0A03:00/device:{:02x}",
                self.slot
            )
        })
    }

    /// `pci:v…d…sv…sd…bc…sc…i…`.
    pub fn modalias(&self) -> String {
        let class = self.class();
        format!(
            "pci:v{:08X}d{:08X}sv{:08X}sd{:08X}bc{:02X}sc{:02X}i{:02X}",
            self.vendor(),
            self.device(),
            self.subsystem_vendor(),
            self.subsystem_device(),
            class >> 16,
            (class >> 8) & 0xff,
            class & 0xff
        )
    }

    /// The virtio features the driver negotiated (0 until one is bound).
    pub fn virtio_features(&self) -> u64 {
        match &self.virtio {
            Some(v) if v.driver.is_some() => self.kind.negotiated_features(),
            _ => 0,
        }
    }

    /// The virtio status byte: ACKNOWLEDGE once registered, then DRIVER,
    /// FEATURES_OK and DRIVER_OK once a driver probed it.
    pub fn virtio_status(&self) -> u8 {
        match &self.virtio {
            Some(v) if v.driver.is_some() => 0x0f,
            Some(_) => 0x01,
            None => 0,
        }
    }

    /// The 256 bytes of configuration space (`config`).
    pub fn config(&self, bus: &PciBus) -> [u8; 256] {
        let mut c = [0u8; 256];
        let ids = self.kind.ids();
        put16(&mut c, 0, ids.vendor);
        put16(&mut c, 2, ids.device);
        c[8] = ids.revision;
        c[9] = (ids.class & 0xff) as u8;
        c[10] = (ids.class >> 8) as u8;
        c[11] = (ids.class >> 16) as u8;
        put16(&mut c, 0x2c, VIRTIO_VENDOR);
        put16(&mut c, 0x2e, ids.subsystem_device);
        for &(off, bytes) in chipset_registers(self.kind) {
            c[off..off + bytes.len()].copy_from_slice(bytes);
        }
        match self.kind {
            PciKind::IsaBridge => {
                // PIRQA..D route control: the IRQ, bit 7 while disabled.
                for (k, irq) in LINK_IRQS.iter().enumerate() {
                    c[0x60 + k] = irq | if bus.links_enabled[k] { 0 } else { 0x80 };
                }
            }
            PciKind::Ide => {
                if let Some(b) = self.bars.iter().find(|b| b.index == 4) {
                    put32(&mut c, 0x20, b.start as u32 | 1);
                }
            }
            PciKind::VirtioMem | PciKind::VirtioBalloon => self.virtio_config(&mut c),
            PciKind::HostBridge | PciKind::Acpi => {}
        }
        c
    }

    fn virtio_config(&self, c: &mut [u8; 256]) {
        // Command: the firmware enables I/O, memory and SERR#; a
        // hot-plugged function starts at 0 and its driver enables memory.
        // Binding sets bus mastering.
        let mut command: u16 = if self.hotplugged { 0 } else { 0x0103 };
        if self.enabled() {
            command |= if self.hotplugged { 0x0002 } else { 0 } | 0x0004;
        }
        put16(c, 4, command);
        put16(c, 6, 0x0010);
        for b in &self.bars {
            let off = 0x10 + 4 * b.index as usize;
            if b.flags == BAR_IO {
                put32(c, off, b.start as u32 | 1);
            } else {
                put32(c, off, b.start as u32 | 0xc);
                put32(c, off + 4, (b.start >> 32) as u32);
            }
        }
        c[0x34] = 0x84;
        c[0x3c] = self.interrupt_line;
        c[0x3d] = 1;
        // The virtio capabilities: common, ISR, device, notify, PCI access.
        const CAPS: [u8; 0x58] = [
            0x09, 0x00, 0x10, 0x01, 0x04, 0, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, //
            0x09, 0x40, 0x10, 0x03, 0x04, 0, 0, 0, 0, 0x10, 0, 0, 0, 0x10, 0, 0, //
            0x09, 0x50, 0x10, 0x04, 0x04, 0, 0, 0, 0, 0x20, 0, 0, 0, 0x10, 0, 0, //
            0x09, 0x60, 0x14, 0x02, 0x04, 0, 0, 0, 0, 0x30, 0, 0, 0, 0x10, 0, 0, //
            0x04, 0, 0, 0, 0x09, 0x70, 0x14, 0x05, 0, 0, 0, 0, 0, 0, 0, 0, //
            0, 0, 0, 0, 0, 0, 0, 0,
        ];
        c[0x40..0x98].copy_from_slice(&CAPS);
    }
}

fn put16(c: &mut [u8], off: usize, v: u16) {
    c[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

fn put32(c: &mut [u8], off: usize, v: u32) {
    c[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// The chipset functions' registers beyond the IDs, as the firmware left
/// them (command/status, header type, the chipset's own registers).
fn chipset_registers(kind: PciKind) -> &'static [(usize, &'static [u8])] {
    match kind {
        PciKind::HostBridge => &[
            (4, &[0x03, 0x01]),
            (
                0x57,
                &[0x80, 0x00, 0x10, 0x11, 0x11, 0x11, 0x11, 0x11, 0x33],
            ),
            (0x72, &[0x0a]),
        ],
        PciKind::IsaBridge => &[
            (4, &[0x03, 0x01, 0x00, 0x02]),
            (0x0e, &[0x80]),
            (0x4c, &[0x4d, 0x00, 0x03]),
            (0x69, &[0x02]),
            (0x70, &[0x80]),
            (0x76, &[0x0c, 0x0c, 0x02]),
            (0x82, &[0x02]),
            (0xa0, &[0x08]),
            (0xa8, &[0x0f]),
        ],
        PciKind::Ide => &[(4, &[0x03, 0x01, 0x80, 0x02]), (0x41, &[0x80, 0x00, 0x80])],
        PciKind::Acpi => &[
            (4, &[0x03, 0x01, 0x80, 0x02]),
            (0x3c, &[0x09, 0x01]),
            (0x40, &[0x01, 0x06]),
            (0x5b, &[0x02]),
            (0x5f, &[0x10]),
            (0x63, &[0x60]),
            (0x67, &[0x98]),
            (0x80, &[0x01]),
            (0x90, &[0x01, 0x07]),
            (0xd2, &[0x09]),
        ],
        PciKind::VirtioMem | PciKind::VirtioBalloon => &[],
    }
}

impl PciBus {
    /// The chipset of QEMU's pc machine with `-nodefaults`.
    pub fn qemu_pc() -> PciBus {
        let mut ide = PciFunction::new(1, 1, PciKind::Ide);
        for (index, start, size) in [(0, 0x1f0, 8), (1, 0x3f6, 1), (2, 0x170, 8), (3, 0x376, 1)] {
            ide.bars.push(PciBar {
                index,
                start,
                size,
                flags: BAR_LEGACY_IO,
            });
        }
        let mut acpi = PciFunction::new(1, 3, PciKind::Acpi);
        acpi.interrupt_line = 9;
        acpi.irq = 9;
        let mut bus = PciBus {
            functions: vec![
                PciFunction::new(0, 0, PciKind::HostBridge),
                PciFunction::new(1, 0, PciKind::IsaBridge),
                ide,
                acpi,
            ],
            ..PciBus::default()
        };
        bus.assign_io();
        bus
    }

    /// The interrupt link of a slot's INTA (LNKA..LNKD: `(slot - 1) & 3`).
    pub fn link_of(slot: u8) -> usize {
        (slot as usize + 3) & 3
    }

    /// Add a function the firmware set up at boot (in slot order), or one
    /// hot-plugged later.
    pub fn add(&mut self, f: PciFunction) {
        let pos = self
            .functions
            .partition_point(|g| (g.slot, g.func) < (f.slot, f.func));
        self.functions.insert(pos, f);
        self.assign_io();
    }

    /// SeaBIOS's I/O BARs: from 0xc000 up, the largest first (the IDE
    /// controller's bus-master range and the transitional virtio devices'
    /// legacy BAR 0).
    fn assign_io(&mut self) {
        let mut wanted: Vec<(u64, usize)> = self
            .functions
            .iter()
            .enumerate()
            .filter(|(_, f)| !f.hotplugged)
            .filter_map(|(i, f)| match f.kind {
                PciKind::Ide => Some((16, i)),
                PciKind::VirtioBalloon => Some((64, i)),
                _ => None,
            })
            .collect();
        wanted.sort_by_key(|&(size, _)| std::cmp::Reverse(size));
        let mut next = IO_BASE;
        for (size, i) in wanted {
            let index = if self.functions[i].kind == PciKind::Ide {
                4
            } else {
                0
            };
            let bars = &mut self.functions[i].bars;
            bars.retain(|b| b.index != index);
            bars.push(PciBar {
                index,
                start: next,
                size,
                flags: BAR_IO,
            });
            bars.sort_by_key(|b| b.index);
            next += size;
        }
    }

    pub fn function(&self, name: &str) -> Option<&PciFunction> {
        self.functions.iter().find(|f| f.name() == name)
    }

    fn function_mut(&mut self, slot: u8) -> Option<&mut PciFunction> {
        self.functions
            .iter_mut()
            .find(|f| f.slot == slot && f.func == 0)
    }

    /// `virtio_pci` binds the virtio function in `slot`: it is enabled, its
    /// link enabled, and the transport registers `virtioN` (the lowest free
    /// index).
    pub fn bind_virtio(&mut self, slot: u8) {
        let used: Vec<u32> = self
            .functions
            .iter()
            .filter_map(|f| f.virtio.as_ref().map(|v| v.index))
            .collect();
        let index = (0..).find(|i| !used.contains(i)).unwrap_or(0);
        self.links_enabled[PciBus::link_of(slot)] = true;
        if let Some(f) = self.function_mut(slot) {
            if f.virtio.is_some() {
                return;
            }
            f.driver = Some("virtio-pci".into());
            f.irq = u32::from(LINK_IRQS[PciBus::link_of(slot)]);
            f.virtio = Some(VirtioFunction {
                index,
                driver: None,
            });
        }
    }

    /// The `virtioN` index of the function in `slot`, once bound.
    pub fn virtio_index(&self, slot: u8) -> Option<u32> {
        self.functions
            .iter()
            .find(|f| f.slot == slot && f.func == 0)
            .and_then(|f| f.virtio.as_ref().map(|v| v.index))
    }

    /// A virtio driver probed the device in `slot`.
    pub fn probe_virtio(&mut self, slot: u8, driver: &str) {
        if let Some(v) = self.function_mut(slot).and_then(|f| f.virtio.as_mut()) {
            v.driver = Some(driver.to_string());
        }
    }

    /// The virtio functions `virtio_pci` has not bound, in the order the
    /// driver core finds them: the boot's by slot, then hot-plugged ones.
    pub fn unbound_virtio_slots(&self) -> Vec<u8> {
        let mut v: Vec<&PciFunction> = self
            .functions
            .iter()
            .filter(|f| f.kind.virtio_device().is_some() && f.virtio.is_none())
            .collect();
        v.sort_by_key(|f| (f.hotplugged, f.slot));
        v.into_iter().map(|f| f.slot).collect()
    }

    /// The slot of the (first) function of `kind`.
    pub fn slot_of(&self, kind: PciKind) -> Option<u8> {
        self.functions
            .iter()
            .find(|f| f.kind == kind)
            .map(|f| f.slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chipset_config_matches_the_recorded_host_bridge() {
        let bus = PciBus::qemu_pc();
        let c = bus.functions[0].config(&bus);
        assert_eq!(
            &c[..16],
            &[0x86, 0x80, 0x37, 0x12, 0x03, 0x01, 0, 0, 0x02, 0, 0, 0x06, 0, 0, 0, 0]
        );
        assert_eq!(&c[0x2c..0x30], &[0xf4, 0x1a, 0x00, 0x11]);
        assert_eq!(c[0x72], 0x0a);
    }

    #[test]
    fn ide_bus_master_bar_follows_the_balloon_legacy_bar() {
        let mut bus = PciBus::qemu_pc();
        assert_eq!(bus.functions[2].bars.last().map(|b| b.start), Some(0xc000));
        bus.add(PciFunction::virtio(
            3,
            PciKind::VirtioBalloon,
            0xfebf_c000,
            false,
        ));
        let ide = bus.function("0000:00:01.1").unwrap();
        assert_eq!(
            ide.bars.last().map(|b| (b.start, b.size)),
            Some((0xc040, 16))
        );
        let balloon = bus.function("0000:00:03.0").unwrap();
        assert_eq!(balloon.bars[0].start, 0xc000);
        let c = balloon.config(&bus);
        assert_eq!(&c[0x10..0x14], &[0x01, 0xc0, 0, 0]);
        assert_eq!(&c[0x20..0x28], &[0x0c, 0xc0, 0xbf, 0xfe, 0, 0, 0, 0]);
        assert_eq!(c[0x3c], 11);
    }

    #[test]
    fn binding_takes_the_lowest_free_virtio_index_and_enables_the_link() {
        let mut bus = PciBus::qemu_pc();
        bus.add(PciFunction::virtio(
            2,
            PciKind::VirtioMem,
            0xfebf_8000,
            false,
        ));
        bus.add(PciFunction::virtio(
            3,
            PciKind::VirtioBalloon,
            0xfebf_c000,
            false,
        ));
        bus.bind_virtio(2);
        bus.bind_virtio(3);
        bus.add(PciFunction::virtio(
            4,
            PciKind::VirtioMem,
            0x3_c000_0000,
            true,
        ));
        bus.bind_virtio(4);
        assert_eq!(bus.virtio_index(4), Some(2));
        let hot = bus.function("0000:00:04.0").unwrap();
        let c = hot.config(&bus);
        assert_eq!(&c[4..6], &[0x06, 0x00]);
        assert_eq!(&c[0x20..0x28], &[0x0c, 0, 0, 0xc0, 0x03, 0, 0, 0]);
        assert_eq!((c[0x3c], hot.irq), (0, 11));
        let isa = bus.function("0000:00:01.0").unwrap().config(&bus);
        assert_eq!(&isa[0x60..0x64], &[0x8a, 0x0a, 0x0b, 0x0b]);
        let mem = bus.function("0000:00:02.0").unwrap();
        assert_eq!(&mem.config(&bus)[4..6], &[0x07, 0x01]);
        assert_eq!(mem.virtio_status(), 0x01);
        bus.probe_virtio(2, "virtio_mem");
        let mem = bus.function("0000:00:02.0").unwrap();
        assert_eq!(mem.virtio_status(), 0x0f);
        assert_eq!(
            mem.modalias(),
            "pci:v00001AF4d00001058sv00001AF4sd00001100bc00scFFi00"
        );
    }
}
