//! `memhp scenario diff EXPECTED ACTUAL`: compare the TRANSCRIPT sections of
//! two transcripts line by line, ignoring what legitimately varies.
//!
//! Rules (the oracle README's "Determinism" section, plus host wording):
//!
//! * **Excluded** lines (on both sides; they neither count nor align):
//!   * `HOST ...` lines: the host's result lines are memhp's own words (the
//!     `@...` step lines themselves are kept);
//!   * lines containing `(varies)`;
//!   * struct page dump lines in `klog:` output, see [`is_page_dump_line`].
//! * **Normalised** lines (compared after rewriting, on both sides):
//!   * a `write ...` line loses its ` [N ms]` duration suffix;
//!   * `deferred pages initialised in N ms` (any number, with or without a
//!     space before `ms`) compares equal to any other number.
//! * The END line's wall time is not compared (it is parsed into
//!   [`crate::transcript::EndLine::wall_secs`] for the speed ratio).
//!
//! The expected lines that remain are the *interface lines*. They are
//! aligned with the actual interface lines by a longest common subsequence;
//! score = matched interface lines / expected interface lines.

use crate::transcript::{Transcript, TranscriptError};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;

/// How the diff treats a transcript line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineKind {
    /// Compared (after [`normalize_line`]).
    Interface,
    /// A `HOST ...` result line: memhp's own wording, excluded.
    Host,
    /// Contains `(varies)`: excluded.
    Varies,
    /// A struct page dump line in `klog:` output: excluded.
    PageDump,
}

/// What follows `klog: ` on the lines of the kernel's `dump_page()` output
/// (mm/debug.c) and of the register dump of a stack trace: they print
/// pointers, page contents and register values that differ between runs.
const PAGE_DUMP_PREFIXES: &[&str] = &[
    "page:",
    "head:",
    "memcg:",
    "aops:",
    "flags: 0x",
    "anon flags:",
    "ksm flags:",
    "raw: ",
    "page dumped because:",
    "RIP: ",
    "RSP: ",
    "RAX: ",
    "RDX: ",
    "RBP: ",
    "R10: ",
    "R13: ",
    "Code: ",
];

/// A `klog:` line that belongs to a struct page dump or a register dump:
/// `page:(____ptrval____) refcount:...`, `head:...`, `memcg:...`,
/// `aops:...`, `[anon |ksm ]flags: 0x...(...)`, `raw: <hex words>`,
/// `page dumped because: ...`, the `RIP:`/`RSP:`/`RAX:`/`RDX:`/`RBP:`/
/// `R10:`/`R13:`/`Code:` register lines, and any `klog:` line with a hashed
/// pointer `(____ptrval____)`.
pub fn is_page_dump_line(line: &str) -> bool {
    let Some(msg) = line.strip_prefix("klog: ") else {
        return false;
    };
    msg.contains("(____ptrval____)") || PAGE_DUMP_PREFIXES.iter().any(|p| msg.starts_with(p))
}

/// Classifies one TRANSCRIPT line.
pub fn classify_line(line: &str) -> LineKind {
    if line.starts_with("HOST ") || line == "HOST" {
        LineKind::Host
    } else if line.contains("(varies)") {
        LineKind::Varies
    } else if is_page_dump_line(line) {
        LineKind::PageDump
    } else {
        LineKind::Interface
    }
}

/// The text an interface line is compared by: without the ` [N ms]` suffix
/// of a `write` line, and with the number in `deferred pages initialised in
/// N ms` replaced by `N`.
pub fn normalize_line(line: &str) -> Cow<'_, str> {
    if line.starts_with("write ") {
        if let Some(stripped) = strip_ms_suffix(line) {
            return Cow::Borrowed(stripped);
        }
    }
    const DEFERRED: &str = "deferred pages initialised in ";
    if let Some(i) = line.find(DEFERRED) {
        let start = i + DEFERRED.len();
        let rest = &line[start..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let after = rest[digits..].trim_start_matches(' ');
        if digits > 0 && after.starts_with("ms") {
            return Cow::Owned(format!("{}N ms{}", &line[..start], &after[2..]));
        }
    }
    Cow::Borrowed(line)
}

/// `write ... [12 ms]` -> `write ...`; the duration may carry a sign or a
/// fraction.
fn strip_ms_suffix(line: &str) -> Option<&str> {
    let inner_end = line.strip_suffix(" ms]")?;
    let open = inner_end.rfind(" [")?;
    let num = &inner_end[open + 2..];
    let num = num.strip_prefix('-').unwrap_or(num);
    let ok = !num.is_empty()
        && num.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && num.bytes().any(|b| b.is_ascii_digit());
    ok.then(|| &line[..open])
}

