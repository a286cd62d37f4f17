//! The QEMU pc firmware layout of the boot log against recordings of the
//! real kernel (`conformance/firmware`): every scenario is replayed with
//! `memhp scenario run` and its `bootlog:` lines must equal the recording's
//! exactly (ACPI table addresses and lengths, SRAT and NUMA lines, the
//! faked node without an SRAT). Only the `deferred pages` timing is masked,
//! as the oracle documents it varies.

use std::path::Path;
use std::process::Command;

fn bootlog_lines(transcript: &str) -> Vec<String> {
    transcript
        .lines()
        .filter(|l| l.starts_with("bootlog: "))
        .map(|l| match l.find("deferred pages initialised in ") {
            Some(i) => format!("{}N ms", &l[..i + "deferred pages initialised in ".len()]),
            None => l.to_string(),
        })
        .collect()
}

#[test]
fn acpi_tables_srat_and_numa_lines_match_the_real_kernel_for_every_recorded_machine() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../conformance/firmware");
    let mut scenarios: Vec<_> = std::fs::read_dir(dir.join("scenarios"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "scn"))
        .collect();
    scenarios.sort();
    assert!(scenarios.len() >= 20, "{scenarios:?}");
    for scn in scenarios {
        let name = scn.file_stem().unwrap().to_str().unwrap().to_string();
        let expected =
            std::fs::read_to_string(dir.join("transcripts").join(format!("{name}.txt"))).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_memhp"))
            .args(["scenario", "run"])
            .arg(&scn)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let actual = String::from_utf8(out.stdout).unwrap();
        let (want, got) = (bootlog_lines(&expected), bootlog_lines(&actual));
        assert!(want.len() >= 5, "{name}: too few recorded lines");
        assert_eq!(got, want, "{name}");
    }
}
