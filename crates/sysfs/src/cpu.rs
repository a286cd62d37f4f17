//! `/sys/devices/system/cpu` beyond the CPU masks: the files a 6.1 guest
//! on QEMU's default x86-64 CPU under TCG has there and that stay as boot
//! left them (CPU hotplug is not modelled: every present CPU is online for
//! good). Recorded in `conformance/behaviour/cpu-dir`.
//!
//! Not served: `hotplug/` (the CPU hotplug state machine's states), and
//! per CPU `cache/`, `crash_notes`, `crash_notes_size`, `hotplug/` and the
//! `driver`, `firmware_node` and `subsystem` links (their targets are not
//! served either).

use crate::render::{bitmap_list, bitmap_mask};
use crate::tree::cpu_id;
use crate::vfs::{EntryKind, Errno};
use memhp_model::kstr::kstrtobool;
use memhp_model::System;

/// `modalias` of QEMU's default CPU model (`qemu64`) under TCG.
const MODALIAS: &str = "cpu:type:x86,ven0002fam000Fmod006B:feature:,0000,0002,0003,0004,0005,0006,0007,0008,0009,000B,000C,000D,000E,000F,0010,0011,0013,0017,0018,0019,001A,001C,0020,0022,0023,0024,0025,0026,0027,0028,0029,002B,002C,002D,002E,002F,0030,0031,0034,0037,0038,003D,0064,006E,0070,0072,0074,0075,0079,007A,0080,008D,009F,00C0,00C1,00C2,00C8,00ED,00F3,010F,0165,016C\n";

/// A CPU device's `uevent`: its driver and its modalias (whose own
/// newline stays inside the variable).
pub(crate) fn uevent() -> String {
    format!("DRIVER=processor\nMODALIAS={MODALIAS}\n")
}

/// `vulnerabilities/`: what Debian's 6.1.192 reports for that CPU.
const VULNERABILITIES: [(&str, &str); 17] = [
    ("gather_data_sampling", "Not affected"),
    ("indirect_target_selection", "Not affected"),
    ("itlb_multihit", "Not affected"),
    ("l1tf", "Not affected"),
    ("mds", "Not affected"),
    ("meltdown", "Not affected"),
    ("mmio_stale_data", "Not affected"),
    ("reg_file_data_sampling", "Not affected"),
    ("retbleed", "Not affected"),
    ("spec_rstack_overflow", "Not affected"),
    ("spec_store_bypass", "Not affected"),
    (
        "spectre_v1",
        "Mitigation: usercopy/swapgs barriers and __user pointer sanitization",
    ),
    (
        "spectre_v2",
        "Mitigation: Retpolines; STIBP: disabled; RSB filling; PBRSB-eIBRS: Not affected; BHI: Not affected",
    ),
    ("srbds", "Not affected"),
    ("tsa", "Not affected"),
    ("tsx_async_abort", "Not affected"),
    ("vmscape", "Not affected"),
];

/// The cpuidle governors built in, in registration order.
pub const CPUIDLE_GOVERNORS: [&str; 2] = ["ladder", "menu"];

/// `topology/`: QEMU 7.2's pc machine puts every CPU of `-smp` in one
/// socket, a core each (no threads, no clusters, one die).
const TOPOLOGY_FILES: [&str; 16] = [
    "cluster_cpus",
    "cluster_cpus_list",
    "cluster_id",
    "core_cpus",
    "core_cpus_list",
    "core_id",
    "core_siblings",
    "core_siblings_list",
    "die_cpus",
    "die_cpus_list",
    "die_id",
    "package_cpus",
    "package_cpus_list",
    "physical_package_id",
    "thread_siblings",
    "thread_siblings_list",
];

fn file(mode: u16) -> EntryKind {
    EntryKind::File { mode }
}

/// Entries of `/sys/devices/system/cpu` besides the CPUs, the masks and
/// `power/`.
pub(crate) fn top_entries() -> Vec<(&'static str, EntryKind)> {
    vec![
        ("cpufreq", EntryKind::Dir),
        ("cpuidle", EntryKind::Dir),
        ("isolated", file(0o444)),
        ("modalias", file(0o444)),
        ("nohz_full", file(0o444)),
        ("smt", EntryKind::Dir),
        ("uevent", file(0o644)),
        ("vulnerabilities", EntryKind::Dir),
    ]
}

/// A listing below `/sys/devices/system/cpu` (`rest`: the path after it),
/// for the directories this module serves.
pub(crate) fn list(sys: &System, rest: &[&str]) -> Option<Vec<(String, EntryKind)>> {
    let own = |v: Vec<(&str, EntryKind)>| v.into_iter().map(|(n, k)| (n.to_string(), k)).collect();
    Some(match rest {
        ["cpufreq"] => Vec::new(),
        ["cpuidle"] => own(vec![
            ("available_governors", file(0o444)),
            ("current_driver", file(0o444)),
            ("current_governor", file(0o644)),
            ("current_governor_ro", file(0o444)),
        ]),
        ["smt"] => own(vec![("active", file(0o444)), ("control", file(0o644))]),
        ["vulnerabilities"] => VULNERABILITIES
            .iter()
            .map(|(n, _)| (n.to_string(), file(0o444)))
            .collect(),
        [c, "topology"] if online(sys, c) => TOPOLOGY_FILES
            .iter()
            .map(|n| (n.to_string(), file(0o444)))
            .collect(),
        _ => return None,
    })
}

