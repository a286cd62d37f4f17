//! `memhp show` with firmware-described NUMA: a generic-initiator node from
//! `--numa ...,generic-initiator=on`, and `--cmdline movable_node` on a
//! TOML machine whose SRAT declares hotpluggable boot RAM.

use std::process::Command;

const MEMHP: &str = env!("CARGO_BIN_EXE_memhp");

fn show(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(MEMHP).arg("show").args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn lines_matching(text: &str, pat: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains(pat))
        .map(String::from)
        .collect()
}

#[test]
fn generic_initiator_node_from_the_numa_option() {
    let (ok, out, err) = show(&[
        "--smp",
        "2",
        "--numa",
        "nodeid=0,cpus=0,mem=1G",
        "--numa",
        "nodeid=1,cpus=1",
        "--numa",
        "nodeid=2,generic-initiator=on",
        "--path",
        "sys/devices/system/node",
    ]);
    assert!(ok, "{err}");
    let root: Vec<String> = out
        .lines()
        .filter(|l| {
            l.starts_with("f 0444 /sys/devices/system/node/") && l.matches('/').count() == 5
        })
        .map(String::from)
        .collect();
    assert_eq!(
        root,
        [
            r#"f 0444 /sys/devices/system/node/has_cpu = "0-1\n""#,
            r#"f 0444 /sys/devices/system/node/has_generic_initiator = "2\n""#,
            r#"f 0444 /sys/devices/system/node/has_memory = "0\n""#,
            r#"f 0444 /sys/devices/system/node/has_normal_memory = "0\n""#,
            r#"f 0444 /sys/devices/system/node/online = "0-2\n""#,
            r#"f 0444 /sys/devices/system/node/possible = "0-2\n""#,
        ]
    );
    assert_eq!(
        lines_matching(&out, "node2/cpulist"),
        [r#"f 0444 /sys/devices/system/node/node2/cpulist = "\n""#]
    );

    let (ok, _, err) = show(&["--numa", "nodeid=0,mem=1G,generic-initiator=maybe"]);
    assert!(!ok);
    assert_eq!(
        err,
        "memhp: --numa: generic-initiator=\"maybe\": expected on or off\n"
    );
}

const SRAT_HOTPLUG: &str = r#"
name = "srat-hotplug"
version = "6.1"
hypervisor = true
e820 = [
  { start = 0x0, end = 0x9fc00, kind = "usable" },
  { start = 0x100000, end = 0x7ffe0000, kind = "usable" },
  { start = 0x100000000, end = 0x200000000, kind = "usable" },
]
[[nodes]]
id = 0
cpus = [0]
mem = [[0x0, 0x80000000], [0x100000000, 0x180000000]]
[[nodes]]
id = 1
cpus = [1]
mem = [[0x180000000, 0x200000000]]
hotplug = [[0x180000000, 0x200000000]]
"#;

#[test]
fn movable_node_on_the_command_line_moves_hotpluggable_boot_ram() {
    let dir = std::env::temp_dir().join(format!("memhp-numa-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let toml = dir.join("srat.toml");
    std::fs::write(&toml, SRAT_HOTPLUG).unwrap();
    let toml = toml.to_str().unwrap();
    let zones = |cmdline: &str| {
        let (ok, out, err) = show(&[
            "--machine",
            toml,
            "--cmdline",
            cmdline,
            "--path",
            "sys/devices/system/memory/memory48/valid_zones",
            "--path",
            "sys/devices/system/memory/memory47/valid_zones",
            "--path",
            "sys/devices/system/node/has_normal_memory",
        ]);
        assert!(ok, "{err}");
        out
    };
    assert_eq!(
        zones("movable_node"),
        concat!(
            "f 0444 /sys/devices/system/memory/memory48/valid_zones = \"Movable\\n\"\n",
            "f 0444 /sys/devices/system/memory/memory47/valid_zones = \"Normal\\n\"\n",
            "f 0444 /sys/devices/system/node/has_normal_memory = \"0\\n\"\n",
        )
    );
    assert_eq!(
        zones(""),
        concat!(
            "f 0444 /sys/devices/system/memory/memory48/valid_zones = \"Normal\\n\"\n",
            "f 0444 /sys/devices/system/memory/memory47/valid_zones = \"Normal\\n\"\n",
            "f 0444 /sys/devices/system/node/has_normal_memory = \"0-1\\n\"\n",
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--numa dist,src=A,dst=B,val=V` gives the machine QEMU's SLIT: the
/// distance files follow it (one direction given holds both ways), and an
/// incomplete table is refused with QEMU's words.
#[test]
fn numa_distances_from_the_numa_option() {
    let base = [
        "--smp",
        "2",
        "--numa",
        "nodeid=0,cpus=0,mem=512M",
        "--numa",
        "nodeid=1,cpus=1,mem=512M",
    ];
    let (ok, out, err) = show(
        &[
            &base[..],
            &[
                "--numa",
                "dist,src=0,dst=1,val=31",
                "--path",
                "sys/devices/system/node",
            ],
        ]
        .concat(),
    );
    assert!(ok, "{err}");
    assert_eq!(
        lines_matching(&out, "/distance ="),
        [
            r#"f 0444 /sys/devices/system/node/node0/distance = "10 31\n""#,
            r#"f 0444 /sys/devices/system/node/node1/distance = "31 10\n""#,
        ]
    );
    let (ok, _, err) = show(&[&base[..], &["--numa", "dist,src=0,dst=1,val=5"]].concat());
    assert!(!ok);
    assert!(
        err.contains("NUMA distance (5) is invalid, it shouldn't be less than 10."),
        "{err}"
    );
}

/// `--dimm id=,size=` is a DIMM on QEMU's command line: the guest's ACPI
/// driver adds it while booting (offline by default, onlined with
/// `memhp_default_state=online`); QEMU's capacity check applies.
#[test]
fn dimm_present_at_boot_from_the_dimm_option() {
    let (ok, out, err) = show(&[
        "--dimm",
        "id=d0,size=256M",
        "--path",
        "sys/devices/system/memory",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        lines_matching(&out, "/state ="),
        (0..8)
            .map(|b| format!(r#"f 0644 /sys/devices/system/memory/memory{b}/state = "online\n""#))
            .chain((32..34).map(|b| format!(
                r#"f 0644 /sys/devices/system/memory/memory{b}/state = "offline\n""#
            )))
            .collect::<Vec<_>>()
    );
    let (ok, out, err) = show(&[
        "--dimm",
        "id=d0,size=256M",
        "--cmdline",
        "memhp_default_state=online",
        "--path",
        "sys/devices/system/memory/memory33/state",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains(r#"memory33/state = "online\n""#), "{out}");
    let (ok, _, err) = show(&["--dimm", "id=d0,size=5G"]);
    assert!(!ok);
    assert!(err.contains("not enough space"), "{err}");
}
