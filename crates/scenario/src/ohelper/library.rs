//! The helper library's shell pipelines as helper commands, with the same
//! bytes out, so that the resident helper runs them without a fork and an
//! exec per pipeline stage:
//!
//! ```text
//! zones ZONEINFO            zones' awk summary of a zoneinfo file
//! iomem IOMEM               iomem's grep -E 'System RAM|virtio|dimm|hotplug|Hotplug'
//! meminfo-totals MEMINFO    params' grep -E '^(MemTotal|Movable|HighTotal)' | tr -s ' '
//! nodes NODEDIR             nodes (masks, then per node: links, cpulist, MemTotal)
//! allblocks MEMDIR          ls | grep '^memory[0-9]' | sort -t y -k 2 -n
//! bootblocks [FILE]         sort -t y -k 2 -n FILE (nothing without FILE)
//! hotblocks MEMDIR [FILE]   allblocks minus the lines of FILE (grep -vxF -f)
//! ```

use super::{emit, file_line};
use std::io::Write;
use std::path::Path;

/// `sort -t y -k 2 -n` on `memoryN` names: by the number after the `y`
/// (names without a number sort first, as `sort -n` does with non-numbers),
/// ties by the whole line.
fn sort_blocks(names: &mut [String]) {
    let key = |n: &str| -> u64 {
        let tail = n.split_once('y').map_or("", |(_, t)| t);
        let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().unwrap_or(0)
    };
    names.sort_by(|a, b| key(a).cmp(&key(b)).then_with(|| a.cmp(b)));
}

/// The entries of `dir` matching `^PREFIX[0-9]`, unsorted.
fn numbered_entries(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                .filter(|n| {
                    n.strip_prefix(prefix)
                        .and_then(|t| t.chars().next())
                        .is_some_and(|c| c.is_ascii_digit())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `grep '^memory[0-9]'` over the entries of `dir`, sorted as blocks.
fn block_names(dir: &Path) -> Vec<String> {
    let mut names = numbered_entries(dir, "memory");
    sort_blocks(&mut names);
    names
}

fn read_text(path: &str, err: &mut dyn Write, tool: &str) -> Option<String> {
    match std::fs::read(path) {
        Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) => {
            let _ = writeln!(err, "{tool}: {path}: {e}");
            None
        }
    }
}

/// `tr -s ' '`.
fn squeeze_spaces(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut prev_space = false;
    for c in line.chars() {
        if c == ' ' && prev_space {
            continue;
        }
        prev_space = c == ' ';
        out.push(c);
    }
    out
}

fn zones(zoneinfo: &str, out: &mut dyn Write) {
    struct Zone {
        node: String,
        zone: String,
        start: String,
        spanned: String,
        present: String,
        managed: String,
    }
    let print = |z: &Option<Zone>, out: &mut dyn Write| {
        if let Some(z) = z.as_ref().filter(|z| !z.zone.is_empty()) {
            emit(
                out,
                format!(
                    "zone node={} {:<7} start_pfn={} spanned={} present={} managed={}\n",
                    z.node, z.zone, z.start, z.spanned, z.present, z.managed
                )
                .as_bytes(),
            );
        }
    };
    let mut current: Option<Zone> = None;
    for line in zoneinfo.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(&first), second) = (fields.first(), fields.get(1).copied().unwrap_or("")) else {
            continue;
        };
        match first {
            "Node" => {
                print(&current, out);
                current = Some(Zone {
                    node: second.strip_suffix(',').unwrap_or(second).to_string(),
                    zone: fields.get(3).copied().unwrap_or("").to_string(),
                    start: "-".into(),
                    spanned: "-".into(),
                    present: "-".into(),
                    managed: "-".into(),
                });
            }
            "spanned" | "present" | "managed" | "start_pfn:" => {
                // awk assigns these whether or not a zone was seen; they
                // only show once one is.
                if let Some(z) = current.as_mut() {
                    let slot = match first {
                        "spanned" => &mut z.spanned,
                        "present" => &mut z.present,
                        "managed" => &mut z.managed,
                        _ => &mut z.start,
                    };
                    *slot = second.to_string();
                }
            }
            _ => {}
        }
    }
    print(&current, out);
}