/// A transcript line with its 1-based line number in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberedLine {
    /// 1-based line number in the transcript file.
    pub line: usize,
    /// The line as written.
    pub text: String,
}

/// One difference: an expected interface line without a match (`actual`
/// is the unmatched actual line at the same place, if any), or an extra
/// actual line (`expected` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The expected line that was not matched.
    pub expected: Option<NumberedLine>,
    /// The actual line in its place.
    pub actual: Option<NumberedLine>,
}

/// The comparison of one scenario's transcripts.
#[derive(Debug, Clone, PartialEq)]
pub struct DiffReport {
    /// The scenario name (from the expected transcript's SCENARIO line).
    pub scenario: String,
    /// Expected interface lines matched in the actual transcript.
    pub matched: usize,
    /// Expected interface lines.
    pub total: usize,
    /// Actual interface lines.
    pub actual_total: usize,
    /// The differences, in transcript order.
    pub mismatches: Vec<Mismatch>,
    /// The oracle run's wall time (expected END line), if present.
    pub oracle_wall_secs: Option<f64>,
    /// memhp's own run time for the scenario: set by the caller.
    pub replay_secs: Option<f64>,
}

impl DiffReport {
    /// matched / total in percent (100 when there is nothing to match).
    pub fn percent(&self) -> f64 {
        if self.total == 0 {
            100.0
        } else {
            self.matched as f64 * 100.0 / self.total as f64
        }
    }

    /// Expected interface lines that were not matched.
    pub fn missing(&self) -> usize {
        self.total - self.matched
    }

    /// How many times faster memhp replayed the scenario than the oracle
    /// ran it: oracle wall time / replay time.
    pub fn speed_ratio(&self) -> Option<f64> {
        speed_ratio(self.oracle_wall_secs?, self.replay_secs?)
    }

    /// The mismatches for display, at most `limit` of them (all with
    /// `None`):
    ///
    /// ```text
    /// - expected line 123: write ... -> EBUSY(16)
    /// +   actual line 130: write ... -> OK (ret=7)
    /// + extra actual line 140: ...
    /// ```
    pub fn render_mismatches(&self, limit: Option<usize>) -> String {
        let mut s = String::new();
        let shown = limit.unwrap_or(usize::MAX).min(self.mismatches.len());
        for m in &self.mismatches[..shown] {
            match (&m.expected, &m.actual) {
                (Some(e), Some(a)) => {
                    let _ = writeln!(s, "- expected line {}: {}", e.line, e.text);
                    let _ = writeln!(s, "+   actual line {}: {}", a.line, a.text);
                }
                (Some(e), None) => {
                    let _ = writeln!(s, "- expected line {}: {}", e.line, e.text);
                    let _ = writeln!(s, "+   actual: (missing)");
                }
                (None, Some(a)) => {
                    let _ = writeln!(s, "+ extra actual line {}: {}", a.line, a.text);
                }
                (None, None) => {}
            }
        }
        if shown < self.mismatches.len() {
            let _ = writeln!(s, "... {} more", self.mismatches.len() - shown);
        }
        s
    }
}

/// oracle wall seconds / replay seconds (`None` if either is not positive).
pub fn speed_ratio(oracle_wall_secs: f64, replay_secs: f64) -> Option<f64> {
    (oracle_wall_secs > 0.0 && replay_secs > 0.0 && replay_secs.is_finite())
        .then(|| oracle_wall_secs / replay_secs)
}

/// Parses two transcript texts and compares them.
pub fn diff_texts(expected: &str, actual: &str) -> Result<DiffReport, TranscriptError> {
    Ok(diff_transcripts(
        &Transcript::parse(expected)?,
        &Transcript::parse(actual)?,
    ))
}

/// The interface lines of a transcript body: (index in body, normalised text).
fn interface_lines(t: &Transcript) -> Vec<(usize, Cow<'_, str>)> {
    t.body
        .iter()
        .enumerate()
        .filter(|(_, l)| classify_line(l) == LineKind::Interface)
        .map(|(i, l)| (i, normalize_line(l)))
        .collect()
}

