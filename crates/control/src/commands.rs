//! The commands of the control socket and their argument checking.

use crate::EventBus;
use memhp_drivers::acpi::DimmError;
use memhp_drivers::host::{Host, HostCommand, HostError};
use memhp_drivers::virtio_balloon::BalloonError;
use memhp_drivers::virtio_mem::VirtioMemError;
use memhp_model::pages::{MigrateFailure, PageState};
use memhp_model::units::parse_size;
use memhp_model::workload::{PageKind, Placement};
use memhp_model::ZoneType;
use serde_json::{json, Map, Value};

/// A QMP error: class and description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{class}: {desc}")]
pub struct CommandError {
    pub class: &'static str,
    pub desc: String,
}

fn generic(desc: impl Into<String>) -> CommandError {
    CommandError {
        class: "GenericError",
        desc: desc.into(),
    }
}

/// The commands, with a one-line description (`query-commands`).
pub const COMMANDS: &[(&str, &str)] = &[
    ("qmp_capabilities", "enter command mode"),
    ("query-commands", "list the commands"),
    (
        "hotadd",
        "plug a memory device with a backend of its own (mem-ID): id, size, [node], [addr], [driver=pc-dimm|virtio-mem-pci], [backend=memory-backend-ram|-memfd]",
    ),
    (
        "object-add",
        "create a memory backend: qom-type=memory-backend-ram|-file|-memfd, id, size",
    ),
    ("object-del", "delete a memory backend no DIMM uses: id"),
    (
        "device_add",
        "plug a memory device: driver=pc-dimm|virtio-mem-pci, id, memdev, [node], [addr] (or size instead of memdev, as hotadd)",
    ),
    ("unplug", "eject a DIMM: id"),
    ("device_del", "QEMU alias of unplug: id"),
    (
        "vmem-resize",
        "set a virtio-mem device's requested size: id, size",
    ),
    ("qom-set", "path, property=requested-size, value"),
    ("qom-get", "path, property"),
    ("query-memory-devices", "the plugged memory devices"),
    (
        "query-acpi-ospm-status",
        "each DIMM slot's and CPU's last _OST (source, status)",
    ),
    (
        "query-memory-size-summary",
        "base-memory (-m) and plugged-memory (memory devices)",
    ),
    ("query-memdev", "the memory backends"),
    (
        "balloon",
        "virtio-balloon target: value (the guest's size in bytes)",
    ),
    ("query-balloon", "the guest's size after ballooning (actual)"),
    ("query", "blocks, zones and nodes of the guest"),
    (
        "klog",
        "kernel messages since the last klog (like dmesg -c)",
    ),
    (
        "dmesg",
        "kernel messages since the last klog, [clear] them too (dmesg -c)",
    ),
    ("bootlog", "the boot log"),
    ("module-load", "guest insmod: name"),
    ("module-unload", "guest rmmod: name"),
    (
        "inject",
        "notifier error injection: action (MEM_GOING_ONLINE|MEM_GOING_OFFLINE), error (-4095..0)",
    ),
    (
        "workload",
        "op (alloc|free), kind (movable|unmovable|pinned), pages, and block, node [zone], or start_pfn and end_pfn",
    ),
    (
        "clock-advance",
        "move the machine's virtual clock: ms (a retrying offline makes its passes and logs meanwhile)",
    ),
    (
        "tmpfs-usage",
        "the guest tmpfs now holds: inodes, bytes (its slab and shmem pages are charged)",
    ),
    (
        "migrate-fail",
        "make migration fail in whole blocks: failure (enomem|eagain|none), and block, node [zone], or start_pfn and end_pfn",
    ),
    ("hwpoison", "poison one free page of a block: block"),
    (
        "hugetlb",
        "the 2 MiB hugetlb pool: op (grow|shrink|use|unuse|reserve), count (huge pages), block or node (not for reserve)",
    ),
    (
        "fault-add",
        "fail a notifier event: action (MEM_*, or NODE_* in ml), error (-4095..-1), mode (always|once|every|probability), n (every), p and seed (probability), priority",
    ),
    ("fault-remove", "remove a fault rule: id"),
    ("fault-list", "the fault rules with their match and fire counts"),
    (
        "notifier-trace",
        "drain the notifier calls so far: chain, event, argument fields, and per consumer its return value",
    ),
];

