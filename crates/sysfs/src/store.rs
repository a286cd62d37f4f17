//! Store methods: every writable file parses its input exactly as the kernel
//! does and applies it through the model (spec 01 §3.2–§3.6, §5.1; spec 02
//! §8.3). Returns the byte count `write(2)` reports, or the errno.

use crate::vfs::Cancel;
use crate::vfs::Errno;
use memhp_model::block::OnlineType;
use memhp_model::cmdline::OnlinePolicy;
use memhp_model::events::NotifierInjection;
use memhp_model::hotadd::AddRequest;
use memhp_model::hotplug::{DeviceOutcome, HotplugError};
use memhp_model::kstr::{self, KstrError};
use memhp_model::shared::Shared;

fn errno(e: HotplugError) -> Errno {
    Errno(e.errno())
}

fn kerr(e: KstrError) -> Errno {
    match e {
        KstrError::Invalid => Errno::EINVAL,
        KstrError::Range => Errno::ERANGE,
    }
}

fn block_id(name: &str) -> Result<u64, Errno> {
    name.strip_prefix("memory")
        .and_then(|d| d.parse().ok())
        .ok_or(Errno::ENOENT)
}

/// `state_store` (spec 01 §3.5).
fn state_store(shared: &Shared, id: u64, data: &[u8], cancel: &Cancel) -> Result<usize, Errno> {
    let t = OnlineType::from_sysfs(data).ok_or(Errno::EINVAL)?;
    let hp = shared.lock_hotplug();
    let outcome = if t == OnlineType::Offline {
        hp.device_offline_by(id, cancel.current_task(), &|| cancel.is_cancelled())
    } else {
        hp.device_online(id, Some(t))
    };
    match outcome {
        Ok(DeviceOutcome::Changed) => Ok(data.len()),
        Ok(DeviceOutcome::AlreadyInState) => Err(Errno::EINVAL),
        Err(e) => Err(errno(e)),
    }
}

/// A write to `/proc/sys/vm/NAME`, parsed by the sysctl's handler (one
/// value, auto base, checked against its bounds; `lowmem_reserve_ratio`
/// takes up to one value per zone) and applied through the model.
fn vm_sysctl_store(
    shared: &Shared,
    name: &str,
    data: &[u8],
    cancel: &Cancel,
) -> Result<usize, Errno> {
    use memhp_model::sysctl::{sysctl, Kind, MIN_PERCPU_PAGELIST_HIGH_FRACTION};
    let table = sysctl(name).ok_or(Errno::ENOENT)?;
    if table.kind == Kind::Text {
        // numa_zonelist_order: only Node/default are known; nothing changes.
        return match data.first() {
            Some(b'd' | b'D' | b'n' | b'N') => Ok(data.len()),
            _ => {
                let text = String::from_utf8_lossy(data);
                shared.modify(|sys| {
                    sys.events.log(format!(
                        "Ignoring unsupported numa_zonelist_order value:  {}",
                        text.trim_end_matches('\n')
                    ))
                });
                Err(Errno::EINVAL)
            }
        };
    }
    if let Kind::IntVec(n) = table.kind {
        // proc_dointvec over the array: values until the first bad one;
        // the handler ignores the parser's verdict.
        let mut values = Vec::new();
        let mut at = 0;
        while values.len() < n && at < data.len() {
            match kstr::proc_long(&data[at..]) {
                Ok((Some(v), used)) if i32::try_from(v).is_ok() => {
                    values.push(v);
                    at += used;
                }
                _ => break,
            }
        }
        let consumed = if values.is_empty() { data.len() } else { at };
        shared.modify(|sys| sys.set_vm_sysctl(name, values));
        return Ok(consumed);
    }
    let (value, consumed) = kstr::proc_long(data).map_err(kerr)?;
    let Some(v) = value else {
        return Ok(consumed);
    };
    match table.kind {
        Kind::Model => {
            let v = u64::try_from(v).map_err(|_| Errno::EINVAL)?;
            if name == "min_free_kbytes" {
                // proc_dointvec_minmax: an int, at least 0.
                i32::try_from(v).map_err(|_| Errno::EINVAL)?;
                shared.modify(|sys| sys.set_min_free_kbytes(v));
            } else {
                hstate_store(shared, name, v)?;
            }
        }
        Kind::ULong if v < 0 => return Err(Errno::EINVAL),
        Kind::Int { min, max } if v < min || v > max => return Err(Errno::EINVAL),
        _ => match name {
            "percpu_pagelist_high_fraction" if v != 0 && v < MIN_PERCPU_PAGELIST_HIGH_FRACTION => {
                return Err(Errno::EINVAL)
            }
            "drop_caches" => shared.modify(|sys| {
                sys.drop_caches(v, || {
                    cancel
                        .current_task()
                        .and_then(|t| t.resolve())
                        .unwrap_or_default()
                })
            }),
            _ => shared.modify(|sys| sys.set_vm_sysctl(name, vec![v])),
        },
    }
    Ok(consumed)
}