/// Compares the TRANSCRIPT sections of `expected` and `actual`.
pub fn diff_transcripts(expected: &Transcript, actual: &Transcript) -> DiffReport {
    let exp = interface_lines(expected);
    let act = interface_lines(actual);
    let mut ids: HashMap<&str, u32> = HashMap::new();
    let mut intern = |s| -> u32 {
        let n = ids.len() as u32;
        *ids.entry(s).or_insert(n)
    };
    let a: Vec<u32> = exp.iter().map(|(_, s)| intern(s.as_ref())).collect();
    let b: Vec<u32> = act.iter().map(|(_, s)| intern(s.as_ref())).collect();
    let pairs = lcs_pairs(&a, &b);

    let numbered = |t: &Transcript, i: usize| NumberedLine {
        line: t.body_line_number(i),
        text: t.body[i].clone(),
    };
    let mut mismatches = Vec::new();
    let (mut ai, mut bi) = (0usize, 0usize);
    let sentinel = (a.len(), b.len());
    for &(pa, pb) in pairs.iter().chain(std::iter::once(&sentinel)) {
        let gap_a = pa - ai;
        let gap_b = pb - bi;
        for k in 0..gap_a.max(gap_b) {
            mismatches.push(Mismatch {
                expected: (k < gap_a).then(|| numbered(expected, exp[ai + k].0)),
                actual: (k < gap_b).then(|| numbered(actual, act[bi + k].0)),
            });
        }
        ai = pa + 1;
        bi = pb + 1;
    }
    DiffReport {
        scenario: expected
            .name
            .clone()
            .or_else(|| actual.name.clone())
            .unwrap_or_default(),
        matched: pairs.len(),
        total: a.len(),
        actual_total: b.len(),
        mismatches,
        oracle_wall_secs: expected.end.as_ref().map(|e| e.wall_secs),
        replay_secs: None,
    }
}

/// Above this many DP cells, split the problem (Hirschberg) instead of
/// filling a full table.
const DP_CELLS: usize = 4 << 20;

/// Index pairs (i, j) of a longest common subsequence of `a` and `b`, in
/// increasing order.
pub fn lcs_pairs(a: &[u32], b: &[u32]) -> Vec<(usize, usize)> {
    let mut out = Vec::with_capacity(a.len().min(b.len()));
    lcs_rec(a, b, 0, 0, &mut out);
    out
}

