//! Typed values for the extra QEMU arguments of a scenario's `qemu:` lines.

use crate::size::{parse_qemu_size, split_qemu_opts, SizeError};
use thiserror::Error;

/// One extra QEMU argument (or option with its value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QemuArg {
    /// `-object memory-backend-*,id=ID,size=SIZE[,...]`
    MemoryBackend(MemoryBackend),
    /// `-numa node[,nodeid=N][,cpus=A[-B]]...[,memdev=ID]`
    NumaNode(NumaNode),
    /// `-numa dist,src=A,dst=B,val=V`
    NumaDist(NumaDist),
    /// `-device virtio-mem-pci,...`
    VirtioMem(VirtioMemPci),
    /// `-device pc-dimm,...` (a cold-plugged DIMM)
    PcDimm(PcDimm),
    /// `-device virtio-balloon-pci[,id=..]`
    VirtioBalloon(VirtioBalloonPci),
    /// `-object acpi-generic-initiator,id=..,pci-dev=..,node=N`
    GenericInitiator(GenericInitiator),
    /// Anything else, one word at a time, exactly as written (an unknown
    /// option and its value are two consecutive `Raw` entries).
    Raw(String),
}

/// `-object memory-backend-ram|file|memfd,id=..,size=..`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryBackend {
    /// `memory-backend-ram`, `memory-backend-file`, ...
    pub qom_type: String,
    /// `id=`
    pub id: String,
    /// `size=` in bytes.
    pub size: u64,
    /// Other properties, in order, with their text.
    pub extra: Vec<(String, String)>,
}

/// `-numa dist,src=A,dst=B,val=V`: the SLIT distance from node A to B.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumaDist {
    pub src: u32,
    pub dst: u32,
    pub val: u32,
}

/// An inclusive CPU index range `A` or `A-B` from `cpus=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuRange {
    /// First CPU index.
    pub first: u32,
    /// Last CPU index (== `first` for a single CPU).
    pub last: u32,
}

/// `-numa node,...`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumaNode {
    /// `nodeid=`; QEMU numbers nodes without one in order of appearance.
    pub nodeid: Option<u32>,
    /// Every `cpus=` value (QEMU allows the key several times).
    pub cpus: Vec<CpuRange>,
    /// `memdev=`: the backend holding this node's boot memory; a node
    /// without it has no boot memory.
    pub memdev: Option<String>,
    /// Other properties, in order.
    pub extra: Vec<(String, String)>,
}

/// `-device virtio-mem-pci,id=..,memdev=..,node=..,requested-size=..,block-size=..`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioMemPci {
    /// `id=` (needed to resize the device from a host step).
    pub id: Option<String>,
    /// `memdev=`: the backend that bounds the device's region.
    pub memdev: String,
    /// `node=` (QEMU's default is node 0).
    pub node: Option<u32>,
    /// `requested-size=` in bytes (default 0).
    pub requested_size: u64,
    /// `block-size=` in bytes (QEMU picks one when absent).
    pub block_size: Option<u64>,
    /// Other properties, in order.
    pub extra: Vec<(String, String)>,
}

/// `-object acpi-generic-initiator,id=..,pci-dev=..,node=N`: an SRAT
/// Generic Initiator Affinity structure putting a PCI device in node `N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenericInitiator {
    /// `id=`
    pub id: String,
    /// `pci-dev=`: the id of the initiating PCI device.
    pub pci_dev: String,
    /// `node=`
    pub node: u32,
    /// Other properties, in order.
    pub extra: Vec<(String, String)>,
}

/// `-device pc-dimm,id=..,memdev=..[,node=..][,addr=..][,slot=..]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcDimm {
    /// `id=`
    pub id: Option<String>,
    /// `memdev=`
    pub memdev: String,
    /// `node=`
    pub node: Option<u32>,
    /// `addr=` (guest physical address)
    pub addr: Option<u64>,
    /// `slot=`
    pub slot: Option<u32>,
    /// Other properties, in order.
    pub extra: Vec<(String, String)>,
}

/// `-device virtio-balloon-pci[,id=..]`
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioBalloonPci {
    /// `id=`
    pub id: Option<String>,
    /// Other properties, in order.
    pub extra: Vec<(String, String)>,
}

