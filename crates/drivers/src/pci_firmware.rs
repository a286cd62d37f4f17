//! The virtio PCI functions on QEMU's command line as SeaBIOS leaves them
//! and the kernel finds them: slots from 2 in argument order, each 16 KiB
//! BAR 4 packed below the top of the 32-bit PCI window in slot order (a
//! virtio-mem-pci in slot 2 and a virtio-balloon-pci in slot 3 get
//! 0xfebf8000 and 0xfebfc000), interrupt lines from the slots' links; and
//! what `virtio_pci` changes when it binds one (`virtio-pci-modern` under
//! the BAR, `virtioN`). The functions join [`memhp_model::pci::PciBus`]
//! and `/proc/iomem`.

use memhp_model::iomem::Resource;
use memhp_model::pci::{PciFunction, PciKind, VIRTIO_BAR_SIZE};
use memhp_model::System;

/// The top of the 32-bit PCI window QEMU's pc machine describes.
const PCI_WINDOW_END: u64 = 0xfebf_ffff;

/// A virtio function QEMU's command line puts in `slot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ColdFunction {
    pub slot: u32,
    pub kind: PciKind,
}

/// The PCI slots of the command line's virtio devices: `vmem` virtio-mem
/// devices in order and a balloon that was the `balloon_index`th virtio
/// PCI device (slots 2, 3, ... in argument order).
pub fn cold_slots(vmem: usize, balloon_index: Option<u32>) -> Vec<ColdFunction> {
    let total = vmem + usize::from(balloon_index.is_some());
    let balloon_at = balloon_index.map(|b| (b as usize).min(total - 1));
    let mut next_vmem = 0..vmem;
    (0..total)
        .filter_map(|pos| {
            let kind = if Some(pos) == balloon_at {
                PciKind::VirtioBalloon
            } else {
                next_vmem.next()?;
                PciKind::VirtioMem
            };
            Some(ColdFunction {
                slot: 2 + pos as u32,
                kind,
            })
        })
        .collect()
}

/// A function's BAR 4 resource in `/proc/iomem`.
pub fn bar(start: u64, name: String) -> Resource {
    Resource {
        start,
        end: start + VIRTIO_BAR_SIZE - 1,
        name,
        children: Vec::new(),
    }
}

/// The PCI name of the function in `slot`.
pub fn pci_name(slot: u32) -> String {
    format!("0000:00:{slot:02x}.0")
}

/// Place the command line's functions (SeaBIOS) and record them.
pub fn assign(sys: &mut System, cold: &[ColdFunction]) {
    if cold.is_empty() {
        return;
    }
    let n = cold.len() as u64;
    let base = PCI_WINDOW_END + 1 - n * VIRTIO_BAR_SIZE;
    let low_end = sys
        .iomem
        .top
        .iter()
        .filter(|r| r.name == "System RAM" && r.end < 0x1_0000_0000)
        .map(|r| r.end)
        .max()
        .unwrap_or(0);
    let window_start = (low_end + 0x20000 + 1).div_ceil(0x1000_0000) * 0x1000_0000;
    let mut window = Resource {
        start: window_start,
        end: PCI_WINDOW_END,
        name: "PCI Bus 0000:00".into(),
        children: Vec::new(),
    };
    for (pos, f) in cold.iter().enumerate() {
        let start = base + pos as u64 * VIRTIO_BAR_SIZE;
        window.children.push(bar(start, pci_name(f.slot)));
        if let Some(bus) = sys.pci.as_mut() {
            bus.add(PciFunction::virtio(f.slot as u8, f.kind, start, false));
        }
    }
    // The firmware's 32-bit window, when the machine has one.
    match sys
        .iomem
        .top
        .iter_mut()
        .find(|r| r.name == window.name && r.start <= window.start && window.end <= r.end)
    {
        Some(w) => w.children.extend(window.children),
        None => {
            let pos = sys.iomem.top.partition_point(|r| r.start < window.start);
            sys.iomem.top.insert(pos, window);
        }
    }
}

/// `virtio_pci` binds the function in `slot`: the modern interface claims
/// its BAR and the transport registers a virtio device. Returns its
/// `virtioN` index (`None` without a PCI bus).
pub fn bind(sys: &mut System, slot: u32) -> Option<u32> {
    let name = pci_name(slot);
    if let Some(r) = sys
        .iomem
        .find_mut(|r| r.name == name && r.children.is_empty())
    {
        let start = r.start;
        r.children.push(bar(start, "virtio-pci-modern".into()));
    }
    sys.layout_touch();
    let bus = sys.pci.as_mut()?;
    bus.bind_virtio(slot as u8);
    bus.virtio_index(slot as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn balloon_index_places_it_among_the_virtio_mem_devices() {
        let kinds = |v: Vec<ColdFunction>| -> Vec<(u32, PciKind)> {
            v.into_iter().map(|f| (f.slot, f.kind)).collect()
        };
        assert_eq!(
            kinds(cold_slots(2, Some(1))),
            vec![
                (2, PciKind::VirtioMem),
                (3, PciKind::VirtioBalloon),
                (4, PciKind::VirtioMem)
            ]
        );
        assert_eq!(
            kinds(cold_slots(0, Some(0))),
            vec![(2, PciKind::VirtioBalloon)]
        );
        assert_eq!(kinds(cold_slots(1, None)), vec![(2, PciKind::VirtioMem)]);
    }
}
