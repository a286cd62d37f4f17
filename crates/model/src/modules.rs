//! The loadable modules a guest loads (Debian 6.1.0-56's `.ko` files): what
//! `/proc/modules` (and so `lsmod`) shows of them.

use crate::system::System;

/// A module: its name as the kernel knows it, its size, and the modules it
/// uses (whose reference counts it holds).
pub struct ModuleInfo {
    pub name: &'static str,
    pub size: u64,
    pub uses: &'static [&'static str],
}

/// The modules memhp's guests load, as a recorded guest listed them.
pub const MODULES: [ModuleInfo; 9] = [
    ModuleInfo {
        name: "notifier_error_inject",
        size: 16384,
        uses: &[],
    },
    ModuleInfo {
        name: "memory_notifier_error_inject",
        size: 16384,
        uses: &["notifier_error_inject"],
    },
    ModuleInfo {
        name: "virtio_ring",
        size: 49152,
        uses: &[],
    },
    ModuleInfo {
        name: "virtio",
        size: 20480,
        uses: &["virtio_ring"],
    },
    ModuleInfo {
        name: "virtio_pci_modern_dev",
        size: 20480,
        uses: &[],
    },
    ModuleInfo {
        name: "virtio_pci_legacy_dev",
        size: 16384,
        uses: &[],
    },
    ModuleInfo {
        name: "virtio_pci",
        size: 24576,
        uses: &[
            "virtio_ring",
            "virtio",
            "virtio_pci_modern_dev",
            "virtio_pci_legacy_dev",
        ],
    },
    ModuleInfo {
        name: "virtio_mem",
        size: 40960,
        uses: &["virtio_ring", "virtio"],
    },
    ModuleInfo {
        name: "virtio_balloon",
        size: 24576,
        uses: &["virtio_ring", "virtio"],
    },
];

/// The kernel's name of a module (`-` and `_` are the same to it).
pub fn module_name(name: &str) -> String {
    name.trim_end_matches(".ko").replace('-', "_")
}

impl System {
    /// A module was loaded (insmod).
    pub fn module_loaded(&mut self, name: &str) {
        let name = module_name(name);
        if !self.modules.contains(&name) {
            self.modules.push(name);
            // Buses and drivers appear with modules (`/sys/bus/virtio`,
            // `/sys/bus/pci/drivers/virtio-pci`).
            self.layout_touch();
        }
    }

    /// A module was unloaded (rmmod).
    pub fn module_unloaded(&mut self, name: &str) {
        let name = module_name(name);
        self.modules.retain(|m| *m != name);
        self.layout_touch();
    }

    /// The loaded modules that use `name`, the most recently loaded first.
    pub fn module_users(&self, name: &str) -> Vec<&str> {
        self.modules
            .iter()
            .rev()
            .filter(|m| {
                MODULES
                    .iter()
                    .any(|i| i.name == m.as_str() && i.uses.contains(&name))
            })
            .map(String::as_str)
            .collect()
    }
}
