//! `memhp mount --netlink-uevents`: a real busybox `uevent` listener,
//! inside the network namespace memhp creates (`nsenter --net=PATH`, the
//! path from `ctl event-stats`), runs a helper script for every uevent; a
//! DIMM hot-add and unplug over the control socket reach it in the
//! kernel's order with the model's SEQNUMs.

mod common;

use common::Machine;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Listener(Child);

impl Drop for Listener {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn until(what: &str, mut ok: impl FnMut() -> bool, show: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {}",
            show()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` has a NETLINK_KOBJECT_UEVENT socket of its own
/// (port id = its pid) listening to group 1.
fn listening(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/net/netlink"))
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1] == "15" && f[2] == pid.to_string() && f[3] == "00000001"
        })
}

#[test]
fn busybox_uevent_in_the_namespace_sees_hotplug_uevents() {
    let m = Machine::mount(
        "netlink",
        &[
            "--netlink-uevents",
            "--cmdline",
            "memhp_default_state=online_movable",
        ],
    );
    let stats: serde_json::Value = serde_json::from_str(&m.ctl(&["event-stats"])).unwrap();
    let netns = stats["netlink"]["netns"].as_str().unwrap().to_string();
    assert!(std::path::Path::new(&netns).exists(), "{netns}");
    assert_eq!(stats["netlink"]["sent"], 0);

    // Real kernel uevents are broadcast to every namespace: keep ours.
    let log = m.dir.join("uevents.log");
    let script = m.dir.join("record.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$SUBSYSTEM\" in memory|node) echo \"$ACTION $DEVPATH $SUBSYSTEM $SEQNUM\" >> {} ;; esac\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let child = Command::new("nsenter")
        .arg(format!("--net={netns}"))
        .args(["busybox", "uevent"])
        .arg(&script)
        .spawn()
        .unwrap();
    let listener = Listener(child);
    let pid = listener.0.id();
    until("busybox to listen", || listening(pid), String::new);

    m.ctl(&["hotadd", "dimm1", "256M"]);
    m.ctl(&["unplug", "dimm1"]);
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    until("eight uevents", || read().lines().count() >= 8, read);
    assert_eq!(
        read(),
        concat!(
            "add /devices/system/memory/memory32 memory 1\n",
            "add /devices/system/memory/memory33 memory 2\n",
            "online /devices/system/memory/memory32 memory 3\n",
            "online /devices/system/memory/memory33 memory 4\n",
            "offline /devices/system/memory/memory32 memory 5\n",
            "offline /devices/system/memory/memory33 memory 6\n",
            "remove /devices/system/memory/memory32 memory 7\n",
            "remove /devices/system/memory/memory33 memory 8\n",
        )
    );
    let stats: serde_json::Value = serde_json::from_str(&m.ctl(&["event-stats"])).unwrap();
    assert_eq!(
        stats["netlink"],
        serde_json::json!({"netns": netns, "capacity": 4096, "sent": 8, "dropped": 0})
    );
    drop(listener);
}

#[test]
fn without_the_option_there_is_no_netlink_sender() {
    let m = Machine::mount("no-netlink", &[]);
    let stats: serde_json::Value = serde_json::from_str(&m.ctl(&["event-stats"])).unwrap();
    assert_eq!(stats, serde_json::json!({"capacity": 4096, "dropped": 0}));
}
