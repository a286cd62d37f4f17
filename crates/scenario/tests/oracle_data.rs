//! The real oracle data: every scenario parses and agrees with the transcript
//! the oracle runner recorded for it, and the diff scores transcripts
//! against themselves and perturbed copies exactly.

use memhp_scenario::{
    classify_line, diff_texts, render_table, HostAction, LineKind, MemSpec, QemuArg, Scenario,
    Step, Transcript,
};
use std::path::PathBuf;
use std::time::Duration;

fn oracle_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/oracle");
    assert!(
        dir.join("scenarios").is_dir() && dir.join("transcripts").is_dir(),
        "the oracle data is missing: expected scenarios/ and transcripts/ under {} \
         (CARGO_MANIFEST_DIR/../../../shared/oracle)",
        dir.display()
    );
    dir
}

/// (name, scenario text, transcript text) for every scenario, sorted.
fn all_data() -> Vec<(String, String, String)> {
    let dir = oracle_dir();
    let mut names: Vec<String> = std::fs::read_dir(dir.join("scenarios"))
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            n.strip_suffix(".scn").map(String::from)
        })
        .collect();
    names.sort();
    assert_eq!(
        names.len(),
        12,
        "expected the 12 recorded scenarios, found {names:?}"
    );
    names
        .into_iter()
        .map(|n| {
            let scn = std::fs::read_to_string(dir.join(format!("scenarios/{n}.scn"))).unwrap();
            let txt = std::fs::read_to_string(dir.join(format!("transcripts/{n}.txt")))
                .unwrap_or_else(|e| panic!("transcript of {n}: {e}"));
            (n, scn, txt)
        })
        .collect()
}

fn load(name: &str) -> Scenario {
    Scenario::load(&oracle_dir().join(format!("scenarios/{name}.scn"))).unwrap()
}

