//! memhp-model: the pure, deterministic memory-hotplug state machine of
//! Linux on x86-64 (6.1 by default, mainline behind [`KernelVersion`]).
//!
//! No I/O, no clock, no global state: a [`System`] is booted from a
//! [`machine::MachineSpec`] and changed only by method calls. What the
//! kernel would report on the way (log lines, uevents, notifier calls) is
//! appended to [`System::events`].

pub mod balloon;
pub mod block;
pub mod boot;
mod bootlog;
pub mod cmdline;
pub mod device;
mod direct_map;
pub mod dump;
mod early_alloc;
pub mod events;
pub mod fault;
pub mod hotadd;
pub mod hotplug;
pub mod hugetlb;
pub mod iomem;
pub mod journal;
pub mod kstr;
pub mod lockdep;
pub mod lockproto;
pub mod machine;
pub mod memblock;
pub mod memory_failure;
pub mod mm_knobs;
pub mod modules;
pub mod notifier;
pub mod pages;
pub mod pci;
mod policy;
pub mod qemu_acpi;
pub mod retrylog;
pub mod shared;
pub mod sysctl;
pub mod system;
pub mod thp;
pub mod units;
pub mod vm_events;
pub mod wmark;
pub mod workload;
pub mod zone;

pub use block::{BlockState, MemoryBlock, OnlineType};
pub use boot::BootError;
pub use hotplug::{DeviceOutcome, HotplugError, OfflineProgress};
pub use system::System;
pub use zone::ZoneType;

use serde::{Deserialize, Serialize};

/// Which kernel's behaviour to follow where 6.1 and mainline differ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum KernelVersion {
    /// Linux 6.1 (Debian 12), what the oracle records.
    #[default]
    #[serde(rename = "6.1")]
    V6_1,
    /// Current mainline as described by the spec ("ML"/"NEW").
    #[serde(rename = "ml")]
    Mainline,
}

impl KernelVersion {
    /// `uname -r` of the emulated build.
    pub fn uname_release(self) -> &'static str {
        match self {
            KernelVersion::V6_1 => "6.1.0-56-amd64",
            KernelVersion::Mainline => "6.18.0-memhp",
        }
    }

    /// `uname -v` of the emulated build.
    pub fn uname_version(self) -> &'static str {
        match self {
            KernelVersion::V6_1 => "#1 SMP PREEMPT_DYNAMIC Debian 6.1.192-2 (2026-11-16)",
            KernelVersion::Mainline => "#1 SMP PREEMPT_DYNAMIC",
        }
    }

    /// `linux_banner`: the boot log's first line and `/proc/version`.
    pub fn linux_banner(self) -> String {
        match self {
            KernelVersion::V6_1 => format!(
                "Linux version {} (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14+deb12u1) 12.2.0, GNU ld (GNU Binutils for Debian) 2.40) {}",
                self.uname_release(),
                self.uname_version()
            ),
            KernelVersion::Mainline => format!(
                "Linux version {} (memhp) {}",
                self.uname_release(),
                self.uname_version()
            ),
        }
    }

    /// The build as `dump_stack` names it after "Not tainted".
    pub fn dump_stack_build(self) -> &'static str {
        match self {
            KernelVersion::V6_1 => "6.1.0-56-amd64 #1  Debian 6.1.192-2",
            KernelVersion::Mainline => "6.18.0-memhp #1",
        }
    }
}

impl std::str::FromStr for KernelVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "6.1" => Ok(KernelVersion::V6_1),
            "ml" | "mainline" => Ok(KernelVersion::Mainline),
            _ => Err(format!("unknown kernel version {s:?} (expected 6.1 or ml)")),
        }
    }
}