fn fault_json(f: &memhp_model::fault::ActiveFault) -> Value {
    use memhp_model::fault::FaultMode;
    let mut v = json!({
        "id": f.id.0,
        "action": f.rule.action.name(),
        "error": f.rule.errno,
        "priority": f.priority,
        "matched": f.counts().matched,
        "fired": f.counts().fired,
    });
    let mode = match f.rule.mode {
        FaultMode::Always => json!({"mode": "always"}),
        FaultMode::Once => json!({"mode": "once"}),
        FaultMode::EveryNth(n) => json!({"mode": "every", "n": n}),
        FaultMode::Probability { p, seed } => json!({"mode": "probability", "p": p, "seed": seed}),
    };
    if let (Value::Object(v), Value::Object(m)) = (&mut v, mode) {
        v.extend(m);
    }
    v
}

/// The calls each chain made since the last drain, each with the
/// consumers it reached (in order) and what they returned.
fn notifier_trace(host: &Host) -> Value {
    let (version, calls, records) = host.shared.modify(|s| {
        let calls = std::mem::take(&mut s.events.notifier);
        (s.version, calls, s.memory_chain.take_trace())
    });
    let mut records = records.into_iter().peekable();
    let mut out = Vec::new();
    for call in calls {
        let mut consumers = Vec::new();
        while let Some(r) = records.next_if(|r| r.call == call) {
            consumers.push(json!({"consumer": &*r.consumer, "ret": r.ret}));
        }
        let (chain, fields) = match call {
            memhp_model::events::ChainCall::Memory { arg, .. } => (
                "memory",
                arg.fields(version)
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), json!(v)))
                    .collect::<Map<String, Value>>(),
            ),
            memhp_model::events::ChainCall::Node { arg, .. } => (
                "node",
                [("nid".to_string(), json!(arg.nid))].into_iter().collect(),
            ),
        };
        out.push(json!({
            "chain": chain,
            "event": call.name(),
            "arg": fields,
            "consumers": consumers,
        }));
    }
    Value::Array(out)
}

fn fault_add(host: &Host, args: &Map<String, Value>) -> Result<Value, CommandError> {
    use memhp_model::fault::{FaultEvent, FaultMode, FaultRule};
    let name = str_arg(args, "action")?;
    let action = FaultEvent::from_name(&name)
        .ok_or_else(|| generic(format!("no notifier action '{name}' (MEM_* or NODE_*)")))?;
    let error = arg(args, "error")?
        .as_i64()
        .ok_or_else(|| generic("'error' must be an integer"))?;
    let mode = match args.get("mode").and_then(Value::as_str).unwrap_or("always") {
        "always" => FaultMode::Always,
        "once" => FaultMode::Once,
        "every" => FaultMode::EveryNth(u64_arg(args, "n")?),
        "probability" => FaultMode::Probability {
            p: arg(args, "p")?
                .as_f64()
                .ok_or_else(|| generic("'p' must be a number"))?,
            seed: opt_u64(args, "seed")?.unwrap_or(0),
        },
        m => {
            return Err(generic(format!(
                "no fault mode '{m}' (always, once, every, probability)"
            )))
        }
    };
    let priority = match args.get("priority") {
        None => 0,
        Some(v) => v
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .ok_or_else(|| generic("'priority' must be a 32-bit integer"))?,
    };
    let rule = FaultRule::new(action, error, mode).map_err(|e| generic(e.to_string()))?;
    let id = host
        .shared
        .modify(|s| s.add_fault(rule, priority))
        .map_err(|e| generic(e.to_string()))?;
    Ok(json!({"id": id.0}))
}

fn arg<'a>(args: &'a Map<String, Value>, name: &str) -> Result<&'a Value, CommandError> {
    args.get(name)
        .ok_or_else(|| generic(format!("Parameter '{name}' is missing")))
}

fn str_arg(args: &Map<String, Value>, name: &str) -> Result<String, CommandError> {
    arg(args, name)?
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| {
            generic(format!(
                "Invalid parameter type for '{name}', expected: string"
            ))
        })
}

fn u64_value(v: &Value, name: &str) -> Result<u64, CommandError> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| generic(format!("Parameter '{name}' expects a non-negative integer"))),
        Value::String(s) => parse_size(s).map_err(|e| generic(format!("Parameter '{name}': {e}"))),
        _ => Err(generic(format!(
            "Invalid parameter type for '{name}', expected: integer or size string"
        ))),
    }
}

fn u64_arg(args: &Map<String, Value>, name: &str) -> Result<u64, CommandError> {
    u64_value(arg(args, name)?, name)
}

