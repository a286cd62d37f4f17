//! `memhp scenario diff` / `check`: compare transcripts the way the oracle
//! README defines fidelity. Ignored: the ` [N ms]` of timed writes, lines
//! marked `(varies)`, struct-page dumps in `klog:` output, the boot log's
//! "deferred pages initialised in N ms", host-side wording (`HOST ...`) and
//! the END line. What remains of the expected transcript are its interface
//! lines; the score is how many of them the actual transcript has, in order
//! (longest common subsequence).

use anyhow::{Context, Result};

/// The TRANSCRIPT section of a transcript file.
pub fn transcript_lines(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut inside = false;
    for l in text.lines() {
        if l == "=== TRANSCRIPT ===" {
            inside = true;
            continue;
        }
        if l.starts_with("=== END") {
            break;
        }
        if inside {
            out.push(l);
        }
    }
    out
}

/// Wall seconds recorded in the END line.
pub fn wall_seconds(text: &str) -> Option<f64> {
    let end = text.lines().find(|l| l.starts_with("=== END"))?;
    let w = end.split("wall ").nth(1)?;
    w.trim_end_matches(" ===")
        .trim_end_matches('s')
        .parse()
        .ok()
}

const PAGE_DUMP: [&str; 8] = [
    "page:",
    "flags:",
    "raw:",
    "page dumped because:",
    "head:",
    "memcg:",
    "anon flags:",
    "page_owner",
];

/// The interface line a transcript line stands for, or `None` if ignored.
pub fn normalize(line: &str) -> Option<String> {
    if line.starts_with("HOST ")
        || line.contains("(varies)")
        || line.contains("deferred pages initialised in")
    {
        return None;
    }
    if let Some(k) = line.strip_prefix("klog: ") {
        if PAGE_DUMP.iter().any(|p| k.starts_with(p)) {
            return None;
        }
    }
    if let (Some(open), true) = (line.rfind(" ["), line.ends_with(" ms]")) {
        if line[open + 2..line.len() - 4]
            .chars()
            .all(|c| c.is_ascii_digit())
        {
            return Some(line[..open].to_string());
        }
    }
    Some(line.to_string())
}

/// A comparison of two transcripts.
pub struct Score {
    pub matched: usize,
    pub total: usize,
    /// Expected interface lines not matched (line number in the TRANSCRIPT
    /// section, text).
    pub missing: Vec<(usize, String)>,
    /// Actual lines with no counterpart.
    pub extra: Vec<(usize, String)>,
}

impl Score {
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            100.0
        } else {
            100.0 * self.matched as f64 / self.total as f64
        }
    }
}

/// Score `actual` against `expected` (whole transcript files).
pub fn score(expected: &str, actual: &str) -> Score {
    let norm = |t: &str| -> Vec<(usize, String)> {
        transcript_lines(t)
            .into_iter()
            .enumerate()
            .filter_map(|(i, l)| normalize(l).map(|n| (i + 1, n)))
            .collect()
    };
    let (e, a) = (norm(expected), norm(actual));
    let (n, m) = (e.len(), a.len());
    let mut dp = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            dp[i][j] = if e[i].1 == a[j].1 {
                dp[i + 1][j + 1] + 1
            } else {
                dp[i + 1][j].max(dp[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let (mut missing, mut extra) = (Vec::new(), Vec::new());
    while i < n && j < m {
        if e[i].1 == a[j].1 {
            i += 1;
            j += 1;
        } else if dp[i + 1][j] >= dp[i][j + 1] {
            missing.push(e[i].clone());
            i += 1;
        } else {
            extra.push(a[j].clone());
            j += 1;
        }
    }
    missing.extend(e[i..].iter().cloned());
    extra.extend(a[j..].iter().cloned());
    Score {
        matched: dp[0][0] as usize,
        total: n,
        missing,
        extra,
    }
}

/// Print a diff report.
pub fn report(name: &str, s: &Score, out: &mut impl std::io::Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{name}: {}/{} interface lines ({:.1} %)",
        s.matched,
        s.total,
        s.percent()
    )?;
    for (n, l) in &s.missing {
        writeln!(out, "  - expected line {n}: {l}")?;
    }
    for (n, l) in &s.extra {
        writeln!(out, "  + actual line {n}: {l}")?;
    }
    Ok(())
}

/// `memhp scenario diff EXPECTED ACTUAL`.
pub fn diff_files(expected: &std::path::Path, actual: &std::path::Path) -> Result<Score> {
    let e = std::fs::read_to_string(expected)
        .with_context(|| format!("read {}", expected.display()))?;
    let a =
        std::fs::read_to_string(actual).with_context(|| format!("read {}", actual.display()))?;
    Ok(score(&e, &a))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "=== SCENARIO x ===\n=== TRANSCRIPT ===\nuname -r: 6.1\nwrite /a \"1\" -> OK (ret=1) [26 ms]\nHOST hotadd d1\nklog: page:(____ptrval____) refcount:1\nklog: memory memory32: Offline failed.\nmeminfo (varies): MemFree: 1 kB\n=== END: complete, qemu rc=0, wall 10s ===\n";

    #[test]
    fn identical_transcripts_score_everything() {
        let s = score(T, T);
        assert_eq!((s.matched, s.total), (3, 3));
        assert_eq!(wall_seconds(T), Some(10.0));
    }

    #[test]
    fn ignored_parts_do_not_count() {
        let other = T
            .replace("[26 ms]", "[0 ms]")
            .replace("HOST hotadd d1", "HOST something else")
            .replace("refcount:1", "refcount:2")
            .replace("MemFree: 1", "MemFree: 9");
        let s = score(T, &other);
        assert_eq!((s.matched, s.total), (3, 3));
    }

    #[test]
    fn a_changed_interface_line_costs_exactly_one() {
        let other = T.replace("OK (ret=1)", "EINVAL(22)");
        let s = score(T, &other);
        assert_eq!((s.matched, s.total), (2, 3));
        assert_eq!(
            s.missing,
            vec![(2, "write /a \"1\" -> OK (ret=1)".to_string())]
        );
        assert_eq!(s.extra.len(), 1);
    }
}
