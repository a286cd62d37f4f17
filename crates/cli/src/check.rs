//! `memhp scenario check DIR`: run every scenario, score it against the
//! oracle's transcript with `memhp_scenario`'s diff, print the table.

use crate::runner::{self, Scenario};
use anyhow::{Context, Result};
use memhp_model::KernelVersion;
use memhp_scenario::{diff_texts, render_table, DiffReport};
use std::path::Path;

/// Run every scenario of `dir`; returns the process exit code.
pub fn run(dir: &Path, baseline: Option<&Path>, out: Option<&Path>, verbose: bool) -> Result<i32> {
    let transcripts = dir.parent().unwrap_or(Path::new(".")).join("transcripts");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("read {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "scn"))
        .collect();
    files.sort();
    let must_match: Vec<String> = match baseline {
        Some(b) => std::fs::read_to_string(b)
            .with_context(|| format!("read {}", b.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect(),
        None => Vec::new(),
    };
    if let Some(o) = out {
        std::fs::create_dir_all(o)?;
    }
    let mut reports: Vec<DiffReport> = Vec::new();
    let mut regressions = Vec::new();
    for f in &files {
        let name = f
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
        let text = std::fs::read_to_string(f)?;
        let expected_path = transcripts.join(format!("{name}.txt"));
        let expected = std::fs::read_to_string(&expected_path)
            .with_context(|| format!("read {}", expected_path.display()))?;
        let shown = format!("scenarios/{name}.scn");
        let result = Scenario::parse(&name, &text)
            .map_err(anyhow::Error::from)
            .and_then(|s| runner::run(&s, &shown, KernelVersion::V6_1));
        let (actual, secs) = match result {
            Ok(o) => (o.transcript, o.elapsed.as_secs_f64()),
            Err(e) => (format!("=== TRANSCRIPT ===\nmemhp failed: {e:#}\n=== END: failed, qemu rc=1, wall 0s ===\n"), 0.0),
        };
        if let Some(o) = out {
            std::fs::write(o.join(format!("{name}.txt")), &actual)?;
        }
        let mut report =
            diff_texts(&expected, &actual).with_context(|| format!("{name}: transcript"))?;
        report.scenario = name.clone();
        report.replay_secs = Some(secs);
        if must_match.contains(&name) && report.matched != report.total {
            regressions.push(name.clone());
        }
        reports.push(report);
    }
    print!("{}", render_table(&reports));
    if verbose {
        for r in &reports {
            if r.matched != r.total {
                println!("\n{}: {}/{}", r.scenario, r.matched, r.total);
                print!("{}", r.render_mismatches(Some(50)));
            }
        }
    }
    if !regressions.is_empty() {
        eprintln!(
            "memhp: regression: {} matched completely before and no longer do",
            regressions.join(", ")
        );
        return Ok(1);
    }
    Ok(0)
}