fn nodes(dir: &str, out: &mut dyn Write) {
    for f in [
        "possible",
        "online",
        "has_memory",
        "has_normal_memory",
        "has_high_memory",
        "has_cpu",
        "has_generic_initiator",
    ] {
        let path = format!("{dir}/{f}");
        if Path::new(&path).exists() {
            let mut line = b"read ".to_vec();
            file_line(&mut line, path.as_bytes(), None);
            emit(out, &line);
        } else {
            emit(out, format!("absent {path}\n").as_bytes());
        }
    }
    // The shell's glob order: byte order of the names.
    let mut node_dirs = numbered_entries(Path::new(dir), "node");
    node_dirs.sort();
    for n in node_dirs {
        let d = format!("{dir}/{n}");
        if !Path::new(&d).is_dir() {
            continue;
        }
        let links: String = block_names(Path::new(&d))
            .iter()
            .map(|b| format!("{b} "))
            .collect();
        emit(out, format!("{n} memory links: {links}\n").as_bytes());
        let cpulist = std::fs::read(format!("{d}/cpulist")).unwrap_or_default();
        let cpulist = String::from_utf8_lossy(&cpulist);
        emit(
            out,
            format!("{n} cpulist: {}\n", cpulist.trim_end_matches('\n')).as_bytes(),
        );
        let meminfo = std::fs::read(format!("{d}/meminfo")).unwrap_or_default();
        let total: Vec<String> = String::from_utf8_lossy(&meminfo)
            .lines()
            .filter(|l| l.contains("MemTotal"))
            .map(squeeze_spaces)
            .collect();
        emit(out, format!("{n} {}\n", total.join("\n")).as_bytes());
    }
}

/// The lines of `file`, or none.
fn lines_of(file: Option<&String>) -> Vec<String> {
    file.and_then(|f| std::fs::read_to_string(f).ok())
        .map(|t| t.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Run library command `cmd` with `args`; `None` if `cmd` is not one.
pub(crate) fn run(
    cmd: &str,
    args: &[String],
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> Option<i32> {
    let first = args.first().map(String::as_str).unwrap_or("");
    let status = match cmd {
        "zones" => match read_text(first, err, "awk") {
            Some(text) => {
                zones(&text, out);
                0
            }
            None => 2,
        },
        "iomem" => match read_text(first, err, "grep") {
            Some(text) => {
                let hits: Vec<&str> = text
                    .lines()
                    .filter(|l| {
                        ["System RAM", "virtio", "dimm", "hotplug", "Hotplug"]
                            .iter()
                            .any(|p| l.contains(p))
                    })
                    .collect();
                for l in &hits {
                    emit(out, format!("{l}\n").as_bytes());
                }
                if hits.is_empty() {
                    1
                } else {
                    0
                }
            }
            None => 2,
        },
        "meminfo-totals" => match read_text(first, err, "grep") {
            Some(text) => {
                for l in text.lines().filter(|l| {
                    ["MemTotal", "Movable", "HighTotal"]
                        .iter()
                        .any(|p| l.starts_with(p))
                }) {
                    emit(out, format!("{}\n", squeeze_spaces(l)).as_bytes());
                }
                0
            }
            None => 2,
        },
        "nodes" => {
            nodes(first, out);
            0
        }
        "allblocks" => {
            for b in block_names(Path::new(first)) {
                emit(out, format!("{b}\n").as_bytes());
            }
            0
        }
        "bootblocks" => {
            let mut names = lines_of(args.first());
            sort_blocks(&mut names);
            for b in names {
                emit(out, format!("{b}\n").as_bytes());
            }
            0
        }
        "hotblocks" => {
            let boot = lines_of(args.get(1));
            for b in block_names(Path::new(first)) {
                if !boot.contains(&b) {
                    emit(out, format!("{b}\n").as_bytes());
                }
            }
            0
        }
        _ => return None,
    };
    Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_sort_by_their_number() {
        let mut v: Vec<String> = ["memory10", "memory9", "memory100", "memory0"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        sort_blocks(&mut v);
        assert_eq!(v, ["memory0", "memory9", "memory10", "memory100"]);
    }

    #[test]
    fn zones_summary_matches_the_awk_format() {
        let zoneinfo = "Node 0, zone      DMA\n  per-node stats\n  pages free     3840\n        spanned  4095\n        present  3998\n        managed  3840\n  start_pfn:           1\nNode 0, zone  Movable\n  pages free     0\n        spanned  0\n        present  0\n        managed  0\n";
        let mut out = Vec::new();
        zones(zoneinfo, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "zone node=0 DMA     start_pfn=1 spanned=4095 present=3998 managed=3840\n\
             zone node=0 Movable start_pfn=- spanned=0 present=0 managed=0\n"
        );
    }

    #[test]
    fn squeezing_keeps_single_spaces() {
        assert_eq!(squeeze_spaces("MemTotal:     1048 kB"), "MemTotal: 1048 kB");
    }
}
