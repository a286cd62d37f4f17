//! Pure renderers: the exact bytes of every sysfs attribute and of the
//! procfs files that are not page counters (those are in [`crate::stats`]),
//! as functions of a [`System`] (spec 01 §3, §4, §5, §7.4).

use memhp_model::block::BlockState;
use memhp_model::cmdline::MemmapOnMemory;
use memhp_model::iomem::Resource;
use memhp_model::{KernelVersion, System, ZoneType};

/// `%*pbl`: ascending list with runs of ≥ 2 written `a-b`, then `\n`.
pub fn bitmap_list(ids: impl IntoIterator<Item = u32>) -> String {
    let mut v: Vec<u32> = ids.into_iter().collect();
    v.sort_unstable();
    v.dedup();
    let mut out = String::new();
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j + 1 < v.len() && v[j + 1] == v[j] + 1 {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if j > i {
            out.push_str(&format!("{}-{}", v[i], v[j]));
        } else {
            out.push_str(&v[i].to_string());
        }
        i = j + 1;
    }
    out.push('\n');
    out
}

/// `%*pb` over `nbits` bits: 32-bit hex chunks, most significant first,
/// comma separated, the first chunk only as wide as its bits need.
pub fn bitmap_mask(ids: &[u32], nbits: u32) -> String {
    let nbits = nbits.max(1);
    let chunks = nbits.div_ceil(32);
    let mut parts = Vec::new();
    for c in (0..chunks).rev() {
        let mut word: u32 = 0;
        for &id in ids {
            if id / 32 == c {
                word |= 1 << (id % 32);
            }
        }
        let bits = if c == chunks - 1 && !nbits.is_multiple_of(32) {
            nbits % 32
        } else {
            32
        };
        let width = bits.div_ceil(4) as usize;
        parts.push(format!("{word:0width$x}"));
    }
    format!("{}\n", parts.join(","))
}

/// `memoryN/state`.
pub fn block_state(sys: &System, id: u64) -> Option<String> {
    Some(format!("{}\n", sys.blocks.get(&id)?.state.as_str()))
}

/// `memoryN/online`: `!dev->offline`.
pub fn block_online(sys: &System, id: u64) -> Option<String> {
    Some(format!("{}\n", u8::from(!sys.blocks.get(&id)?.dev_offline)))
}

/// `memoryN/removable`: `1` on every kernel since 5.7 (or as dumped).
pub fn block_removable(sys: &System, id: u64) -> Option<String> {
    let b = sys.blocks.get(&id)?;
    Some(match b.dumped.as_ref().and_then(|d| d.removable.as_ref()) {
        Some(text) => format!("{text}\n"),
        None => "1\n".to_string(),
    })
}

/// `memoryN/phys_index`: `%08lx`.
pub fn block_phys_index(id: u64) -> String {
    format!("{id:08x}\n")
}

/// `memoryN/valid_zones` (spec 01 §3.7).
pub fn block_valid_zones(sys: &System, id: u64) -> Option<String> {
    let b = sys.blocks.get(&id)?;
    if let Some(text) = b.dumped.as_ref().and_then(|d| d.valid_zones.as_ref()) {
        return Some(format!("{text}\n"));
    }
    if b.state == BlockState::Online {
        return Some(match b.zone {
            Some(z) => format!("{}\n", z.name()),
            None => "none\n".to_string(),
        });
    }
    let names: Vec<&str> = sys
        .valid_zones_offline(id)
        .into_iter()
        .map(ZoneType::name)
        .collect();
    Some(format!("{}\n", names.join(" ")))
}

/// `block_size_bytes`: `%lx`, no `0x`.
pub fn block_size_bytes(sys: &System) -> String {
    format!("{:x}\n", sys.block_size)
}

/// `auto_online_blocks`.
pub fn auto_online_blocks(sys: &System) -> String {
    format!("{}\n", sys.params.default_online_type.as_str())
}

/// `/sys/module/memory_hotplug/parameters/*` by name.
pub fn module_param(sys: &System, name: &str) -> Option<String> {
    let p = &sys.params;
    let yn = |b: bool| if b { "Y\n" } else { "N\n" };
    Some(match name {
        "online_policy" => format!("{}\n", p.online_policy.as_str()),
        "auto_movable_ratio" => format!("{}\n", p.auto_movable_ratio),
        "auto_movable_numa_aware" => yn(p.auto_movable_numa_aware).to_string(),
        "memmap_on_memory" => match (p.memmap_on_memory, sys.version) {
            (MemmapOnMemory::Force, KernelVersion::Mainline) => "force\n".to_string(),
            (m, _) => yn(m != MemmapOnMemory::Off).to_string(),
        },
        _ => return None,
    })
}

/// Node-state mask files of `/sys/devices/system/node`.
pub fn node_state(sys: &System, name: &str) -> Option<String> {
    let nodes = sys.nodes.values();
    let ids: Vec<u32> = match name {
        "possible" => nodes.map(|n| n.id).collect(),
        "online" => nodes.filter(|n| n.online).map(|n| n.id).collect(),
        "has_memory" => nodes.filter(|n| n.has_memory).map(|n| n.id).collect(),
        "has_normal_memory" => nodes
            .filter(|n| n.has_normal_memory)
            .map(|n| n.id)
            .collect(),
        "has_cpu" => nodes.filter(|n| !n.cpus.is_empty()).map(|n| n.id).collect(),
        "has_generic_initiator" => nodes
            .filter(|n| n.generic_initiator)
            .map(|n| n.id)
            .collect(),
        _ => return None,
    };
    Some(bitmap_list(ids))
}