/// The files of a CPU's directory this module adds (`cpu0` cannot go
/// offline, so it has no `online`).
pub(crate) fn cpu_entries(cpu: u32) -> Vec<(&'static str, EntryKind)> {
    let mut v = vec![
        ("power", EntryKind::Dir),
        ("topology", EntryKind::Dir),
        ("uevent", file(0o644)),
    ];
    if cpu > 0 {
        v.push(("online", file(0o644)));
    }
    v
}

fn online(sys: &System, name: &str) -> bool {
    cpu_id(name).is_some_and(|c| sys.online_cpus().contains(&c))
}

/// A file below `/sys/devices/system/cpu`; `None` for the ones this
/// module does not serve.
pub(crate) fn read(sys: &System, rest: &[&str]) -> Option<Result<String, Errno>> {
    let online_cpus = sys.online_cpus();
    let nr = sys.nr_cpu_ids();
    Some(Ok(match rest {
        ["isolated"] => "\n".to_string(),
        ["nohz_full"] => "(null)\n".to_string(),
        ["modalias"] => MODALIAS.to_string(),
        ["smt", "active"] => "0\n".to_string(),
        ["smt", "control"] => "notsupported\n".to_string(),
        ["vulnerabilities", f] => {
            let (_, text) = VULNERABILITIES.iter().find(|(n, _)| n == f)?;
            format!("{text}\n")
        }
        ["cpuidle", "available_governors"] => format!("{} \n", CPUIDLE_GOVERNORS.join(" ")),
        ["cpuidle", "current_driver"] => "none\n".to_string(),
        ["cpuidle", "current_governor" | "current_governor_ro"] => {
            format!("{}\n", sys.cpuidle_governor())
        }
        [c, "online"] if online(sys, c) && cpu_id(c) != Some(0) => "1\n".to_string(),
        [c, "topology", f] if online(sys, c) => {
            let cpu = cpu_id(c)?;
            match *f {
                "cluster_cpus" | "core_cpus" | "thread_siblings" => bitmap_mask(&[cpu], nr),
                "cluster_cpus_list" | "core_cpus_list" | "thread_siblings_list" => {
                    bitmap_list([cpu])
                }
                "cluster_id" => "65535\n".to_string(),
                "core_id" => format!("{cpu}\n"),
                "core_siblings" | "die_cpus" | "package_cpus" => bitmap_mask(&online_cpus, nr),
                "core_siblings_list" | "die_cpus_list" | "package_cpus_list" => {
                    bitmap_list(online_cpus.iter().copied())
                }
                "die_id" | "physical_package_id" => "0\n".to_string(),
                _ => return None,
            }
        }
        _ => return None,
    }))
}

/// A write below `/sys/devices/system/cpu`; `None` for the files this
/// module does not handle.
pub(crate) fn store(sys: &mut System, rest: &[&str], data: &[u8]) -> Option<Result<usize, Errno>> {
    let text = String::from_utf8_lossy(data);
    let word = text.strip_suffix('\n').unwrap_or(&text);
    Some(match rest {
        // __store_smt_control: a known word on a CPU without SMT.
        ["smt", "control"] => match word {
            "on" | "off" | "forceoff" => Err(Errno::ENODEV),
            _ => Err(Errno::EINVAL),
        },
        // cpuidle_switch_governor: by name, up to 15 characters.
        ["cpuidle", "current_governor"] => match CPUIDLE_GOVERNORS.iter().find(|g| **g == word) {
            Some(g) => {
                sys.set_cpuidle_governor(g);
                Ok(data.len())
            }
            None => Err(Errno::EINVAL),
        },
        // CPU hotplug is not modelled: the CPU stays online; asking for
        // that is a no-op, anything else is refused.
        [c, "online"] if online(sys, c) => match kstrtobool(data) {
            Ok(true) => Ok(data.len()),
            Ok(false) => Err(Errno::EBUSY),
            Err(_) => Err(Errno::EINVAL),
        },
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kstrtobool_takes_the_kernels_spellings() {
        for (s, want) in [
            ("1", Some(true)),
            ("yes", Some(true)),
            ("on", Some(true)),
            ("0", Some(false)),
            ("off", Some(false)),
            ("N", Some(false)),
            ("2", None),
            ("o", None),
            ("", None),
        ] {
            assert_eq!(kstrtobool(s.as_bytes()).ok(), want, "{s:?}");
        }
    }

    #[test]
    fn smt_control_refuses_known_words_with_enodev_and_others_with_einval() {
        let mut sys = System::boot(
            &memhp_model::machine::QemuPc::default()
                .machine("", memhp_model::KernelVersion::V6_1)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(
            store(&mut sys, &["smt", "control"], b"on\n"),
            Some(Err(Errno::ENODEV))
        );
        assert_eq!(
            store(&mut sys, &["smt", "control"], b"bogus"),
            Some(Err(Errno::EINVAL))
        );
        assert_eq!(
            store(&mut sys, &["cpuidle", "current_governor"], b"ladder"),
            Some(Ok(6))
        );
        assert_eq!(sys.cpuidle_governor(), "ladder");
        assert_eq!(
            store(&mut sys, &["cpuidle", "current_governor"], b"bogus"),
            Some(Err(Errno::EINVAL))
        );
        // Offlining a CPU is refused: CPU hotplug is not modelled.
        assert_eq!(
            store(&mut sys, &["cpu0", "online"], b"0"),
            Some(Err(Errno::EBUSY))
        );
    }
}