fn opt_u64(args: &Map<String, Value>, name: &str) -> Result<Option<u64>, CommandError> {
    args.get(name).map(|v| u64_value(v, name)).transpose()
}

fn u32_arg(v: u64, name: &str) -> Result<u32, CommandError> {
    u32::try_from(v).map_err(|_| generic(format!("Parameter '{name}' is out of range")))
}

fn query(host: &Host) -> Value {
    host.shared.read(|s| {
        let blocks: Vec<Value> = s
            .blocks
            .values()
            .map(|b| {
                json!({"id": b.id, "state": b.state.as_str(), "online": !b.dev_offline, "zone": b.zone.map(|z| z.name()),
                       "node": b.nid, "early": b.early, "group": b.group, "pages": {
                           "present": b.pages.present(), "reserved": b.pages.count(PageState::Reserved), "unmovable": b.pages.count(PageState::Unmovable),
                           "movable": b.pages.count(PageState::Movable), "pinned": b.pages.count(PageState::Pinned), "hwpoison": b.pages.count(PageState::HwPoison),
                           "driver_offline": b.pages.count(PageState::DriverOffline), "vmemmap": b.nr_vmemmap_pages}})
            })
            .collect();
        let nodes: Vec<Value> = s
            .nodes
            .values()
            .map(|n| {
                let zones: Vec<Value> = memhp_model::ZoneType::ALL
                    .iter()
                    .map(|&z| {
                        let zz = n.zone(z);
                        json!({"zone": z.name(), "start_pfn": zz.start_pfn, "spanned": zz.spanned, "present": zz.present, "managed": zz.managed})
                    })
                    .collect();
                json!({"id": n.id, "online": n.online, "has_memory": n.has_memory, "has_normal_memory": n.has_normal_memory, "cpus": n.cpus, "zones": zones})
            })
            .collect();
        json!({"block_size": s.block_size, "blocks": blocks, "nodes": nodes, "offline_in_flight": s.offlining.map(|o| o.id)})
    })
}

/// Where pages go: `block`, `node` (with an optional `zone` name), or the
/// pfn range `start_pfn`..`end_pfn`.
fn placement(args: &Map<String, Value>) -> Result<Placement, CommandError> {
    let zone = match args.get("zone") {
        None => None,
        Some(Value::String(name)) => Some(
            ZoneType::ALL
                .into_iter()
                .find(|z| z.name().eq_ignore_ascii_case(name))
                .ok_or_else(|| {
                    generic(format!(
                        "unknown zone '{name}' (DMA, DMA32, Normal, Movable, Device)"
                    ))
                })?,
        ),
        Some(_) => return Err(generic("Parameter 'zone' expects a zone name")),
    };
    let range = (opt_u64(args, "start_pfn")?, opt_u64(args, "end_pfn")?);
    match (opt_u64(args, "block")?, opt_u64(args, "node")?, range) {
        (Some(b), None, (None, None)) if zone.is_none() => Ok(Placement::Block(b)),
        (None, Some(n), (None, None)) => {
            let nid = u32_arg(n, "node")?;
            Ok(zone.map_or(Placement::Node(nid), |z| Placement::Zone(nid, z)))
        }
        (None, None, (Some(start), Some(end))) if end > start && zone.is_none() => {
            Ok(Placement::Range {
                start_pfn: start,
                pages: end - start,
            })
        }
        _ => Err(generic(
            "give one of 'block', 'node' (with an optional 'zone'), or 'start_pfn' and a larger 'end_pfn'",
        )),
    }
}

/// The 2 MiB hugetlb pool: grow/shrink it, use/unuse its pages (an
/// application's mappings), reserve free pages; answers with the pool.
fn hugetlb(host: &Host, args: &Map<String, Value>) -> Result<Value, CommandError> {
    let op = str_arg(args, "op")?;
    let count = u64_arg(args, "count")?;
    let r = host.shared.modify(|s| {
        let done = match op.as_str() {
            "reserve" => s.hugetlb_reserve(count).map(|()| count),
            "grow" | "shrink" | "use" | "unuse" => {
                let at = placement(args)?;
                match op.as_str() {
                    "grow" => s.hugetlb_grow(at, count).map(|()| count),
                    "shrink" => s.hugetlb_shrink(at, count),
                    "use" => s.hugetlb_use(at, count).map(|()| count),
                    _ => s.hugetlb_unuse(at, count),
                }
            }
            _ => {
                return Err(generic(format!(
                    "unknown op '{op}' (grow, shrink, use, unuse, reserve)"
                )))
            }
        };
        Ok(done.map(|n| (n, s.hugetlb)))
    })?;
    let (n, pool) = r.map_err(model_err)?;
    Ok(json!({
        "count": n,
        "nr_hugepages": pool.nr_huge_pages,
        "free_hugepages": pool.free_huge_pages,
        "resv_hugepages": pool.resv_huge_pages,
    }))
}

