//! virtio-mem in Big Block Mode through a real `memhp mount`: the device
//! from `--virtio-mem ...,block-size=1G`, driven with `memhp ctl
//! vmem-resize` and over the control socket, observed in the mounted
//! `/proc/iomem` and memory directories and in the socket's events.

mod common;

use common::Machine;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

/// Send one command on a fresh connection; the events it causes (uevents
/// as `ACTION memoryN`), in order, up to the size change that ends a
/// resize (events are forwarded beside the reply, before or after it).
fn execute_with_events(m: &Machine, cmd: &str) -> Vec<String> {
    let mut s = UnixStream::connect(&m.sock).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = String::new();
    r.read_line(&mut line).unwrap(); // greeting
    writeln!(s, "{cmd}").unwrap();
    let mut out = Vec::new();
    let mut returned = false;
    while !(returned
        && out
            .last()
            .is_some_and(|e: &String| e.starts_with("MEMORY_DEVICE")))
    {
        line.clear();
        r.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v.get("return").is_some() {
            returned = true;
            continue;
        }
        match v["event"].as_str().unwrap() {
            "UEVENT" => out.push(format!(
                "{} {}",
                v["data"]["ACTION"].as_str().unwrap(),
                v["data"]["DEVPATH"]
                    .as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
            )),
            name => out.push(format!("{name} {}", v["data"]["size"])),
        }
    }
    out
}

fn vmem_iomem(m: &Machine) -> Vec<String> {
    m.read("proc/iomem")
        .lines()
        .filter(|l| l.contains("virtio0") || l.contains("(virtio_mem)"))
        .map(String::from)
        .collect()
}

fn hot_blocks(m: &Machine) -> Vec<u64> {
    let mut ids: Vec<u64> = std::fs::read_dir(m.root.join("sys/devices/system/memory"))
        .unwrap()
        .filter_map(|e| {
            e.unwrap()
                .file_name()
                .to_str()?
                .strip_prefix("memory")?
                .parse()
                .ok()
        })
        .filter(|&id| id >= 32)
        .collect();
    ids.sort_unstable();
    ids
}

#[test]
fn big_block_mode_from_the_command_line() {
    let m = Machine::mount(
        "vmem-bbm",
        &[
            "--mem",
            "1G,maxmem=8G",
            "--virtio-mem",
            "id=vm0,size=4G,block-size=1G",
            "--cmdline",
            "memhp_default_state=online_movable",
        ],
    );
    m.ctl(&["module-load", "virtio_pci"]);
    m.ctl(&["module-load", "virtio_mem"]);
    assert_eq!(m.ctl(&["vmem-resize", "vm0", "2G"]), "{}\n");
    assert_eq!(hot_blocks(&m), (32..48).collect::<Vec<_>>());
    assert_eq!(
        vmem_iomem(&m),
        [
            "100000000-1ffffffff : virtio0",
            "  100000000-17fffffff : System RAM (virtio_mem)",
        ]
    );
    assert_eq!(
        m.read("sys/devices/system/memory/memory47/valid_zones"),
        "Movable\n"
    );
    // Not a multiple of the device block size: QEMU refuses.
    let (code, err) = m.ctl_fails(&["vmem-resize", "vm0", "1536M"]);
    assert_eq!(code, Some(1));
    assert_eq!(
        err,
        "memhp ctl: GenericError: 'requested-size' has to be multiples of 'block-size' (0x40000000)\n"
    );
    // Shrinking by one big block: offline, remove, then the size change.
    let mut expected: Vec<String> = (40..48).map(|i| format!("offline memory{i}")).collect();
    expected.extend((40..48).map(|i| format!("remove memory{i}")));
    expected.push("MEMORY_DEVICE_SIZE_CHANGE 1073741824".into());
    assert_eq!(
        execute_with_events(
            &m,
            r#"{"execute":"vmem-resize","arguments":{"id":"vm0","size":1073741824}}"#
        ),
        expected
    );
    // The listing changed behind the mount's back: the cache poller drops
    // the kernel's copy within its period.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while hot_blocks(&m) != (32..40).collect::<Vec<_>>() {
        assert!(std::time::Instant::now() < deadline, "{:?}", hot_blocks(&m));
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert_eq!(
        vmem_iomem(&m)[1],
        "  100000000-13fffffff : System RAM (virtio_mem)"
    );
}
