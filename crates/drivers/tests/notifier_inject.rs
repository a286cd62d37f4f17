//! The oracle's `notifier-inject` run through the sysfs tree: injected
//! MEM_GOING_ONLINE / MEM_GOING_OFFLINE errors reach the writer as errnos,
//! the debugfs file clamps, and every consumer gets the cancel event.

use memhp_drivers::host::{Host, HostCommand};
use memhp_model::events::MemAction;
use memhp_model::machine::QemuPc;
use memhp_model::KernelVersion;
use memhp_sysfs::vfs::{Cancel, Errno, Tree};
use memhp_sysfs::SysfsTree;
use std::sync::Arc;

const D: &str = "sys/kernel/debug/notifier-error-inject/memory/actions";
const S: &str = "sys/devices/system/memory/memory32/state";

fn w(t: &SysfsTree, p: &str, v: &str) -> Result<usize, Errno> {
    t.open(p, false, true)?;
    t.write(p, v.as_bytes(), &Cancel::new())
}

fn r(t: &SysfsTree, p: &str) -> String {
    String::from_utf8(t.read(p).unwrap()).unwrap()
}

#[test]
fn injected_errors_reach_the_writer_and_the_file_clamps() {
    let spec = QemuPc::default()
        .machine("memhp_default_state=offline", KernelVersion::V6_1)
        .unwrap();
    let host = Host::boot(&spec).unwrap();
    let t = SysfsTree::new(Arc::clone(&host.shared));
    assert!(t.lookup(D).is_none());
    let rep = host
        .execute(&HostCommand::LoadModule {
            name: "memory-notifier-error-inject".into(),
        })
        .unwrap();
    assert_eq!(
        rep.insmods,
        vec![
            ("notifier-error-inject.ko".to_string(), 0),
            ("memory-notifier-error-inject.ko".to_string(), 0)
        ]
    );
    assert_eq!(
        t.lookup(&format!("{D}/MEM_GOING_ONLINE/error")),
        Some(memhp_sysfs::vfs::EntryKind::File { mode: 0o600 })
    );
    host.execute(&HostCommand::Hotadd {
        id: "d1".into(),
        size: 256 << 20,
        node: Some(0),
        addr: None,
    })
    .unwrap();
    let e = format!("{D}/MEM_GOING_ONLINE/error");
    assert_eq!(w(&t, &e, "-12"), Ok(3));
    assert_eq!(r(&t, &e), "-12\n");
    host.shared.read(|s| s.memory_chain.take_trace());
    for v in ["online", "online_movable", "online_kernel"] {
        assert_eq!(w(&t, S, v), Err(Errno::ENOMEM), "{v}");
    }
    // Every consumer, including those after the injector, got the cancel.
    let trace = host.shared.read(|s| s.memory_chain.take_trace());
    let cancels = trace
        .iter()
        .filter(|c| c.mem_action() == Some(MemAction::CancelOnline))
        .count();
    assert_eq!(cancels, 3 * 10);
    assert_eq!(
        w(&t, "sys/devices/system/memory/memory32/online", "1"),
        Err(Errno::ENOMEM)
    );
    assert_eq!(r(&t, S), "offline\n");
    for (v, errno) in [("-16", 16), ("-22", 22), ("-1", 1), ("-4095", 4095)] {
        w(&t, &e, v).unwrap();
        assert_eq!(w(&t, S, "online_movable"), Err(Errno(errno)));
    }
    assert_eq!(w(&t, &e, "-4096"), Ok(5));
    assert_eq!(r(&t, &e), "-4095\n");
    assert_eq!(w(&t, &e, "1"), Ok(1));
    assert_eq!(r(&t, &e), "0\n");
    assert_eq!(w(&t, &e, "foo"), Err(Errno::EINVAL));
    assert_eq!(w(&t, S, "online_movable"), Ok(14));
    let off = format!("{D}/MEM_GOING_OFFLINE/error");
    w(&t, &off, "-16").unwrap();
    assert_eq!(w(&t, S, "offline"), Err(Errno::EBUSY));
    assert_eq!(r(&t, S), "online\n");
    let log = host.shared.modify(|s| s.events.take_klog());
    assert!(log.contains(&"Injecting error (-16) to MEM_GOING_OFFLINE".to_string()));
    let rep = host
        .execute(&HostCommand::Unplug { id: "d1".into() })
        .unwrap();
    assert_eq!(rep.events.len(), 2);
    w(&t, &off, "0").unwrap();
    let rep = host
        .execute(&HostCommand::Unplug { id: "d1".into() })
        .unwrap();
    assert_eq!(rep.events[1].name(), "DEVICE_DELETED");
}