/// Why a `qemu:` argument is malformed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QemuArgError {
    /// `-object`, `-numa` or `-device` is the last word.
    #[error("{0}: missing value")]
    MissingValue(String),
    /// A required property is absent.
    #[error("{option} {kind}: missing {key}=")]
    MissingProperty {
        /// `-object`, `-numa`, `-device`
        option: &'static str,
        /// the type / driver
        kind: String,
        /// the property
        key: &'static str,
    },
    /// A property holds a malformed size.
    #[error("{option} {kind}: {key}=: {source}")]
    BadSize {
        /// `-object`, `-device`
        option: &'static str,
        /// the type / driver
        kind: String,
        /// the property
        key: String,
        /// what is wrong with it
        source: SizeError,
    },
    /// A property holds a malformed number or CPU range.
    #[error("{option} {kind}: bad {key}=`{value}`")]
    BadNumber {
        /// `-numa`, `-device`
        option: &'static str,
        /// the type / driver
        kind: String,
        /// the property
        key: String,
        /// its text
        value: String,
    },
    /// A property without `=`.
    #[error("{option} {kind}: property `{text}` has no `=`")]
    BadProperty {
        /// the option
        option: &'static str,
        /// the type / driver
        kind: String,
        /// the text
        text: String,
    },
}

fn parse_number<T: TryFrom<u64>>(text: &str) -> Option<T> {
    let v = if let Some(h) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()?
    } else {
        if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse::<u64>().ok()?
    };
    T::try_from(v).ok()
}

fn parse_cpu_range(text: &str) -> Option<CpuRange> {
    let (a, b) = match text.split_once('-') {
        Some((a, b)) => (a, b),
        None => (text, text),
    };
    let first = parse_number::<u32>(a)?;
    let last = parse_number::<u32>(b)?;
    (first <= last).then_some(CpuRange { first, last })
}

/// The properties after the type/driver word: `key=value` pairs.
fn props(
    option: &'static str,
    kind: &str,
    parts: &[String],
) -> Result<Vec<(String, String)>, QemuArgError> {
    parts
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => Ok((k.to_string(), v.to_string())),
            None => Err(QemuArgError::BadProperty {
                option,
                kind: kind.to_string(),
                text: p.clone(),
            }),
        })
        .collect()
}

struct Props {
    option: &'static str,
    kind: String,
    items: Vec<(String, String)>,
}

impl Props {
    fn take(&mut self, key: &str) -> Option<String> {
        let i = self.items.iter().position(|(k, _)| k == key)?;
        Some(self.items.remove(i).1)
    }
    fn take_all(&mut self, key: &str) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(v) = self.take(key) {
            out.push(v);
        }
        out
    }
    fn require(&mut self, key: &'static str) -> Result<String, QemuArgError> {
        self.take(key).ok_or_else(|| QemuArgError::MissingProperty {
            option: self.option,
            kind: self.kind.clone(),
            key,
        })
    }
    fn size(&mut self, key: &str) -> Result<Option<u64>, QemuArgError> {
        self.take(key)
            .map(|v| {
                parse_qemu_size(&v, 1).map_err(|source| QemuArgError::BadSize {
                    option: self.option,
                    kind: self.kind.clone(),
                    key: key.to_string(),
                    source,
                })
            })
            .transpose()
    }
    fn number<T: TryFrom<u64>>(&mut self, key: &str) -> Result<Option<T>, QemuArgError> {
        self.take(key)
            .map(|v| parse_number::<T>(&v).ok_or_else(|| self.bad_number(key, &v)))
            .transpose()
    }
    fn bad_number(&self, key: &str, value: &str) -> QemuArgError {
        QemuArgError::BadNumber {
            option: self.option,
            kind: self.kind.clone(),
            key: key.to_string(),
            value: value.to_string(),
        }
    }
}

fn parse_object(value: &str) -> Result<Option<QemuArg>, QemuArgError> {
    let parts = split_qemu_opts(value);
    let kind = parts[0].strip_prefix("qom-type=").unwrap_or(&parts[0]);
    if !kind.starts_with("memory-backend-") && kind != "acpi-generic-initiator" {
        return Ok(None);
    }
    let mut p = Props {
        option: "-object",
        kind: kind.to_string(),
        items: props("-object", kind, &parts[1..])?,
    };
    let id = p.require("id")?;
    if kind == "acpi-generic-initiator" {
        let pci_dev = p.require("pci-dev")?;
        let node = p
            .number::<u32>("node")?
            .ok_or(QemuArgError::MissingProperty {
                option: "-object",
                kind: kind.to_string(),
                key: "node",
            })?;
        return Ok(Some(QemuArg::GenericInitiator(GenericInitiator {
            id,
            pci_dev,
            node,
            extra: p.items,
        })));
    }
    let size = p.size("size")?.ok_or(QemuArgError::MissingProperty {
        option: "-object",
        kind: kind.to_string(),
        key: "size",
    })?;
    Ok(Some(QemuArg::MemoryBackend(MemoryBackend {
        qom_type: kind.to_string(),
        id,
        size,
        extra: p.items,
    })))
}