/// THP's files: a choice (`sysfs_streq`; `shmem_enabled` compares with one
/// trailing newline dropped, from at most 15 bytes), the zero-page flag
/// (decimal, 0 or 1), khugepaged's tunables (decimal, EINVAL for
/// anything out of range).
fn thp_store(shared: &Shared, rest: &[&str], data: &[u8]) -> Result<usize, Errno> {
    use memhp_model::thp::{DEFRAG, ENABLED, KHUGEPAGED, SHMEM_ENABLED};
    let choice = |choices: &[&str]| {
        choices
            .iter()
            .position(|c| kstr::sysfs_streq(data, c.as_bytes()))
            .ok_or(Errno::EINVAL)
    };
    match rest {
        ["enabled"] => {
            let i = choice(&ENABLED)?;
            shared.modify(|sys| sys.set_thp_enabled(i));
        }
        ["defrag"] => {
            let i = choice(&DEFRAG)?;
            shared.modify(|sys| {
                sys.thp.defrag = i;
                sys.touch();
            });
        }
        ["shmem_enabled"] => {
            if data.len() + 1 > 16 {
                return Err(Errno::EINVAL);
            }
            let word = data.strip_suffix(b"\n").unwrap_or(data);
            let i = SHMEM_ENABLED
                .iter()
                .position(|c| c.as_bytes() == word)
                .ok_or(Errno::EINVAL)?;
            shared.modify(|sys| {
                sys.thp.shmem_enabled = i;
                sys.touch();
            });
        }
        ["use_zero_page"] => {
            let v = kstr::kstrtoul_dec(data).map_err(kerr)?;
            if v > 1 {
                return Err(Errno::EINVAL);
            }
            shared.modify(|sys| {
                sys.thp.use_zero_page = v == 1;
                sys.touch();
            });
        }
        ["khugepaged", f] => {
            let (_, writable, _, min, max) = KHUGEPAGED
                .iter()
                .find(|k| k.0 == *f)
                .copied()
                .ok_or(Errno::ENOENT)?;
            if !writable {
                return Err(Errno::EACCES);
            }
            // `defrag` passes kstrtoul's own error on; the others EINVAL.
            let v = match *f {
                "defrag" => kstr::kstrtoul_dec(data).map_err(kerr)?,
                _ => kstr::kstrtoul_dec(data).map_err(|_| Errno::EINVAL)?,
            };
            if v < min || v > max {
                return Err(Errno::EINVAL);
            }
            shared.modify(|sys| {
                sys.thp.khugepaged.insert(f.to_string(), v);
                sys.touch();
            });
        }
        _ => return Err(Errno::EACCES),
    }
    Ok(data.len())
}

/// The hstate's writable counts, in sysfs and as sysctls.
fn hstate_store(shared: &Shared, file: &str, count: u64) -> Result<(), Errno> {
    match file {
        "nr_hugepages" | "nr_hugepages_mempolicy" => {
            shared.modify(|sys| sys.set_max_huge_pages(None, count))
        }
        "nr_overcommit_hugepages" => shared.modify(|sys| sys.set_nr_overcommit_huge_pages(count)),
        _ => return Err(Errno::EACCES),
    }
    Ok(())
}

