//! `memhp ctl`: the human front end of the control socket. Host actions use
//! the oracle's host-step words (`hotadd ID SIZE [node=N] [addr=A]`,
//! `unplug ID`, `vmem-resize ID SIZE`, `balloon SIZE`).

use anyhow::{bail, Context, Result};
use memhp_control::ControlClient;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The control socket of the machine mounted at `root`.
pub fn socket_for_root(root: &Path) -> PathBuf {
    let canon = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    let name: String = canon
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    PathBuf::from("/run/memhp").join(format!("{}.sock", name.trim_matches('_')))
}

fn kv(words: &[String]) -> Result<Map<String, Value>> {
    let mut m = Map::new();
    for w in words {
        let (k, v) = w
            .split_once('=')
            .with_context(|| format!("expected KEY=VALUE, got {w:?}"))?;
        let val = v
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(v));
        m.insert(k.to_string(), val);
    }
    Ok(m)
}

/// Turn the words after `ctl` into a command and its arguments.
const FAULT_USAGE: &str = "usage: memhp ctl fault add ACTION ERRNO [always|once|every=N|probability=P] [seed=S] [priority=P] | fault remove ID | fault list";

/// `fault add|remove|list ...`.
fn fault(rest: &[String]) -> Result<(String, Value)> {
    match rest {
        [sub, action, errno, opts @ ..] if sub == "add" => {
            let error: i64 = errno
                .parse()
                .with_context(|| format!("fault add: ERRNO must be an integer, got {errno:?}"))?;
            let mut args = Map::new();
            args.insert("action".into(), json!(action));
            args.insert("error".into(), json!(error));
            for o in opts {
                let number = |v: &str| -> Result<Value> {
                    v.parse::<u64>()
                        .map(Value::from)
                        .with_context(|| format!("fault add: {o:?} needs a non-negative integer"))
                };
                match o.split_once('=') {
                    None if o == "always" || o == "once" => {
                        args.insert("mode".into(), json!(o));
                    }
                    Some(("every", n)) => {
                        args.insert("mode".into(), json!("every"));
                        args.insert("n".into(), number(n)?);
                    }
                    Some(("probability", p)) => {
                        let p: f64 = p
                            .parse()
                            .with_context(|| format!("fault add: {o:?} needs a number"))?;
                        args.insert("mode".into(), json!("probability"));
                        args.insert("p".into(), json!(p));
                    }
                    Some(("seed", v)) => {
                        args.insert("seed".into(), number(v)?);
                    }
                    Some(("priority", v)) => {
                        let p: i64 = v
                            .parse()
                            .with_context(|| format!("fault add: {o:?} needs an integer"))?;
                        args.insert("priority".into(), json!(p));
                    }
                    _ => bail!("fault add: unknown option {o:?}\n{FAULT_USAGE}"),
                }
            }
            Ok(("fault-add".into(), Value::Object(args)))
        }
        [sub, id] if sub == "remove" => {
            let id: u64 = id
                .parse()
                .with_context(|| format!("fault remove: ID must be a number, got {id:?}"))?;
            Ok(("fault-remove".into(), json!({ "id": id })))
        }
        [sub] if sub == "list" => Ok(("fault-list".into(), json!({}))),
        _ => bail!("{FAULT_USAGE}"),
    }
}