fn parse_numa(value: &str) -> Result<Option<QemuArg>, QemuArgError> {
    let parts = split_qemu_opts(value);
    let kind = parts[0].strip_prefix("type=").unwrap_or(&parts[0]);
    if kind == "dist" {
        let mut p = Props {
            option: "-numa",
            kind: kind.to_string(),
            items: props("-numa", kind, &parts[1..])?,
        };
        let mut get = |key: &'static str| {
            p.number::<u32>(key)?.ok_or(QemuArgError::MissingProperty {
                option: "-numa",
                kind: "dist".to_string(),
                key,
            })
        };
        return Ok(Some(QemuArg::NumaDist(NumaDist {
            src: get("src")?,
            dst: get("dst")?,
            val: get("val")?,
        })));
    }
    if kind != "node" {
        return Ok(None);
    }
    let mut p = Props {
        option: "-numa",
        kind: kind.to_string(),
        items: props("-numa", kind, &parts[1..])?,
    };
    let nodeid = p.number::<u32>("nodeid")?;
    let cpus = p
        .take_all("cpus")
        .iter()
        .map(|c| parse_cpu_range(c).ok_or_else(|| p.bad_number("cpus", c)))
        .collect::<Result<Vec<_>, _>>()?;
    let memdev = p.take("memdev");
    Ok(Some(QemuArg::NumaNode(NumaNode {
        nodeid,
        cpus,
        memdev,
        extra: p.items,
    })))
}

fn parse_device(value: &str) -> Result<Option<QemuArg>, QemuArgError> {
    let parts = split_qemu_opts(value);
    let driver = parts[0].strip_prefix("driver=").unwrap_or(&parts[0]);
    if !["virtio-mem-pci", "pc-dimm", "virtio-balloon-pci"].contains(&driver) {
        return Ok(None);
    }
    let mut p = Props {
        option: "-device",
        kind: driver.to_string(),
        items: props("-device", driver, &parts[1..])?,
    };
    let id = p.take("id");
    if driver == "virtio-balloon-pci" {
        return Ok(Some(QemuArg::VirtioBalloon(VirtioBalloonPci {
            id,
            extra: p.items,
        })));
    }
    let memdev = p.require("memdev")?;
    let node = p.number::<u32>("node")?;
    if driver == "pc-dimm" {
        let addr = p.number::<u64>("addr")?;
        let slot = p.number::<u32>("slot")?;
        return Ok(Some(QemuArg::PcDimm(PcDimm {
            id,
            memdev,
            node,
            addr,
            slot,
            extra: p.items,
        })));
    }
    let requested_size = p.size("requested-size")?.unwrap_or(0);
    let block_size = p.size("block-size")?;
    Ok(Some(QemuArg::VirtioMem(VirtioMemPci {
        id,
        memdev,
        node,
        requested_size,
        block_size,
        extra: p.items,
    })))
}

/// Parses the value of one typed option; `None` keeps it raw.
type TypedParser = fn(&str) -> Result<Option<QemuArg>, QemuArgError>;

/// Types the words of the `qemu:` lines (already split like a shell does).
/// `-object memory-backend-*`, `-numa node` and `-device
/// virtio-mem-pci|pc-dimm` become typed values; everything else stays
/// [`QemuArg::Raw`], word by word.
pub fn parse_qemu_args(words: &[String]) -> Result<Vec<QemuArg>, QemuArgError> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let word = &words[i];
        let opt = word
            .strip_prefix('-')
            .map(|w| w.strip_prefix('-').unwrap_or(w));
        let parser: Option<TypedParser> = match opt {
            Some("object") => Some(parse_object),
            Some("numa") => Some(parse_numa),
            Some("device") => Some(parse_device),
            _ => None,
        };
        let Some(parser) = parser else {
            out.push(QemuArg::Raw(word.clone()));
            i += 1;
            continue;
        };
        let value = words
            .get(i + 1)
            .ok_or_else(|| QemuArgError::MissingValue(word.clone()))?;
        match parser(value)? {
            Some(arg) => out.push(arg),
            None => {
                out.push(QemuArg::Raw(word.clone()));
                out.push(QemuArg::Raw(value.clone()));
            }
        }
        i += 2;
    }
    Ok(out)
}

