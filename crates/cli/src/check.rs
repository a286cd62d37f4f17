//! `memhp scenario check DIR`: run every scenario, score it against the
//! oracle's transcript with `memhp_scenario`'s diff, print the table.

use anyhow::{Context, Result};
use memhp_scenario::{diff_texts, render_table, DiffReport};
use std::path::Path;

/// Replay one scenario in a process of its own (`memhp scenario run`), as
/// a user would: no state of an earlier replay (allocator, kernel FUSE
/// state of the process) can change it or its timing. Returns the
/// transcript and the replay's wall time from its END line.
fn run_isolated(file: &Path, initrd_size: Option<u64>) -> Result<(String, f64)> {
    let exe = std::env::current_exe().context("locate the memhp binary")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["scenario", "run"]).arg(file);
    if let Some(b) = initrd_size {
        cmd.arg(format!("--initrd-size={b}"));
    }
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .context("run the scenario")?;
    if !out.status.success() {
        anyhow::bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let transcript = String::from_utf8(out.stdout).context("transcript is not UTF-8")?;
    let secs = transcript
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("=== END: "))
        .and_then(|l| l.split(", wall ").nth(1))
        .and_then(|w| w.strip_suffix("s ===")?.parse().ok())
        .context("the transcript has no END line with the wall time")?;
    Ok((transcript, secs))
}

/// Run every scenario of `dir`; returns the process exit code.
pub fn run(
    dir: &Path,
    baseline: Option<&Path>,
    out: Option<&Path>,
    verbose: bool,
    initrd_size: Option<u64>,
) -> Result<i32> {
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
        let expected_path = transcripts.join(format!("{name}.txt"));
        let expected = std::fs::read_to_string(&expected_path)
            .with_context(|| format!("read {}", expected_path.display()))?;
        let (actual, secs) = match run_isolated(f, initrd_size) {
            Ok(o) => o,
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