fn lcs_rec(a: &[u32], b: &[u32], ao: usize, bo: usize, out: &mut Vec<(usize, usize)>) {
    let pre = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    out.extend((0..pre).map(|i| (ao + i, bo + i)));
    let (a, b) = (&a[pre..], &b[pre..]);
    let suf = a
        .iter()
        .rev()
        .zip(b.iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (am, bm) = (&a[..a.len() - suf], &b[..b.len() - suf]);
    let (mo_a, mo_b) = (ao + pre, bo + pre);
    if !am.is_empty() && !bm.is_empty() {
        if (am.len() + 1).saturating_mul(bm.len() + 1) <= DP_CELLS {
            lcs_dp(am, bm, mo_a, mo_b, out);
        } else {
            let mid = am.len() / 2;
            let f = lcs_row(am[..mid].iter(), bm.iter(), bm.len());
            let g = lcs_row(am[mid..].iter().rev(), bm.iter().rev(), bm.len());
            let m = bm.len();
            let k = (0..=m)
                .max_by_key(|&j| (f[j] + g[m - j], std::cmp::Reverse(j)))
                .unwrap_or(0);
            lcs_rec(&am[..mid], &bm[..k], mo_a, mo_b, out);
            lcs_rec(&am[mid..], &bm[k..], mo_a + mid, mo_b + k, out);
        }
    }
    let (so_a, so_b) = (mo_a + am.len(), mo_b + bm.len());
    out.extend((0..suf).map(|i| (so_a + i, so_b + i)));
}

/// Last row of the LCS length table: `row[j]` = LCS(a, b[..j]).
fn lcs_row<'a>(
    a: impl Iterator<Item = &'a u32>,
    b: impl Iterator<Item = &'a u32> + Clone,
    m: usize,
) -> Vec<u32> {
    let mut prev = vec![0u32; m + 1];
    let mut cur = vec![0u32; m + 1];
    for x in a {
        for (j, y) in b.clone().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                cur[j].max(prev[j + 1])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev
}

fn lcs_dp(a: &[u32], b: &[u32], ao: usize, bo: usize, out: &mut Vec<(usize, usize)>) {
    let (n, m) = (a.len(), b.len());
    let w = m + 1;
    let mut t = vec![0u32; (n + 1) * w];
    for i in 1..=n {
        for j in 1..=m {
            t[i * w + j] = if a[i - 1] == b[j - 1] {
                t[(i - 1) * w + j - 1] + 1
            } else {
                t[(i - 1) * w + j].max(t[i * w + j - 1])
            };
        }
    }
    let mut rev = Vec::new();
    let (mut i, mut j) = (n, m);
    while i > 0 && j > 0 {
        if a[i - 1] == b[j - 1] && t[i * w + j] == t[(i - 1) * w + j - 1] + 1 {
            rev.push((ao + i - 1, bo + j - 1));
            i -= 1;
            j -= 1;
        } else if t[(i - 1) * w + j] >= t[i * w + j - 1] {
            i -= 1;
        } else {
            j -= 1;
        }
    }
    out.extend(rev.into_iter().rev());
}

/// A table over several scenarios:
///
/// ```text
/// scenario   | matched/total |      % | replay speed ratio
/// -----------+---------------+--------+-------------------
/// probe      |         36/36 | 100.0% |             900.0x
/// TOTAL      |         36/36 | 100.0% |             900.0x
/// ```
///
/// The ratio column shows [`DiffReport::speed_ratio`] (`-` when unknown);
/// the TOTAL ratio is total oracle wall time / total replay time over the
/// scenarios that have both.
pub fn render_table(reports: &[DiffReport]) -> String {
    let fmt_ratio = |r: Option<f64>| r.map_or_else(|| "-".to_string(), |r| format!("{r:.1}x"));
    let mut rows: Vec<[String; 4]> = reports
        .iter()
        .map(|r| {
            [
                r.scenario.clone(),
                format!("{}/{}", r.matched, r.total),
                format!("{:.1}%", r.percent()),
                fmt_ratio(r.speed_ratio()),
            ]
        })
        .collect();
    let matched: usize = reports.iter().map(|r| r.matched).sum();
    let total: usize = reports.iter().map(|r| r.total).sum();
    let timed: Vec<_> = reports
        .iter()
        .filter_map(|r| Some((r.oracle_wall_secs?, r.replay_secs?)))
        .collect();
    let total_ratio = if timed.is_empty() {
        None
    } else {
        speed_ratio(
            timed.iter().map(|t| t.0).sum(),
            timed.iter().map(|t| t.1).sum(),
        )
    };
    let pct = if total == 0 {
        100.0
    } else {
        matched as f64 * 100.0 / total as f64
    };
    rows.push([
        "TOTAL".to_string(),
        format!("{matched}/{total}"),
        format!("{pct:.1}%"),
        fmt_ratio(total_ratio),
    ]);
    let head = ["scenario", "matched/total", "%", "replay speed ratio"];
    let mut width = head.map(str::len);
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut s = String::new();
    let line = |s: &mut String, cells: [&str; 4]| {
        let _ = writeln!(
            s,
            "{:<w0$} | {:>w1$} | {:>w2$} | {:>w3$}",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3]
        );
    };
    line(&mut s, head);
    let _ = writeln!(
        s,
        "{}-+-{}-+-{}-+-{}",
        "-".repeat(width[0]),
        "-".repeat(width[1]),
        "-".repeat(width[2]),
        "-".repeat(width[3])
    );
    for r in &rows {
        line(&mut s, [&r[0], &r[1], &r[2], &r[3]]);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(lines: &[&str]) -> String {
        let mut s = String::from("=== SCENARIO t (scenarios/t.scn) ===\n=== TRANSCRIPT ===\n");
        for l in lines {
            s.push_str(l);
            s.push('\n');
        }
        s.push_str("=== END: complete, qemu rc=0, wall 10s ===\n");
        s
    }

    #[test]
    fn write_duration_suffix_is_ignored() {
        assert_eq!(
            normalize_line("write /x \"offline\" -> OK (ret=7) [1285 ms]"),
            "write /x \"offline\" -> OK (ret=7)"
        );
        assert_eq!(
            normalize_line("write /x \"a [1 ms]\" -> OK (ret=8)"),
            "write /x \"a [1 ms]\" -> OK (ret=8)"
        );
        assert_eq!(
            normalize_line("read /x = \"[5 ms]\""),
            "read /x = \"[5 ms]\""
        );
    }

    #[test]
    fn deferred_pages_timing_is_masked() {
        assert_eq!(
            normalize_line("bootlog: node 0 deferred pages initialised in 40ms"),
            "bootlog: node 0 deferred pages initialised in N ms"
        );
        assert_eq!(
            normalize_line("bootlog: node 0 deferred pages initialised in 7 ms"),
            "bootlog: node 0 deferred pages initialised in N ms"
        );
    }

    #[test]
    fn page_dump_and_host_lines_are_classified() {
        for l in [
            "klog: page:(____ptrval____) refcount:1 mapcount:0 mapping:0000000000000000 index:0x0 pfn:0x100000",
            "klog: head:(____ptrval____) order:1 compound_mapcount:0 compound_pincount:0",
            "klog: flags: 0x17ffffc0000200(slab|node=0|zone=2|lastcpupid=0x1fffff)",
            "klog: raw: 0017ffffc0000200 0000000000000000 dead000000000001 ffff888004841600",
            "klog: page dumped because: unmovable page",
            "klog: memcg:ffff888004913000",
            "klog: aops:shmem_aops ino:9c45 dentry name(?):\"fill\"",
            "klog: RSP: 002b:00007ffece391538 EFLAGS: 00000202 ORIG_RAX: 0000000000000001",
        ] {
            assert_eq!(classify_line(l), LineKind::PageDump, "{l}");
        }
        assert_eq!(
            classify_line("klog: memory memory32: Offline failed."),
            LineKind::Interface
        );
        assert_eq!(classify_line("page: not in klog"), LineKind::Interface);
        assert_eq!(
            classify_line("HOST unplug d: device_del -> {}"),
            LineKind::Host
        );
        assert_eq!(classify_line("@unplug d"), LineKind::Interface);
        assert_eq!(
            classify_line("meminfo (varies): Slab: 1 kB"),
            LineKind::Varies
        );
    }

    #[test]
    fn lcs_finds_longest_alignment_in_both_strategies() {
        let a = [1, 2, 3, 4, 5, 6, 7];
        let b = [9, 2, 4, 3, 5, 7, 8];
        let p = lcs_pairs(&a, &b);
        assert_eq!(p.len(), 4);
        for w in p.windows(2) {
            assert!(w[0].0 < w[1].0 && w[0].1 < w[1].1);
        }
        for &(i, j) in &p {
            assert_eq!(a[i], b[j]);
        }
        // Hirschberg path: large inputs give the same LCS length as the DP
        let big_a: Vec<u32> = (0..3000).map(|i| (i * 7 % 13) as u32).collect();
        let big_b: Vec<u32> = (0..2500).map(|i| (i * 5 % 11) as u32).collect();
        let split = lcs_pairs(&big_a, &big_b);
        let row = lcs_row(big_a.iter(), big_b.iter(), big_b.len());
        assert_eq!(split.len() as u32, row[big_b.len()]);
        for w in split.windows(2) {
            assert!(w[0].0 < w[1].0 && w[0].1 < w[1].1);
        }
        for &(i, j) in &split {
            assert_eq!(big_a[i], big_b[j]);
        }
    }

    #[test]
    fn mismatches_pair_expected_and_actual_lines_with_file_line_numbers() {
        let r = diff_texts(
            &body(&["a", "b", "c", "HOST x"]),
            &body(&["a", "B", "c", "d"]),
        )
        .unwrap();
        assert_eq!((r.matched, r.total, r.actual_total), (2, 3, 4));
        assert_eq!(
            r.mismatches,
            vec![
                Mismatch {
                    expected: Some(NumberedLine {
                        line: 4,
                        text: "b".into()
                    }),
                    actual: Some(NumberedLine {
                        line: 4,
                        text: "B".into()
                    }),
                },
                Mismatch {
                    expected: None,
                    actual: Some(NumberedLine {
                        line: 6,
                        text: "d".into()
                    }),
                },
            ]
        );
        assert_eq!(
            r.render_mismatches(None),
            "- expected line 4: b\n+   actual line 4: B\n+ extra actual line 6: d\n"
        );
        assert_eq!(
            r.render_mismatches(Some(1)),
            "- expected line 4: b\n+   actual line 4: B\n... 1 more\n"
        );
    }

    #[test]
    fn table_shows_scores_ratio_and_total() {
        let mut r1 = diff_texts(&body(&["a", "b"]), &body(&["a", "b"])).unwrap();
        r1.scenario = "probe".into();
        r1.replay_secs = Some(0.5);
        let mut r2 = diff_texts(&body(&["a", "b", "c", "d"]), &body(&["a"])).unwrap();
        r2.scenario = "hotadd-online-offline".into();
        assert_eq!(
            render_table(&[r1, r2]),
            "scenario              | matched/total |      % | replay speed ratio\n\
             ----------------------+---------------+--------+-------------------\n\
             probe                 |           2/2 | 100.0% |              20.0x\n\
             hotadd-online-offline |           1/4 |  25.0% |                  -\n\
             TOTAL                 |           3/6 |  50.0% |              20.0x\n"
        );
    }
}