/// Adjacent driver-managed `System RAM (<driver>)` siblings are one
/// resource in the kernel (MHP_MERGE_RESOURCE).
fn merge_driver_ram(list: &[Resource]) -> Vec<Resource> {
    let mut out: Vec<Resource> = Vec::new();
    for r in list {
        if let Some(prev) = out.last_mut() {
            if r.name.starts_with("System RAM (") && prev.name == r.name && prev.end + 1 == r.start
            {
                prev.end = r.end;
                continue;
            }
        }
        out.push(r.clone());
    }
    out
}

fn iomem_lines(out: &mut String, list: &[Resource], depth: usize) {
    for r in &merge_driver_ram(list) {
        out.push_str(&format!(
            "{:indent$}{:08x}-{:08x} : {}\n",
            "",
            r.start,
            r.end,
            r.name,
            indent = depth * 2
        ));
        iomem_lines(out, &r.children, depth + 1);
    }
}

/// `/proc/iomem` as root sees it.
pub fn proc_iomem(sys: &System) -> String {
    let mut out = String::new();
    iomem_lines(&mut out, &sys.iomem.top, 0);
    out
}

/// The `error` file of a notifier-error-inject action: `%lld\n`.
pub fn inject_error(v: i32) -> String {
    format!("{v}\n")
}

/// `/proc/modules`: the loaded modules, the most recent first, with their
/// size, how many loaded modules use them and which, their state (module
/// addresses are not shown: zero).
pub fn proc_modules(sys: &System) -> String {
    let mut out = String::new();
    for name in sys.modules.iter().rev() {
        let size = memhp_model::modules::MODULES
            .iter()
            .find(|m| m.name == name.as_str())
            .map_or(0, |m| m.size);
        let users = sys.module_users(name);
        let by = match users.is_empty() {
            true => "-".to_string(),
            false => format!("{},", users.join(",")),
        };
        out.push_str(&format!(
            "{name} {size} {} {by} Live 0x0000000000000000\n",
            users.len()
        ));
    }
    out
}

/// `/proc/cpuinfo` of QEMU's default x86-64 CPU under TCG, as a recorded
/// 6.1 guest shows it (one socket, a core per CPU; the clock, microcode and
/// BogoMIPS are the recording host's).
pub fn cpuinfo(sys: &System) -> String {
    let n = sys.nr_cpu_ids();
    let mut out = String::new();
    for cpu in sys.online_cpus() {
        out.push_str(&format!(
            "processor\t: {cpu}\n\
             vendor_id\t: AuthenticAMD\n\
             cpu family\t: 15\n\
             model\t\t: 107\n\
             model name\t: QEMU Virtual CPU version 2.5+\n\
             stepping\t: 1\n\
             microcode\t: 0x1000065\n\
             cpu MHz\t\t: 2596.158\n\
             cache size\t: 512 KB\n\
             physical id\t: 0\n\
             siblings\t: {n}\n\
             core id\t\t: {cpu}\n\
             cpu cores\t: {n}\n\
             apicid\t\t: {cpu}\n\
             initial apicid\t: {cpu}\n\
             fpu\t\t: yes\n\
             fpu_exception\t: yes\n\
             cpuid level\t: 13\n\
             wp\t\t: yes\n\
             flags\t\t: fpu de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 ht syscall nx lm rep_good nopl cpuid extd_apicid pni cx16 hypervisor lahf_lm cmp_legacy svm 3dnowprefetch vmmcall\n\
             bugs\t\t: fxsave_leak sysret_ss_attrs null_seg swapgs_fence amd_e400 spectre_v1 spectre_v2\n\
             bogomips\t: 5192.31\n\
             TLB size\t: 1024 4K pages\n\
             clflush size\t: 64\n\
             cache_alignment\t: 64\n\
             address sizes\t: 40 bits physical, 48 bits virtual\n\
             power management:\n\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitmap_list_collapses_runs() {
        assert_eq!(bitmap_list([0]), "0\n");
        assert_eq!(bitmap_list([0, 1, 2, 5]), "0-2,5\n");
        assert_eq!(bitmap_list([0, 2]), "0,2\n");
        assert_eq!(bitmap_list([]), "\n");
        assert_eq!(bitmap_list([1, 0]), "0-1\n");
    }

    #[test]
    fn bitmap_mask_chunks_by_32_bits() {
        assert_eq!(bitmap_mask(&[0], 1), "1\n");
        assert_eq!(bitmap_mask(&[1], 2), "2\n");
        assert_eq!(
            bitmap_mask(&(0..32).collect::<Vec<_>>(), 64),
            "00000000,ffffffff\n"
        );
        assert_eq!(bitmap_mask(&[4], 8), "10\n");
    }
}
