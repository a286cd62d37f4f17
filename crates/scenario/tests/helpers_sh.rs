//! The shell helper library: syntax, and the output of every helper against
//! a fake sysfs/procfs tree, with the Rust helper binary as `$OHELPER`.

use memhp_scenario::HELPERS_SH;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const OHELPER: &str = env!("CARGO_BIN_EXE_memhp-scenario-ohelper");

/// `/bin/sh`, plus `busybox sh` (the oracle guest's shell) when installed.
fn shells() -> Vec<Vec<String>> {
    let mut v = vec![vec!["/bin/sh".to_string()]];
    for bb in ["/usr/bin/busybox", "/bin/busybox"] {
        if Path::new(bb).exists() {
            v.push(vec![bb.to_string(), "sh".to_string()]);
            break;
        }
    }
    v
}

fn put(path: &Path, content: &str) {
    if let Some(d) = path.parent() {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(path, content).unwrap();
}

struct Fake {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Fake {
    fn m(&self) -> String {
        self.root.join("memory").to_str().unwrap().to_string()
    }
    fn n(&self) -> String {
        self.root.join("node").to_str().unwrap().to_string()
    }
    fn path(&self, rel: &str) -> String {
        self.root.join(rel).to_str().unwrap().to_string()
    }
}

fn fake_tree() -> Fake {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let m = root.join("memory");
    put(&m.join("auto_online_blocks"), "offline\n");
    put(&m.join("block_size_bytes"), "8000000\n");
    fs::set_permissions(
        m.join("block_size_bytes"),
        fs::Permissions::from_mode(0o444),
    )
    .unwrap();
    for (b, state, zones) in [
        ("memory0", "online", "none"),
        ("memory1", "online", "DMA32"),
        ("memory32", "offline", "Normal Movable"),
        ("memory100", "offline", "Movable"),
    ] {
        let d = m.join(b);
        put(&d.join("state"), &format!("{state}\n"));
        put(
            &d.join("online"),
            if state == "online" { "1\n" } else { "0\n" },
        );
        put(&d.join("valid_zones"), &format!("{zones}\n"));
        put(&d.join("removable"), "1\n");
        put(&d.join("phys_device"), "0\n");
        symlink("../../node/node0", d.join("node0")).unwrap();
        let l = root.join("node/node0").join(b);
        fs::create_dir_all(l.parent().unwrap()).unwrap();
        symlink(format!("../../memory/{b}"), l).unwrap();
    }
    let n = root.join("node");
    put(&n.join("possible"), "0-1\n");
    put(&n.join("online"), "0-1\n");
    put(&n.join("has_memory"), "0\n");
    put(&n.join("has_normal_memory"), "0\n");
    put(&n.join("has_cpu"), "0-1\n");
    put(&n.join("has_generic_initiator"), "\n");
    put(&n.join("node0/cpulist"), "0\n");
    put(
        &n.join("node0/meminfo"),
        "Node 0 MemTotal:        1032024 kB\nNode 0 MemFree:          900000 kB\n",
    );
    symlink("../../cpu/cpu0", n.join("node0/cpu0")).unwrap();
    put(&n.join("node1/cpulist"), "1\n");
    put(
        &n.join("node1/meminfo"),
        "Node 1 MemTotal:              0 kB\n",
    );
    put(
        &root.join("proc/zoneinfo"),
        "Node 0, zone      DMA\n  per-node stats\n      nr_inactive_anon 1\n  pages free     3840\n        boost    0\n        min      1\n        spanned  4095\n        present  3998\n        managed  3840\n        cma      0\n        protection: (0, 1, 1, 1, 1)\n  pagesets\n    cpu: 0\n              count: 0\n  node_unreclaimable:  0\n  start_pfn:           1\nNode 0, zone    DMA32\n  pages free     1\n        spanned  258016\n        present  258016\n        managed  225520\n  start_pfn:           4096\nNode 0, zone   Normal\n  pages free     0\n        spanned  0\n        present  0\n        managed  0\n        protection: (0, 0, 0, 0, 0)\nNode 0, zone  Movable\n  pages free     0\n        spanned  65536\n        present  65536\n        managed  65536\n  start_pfn:           1048576\n",
    );
    put(
        &root.join("proc/iomem"),
        "00000000-00000fff : Reserved\n00001000-0009fbff : System RAM\n000a0000-000bffff : PCI Bus 0000:00\n100000000-17fffffff : virtio0\n  100000000-10fffffff : System RAM (virtio_mem)\n",
    );
    put(
        &root.join("proc/meminfo"),
        "MemTotal:        1000000 kB\nMemFree:          500000 kB\nHighTotal:             0 kB\n",
    );
    put(&root.join("params/online_policy"), "contig-zones\n");
    put(&root.join("params/auto_movable_ratio"), "301\n");
    put(&root.join("bootlog"), "Zone ranges:\n  DMA      [mem 0x1000-0xffffff]\nrandom line\nMovable zone start for each node\n");
    put(&root.join("bootblocks"), "memory1\nmemory0\n");
    put(&root.join("klog"), "first message\nsecond message\n");
    let lm = root.join("loadmod.sh");
    put(&lm, "#!/bin/sh\necho \"insmod $1.ko -> rc=0\"\n");
    fs::set_permissions(&lm, fs::Permissions::from_mode(0o755)).unwrap();
    let lib = root.join("helpers.sh");
    put(&lib, HELPERS_SH);
    Fake { _dir: dir, root }
}

/// Runs `script` after sourcing the library; returns (status, stdout, stderr).
fn sh(
    shell: &[String],
    fake: &Fake,
    env: &[(&str, String)],
    script: &str,
) -> (i32, String, String) {
    let mut cmd = Command::new(&shell[0]);
    cmd.args(&shell[1..])
        .arg("-c")
        .arg(format!(". '{}'\n{script}", fake.path("helpers.sh")))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LC_ALL", "C")
        .env("OHELPER", OHELPER)
        .env("M", fake.m())
        .env("N", fake.n())
        .env("MEMHP_PROC", fake.path("proc"))
        .env("MEMHP_PARAMS_DIR", fake.path("params"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn library_has_valid_posix_syntax() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("helpers.sh");
    fs::write(&f, HELPERS_SH).unwrap();
    for shell in shells() {
        let out = Command::new(&shell[0])
            .args(&shell[1..])
            .arg("-n")
            .arg(&f)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{shell:?} -n: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn library_defaults_to_the_real_paths_and_memhp_ohelper() {
    let out = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{HELPERS_SH}\nprintf '%s|' \"$OHELPER\" \"$M\" \"$N\" \"$MEMHP_PARAMS_DIR\" \"$MEMHP_PROC\""))
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "memhp ohelper|/sys/devices/system/memory|/sys/devices/system/node|/sys/module/memory_hotplug/parameters|/proc|"
    );
}

#[test]
fn blocks_nodes_zones_iomem_params_print_the_guest_formats() {
    let fake = fake_tree();
    let n = fake.n();
    let params = fake.path("params");
    for shell in shells() {
        let (rc, out, err) = sh(&shell, &fake, &[], "blocks; nodes; zones; iomem; params");
        assert_eq!((rc, err.as_str()), (0, ""), "{shell:?}");
        let expected = format!(
            "--- blocks\n\
             memory0 state=online online=1 valid_zones=none removable=1 phys_device=0 node=0\n\
             memory1 state=online online=1 valid_zones=DMA32 removable=1 phys_device=0 node=0\n\
             memory32 state=offline online=0 valid_zones=\"Normal Movable\" removable=1 phys_device=0 node=0\n\
             memory100 state=offline online=0 valid_zones=Movable removable=1 phys_device=0 node=0\n\
             --- nodes\n\
             read {n}/possible = \"0-1\\n\"\n\
             read {n}/online = \"0-1\\n\"\n\
             read {n}/has_memory = \"0\\n\"\n\
             read {n}/has_normal_memory = \"0\\n\"\n\
             absent {n}/has_high_memory\n\
             read {n}/has_cpu = \"0-1\\n\"\n\
             read {n}/has_generic_initiator = \"\\n\"\n\
             node0 memory links: memory0 memory1 memory32 memory100 \n\
             node0 cpulist: 0\n\
             node0 Node 0 MemTotal: 1032024 kB\n\
             node1 memory links: \n\
             node1 cpulist: 1\n\
             node1 Node 1 MemTotal: 0 kB\n\
             --- zones\n\
             zone node=0 DMA     start_pfn=1 spanned=4095 present=3998 managed=3840\n\
             zone node=0 DMA32   start_pfn=4096 spanned=258016 present=258016 managed=225520\n\
             zone node=0 Normal  start_pfn=- spanned=0 present=0 managed=0\n\
             zone node=0 Movable start_pfn=1048576 spanned=65536 present=65536 managed=65536\n\
             --- iomem\n\
             00001000-0009fbff : System RAM\n\
             100000000-17fffffff : virtio0\n\
             \x20 100000000-10fffffff : System RAM (virtio_mem)\n\
             --- params\n\
             d 0755 {params}/\n\
             f 0644 {params}/auto_movable_ratio = \"301\\n\"\n\
             f 0644 {params}/online_policy = \"contig-zones\\n\"\n\
             MemTotal: 1000000 kB\n\
             HighTotal: 0 kB\n"
        );
        assert_eq!(out, expected, "{shell:?}");
    }
}

#[test]
fn memdump_and_dump_wrap_the_helper_dump() {
    let fake = fake_tree();
    let (_, direct, _) = sh(&shells()[0], &fake, &[], "$OHELPER dump \"$M\"");
    assert!(direct.starts_with(&format!("d 0755 {}/\n", fake.m())));
    for shell in shells() {
        let (_, out, _) = sh(&shell, &fake, &[], "memdump");
        assert_eq!(out, format!("--- memdump\n{direct}"), "{shell:?}");
        let (_, all, _) = sh(&shell, &fake, &[], "dump");
        let (_, parts, _) = sh(&shell, &fake, &[], "memdump; nodes; zones; iomem; params");
        assert_eq!(all, parts, "{shell:?}");
    }
}

#[test]
fn say_and_writes_print_exact_lines() {
    let fake = fake_tree();
    let m = fake.m();
    for shell in shells() {
        let (rc, out, _) = sh(
            &shell,
            &fake,
            &[],
            "say '## section' 'a\\nb'  'c  d'\nw $M/memory32/state online\nblk memory32 online 'x\\n'\nw $M/nothing/state offline\nr $M/block_size_bytes $M/nothing",
        );
        assert_eq!(rc, 0);
        assert_eq!(
            out,
            format!(
                "## section a\\nb c  d\n\
                 write {m}/memory32/state \"online\" -> OK (ret=6)\n\
                 write {m}/memory32/online \"x\\n\" -> OK (ret=2)\n\
                 write {m}/nothing/state \"offline\" -> open:ENOENT(2)\n\
                 read {m}/block_size_bytes = \"8000000\\n\"\n\
                 read {m}/nothing = <open:ENOENT(2)>\n"
            ),
            "{shell:?}"
        );
        let (_, out, _) = sh(
            &shell,
            &fake,
            &[],
            "wt $M/memory1/online 1; wa 5 $M/memory1/state online; ms",
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        for (l, head) in lines[..2].iter().zip([
            format!("write {m}/memory1/online \"1\" -> OK (ret=1) ["),
            format!("write {m}/memory1/state \"online\" -> OK (ret=6) ["),
        ]) {
            let ms = l.strip_prefix(&head).and_then(|r| r.strip_suffix(" ms]"));
            assert!(ms.is_some_and(|v| v.parse::<u64>().is_ok()), "{l}");
        }
        assert!(lines[2].parse::<u64>().is_ok(), "{}", lines[2]);
    }
}

#[test]
fn block_lists_use_the_boot_blocks_file() {
    let fake = fake_tree();
    for shell in shells() {
        let env = [("MEMHP_BOOTBLOCKS", fake.path("bootblocks"))];
        let (_, out, _) = sh(
            &shell,
            &fake,
            &env,
            "say hot; hotblocks; say boot; bootblocks; say all; allblocks",
        );
        assert_eq!(
            out,
            "hot\nmemory32\nmemory100\nboot\nmemory0\nmemory1\nall\nmemory0\nmemory1\nmemory32\nmemory100\n",
            "{shell:?}"
        );
        // without a boot blocks file every block counts as hot-added
        let (_, out, _) = sh(&shell, &fake, &[], "hotblocks; say -; bootblocks");
        assert_eq!(
            out, "memory0\nmemory1\nmemory32\nmemory100\n-\n",
            "{shell:?}"
        );
    }
}

#[test]
fn klog_prints_new_messages_once_and_bootlog_greps() {
    let fake = fake_tree();
    for shell in shells() {
        fs::write(fake.path("klog"), "first message\nsecond message\n").unwrap();
        let env = [
            ("MEMHP_KLOG", fake.path("klog")),
            ("MEMHP_BOOTLOG", fake.path("bootlog")),
        ];
        let (_, out, _) = sh(
            &shell,
            &fake,
            &env,
            "klog; say -; klog; say -; bootlog 'Zone|zone|  DMA'",
        );
        assert_eq!(
            out,
            "klog: first message\nklog: second message\n-\n-\n\
             bootlog: Zone ranges:\nbootlog:   DMA      [mem 0x1000-0xffffff]\nbootlog: Movable zone start for each node\n",
            "{shell:?}"
        );
        let env = [("MEMHP_KLOG_CMD", "printf 'from cmd\\n'".to_string())];
        let (_, out, _) = sh(&shell, &fake, &env, "klog");
        assert_eq!(out, "klog: from cmd\n", "{shell:?}");
        let (_, out, _) = sh(&shell, &fake, &[], "klog; bootlog x; say end");
        assert_eq!(out, "end\n", "{shell:?}");
    }
}

#[test]
fn loadmod_runs_the_runner_command() {
    let fake = fake_tree();
    for shell in shells() {
        let env = [("MEMHP_LOADMOD", fake.path("loadmod.sh"))];
        let (_, out, _) = sh(&shell, &fake, &env, "loadmod virtio_mem");
        assert_eq!(out, "insmod virtio_mem.ko -> rc=0\n", "{shell:?}");
        let (rc, out, err) = sh(&shell, &fake, &[], "loadmod virtio_mem");
        assert_eq!(
            (rc, out.as_str(), err.as_str()),
            (1, "", "loadmod: MEMHP_LOADMOD is not set\n"),
            "{shell:?}"
        );
    }
}

#[test]
fn host_waits_for_go_on_fd3() {
    let fake = fake_tree();
    let ctl = fake.path("ctl");
    fs::write(&ctl, "noise\r\nGO 7\r\nGO 0\nGO 1\n").unwrap();
    for shell in shells() {
        let (rc, out, _) = sh(
            &shell,
            &fake,
            &[],
            &format!("{{ host 0; say between; host 1; say after; }} 3<'{ctl}'"),
        );
        assert_eq!(
            (rc, out.as_str()),
            (0, "@@WAIT 0\nbetween\n@@WAIT 1\nafter\n"),
            "{shell:?}"
        );
        let (rc, out, _) = sh(&shell, &fake, &[], "host 3 3</dev/null");
        assert_eq!(
            (rc, out.as_str()),
            (1, "@@WAIT 3\nERROR: control channel closed\n"),
            "{shell:?}"
        );
    }
}

/// FIFOs for the resident helper in the fake tree's directory.
fn resident_fifos(fake: &Fake) -> String {
    fifos(fake, &["oh.req", "oh.resp"])
}

fn fifos(fake: &Fake, names: &[&str]) -> String {
    let dir = fake.path("oh");
    fs::create_dir_all(&dir).unwrap();
    for f in names {
        let c = std::ffi::CString::new(format!("{dir}/{f}")).unwrap();
        // SAFETY: `c` is a valid NUL-terminated path for the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }
    dir
}

#[test]
fn resident_helper_prints_exactly_what_the_helper_program_prints_in_order() {
    let fake = fake_tree();
    let dir = resident_fifos(&fake);
    let mut script = String::new();
    for i in 0..50 {
        script.push_str(&format!(
            "say step {i}; r $M/memory0/state; blocks; say between; zones; w $M/memory0/nope x; x=$(r $M/memory1/state); say \"$x\"\n"
        ));
    }
    // A helper that counts its starts.
    let count = fake.path("starts");
    let wrapper = fake.path("counting-ohelper");
    put(
        Path::new(&wrapper),
        &format!("#!/bin/sh\necho >> '{count}'\nexec '{OHELPER}' \"$@\"\n"),
    );
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).unwrap();
    let starts = || -> usize {
        let n = fs::read_to_string(&count).map_or(0, |s| s.lines().count());
        let _ = fs::remove_file(&count);
        n
    };
    for shell in shells() {
        let counted = ("OHELPER", wrapper.clone());
        let (rc_exec, exec_out, exec_err) =
            sh(&shell, &fake, std::slice::from_ref(&counted), &script);
        let exec_starts = starts();
        let (rc_res, res_out, res_err) = sh(
            &shell,
            &fake,
            &[counted, ("MEMHP_OH_DIR", dir.clone())],
            &script,
        );
        let resident_starts = starts();
        assert_eq!(
            (rc_res, &res_out, &res_err),
            (rc_exec, &exec_out, &exec_err),
            "{shell:?}"
        );
        assert!(res_out.contains("step 49\n"), "{res_out}");
        assert_eq!(exec_starts, 50 * 5, "{shell:?}");
        if shell.len() > 1 {
            // busybox sh ("read -d"): the main shell's 200 calls go to the
            // one resident helper; the 50 in $(...) start a helper each.
            assert_eq!(resident_starts, 1 + 50, "{shell:?}");
        }
    }
}

#[test]
fn transcript_mode_merges_to_exactly_the_helpers_output_even_past_the_fifo_size() {
    use memhp_scenario::ohelper::{TranscriptMerger, MARKER};
    let fake = fake_tree();
    let dir = fifos(&fake, &["oh.req", "oh.resp", "oh.out"]);
    // One frame far larger than a FIFO's 64 KiB.
    put(Path::new(&fake.path("big")), &"x".repeat(300_000));
    let redirected = fake.path("redirected");
    let script = format!(
        "say start; blocks; r $M/memory0/state; say between; r {big}; zones\n\
         blocks > '{redirected}'; say after-redirect; printf 'no newline: '; r $M/memory0/online\n",
        big = fake.path("big")
    );
    for shell in shells() {
        let (rc_exec, exec_out, exec_err) = sh(&shell, &fake, &[], &script);
        let out_fifo = format!("{dir}/oh.out");
        let drain = std::thread::spawn(move || fs::read(out_fifo).unwrap());
        let (rc, out, err) = sh(
            &shell,
            &fake,
            &[
                ("MEMHP_OH_DIR", dir.clone()),
                ("MEMHP_OH_TRANSCRIPT", "1".into()),
            ],
            &script,
        );
        let frames = drain.join().unwrap();
        let mut m = TranscriptMerger::new(&frames[..]);
        let mut merged = String::new();
        for line in out.lines() {
            merged.push_str(&m.line(line).unwrap());
        }
        merged.push_str(&m.finish());
        // Compared line by line: the big line would drown a failure.
        let (a, b): (Vec<&str>, Vec<&str>) = (merged.lines().collect(), exec_out.lines().collect());
        if let Some(i) = (0..a.len().max(b.len())).find(|&i| a.get(i) != b.get(i)) {
            let cut = |l: Option<&&str>| l.map(|l| l.chars().take(150).collect::<String>());
            panic!(
                "{shell:?}: line {i}: {:?} != {:?}",
                cut(a.get(i)),
                cut(b.get(i))
            );
        }
        assert!(merged == exec_out, "{shell:?}: outputs differ");
        assert_eq!(
            (rc, err.as_str()),
            (rc_exec, exec_err.as_str()),
            "{shell:?}"
        );
        if shell.len() > 1 {
            // busybox: the main shell's calls went through the FIFO...
            assert!(out.lines().filter(|l| l.ends_with(MARKER)).count() >= 5);
            assert!(frames.len() > 300_000);
        }
        // ... except the redirected one, whose output is in its file.
        let (_, blocks_only, _) = sh(&shell, &fake, &[], "blocks");
        assert_eq!(
            fs::read_to_string(&redirected).unwrap(),
            blocks_only,
            "{shell:?}"
        );
    }
}

#[test]
fn synchronous_klog_asks_the_runner_in_the_main_shell_and_falls_back_elsewhere() {
    let fake = fake_tree();
    let dir = fifos(&fake, &["oh.req", "oh.resp", "oh.out"]);
    let ctl = fake.path("ctl");
    fs::write(&ctl, "GO KLOG\r\nGO KLOG\n").unwrap();
    let redirected = fake.path("klog-file");
    // busybox only: the main-shell test needs "read -d".
    for shell in shells().into_iter().filter(|s| s.len() > 1) {
        let out_fifo = format!("{dir}/oh.out");
        let drain = std::thread::spawn(move || fs::read(out_fifo).unwrap());
        let (rc, out, _) = sh(
            &shell,
            &fake,
            &[
                ("MEMHP_OH_DIR", dir.clone()),
                ("MEMHP_OH_TRANSCRIPT", "1".into()),
                ("MEMHP_KLOG_SYNC", "1".into()),
                ("MEMHP_KLOG_CMD", "printf 'from cmd\\n'".into()),
            ],
            &format!(
                "{{ say a; klog; say b; klog > '{redirected}'; x=$(klog); say \"$x\"; klog; say c; }} 3<'{ctl}'"
            ),
        );
        drain.join().unwrap();
        assert_eq!(
            (rc, out.as_str()),
            (0, "a\n@@KLOG\nb\nklog: from cmd\n@@KLOG\nc\n"),
            "{shell:?}"
        );
        assert_eq!(fs::read_to_string(&redirected).unwrap(), "klog: from cmd\n");
    }
}
