//! Reading sysfs dumps (a directory or a `.tar.bz2` as util-linux's tests
//! ship them) into [`DumpData`], and `memhp capture`, which records a tree in
//! the same format.

use anyhow::{bail, Context, Result};
use memhp_model::dump::{DumpBlock, DumpData};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

const MEMORY_DIR: &str = "sys/devices/system/memory";

/// What a dump holds below `sys/devices/system/memory`: files with their
/// content and symlinks, by relative path.
#[derive(Default)]
struct Entries {
    files: BTreeMap<String, String>,
    links: Vec<String>,
}

fn to_data(e: Entries) -> Result<DumpData> {
    let block_size_bytes = e
        .files
        .get("block_size_bytes")
        .context("the dump has no sys/devices/system/memory/block_size_bytes")?
        .trim()
        .to_string();
    let mut blocks: BTreeMap<u64, DumpBlock> = BTreeMap::new();
    let block_of = |path: &str| -> Option<(u64, String)> {
        let (dir, name) = path.split_once('/')?;
        let id = dir.strip_prefix("memory")?.parse().ok()?;
        Some((id, name.to_string()))
    };
    for (path, content) in &e.files {
        let Some((id, name)) = block_of(path) else {
            continue;
        };
        let b = blocks.entry(id).or_insert_with(|| DumpBlock {
            id,
            ..Default::default()
        });
        let text = content.strip_suffix('\n').unwrap_or(content).to_string();
        match name.as_str() {
            "state" => b.state = text,
            "removable" => b.removable = Some(text),
            "valid_zones" => b.valid_zones = Some(text),
            "phys_device" => b.phys_device = Some(text),
            _ => {}
        }
    }
    for path in &e.links {
        let Some((id, name)) = block_of(path) else {
            continue;
        };
        if let Some(n) = name.strip_prefix("node").and_then(|n| n.parse().ok()) {
            blocks
                .entry(id)
                .or_insert_with(|| DumpBlock {
                    id,
                    ..Default::default()
                })
                .nodes
                .push(n);
        }
    }
    for b in blocks.values_mut() {
        b.nodes.sort_unstable();
        if b.state.is_empty() {
            bail!("memory{}: the dump has no state file", b.id);
        }
    }
    Ok(DumpData {
        block_size_bytes,
        auto_online_blocks: e
            .files
            .get("auto_online_blocks")
            .map(|s| s.trim().to_string()),
        blocks: blocks.into_values().collect(),
    })
}

fn find_memory_dir(root: &Path) -> Option<PathBuf> {
    let direct = root.join(MEMORY_DIR);
    if direct.is_dir() {
        return Some(direct);
    }
    for entry in std::fs::read_dir(root).ok()?.flatten() {
        let p = entry.path();
        if p.is_dir() && !p.is_symlink() {
            if let Some(found) = find_memory_dir(&p) {
                return Some(found);
            }
        }
    }
    None
}

fn read_dir_dump(root: &Path) -> Result<Entries> {
    let mem = find_memory_dir(root)
        .with_context(|| format!("{}: no {MEMORY_DIR} inside", root.display()))?;
    let mut e = Entries::default();
    fn walk(base: &Path, dir: &Path, e: &mut Entries) -> Result<()> {
        for entry in std::fs::read_dir(dir)?.flatten() {
            let p = entry.path();
            let rel = p.strip_prefix(base)?.to_string_lossy().to_string();
            let meta = std::fs::symlink_metadata(&p)?;
            if meta.file_type().is_symlink() {
                e.links.push(rel);
            } else if meta.is_dir() {
                if rel.split('/').count() < 2 {
                    walk(base, &p, e)?;
                }
            } else if let Ok(content) = std::fs::read_to_string(&p) {
                e.files.insert(rel, content);
            }
        }
        Ok(())
    }
    walk(&mem, &mem, &mut e)?;
    Ok(e)
}

fn read_tar_dump(path: &Path) -> Result<Entries> {
    let f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut archive = tar::Archive::new(bzip2::read::BzDecoder::new(f));
    let mut e = Entries::default();
    for entry in archive
        .entries()
        .with_context(|| format!("{}: not a tar.bz2 archive", path.display()))?
    {
        let mut entry = entry.with_context(|| format!("{}: corrupt archive", path.display()))?;
        let p = entry.path()?.to_string_lossy().to_string();
        let Some(idx) = p.find(MEMORY_DIR) else {
            continue;
        };
        let rel = p[idx + MEMORY_DIR.len()..]
            .trim_start_matches('/')
            .to_string();
        if rel.is_empty() {
            continue;
        }
        match entry.header().entry_type() {
            tar::EntryType::Symlink => e.links.push(rel),
            tar::EntryType::Regular => {
                let mut s = String::new();
                entry
                    .read_to_string(&mut s)
                    .with_context(|| format!("{}: {p}", path.display()))?;
                e.files.insert(rel, s);
            }
            _ => {}
        }
    }
    Ok(e)
}

/// Load a dump from a directory or a `.tar.bz2`.
pub fn load(path: &Path) -> Result<DumpData> {
    let entries = if path.is_dir() {
        read_dir_dump(path)?
    } else if path.exists() {
        read_tar_dump(path)?
    } else {
        bail!("--dump {}: no such file or directory", path.display());
    };
    to_data(entries).with_context(|| format!("dump {}", path.display()))
}

/// `memhp capture`: record `sysroot`'s memory tree as a `.tar.bz2` in the
/// layout the dumps use (`NAME/sys/devices/system/memory/...`).
pub fn capture(sysroot: &Path, out: &Path) -> Result<usize> {
    let mem = sysroot.join("devices/system/memory");
    if !mem.is_dir() {
        bail!("{}: no memory hotplug tree here", mem.display());
    }
    let name = out
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("capture")
        .trim_end_matches(".tar.bz2")
        .to_string();
    let f = std::fs::File::create(out).with_context(|| format!("create {}", out.display()))?;
    let mut tar = tar::Builder::new(bzip2::write::BzEncoder::new(f, bzip2::Compression::best()));
    let mut count = 0;
    let prefix = format!("{name}/{MEMORY_DIR}");
    let mut add_file = |tar: &mut tar::Builder<_>, rel: &str, content: &[u8]| -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, format!("{prefix}/{rel}"), content)?;
        count += 1;
        Ok(())
    };
    for top in ["block_size_bytes", "auto_online_blocks"] {
        if let Ok(c) = std::fs::read(mem.join(top)) {
            add_file(&mut tar, top, &c)?;
        }
    }
    let mut names: Vec<String> = std::fs::read_dir(&mem)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with("memory"))
        .collect();
    names.sort();
    for b in names {
        for attr in [
            "state",
            "online",
            "removable",
            "valid_zones",
            "phys_device",
            "phys_index",
        ] {
            if let Ok(c) = std::fs::read(mem.join(&b).join(attr)) {
                add_file(&mut tar, &format!("{b}/{attr}"), &c)?;
            }
        }
        for entry in std::fs::read_dir(mem.join(&b))?.flatten() {
            let n = entry.file_name().to_string_lossy().to_string();
            if n.starts_with("node") {
                if let Ok(target) = std::fs::read_link(entry.path()) {
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_size(0);
                    h.set_mode(0o777);
                    tar.append_link(&mut h, format!("{prefix}/{b}/{n}"), target)?;
                }
            }
        }
    }
    tar.into_inner()?.finish()?;
    Ok(count)
}