#[test]
fn every_real_scenario_parses_and_matches_its_transcript() {
    for (name, scn_text, txt) in all_data() {
        let scn = Scenario::parse(&name, &scn_text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let t = Transcript::parse(&txt).unwrap();
        assert_eq!(t.name.as_deref(), Some(name.as_str()));
        // the transcript header repeats the scenario text
        assert_eq!(
            t.scenario_text,
            scn_text.trim_end().lines().collect::<Vec<_>>(),
            "{name}"
        );
        // host step lines appear as written, in order, where the guest waited
        let host_lines: Vec<&str> = t
            .body
            .iter()
            .filter(|l| l.starts_with('@'))
            .map(String::as_str)
            .collect();
        let host_texts: Vec<&str> = scn.host_steps().map(|h| h.text.as_str()).collect();
        assert_eq!(host_lines, host_texts, "{name}");
        // sections are echoed as written
        let sections: Vec<&str> = t
            .body
            .iter()
            .filter(|l| l.starts_with("## "))
            .map(String::as_str)
            .collect();
        let scn_sections: Vec<&str> = scn
            .steps
            .iter()
            .filter_map(|s| match s {
                Step::Section(x) => Some(x.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(sections, scn_sections, "{name}");
        // headers agree with the recorded QEMU command line
        let qemu_line = &t.qemu[1];
        assert!(
            qemu_line.contains(&format!(
                " -M {} -m {} -smp {} ",
                scn.machine, scn.mem.raw, scn.smp
            )),
            "{name}: {qemu_line}"
        );
        let append = format!(
            "'console=ttyS0 printk.time=0 loglevel=3 panic=-1 nokaslr rdinit=/init{}'",
            scn.cmdline
                .iter()
                .map(|w| format!(" {w}"))
                .collect::<String>()
        );
        assert!(
            qemu_line.contains(&format!("-append {append} ")),
            "{name}: {qemu_line}"
        );
        // the compiled guest script has one `host N` per host step
        let script = scn.guest_script();
        let hosts: Vec<&str> = script
            .lines()
            .filter(|l| l.trim_start().starts_with("host "))
            .collect();
        assert_eq!(hosts.len(), host_texts.len(), "{name}");
        for (i, h) in hosts.iter().enumerate() {
            assert_eq!(h.trim_start(), format!("host {i}"), "{name}");
        }
        assert!(t.end.as_ref().is_some_and(|e| e.is_complete()), "{name}");
    }
}

#[test]
fn scenario_headers_are_typed() {
    let numa = load("numa-memoryless");
    assert_eq!(numa.smp, 2);
    assert_eq!(numa.mem, MemSpec::default());
    assert_eq!(numa.cmdline, vec!["memhp_default_state=offline"]);
    let [QemuArg::MemoryBackend(b), QemuArg::NumaNode(n0), QemuArg::NumaNode(n1)] = &numa.qemu[..]
    else {
        panic!("numa-memoryless qemu args: {:?}", numa.qemu);
    };
    assert_eq!(
        (b.qom_type.as_str(), b.id.as_str(), b.size),
        ("memory-backend-ram", "ram0", 1 << 30)
    );
    assert_eq!((n0.nodeid, n0.memdev.as_deref()), (Some(0), Some("ram0")));
    assert_eq!((n0.cpus[0].first, n0.cpus[0].last), (0, 0));
    assert_eq!((n1.nodeid, n1.memdev.as_deref()), (Some(1), None));
    assert_eq!((n1.cpus[0].first, n1.cpus[0].last), (1, 1));

    let vm = load("virtio-mem");
    assert_eq!(
        (vm.mem.size, vm.mem.slots, vm.mem.maxmem),
        (1 << 30, None, Some(4 << 30))
    );
    assert_eq!(vm.timeout, Duration::from_secs(1200));
    let [QemuArg::MemoryBackend(b), QemuArg::VirtioMem(v)] = &vm.qemu[..] else {
        panic!("virtio-mem qemu args: {:?}", vm.qemu);
    };
    assert_eq!((b.id.as_str(), b.size), ("vmem0", 2 << 30));
    assert_eq!(
        (
            v.id.as_deref(),
            v.memdev.as_str(),
            v.node,
            v.requested_size,
            v.block_size
        ),
        (Some("vm0"), "vmem0", Some(0), 0, Some(2 << 20))
    );
    let resizes: Vec<u64> = vm
        .host_steps()
        .filter_map(|h| match &h.action {
            HostAction::VmemResize { size, wait, .. } => {
                assert_eq!(*wait, Duration::from_secs(120));
                Some(*size)
            }
            _ => None,
        })
        .collect();
    assert_eq!(resizes, vec![256 << 20, 300 << 20, 128 << 20, 0]);

    let mc = load("movablecore");
    assert_eq!(
        (mc.mem.size, mc.mem.slots, mc.mem.maxmem),
        (4 << 30, Some(4), Some(8 << 30))
    );
    assert_eq!(
        mc.cmdline,
        vec!["movablecore=256M", "memhp_default_state=offline"]
    );

    let am = load("auto-movable");
    let sizes: Vec<u64> = am
        .host_steps()
        .map(|h| match &h.action {
            HostAction::Hotadd(a) => {
                assert_eq!(
                    (a.node, a.driver.as_str(), a.wait),
                    (Some(0), "pc-dimm", Duration::from_secs(300))
                );
                a.size
            }
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        sizes,
        vec![512 << 20, 512 << 20, 1536 << 20, 1 << 30, 256 << 20]
    );

    let slab = load("offline-busy-slab");
    assert_eq!(slab.timeout, Duration::from_secs(1500));
    assert_eq!(
        slab.steps[0],
        Step::Shell("mkdir /tmp/f && cd /tmp/f && seq 1 40000 | xargs touch && cd /".into())
    );

    let ni = load("notifier-inject");
    let unplug_waits: Vec<Duration> = ni
        .host_steps()
        .filter_map(|h| match &h.action {
            HostAction::Unplug { wait, .. } => Some(*wait),
            _ => None,
        })
        .collect();
    assert_eq!(unplug_waits, vec![Duration::from_secs(60); 2]);
}

#[test]
fn every_transcript_against_itself_scores_100_percent() {
    for (name, _, txt) in all_data() {
        let r = diff_texts(&txt, &txt).unwrap();
        assert!(r.total > 0, "{name}");
        assert_eq!(r.matched, r.total, "{name}");
        assert_eq!(r.actual_total, r.total, "{name}");
        assert!(r.mismatches.is_empty(), "{name}");
        assert_eq!(r.percent(), 100.0, "{name}");
    }
}

/// Rewrites what the diff must ignore: write durations, `(varies)` lines,
/// HOST lines (reworded, one dropped, one added), page dump values, the
/// deferred-pages timing and the END wall time.
fn perturb(txt: &str) -> String {
    let mut out = Vec::new();
    let mut host_seen = 0;
    for line in txt.lines() {
        if let Some(i) = line.rfind(" [") {
            if line.starts_with("write ") && line.ends_with(" ms]") {
                out.push(format!("{} [98765 ms]", &line[..i]));
                continue;
            }
        }
        if line.contains("(varies)") {
            out.push(format!("{line} 12345 different"));
            continue;
        }
        if classify_line(line) == LineKind::Host {
            host_seen += 1;
            match host_seen % 3 {
                0 => {}
                1 => out.push("HOST memhp says it differently".to_string()),
                _ => {
                    out.push(line.to_string());
                    out.push("HOST an extra host line".to_string());
                }
            }
            continue;
        }
        if classify_line(line) == LineKind::PageDump {
            // new values after the dump line's prefix
            let (head, tail) = line.split_at(16.min(line.len()));
            out.push(format!("{head}{}", tail.replace('0', "7")));
            continue;
        }
        if line.contains("deferred pages initialised in ") {
            out.push(line.replace("40ms", "9999ms").replace("44ms", "1ms"));
            continue;
        }
        if line.starts_with("=== END: ") {
            out.push(line.replace(|c: char| c.is_ascii_digit(), "3"));
            continue;
        }
        out.push(line.to_string());
    }
    out.join("\n") + "\n"
}

#[test]
fn ignored_variations_keep_the_score_at_100_percent() {
    for (name, _, txt) in all_data() {
        let changed = perturb(&txt);
        assert_ne!(changed, txt, "{name}: nothing was perturbed");
        let r = diff_texts(&txt, &changed).unwrap();
        assert_eq!(
            (r.matched, r.total),
            (r.total, r.actual_total),
            "{name}: {}",
            r.render_mismatches(Some(5))
        );
        assert!(
            r.mismatches.is_empty(),
            "{name}: {}",
            r.render_mismatches(Some(5))
        );
        let base = diff_texts(&txt, &txt).unwrap();
        assert_eq!(r.total, base.total, "{name}");
    }
}

#[test]
fn one_changed_interface_line_lowers_the_score_by_exactly_one() {
    for (name, _, txt) in all_data() {
        let t = Transcript::parse(&txt).unwrap();
        let interface: Vec<usize> = (0..t.body.len())
            .filter(|&i| classify_line(&t.body[i]) == LineKind::Interface)
            .collect();
        let picks = [
            interface[0],
            interface[interface.len() / 2],
            interface[interface.len() - 1],
        ];
        for &bi in &picks {
            let file_line = t.body_line_number(bi);
            let mut lines: Vec<String> = txt.lines().map(String::from).collect();
            let original = lines[file_line - 1].clone();
            lines[file_line - 1] = format!("{original} <changed>");
            let changed = lines.join("\n") + "\n";
            let r = diff_texts(&txt, &changed).unwrap();
            assert_eq!(r.matched, r.total - 1, "{name}: line {file_line}");
            assert_eq!(
                r.mismatches.len(),
                1,
                "{name}: {}",
                r.render_mismatches(None)
            );
            let m = &r.mismatches[0];
            assert_eq!(
                m.expected.as_ref().map(|e| (e.line, e.text.as_str())),
                Some((file_line, original.as_str()))
            );
            assert_eq!(
                m.actual.as_ref().map(|a| (a.line, a.text.clone())),
                Some((file_line, format!("{original} <changed>")))
            );
            // a deleted line costs one too
            lines.remove(file_line - 1);
            let deleted = lines.join("\n") + "\n";
            let r = diff_texts(&txt, &deleted).unwrap();
            assert_eq!(r.matched, r.total - 1, "{name}: deleted line {file_line}");
        }
    }
}

#[test]
fn table_over_all_scenarios_uses_oracle_wall_times() {
    let mut reports = Vec::new();
    for (name, _, txt) in all_data() {
        let mut r = diff_texts(&txt, &txt).unwrap();
        let wall = Transcript::parse(&txt).unwrap().end.unwrap().wall_secs;
        assert_eq!(r.oracle_wall_secs, Some(wall), "{name}");
        r.replay_secs = Some(wall / 10.0);
        reports.push(r);
    }
    let table = render_table(&reports);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2 + 12 + 1);
    let hot = lines
        .iter()
        .find(|l| l.starts_with("hotadd-online-offline "))
        .unwrap();
    assert!(hot.ends_with("| 100.0% |              10.0x"), "{hot}");
    assert!(lines[14].starts_with("TOTAL "), "{}", lines[14]);
    assert!(
        lines[14].ends_with("| 100.0% |              10.0x"),
        "{}",
        lines[14]
    );
}
