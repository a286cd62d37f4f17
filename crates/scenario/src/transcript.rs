//! The transcript format written by the oracle runner:
//!
//! ```text
//! === SCENARIO name (scenarios/name.scn) ===
//! <scenario text>
//! === KERNEL ===
//! <package, image>
//! === QEMU ===
//! <version, command line>
//! === TRANSCRIPT ===
//! <guest output, with @... host step lines and their HOST ... result lines>
//! [--- console after failure:
//!  <last console lines>]          (only when the run did not complete)
//! === END: complete, qemu rc=0, wall 15s ===
//! ```

use std::path::{Path, PathBuf};
use thiserror::Error;

/// A parsed transcript.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// The scenario name from `=== SCENARIO name (path) ===`, if present.
    pub name: Option<String>,
    /// The scenario path from that line, if present.
    pub scenario_path: Option<String>,
    /// The scenario text (lines between the SCENARIO and the next marker).
    pub scenario_text: Vec<String>,
    /// The `=== KERNEL ===` section lines.
    pub kernel: Vec<String>,
    /// The `=== QEMU ===` section lines.
    pub qemu: Vec<String>,
    /// The `=== TRANSCRIPT ===` section: the guest output and host lines.
    pub body: Vec<String>,
    /// 1-based line number of `body[0]` in the file.
    pub body_first_line: usize,
    /// The lines after `--- console after failure:` of an incomplete run
    /// (not part of `body`).
    pub failure_tail: Vec<String>,
    /// The END line, if the transcript has one.
    pub end: Option<EndLine>,
}

/// `=== END: STATUS, qemu rc=RC, wall Ns ===`
#[derive(Debug, Clone, PartialEq)]
pub struct EndLine {
    /// `complete`, `TIMEOUT after 900s`, `QEMU exited before END marker`, ...
    pub status: String,
    /// QEMU's exit code as printed (`0`, `None`, ...).
    pub qemu_rc: String,
    /// The run's wall-clock time in seconds.
    pub wall_secs: f64,
    /// 1-based line number of the END line.
    pub line: usize,
}

impl EndLine {
    /// Whether the guest reached its END marker.
    pub fn is_complete(&self) -> bool {
        self.status == "complete"
    }

    /// Parses the text of an END line (`line` is its 1-based number).
    pub fn parse(text: &str, line: usize) -> Result<EndLine, TranscriptError> {
        let bad = || TranscriptError::BadEndLine {
            line,
            text: text.to_string(),
        };
        let inner = text
            .strip_prefix("=== END: ")
            .and_then(|t| t.strip_suffix(" ==="))
            .ok_or_else(bad)?;
        let (rest, wall) = inner.rsplit_once(", wall ").ok_or_else(bad)?;
        let wall_secs = wall
            .strip_suffix('s')
            .and_then(|w| w.parse::<f64>().ok())
            .filter(|w| w.is_finite() && *w >= 0.0)
            .ok_or_else(bad)?;
        let (status, rc) = rest.rsplit_once(", qemu rc=").ok_or_else(bad)?;
        Ok(EndLine {
            status: status.to_string(),
            qemu_rc: rc.to_string(),
            wall_secs,
            line,
        })
    }
}

/// A transcript could not be parsed.
#[derive(Debug, Error)]
pub enum TranscriptError {
    /// There is no `=== TRANSCRIPT ===` line.
    #[error("no `=== TRANSCRIPT ===` line")]
    MissingTranscriptMarker,
    /// A header marker appears twice.
    #[error("line {line}: `{marker}` appears twice")]
    DuplicateMarker {
        /// its line
        line: usize,
        /// the marker
        marker: String,
    },
    /// An END line that does not read `=== END: S, qemu rc=R, wall Ns ===`.
    #[error("line {line}: malformed END line `{text}`")]
    BadEndLine {
        /// its line
        line: usize,
        /// the text
        text: String,
    },
    /// Reading a transcript file failed.
    #[error("{path}: {source}")]
    Io {
        /// the file
        path: PathBuf,
        /// the I/O error
        source: std::io::Error,
    },
}

const FAILURE_MARK: &str = "--- console after failure:";