/// The generic `online` file (spec 01 §3.6): "already" is success.
fn online_store(shared: &Shared, id: u64, data: &[u8], cancel: &Cancel) -> Result<usize, Errno> {
    let on = kstr::kstrtobool(data).map_err(kerr)?;
    let hp = shared.lock_hotplug();
    let r = if on {
        hp.device_online(id, None)
    } else {
        hp.device_offline_by(id, cancel.current_task(), &|| cancel.is_cancelled())
    };
    r.map(|_| data.len()).map_err(errno)
}

fn probe_store(shared: &Shared, data: &[u8]) -> Result<usize, Errno> {
    let addr = kstr::kstrtoull(data).map_err(kerr)?;
    let hp = shared.lock_hotplug();
    let req = hp.with(|sys| {
        if addr % sys.block_size != 0 {
            return Err(Errno::EINVAL);
        }
        // memory_add_physaddr_to_nid: the node whose SRAT range holds it, else
        // the first node.
        let nid = sys
            .blocks
            .values()
            .find(|b| b.id == addr / sys.block_size)
            .and_then(|b| b.nid)
            .unwrap_or_else(|| *sys.nodes.keys().next().unwrap_or(&0));
        Ok(AddRequest {
            nid,
            start: addr,
            size: sys.block_size,
            resource_name: "System RAM".into(),
            parent_resource: None,
            group: None,
            memmap_on_memory: false,
            driver_offline_pages: 0,
        })
    })?;
    hp.add_memory(&req).map(|_| data.len()).map_err(errno)
}

fn offline_page_store(shared: &Shared, data: &[u8], hard: bool) -> Result<usize, Errno> {
    let addr = kstr::kstrtoull(data).map_err(|_| Errno::EINVAL)?;
    shared.modify(|sys| {
        let r = if hard {
            sys.memory_failure(addr)
        } else {
            sys.soft_offline_page(addr)
        };
        r.map(|()| data.len()).map_err(|e| Errno(e.errno()))
    })
}

/// A write to a file of a device's `power/` directory at `parts`.
fn power_store(shared: &Shared, parts: &[&str], data: &[u8]) -> Result<usize, Errno> {
    let (file, dir) = match parts {
        [dir @ .., "power", file] => (*file, dir),
        _ => return Err(Errno::EACCES),
    };
    match file {
        "control" | "async" => {
            let devpath = crate::tree::devpath_of(dir);
            shared
                .modify(|sys| sys.set_device_power(&devpath, file, data))
                .map(|()| data.len())
                .map_err(|e| Errno(e.errno()))
        }
        "autosuspend_delay_ms" => Err(Errno::EIO),
        _ => Err(Errno::EACCES),
    }
}

/// A write to the `uevent` file at `parts`: a synthetic event for that
/// device (memory blocks and nodes are on their buses; a subsystem's root
/// directory is not).
fn uevent_store(shared: &Shared, parts: &[&str], data: &[u8]) -> Result<usize, Errno> {
    let dir = &parts[..parts.len().saturating_sub(1)];
    let devpath = crate::tree::devpath_of(dir);
    let (bus, name) = match dir {
        [.., "memory", b] if b.starts_with("memory") => ("memory", *b),
        [.., "node", n] if n.starts_with("node") => ("node", *n),
        [.., d] => ("", *d),
        [] => ("", ""),
    };
    let dev = memhp_model::device::Device {
        bus,
        name,
        devpath: &devpath,
    };
    shared
        .modify(|sys| sys.synth_uevent(dev, data))
        .map(|()| data.len())
        .map_err(|e| Errno(e.errno()))
}