fn join_opts(head: &str, items: &[(&str, String)], extra: &[(String, String)]) -> String {
    let esc = |s: &str| s.replace(',', ",,");
    let mut s = esc(head);
    for (k, v) in items {
        s.push(',');
        s.push_str(k);
        s.push('=');
        s.push_str(&esc(v));
    }
    for (k, v) in extra {
        s.push(',');
        s.push_str(&esc(k));
        s.push('=');
        s.push_str(&esc(v));
    }
    s
}

impl QemuArg {
    /// The QEMU command-line words for this argument (sizes in bytes).
    pub fn to_args(&self) -> Vec<String> {
        match self {
            QemuArg::Raw(w) => vec![w.clone()],
            QemuArg::MemoryBackend(b) => vec![
                "-object".into(),
                join_opts(
                    &b.qom_type,
                    &[("id", b.id.clone()), ("size", b.size.to_string())],
                    &b.extra,
                ),
            ],
            QemuArg::GenericInitiator(g) => vec![
                "-object".into(),
                join_opts(
                    "acpi-generic-initiator",
                    &[
                        ("id", g.id.clone()),
                        ("pci-dev", g.pci_dev.clone()),
                        ("node", g.node.to_string()),
                    ],
                    &g.extra,
                ),
            ],
            QemuArg::NumaNode(n) => {
                let mut items = Vec::new();
                if let Some(id) = n.nodeid {
                    items.push(("nodeid", id.to_string()));
                }
                for c in &n.cpus {
                    let v = if c.first == c.last {
                        c.first.to_string()
                    } else {
                        format!("{}-{}", c.first, c.last)
                    };
                    items.push(("cpus", v));
                }
                if let Some(m) = &n.memdev {
                    items.push(("memdev", m.clone()));
                }
                vec!["-numa".into(), join_opts("node", &items, &n.extra)]
            }
            QemuArg::NumaDist(d) => vec![
                "-numa".into(),
                format!("dist,src={},dst={},val={}", d.src, d.dst, d.val),
            ],
            QemuArg::VirtioMem(v) => {
                let mut items = Vec::new();
                if let Some(id) = &v.id {
                    items.push(("id", id.clone()));
                }
                items.push(("memdev", v.memdev.clone()));
                if let Some(n) = v.node {
                    items.push(("node", n.to_string()));
                }
                items.push(("requested-size", v.requested_size.to_string()));
                if let Some(b) = v.block_size {
                    items.push(("block-size", b.to_string()));
                }
                vec![
                    "-device".into(),
                    join_opts("virtio-mem-pci", &items, &v.extra),
                ]
            }
            QemuArg::PcDimm(d) => {
                let mut items = Vec::new();
                if let Some(id) = &d.id {
                    items.push(("id", id.clone()));
                }
                items.push(("memdev", d.memdev.clone()));
                if let Some(n) = d.node {
                    items.push(("node", n.to_string()));
                }
                if let Some(a) = d.addr {
                    items.push(("addr", format!("{a:#x}")));
                }
                if let Some(s) = d.slot {
                    items.push(("slot", s.to_string()));
                }
                vec!["-device".into(), join_opts("pc-dimm", &items, &d.extra)]
            }
            QemuArg::VirtioBalloon(b) => {
                let items: Vec<(&str, String)> = b.id.iter().map(|id| ("id", id.clone())).collect();
                vec![
                    "-device".into(),
                    join_opts("virtio-balloon-pci", &items, &b.extra),
                ]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn numa_and_backend_args_are_typed() {
        let args = parse_qemu_args(&words(
            "-object memory-backend-ram,id=ram0,size=1G -numa node,nodeid=0,cpus=0,memdev=ram0 -numa node,nodeid=1,cpus=1-3",
        ))
        .unwrap();
        assert_eq!(
            args,
            vec![
                QemuArg::MemoryBackend(MemoryBackend {
                    qom_type: "memory-backend-ram".into(),
                    id: "ram0".into(),
                    size: 1 << 30,
                    extra: vec![],
                }),
                QemuArg::NumaNode(NumaNode {
                    nodeid: Some(0),
                    cpus: vec![CpuRange { first: 0, last: 0 }],
                    memdev: Some("ram0".into()),
                    extra: vec![],
                }),
                QemuArg::NumaNode(NumaNode {
                    nodeid: Some(1),
                    cpus: vec![CpuRange { first: 1, last: 3 }],
                    memdev: None,
                    extra: vec![],
                }),
            ]
        );
    }

    #[test]
    fn generic_initiator_object_is_typed_and_renders_back() {
        let args = parse_qemu_args(&words(
            "-object acpi-generic-initiator,id=gi0,pci-dev=dev0,node=2",
        ))
        .unwrap();
        assert_eq!(
            args,
            vec![QemuArg::GenericInitiator(GenericInitiator {
                id: "gi0".into(),
                pci_dev: "dev0".into(),
                node: 2,
                extra: vec![],
            })]
        );
        assert_eq!(
            args[0].to_args(),
            vec![
                "-object",
                "acpi-generic-initiator,id=gi0,pci-dev=dev0,node=2"
            ]
        );
        assert_eq!(
            parse_qemu_args(&words("-object acpi-generic-initiator,id=gi0,pci-dev=d"))
                .unwrap_err()
                .to_string(),
            "-object acpi-generic-initiator: missing node="
        );
        assert!(matches!(
            parse_qemu_args(&words("-object acpi-generic-initiator,id=gi0,pci-dev=d")),
            Err(QemuArgError::MissingProperty { key: "node", .. })
        ));
        assert!(matches!(
            parse_qemu_args(&words("-object acpi-generic-initiator,id=gi0,node=1")),
            Err(QemuArgError::MissingProperty { key: "pci-dev", .. })
        ));
    }

    #[test]
    fn virtio_mem_device_is_typed_and_renders_back() {
        let args = parse_qemu_args(&words(
            "-device virtio-mem-pci,id=vm0,memdev=vmem0,node=0,requested-size=0,block-size=2M",
        ))
        .unwrap();
        let QemuArg::VirtioMem(v) = &args[0] else {
            panic!("not typed: {args:?}");
        };
        assert_eq!(v.id.as_deref(), Some("vm0"));
        assert_eq!(v.memdev, "vmem0");
        assert_eq!(v.node, Some(0));
        assert_eq!(v.requested_size, 0);
        assert_eq!(v.block_size, Some(2 << 20));
        assert_eq!(
            args[0].to_args(),
            vec![
                "-device",
                "virtio-mem-pci,id=vm0,memdev=vmem0,node=0,requested-size=0,block-size=2097152"
            ]
        );
    }

    #[test]
    fn numa_distances_are_typed_and_need_all_three_values() {
        assert_eq!(
            parse_qemu_args(&words("-numa dist,src=0,dst=1,val=20")).unwrap(),
            [QemuArg::NumaDist(NumaDist {
                src: 0,
                dst: 1,
                val: 20
            })]
        );
        assert_eq!(
            QemuArg::NumaDist(NumaDist {
                src: 0,
                dst: 1,
                val: 20
            })
            .to_args(),
            ["-numa", "dist,src=0,dst=1,val=20"]
        );
        assert!(parse_qemu_args(&words("-numa dist,src=0,dst=1")).is_err());
    }

    #[test]
    fn unknown_args_stay_raw_word_by_word() {
        let args = parse_qemu_args(&words(
            "-cpu max -device virtio-rng-pci -numa cpu,node-id=0,socket-id=0",
        ))
        .unwrap();
        assert_eq!(
            args,
            [
                "-cpu",
                "max",
                "-device",
                "virtio-rng-pci",
                "-numa",
                "cpu,node-id=0,socket-id=0"
            ]
            .iter()
            .map(|w| QemuArg::Raw(w.to_string()))
            .collect::<Vec<_>>()
        );
    }

    #[test]
    fn malformed_typed_args_are_rejected() {
        assert_eq!(
            parse_qemu_args(&words("-object")),
            Err(QemuArgError::MissingValue("-object".into()))
        );
        assert!(matches!(
            parse_qemu_args(&words("-object memory-backend-ram,id=r,size=1Q")),
            Err(QemuArgError::BadSize { key, .. }) if key == "size"
        ));
        assert!(matches!(
            parse_qemu_args(&words("-object memory-backend-ram,size=1G")),
            Err(QemuArgError::MissingProperty { key: "id", .. })
        ));
        assert!(matches!(
            parse_qemu_args(&words("-numa node,nodeid=x")),
            Err(QemuArgError::BadNumber { key, .. }) if key == "nodeid"
        ));
        assert!(matches!(
            parse_qemu_args(&words("-numa node,cpus=3-1")),
            Err(QemuArgError::BadNumber { key, .. }) if key == "cpus"
        ));
        assert!(matches!(
            parse_qemu_args(&words("-device virtio-mem-pci,id=vm0")),
            Err(QemuArgError::MissingProperty { key: "memdev", .. })
        ));
    }
}