impl Transcript {
    /// Reads and parses a transcript file.
    pub fn load(path: &Path) -> Result<Self, TranscriptError> {
        let text = std::fs::read_to_string(path).map_err(|source| TranscriptError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Transcript::parse(&text)
    }

    /// Parses transcript text. Only `=== TRANSCRIPT ===` is required; the
    /// END line is the last line of the form `=== END: ... ===`.
    pub fn parse(text: &str) -> Result<Self, TranscriptError> {
        let lines: Vec<&str> = text.lines().collect();
        let marker = lines
            .iter()
            .position(|l| *l == "=== TRANSCRIPT ===")
            .ok_or(TranscriptError::MissingTranscriptMarker)?;
        let mut t = Transcript {
            name: None,
            scenario_path: None,
            scenario_text: Vec::new(),
            kernel: Vec::new(),
            qemu: Vec::new(),
            body: Vec::new(),
            body_first_line: marker + 2,
            failure_tail: Vec::new(),
            end: None,
        };
        // header sections
        #[derive(PartialEq)]
        enum Sec {
            None,
            Scenario,
            Kernel,
            Qemu,
        }
        let mut sec = Sec::None;
        let mut seen = [false; 3];
        for (i, &l) in lines[..marker].iter().enumerate() {
            let which = if l.starts_with("=== SCENARIO ") && l.ends_with(" ===") && sec == Sec::None
            {
                Some(0)
            } else if l == "=== KERNEL ===" {
                Some(1)
            } else if l == "=== QEMU ===" {
                Some(2)
            } else {
                None
            };
            if let Some(w) = which {
                if seen[w] {
                    return Err(TranscriptError::DuplicateMarker {
                        line: i + 1,
                        marker: l.to_string(),
                    });
                }
                seen[w] = true;
                match w {
                    0 => {
                        let inner = &l["=== SCENARIO ".len()..l.len() - " ===".len()];
                        match inner.split_once(" (") {
                            Some((n, p)) if p.ends_with(')') => {
                                t.name = Some(n.to_string());
                                t.scenario_path = Some(p[..p.len() - 1].to_string());
                            }
                            _ => t.name = Some(inner.to_string()),
                        }
                        sec = Sec::Scenario;
                    }
                    1 => sec = Sec::Kernel,
                    _ => sec = Sec::Qemu,
                }
                continue;
            }
            let dest = match sec {
                Sec::Scenario => &mut t.scenario_text,
                Sec::Kernel => &mut t.kernel,
                Sec::Qemu => &mut t.qemu,
                Sec::None => continue,
            };
            dest.push(l.to_string());
        }
        // body and END
        let rest = &lines[marker + 1..];
        let end_idx = rest
            .iter()
            .rposition(|l| l.starts_with("=== END: ") && l.ends_with(" ==="));
        let body_end = match end_idx {
            Some(e) => {
                let line = marker + 1 + e + 1;
                t.end = Some(EndLine::parse(rest[e], line)?);
                e
            }
            None => rest.len(),
        };
        let mut body = &rest[..body_end];
        let incomplete = t.end.as_ref().is_some_and(|e| !e.is_complete());
        if incomplete {
            if let Some(f) = body.iter().rposition(|l| *l == FAILURE_MARK) {
                t.failure_tail = body[f + 1..].iter().map(|s| s.to_string()).collect();
                body = &body[..f];
            }
        }
        t.body = body.iter().map(|s| s.to_string()).collect();
        Ok(t)
    }

    /// The 1-based file line number of `body[i]`.
    pub fn body_line_number(&self, i: usize) -> usize {
        self.body_first_line + i
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "=== SCENARIO demo (scenarios/demo.scn) ===\nsmp: 1\nsteps:\nblocks\n=== KERNEL ===\npackage: p\n=== QEMU ===\nqemu 7\n=== TRANSCRIPT ===\nuname -r: x\n--- blocks\n=== END: complete, qemu rc=0, wall 15s ===\n";

    #[test]
    fn sections_and_end_line_are_split_out() {
        let t = Transcript::parse(SAMPLE).unwrap();
        assert_eq!(t.name.as_deref(), Some("demo"));
        assert_eq!(t.scenario_path.as_deref(), Some("scenarios/demo.scn"));
        assert_eq!(t.scenario_text, vec!["smp: 1", "steps:", "blocks"]);
        assert_eq!(t.kernel, vec!["package: p"]);
        assert_eq!(t.qemu, vec!["qemu 7"]);
        assert_eq!(t.body, vec!["uname -r: x", "--- blocks"]);
        assert_eq!(t.body_first_line, 10);
        let end = t.end.unwrap();
        assert_eq!(
            (
                end.status.as_str(),
                end.qemu_rc.as_str(),
                end.wall_secs,
                end.line
            ),
            ("complete", "0", 15.0, 12)
        );
    }

    #[test]
    fn incomplete_run_keeps_failure_tail_out_of_body() {
        let t = Transcript::parse(
            "=== TRANSCRIPT ===\na\n--- console after failure:\nboot junk\n=== END: TIMEOUT after 900s, qemu rc=None, wall 901s ===\n",
        )
        .unwrap();
        assert_eq!(t.body, vec!["a"]);
        assert_eq!(t.failure_tail, vec!["boot junk"]);
        let end = t.end.unwrap();
        assert_eq!(end.status, "TIMEOUT after 900s");
        assert_eq!(end.qemu_rc, "None");
        assert!(!end.is_complete());
    }

    #[test]
    fn missing_marker_and_bad_end_are_errors() {
        assert!(matches!(
            Transcript::parse("hello\n"),
            Err(TranscriptError::MissingTranscriptMarker)
        ));
        assert!(matches!(
            Transcript::parse("=== TRANSCRIPT ===\n=== END: complete, wall x ===\n"),
            Err(TranscriptError::BadEndLine { line: 2, .. })
        ));
        assert!(matches!(
            Transcript::parse("=== KERNEL ===\n=== KERNEL ===\n=== TRANSCRIPT ===\n"),
            Err(TranscriptError::DuplicateMarker { line: 2, .. })
        ));
    }

    #[test]
    fn truncated_transcript_has_no_end() {
        let t = Transcript::parse("=== TRANSCRIPT ===\na\nb\n").unwrap();
        assert_eq!(t.body, vec!["a", "b"]);
        assert!(t.end.is_none());
    }
}