pub fn parse(words: &[String]) -> Result<(String, Value)> {
    let Some(verb) = words.first() else {
        bail!("missing command (try: query, hotadd, unplug, vmem-resize, klog, events)")
    };
    let rest = &words[1..];
    let need = |n: usize, usage: &str| -> Result<()> {
        if rest.len() < n {
            bail!("usage: memhp ctl {usage}");
        }
        Ok(())
    };
    Ok(match verb.as_str() {
        "hotadd" => {
            need(2, "hotadd ID SIZE [node=N] [addr=A] [driver=pc-dimm|virtio-mem-pci] [backend=memory-backend-ram|memory-backend-memfd]")?;
            let mut args = kv(&rest[2..])?;
            args.insert("id".into(), json!(rest[0]));
            args.insert("size".into(), json!(rest[1]));
            ("hotadd".into(), Value::Object(args))
        }
        "unplug" => {
            need(1, "unplug ID")?;
            ("unplug".into(), json!({"id": rest[0]}))
        }
        "vmem-resize" => {
            need(2, "vmem-resize ID SIZE")?;
            (
                "vmem-resize".into(),
                json!({"id": rest[0], "size": rest[1]}),
            )
        }
        "dmesg" => match rest {
            [] => ("dmesg".into(), json!({})),
            [c] if c == "-c" => ("dmesg".into(), json!({"clear": true})),
            _ => bail!("usage: memhp ctl dmesg [-c]"),
        },
        "balloon" => {
            need(1, "balloon SIZE (the guest's target size)")?;
            let size = memhp_model::units::parse_size(&rest[0])
                .with_context(|| format!("balloon: bad size {:?}", rest[0]))?;
            let value = i64::try_from(size).context("balloon: size too large")?;
            ("balloon".into(), json!({ "value": value }))
        }
        "module-load" | "module-unload" => {
            need(1, &format!("{verb} NAME"))?;
            (verb.clone(), json!({"name": rest[0]}))
        }
        "inject" => {
            need(2, "inject MEM_GOING_ONLINE|MEM_GOING_OFFLINE ERRNO")?;
            let e: i64 = rest[1]
                .parse()
                .context("inject: ERRNO must be an integer in -4095..0")?;
            ("inject".into(), json!({"action": rest[0], "error": e}))
        }
        "fault" => fault(rest)?,
        "workload" => {
            need(
                4,
                "workload alloc|free movable|unmovable|pinned PAGES block=N|node=N [zone=Z]|start_pfn=P end_pfn=E",
            )?;
            let mut args = kv(&rest[3..])?;
            args.insert("op".into(), json!(rest[0]));
            args.insert("kind".into(), json!(rest[1]));
            args.insert(
                "pages".into(),
                json!(rest[2].parse::<u64>().context("PAGES must be a number")?),
            );
            ("workload".into(), Value::Object(args))
        }
        "clock-advance" => {
            need(1, "clock-advance MS")?;
            let ms: u64 = rest[0]
                .parse()
                .context("MS must be a number of milliseconds")?;
            (verb.clone(), json!({ "ms": ms }))
        }
        "tmpfs-usage" => {
            need(2, "tmpfs-usage INODES BYTES")?;
            let n = |i: usize, what: &str| {
                rest[i]
                    .parse::<u64>()
                    .with_context(|| format!("{what} must be a number"))
            };
            (
                verb.clone(),
                json!({"inodes": n(0, "INODES")?, "bytes": n(1, "BYTES")?}),
            )
        }
        "hugetlb" => {
            need(
                2,
                "hugetlb grow|shrink|use|unuse|reserve COUNT [block=N|node=N]",
            )?;
            let mut args = kv(&rest[2..])?;
            args.insert("op".into(), json!(rest[0]));
            args.insert(
                "count".into(),
                json!(rest[1]
                    .parse::<u64>()
                    .context("hugetlb: COUNT must be a number of huge pages")?),
            );
            ("hugetlb".into(), Value::Object(args))
        }
        "migrate-fail" => {
            let usage = "migrate-fail BLOCK enomem|eagain|none, or migrate-fail enomem|eagain|none node=N [zone=Z]|start_pfn=P end_pfn=E";
            need(2, usage)?;
            match rest[0].parse::<u64>() {
                Ok(block) => (verb.clone(), json!({"block": block, "failure": rest[1]})),
                Err(_) => {
                    let mut args = kv(&rest[1..])?;
                    args.insert("failure".into(), json!(rest[0]));
                    (verb.clone(), Value::Object(args))
                }
            }
        }
        "hwpoison" => {
            need(1, "hwpoison BLOCK")?;
            ("hwpoison".into(), json!({"block": rest[0].parse::<u64>()?}))
        }
        "json" => {
            need(1, "json '{\"execute\": ..., \"arguments\": ...}'")?;
            let v: Value = serde_json::from_str(&rest[0]).context("json: not valid JSON")?;
            let name = v["execute"]
                .as_str()
                .context("json: no \"execute\"")?
                .to_string();
            (name, v.get("arguments").cloned().unwrap_or(json!({})))
        }
        other => (other.to_string(), Value::Object(kv(rest)?)),
    })
}

/// Run `memhp ctl`.
pub fn run(socket: &Path, words: &[String]) -> Result<i32> {
    let mut c = ControlClient::connect(socket).with_context(|| {
        format!(
            "connect to {} (is `memhp mount` running?)",
            socket.display()
        )
    })?;
    if words.first().map(String::as_str) == Some("events") {
        loop {
            let ev = c.next_event(Duration::from_secs(3600))?;
            println!("{ev}");
        }
    }
    let (name, args) = parse(words)?;
    let reply = c.execute(&name, args)?;
    if let Some(err) = reply.get("error") {
        eprintln!(
            "memhp ctl: {}: {}",
            err["class"].as_str().unwrap_or("Error"),
            err["desc"].as_str().unwrap_or("")
        );
        return Ok(1);
    }
    let ret = &reply["return"];
    match name.as_str() {
        "klog" | "bootlog" | "dmesg" => {
            for l in ret.as_array().into_iter().flatten() {
                println!("{}", l.as_str().unwrap_or(""));
            }
        }
        "module-load" => {
            for m in ret["insmod"].as_array().into_iter().flatten() {
                println!(
                    "insmod {} -> rc={}",
                    m["module"].as_str().unwrap_or(""),
                    m["rc"]
                );
            }
        }
        _ => println!("{}", serde_json::to_string_pretty(ret)?),
    }
    Ok(0)
}
