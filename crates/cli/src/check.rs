//! `memhp scenario check DIR`: the conformance table.

use crate::runner::{self, Scenario};
use crate::tdiff;
use anyhow::{Context, Result};
use memhp_model::KernelVersion;
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
    println!("| scenario | interface lines | match | oracle wall | memhp | speed-up |");
    println!("|---|---:|---:|---:|---:|---:|");
    let (mut tm, mut tt) = (0, 0);
    let mut regressions = Vec::new();
    let mut details = Vec::new();
    for f in &files {
        let name = f
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("")
            .to_string();
        let text = std::fs::read_to_string(f)?;
        let expected =
            std::fs::read_to_string(transcripts.join(format!("{name}.txt"))).unwrap_or_default();
        let shown = format!("scenarios/{name}.scn");
        let result = Scenario::parse(&name, &text)
            .and_then(|s| runner::run(&s, &shown, KernelVersion::V6_1));
        let (actual, secs) = match result {
            Ok(o) => (o.transcript, o.elapsed.as_secs_f64()),
            Err(e) => (
                format!("=== TRANSCRIPT ===\nmemhp failed: {e:#}\n=== END: failed ===\n"),
                0.0,
            ),
        };
        if let Some(o) = out {
            std::fs::write(o.join(format!("{name}.txt")), &actual)?;
        }
        let sc = tdiff::score(&expected, &actual);
        tm += sc.matched;
        tt += sc.total;
        let wall = tdiff::wall_seconds(&expected).unwrap_or(0.0);
        let speed = if secs > 0.0 {
            format!("{:.0}x", wall / secs)
        } else {
            "-".into()
        };
        println!(
            "| {name} | {}/{} | {:.1} % | {wall:.0} s | {:.3} s | {speed} |",
            sc.matched,
            sc.total,
            sc.percent(),
            secs
        );
        if must_match.contains(&name) && sc.matched != sc.total {
            regressions.push(name.clone());
        }
        if verbose {
            let mut buf = Vec::new();
            tdiff::report(&name, &sc, &mut buf)?;
            details.push(String::from_utf8_lossy(&buf).to_string());
        }
    }
    let pct = if tt == 0 {
        100.0
    } else {
        100.0 * tm as f64 / tt as f64
    };
    println!("| **total** | {tm}/{tt} | {pct:.1} % | | | |");
    for d in details {
        print!("{d}");
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