/// A DIMM's optional `node` and `addr`.
fn dimm_place(args: &Map<String, Value>) -> Result<(Option<u32>, Option<u64>), CommandError> {
    let node = opt_u64(args, "node")?
        .map(|n| u32_arg(n, "node"))
        .transpose()?;
    Ok((node, opt_u64(args, "addr")?))
}

fn model_err(e: memhp_model::HotplugError) -> CommandError {
    generic(format!("{e} (errno {})", e.errno()))
}

/// Run one command.
pub fn dispatch(
    host: &Host,
    bus: &EventBus,
    name: &str,
    args: &Map<String, Value>,
) -> Result<Value, CommandError> {
    let host_cmd = match name {
        "qmp_capabilities" => return Ok(json!({})),
        "query-commands" => {
            return Ok(Value::Array(
                COMMANDS.iter().map(|(n, _)| json!({"name": n})).collect(),
            ))
        }
        "query" => return Ok(query(host)),
        "wide-errno" => {
            let path = str_arg(args, "path")?;
            let key = path.trim_start_matches('/').to_string();
            return Ok(json!(host
                .shared
                .modify(|s| s.events.wide_errnos.remove(&key))));
        }
        // A write of no bytes, which FUSE never passes on (the scenario
        // helper asks here): what the machine's file does with one.
        "empty-write" => {
            let path = str_arg(args, "path")?;
            let tree = memhp_sysfs::SysfsTree::new(std::sync::Arc::clone(&host.shared));
            let key = path.trim_start_matches('/');
            let cancel = memhp_sysfs::vfs::Cancel::new();
            return Ok(
                match memhp_sysfs::vfs::Tree::write(&tree, key, b"", &cancel) {
                    Ok(n) => json!({"written": n}),
                    Err(e) => json!({"errno": e.0}),
                },
            );
        }
        "event-stats" => {
            let (capacity, dropped) = bus.stats();
            let mut v = json!({"capacity": capacity, "dropped": dropped});
            if let Some(nl) = bus.netlink() {
                let (capacity, sent, dropped) = nl.queue().stats();
                v["netlink"] = json!({"netns": nl.netns().display().to_string(), "capacity": capacity, "sent": sent, "dropped": dropped});
            }
            return Ok(v);
        }
        "klog" => return Ok(json!(host.shared.modify(|s| s.events.take_klog()))),
        "dmesg" => {
            let clear = match args.get("clear") {
                None => false,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(generic("Parameter 'clear' expects a boolean")),
            };
            return Ok(json!(host.shared.modify(|s| match clear {
                true => s.events.take_klog(),
                false => s.events.klog.clone(),
            })));
        }
        "bootlog" => return Ok(json!(host.shared.read(|s| s.bootlog.clone()))),
        "device_add" if args.contains_key("memdev") => {
            let (node, addr) = dimm_place(args)?;
            HostCommand::DeviceAdd {
                id: args.get("id").map(|_| str_arg(args, "id")).transpose()?,
                memdev: str_arg(args, "memdev")?,
                driver: str_arg(args, "driver")?,
                node,
                addr,
            }
        }
        "hotadd" | "device_add" => {
            let (node, addr) = dimm_place(args)?;
            let opt = |k: &str| args.get(k).map(|_| str_arg(args, k)).transpose();
            HostCommand::HotaddDevice {
                id: str_arg(args, "id")?,
                size: u64_arg(args, "size")?,
                node,
                addr,
                driver: match name {
                    "device_add" => str_arg(args, "driver")?,
                    _ => opt("driver")?.unwrap_or_else(|| "pc-dimm".into()),
                },
                backend: opt("backend")?.unwrap_or_else(|| "memory-backend-ram".into()),
            }
        }
        "object-add" => HostCommand::ObjectAdd {
            qom_type: str_arg(args, "qom-type")?,
            id: str_arg(args, "id")?,
            size: u64_arg(args, "size")?,
            mem_path: args
                .get("mem-path")
                .map(|_| str_arg(args, "mem-path"))
                .transpose()?,
        },
        "object-del" => HostCommand::ObjectDel {
            id: str_arg(args, "id")?,
        },
        "unplug" | "device_del" => HostCommand::Unplug {
            id: str_arg(args, "id")?,
        },
        "vmem-resize" => HostCommand::VmemResize {
            id: str_arg(args, "id")?,
            size: u64_arg(args, "size")?,
        },
        "qom-set" => HostCommand::QomSet {
            path: str_arg(args, "path")?,
            property: str_arg(args, "property")?,
            value: arg(args, "value")?.clone(),
        },
        "qom-get" => HostCommand::QomGet {
            path: str_arg(args, "path")?,
            property: str_arg(args, "property")?,
        },
        "query-memory-devices" => HostCommand::QueryMemoryDevices,
        "query-acpi-ospm-status" => HostCommand::QueryAcpiOspmStatus,
        "query-memory-size-summary" => HostCommand::QueryMemorySizeSummary,
        "query-memdev" => HostCommand::QueryMemdev,
        "balloon" => HostCommand::Balloon {
            value: match arg(args, "value")? {
                Value::Number(n) => n
                    .as_i64()
                    .ok_or_else(|| generic("Parameter 'value' expects an integer"))?,
                _ => return Err(generic("Parameter 'value' expects an integer")),
            },
        },
        "query-balloon" => HostCommand::QueryBalloon,
        "module-load" => HostCommand::LoadModule {
            name: str_arg(args, "name")?,
        },
        "module-unload" => HostCommand::UnloadModule {
            name: str_arg(args, "name")?,
        },
        "inject" => {
            let action = str_arg(args, "action")?;
            let err = match arg(args, "error")? {
                Value::Number(n) => n
                    .as_i64()
                    .ok_or_else(|| generic("'error' must be an integer"))?,
                _ => return Err(generic("'error' must be an integer")),
            };
            if !(-4095..=0).contains(&err) {
                return Err(generic("'error' must be in -4095..0"));
            }
            let online = match action.as_str() {
                "MEM_GOING_ONLINE" => true,
                "MEM_GOING_OFFLINE" => false,
                _ => {
                    return Err(generic(format!(
                        "no injectable action '{action}' (MEM_GOING_ONLINE, MEM_GOING_OFFLINE)"
                    )))
                }
            };
            host.shared.modify(|s| {
                s.load_injector(0);
                if online {
                    s.injection.going_online = err as i32;
                } else {
                    s.injection.going_offline = err as i32;
                }
            });
            return Ok(json!({}));
        }
        "fault-add" => return fault_add(host, args),
        "notifier-trace" => return Ok(notifier_trace(host)),
        "fault-remove" => {
            let id = memhp_model::notifier::NotifierId(u64_arg(args, "id")?);
            host.shared
                .modify(|s| s.remove_fault(id))
                .map_err(|e| generic(e.to_string()))?;
            return Ok(json!({}));
        }
        "fault-list" => {
            return Ok(host
                .shared
                .read(|s| Value::Array(s.faults.iter().map(fault_json).collect())))
        }
        "workload" => {
            let op = str_arg(args, "op")?;
            let kind = match str_arg(args, "kind")?.as_str() {
                "movable" => PageKind::Movable,
                "unmovable" => PageKind::Unmovable,
                "pinned" => PageKind::Pinned,
                k => {
                    return Err(generic(format!(
                        "unknown page kind '{k}' (movable, unmovable, pinned)"
                    )))
                }
            };
            let pages = u64_arg(args, "pages")?;
            let at = placement(args)?;
            return match op.as_str() {
                "alloc" => host
                    .shared
                    .modify(|s| s.alloc_pages(at, kind, pages))
                    .map(|_| json!({"pages": pages}))
                    .map_err(model_err),
                "free" => host
                    .shared
                    .modify(|s| s.free_pages(at, kind, pages))
                    .map(|n| json!({"pages": n}))
                    .map_err(model_err),
                _ => Err(generic(format!("unknown op '{op}' (alloc, free)"))),
            };
        }
        "hugetlb" => return hugetlb(host, args),
        "clock-advance" => {
            let ms = u64_arg(args, "ms")?;
            return host
                .shared
                .modify(|s| s.advance_clock(ms).map(|()| s.clock_ms))
                .map(|now| json!({ "clock_ms": now }))
                .map_err(model_err);
        }
        "tmpfs-usage" => {
            let (inodes, bytes) = (u64_arg(args, "inodes")?, u64_arg(args, "bytes")?);
            return host
                .shared
                .modify(|s| s.set_tmpfs_usage(inodes, bytes))
                .map(|t| json!(t))
                .map_err(model_err);
        }
        "migrate-fail" => {
            let failure = match str_arg(args, "failure")?.as_str() {
                "enomem" => Some(MigrateFailure::NoMemory),
                "eagain" => Some(MigrateFailure::Again),
                "none" => None,
                f => {
                    return Err(generic(format!(
                        "unknown failure '{f}' (enomem, eagain, none)"
                    )))
                }
            };
            let at = placement(args)?;
            return host
                .shared
                .modify(|s| s.set_migrate_failure_at(at, failure))
                .map(|n| json!({ "blocks": n }))
                .map_err(model_err);
        }
        "hwpoison" => {
            let block = u64_arg(args, "block")?;
            return host
                .shared
                .modify(|s| s.hwpoison(block))
                .map(|_| json!({}))
                .map_err(model_err);
        }
        _ => {
            return Err(CommandError {
                class: "CommandNotFound",
                desc: format!("The command {name} has not been found"),
            });
        }
    };
    let reply = host.execute(&host_cmd).map_err(|e| match e {
        HostError::Balloon(BalloonError::NotActive) => CommandError {
            class: "DeviceNotActive",
            desc: e.to_string(),
        },
        HostError::Dimm(DimmError::NotFound(_))
        | HostError::VirtioMem(VirtioMemError::NotFound(_))
        | HostError::NoPath(_) => CommandError {
            class: "DeviceNotFound",
            desc: e.to_string(),
        },
        e => generic(e.to_string()),
    });
    // The guest's uevents come before the host sees _OST / DEVICE_DELETED,
    // and the tree is up to date before either is heard of.
    bus.pump_uevents(host);
    bus.sync_view();
    let reply = reply?;
    for ev in &reply.events {
        bus.publish(ev.name(), ev.data());
    }
    let mut value = reply.value;
    if !reply.insmods.is_empty() {
        value = json!({"insmod": reply.insmods.iter().map(|(m, rc)| json!({"module": m, "rc": rc})).collect::<Vec<_>>()});
    }
    let added = match &host_cmd {
        HostCommand::Hotadd { id, .. }
        | HostCommand::HotaddDevice { id, .. }
        | HostCommand::DeviceAdd { id: Some(id), .. } => {
            host.dimms.list().into_iter().find(|d| &d.id == id)
        }
        // An anonymous DIMM: the one on the backend it was given.
        HostCommand::DeviceAdd {
            id: None, memdev, ..
        } => host
            .dimms
            .list()
            .into_iter()
            .find(|d| host.backends.of(&d.id).as_deref() == Some(memdev.as_str())),
        _ => None,
    };
    {
        if let Some(d) = added {
            let blocks: Vec<Value> = host.shared.read(|s| {
                d.blocks.iter().map(|b| json!({"id": b, "state": s.blocks.get(b).map_or("removed", |x| x.state.as_str())})).collect()
            });
            value = json!({"addr": d.addr, "size": d.size, "slot": d.slot, "node": d.node, "blocks": blocks});
        }
    }
    Ok(value)
}

/// Parse and run one line; returns the reply object.
pub fn handle_line(host: &Host, bus: &EventBus, line: &str) -> Value {
    let parsed: Value = match serde_json::from_str(line) {
        Ok(v) => v,
        Err(e) => {
            return json!({"error": {"class": "GenericError", "desc": format!("JSON parse error, {e}")}})
        }
    };
    let Some(obj) = parsed.as_object() else {
        return json!({"error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}});
    };
    let id = obj.get("id").cloned();
    let result = match obj.get("execute").and_then(Value::as_str) {
        None => Err(generic("QMP input lacks member 'execute'")),
        Some(name) => match obj.get("arguments") {
            None => dispatch(host, bus, name, &Map::new()),
            Some(Value::Object(args)) => dispatch(host, bus, name, args),
            Some(_) => Err(generic("QMP input member 'arguments' must be an object")),
        },
    };
    let mut reply = match result {
        Ok(v) => json!({"return": v}),
        Err(e) => json!({"error": {"class": e.class, "desc": e.desc}}),
    };
    if let (Some(id), Some(o)) = (id, reply.as_object_mut()) {
        o.insert("id".into(), id);
    }
    reply
}