/// Apply one write of `data` to the file at `parts`.
pub fn store(
    shared: &Shared,
    parts: &[&str],
    data: &[u8],
    cancel: &Cancel,
) -> Result<usize, Errno> {
    match parts {
        ["sys", "devices", "system", "cpu", rest @ ..]
            if !matches!(rest.last(), Some(&"uevent")) && !rest.contains(&"power") =>
        {
            shared
                .modify(|sys| crate::cpu::store(sys, rest, data))
                .unwrap_or(Err(Errno::EACCES))
        }
        ["sys", "devices", "system", "memory", "auto_online_blocks"] => {
            let t = OnlineType::from_sysfs(data).ok_or(Errno::EINVAL)?;
            shared.modify(|sys| sys.params.default_online_type = t);
            Ok(data.len())
        }
        ["sys", "devices", "system", "memory", "probe"] => probe_store(shared, data),
        ["sys", "devices", "system", "memory", "soft_offline_page"] => {
            offline_page_store(shared, data, false)
        }
        ["sys", "devices", "system", "memory", "hard_offline_page"] => {
            offline_page_store(shared, data, true)
        }
        [.., "power", _] => power_store(shared, parts, data),
        ["sys", "devices", "system", "memory", b, "state"] => {
            state_store(shared, block_id(b)?, data, cancel)
        }
        ["sys", "devices", "system", "memory", b, "online"] => {
            online_store(shared, block_id(b)?, data, cancel)
        }
        [.., "uevent"] => uevent_store(shared, parts, data),
        ["sys", "module", "memory_hotplug", "parameters", p] => {
            match *p {
                "online_policy" => {
                    let pol = OnlinePolicy::from_sysfs(data).ok_or(Errno::EINVAL)?;
                    shared.modify(|sys| sys.params.online_policy = pol);
                }
                "auto_movable_ratio" => {
                    let r = kstr::kstrtouint(data).map_err(kerr)?;
                    shared.modify(|sys| sys.params.auto_movable_ratio = r);
                }
                "auto_movable_numa_aware" => {
                    let b = kstr::kstrtobool(data).map_err(kerr)?;
                    shared.modify(|sys| sys.params.auto_movable_numa_aware = b);
                }
                _ => return Err(Errno::EACCES),
            }
            Ok(data.len())
        }
        ["sys", "kernel", "debug", "notifier-error-inject", "memory", "actions", a, "error"] => {
            let v = NotifierInjection::clamp(kstr::kstrtoll(data).map_err(kerr)?);
            let online = *a == "MEM_GOING_ONLINE";
            shared.modify(|sys| {
                if online {
                    sys.injection.going_online = v;
                } else {
                    sys.injection.going_offline = v;
                }
            });
            Ok(data.len())
        }
        ["sys", "devices", "system", "node", _, "compact"] => Ok(data.len()),
        ["sys", "devices", "system", "node", n, "hugepages", _, "nr_hugepages"] => {
            let count = kstr::kstrtoul_dec(data).map_err(|_| Errno::EINVAL)?;
            let nid = n
                .strip_prefix("node")
                .and_then(|d| d.parse().ok())
                .ok_or(Errno::ENOENT)?;
            shared.modify(|sys| sys.set_max_huge_pages(Some(nid), count));
            Ok(data.len())
        }
        ["sys", "kernel", "mm", "hugepages", _, f] => {
            let count = kstr::kstrtoul_dec(data).map_err(|_| Errno::EINVAL)?;
            hstate_store(shared, f, count)?;
            Ok(data.len())
        }
        ["proc", "sys", "kernel", "hostname"] => {
            shared.modify(|sys| sys.set_hostname(data));
            Ok(data.len())
        }
        ["proc", "sys", "vm", f] => vm_sysctl_store(shared, f, data, cancel),
        ["sys", "kernel", "mm", "transparent_hugepage", rest @ ..] => thp_store(shared, rest, data),
        ["sys", "kernel", "mm", d, f] => shared
            .modify(|sys| sys.mm_knobs.store(d, f, data))
            .ok_or(Errno::EACCES)?
            .map_err(|e| Errno(e.errno())),
        ["sys", "bus", _, "drivers_autoprobe"] => {
            kstr::kstrtobool(data).map_err(kerr)?;
            Ok(data.len())
        }
        ["sys", "bus", _, "drivers_probe"] => Err(Errno::ENODEV),
        _ => Err(Errno::EACCES),
    }
}
