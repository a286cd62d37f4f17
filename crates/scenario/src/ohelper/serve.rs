//! `serve REQ RESP`: the helper as a resident process, so that a scenario
//! step does not pay a fork and an exec (about 1.5 ms on a small VM) per
//! helper call.
//!
//! Protocol, over two FIFOs the caller opens once (see `_mh_oh` in
//! `helpers.sh`):
//! * request: one line, the arguments each followed by `\x1f`;
//! * response: the call's output as lines tagged `o` (stdout line), `n`
//!   (a last stdout line without its newline) and `e` (stderr line), then
//!   `r` and the exit status.
//!
//! Transcript mode: when the shell's stdout is the transcript itself (the
//! runner's pipe) and the runner provided a third FIFO (`oh.out`), a
//! request starts with [`TRANSCRIPT_FLAG`]; the call's stdout then goes to
//! that FIFO as one frame (`LEN\n` and the bytes), the response is `f`
//! ("framed") and the `e` and `r` lines, and the shell prints [`MARKER`]
//! where the output belongs. The runner puts the frame in place of the marker
//! ([`TranscriptMerger`]). This spares the shell reading the output back
//! byte by byte (busybox `read` does one read(2) per byte), and the order
//! stays the shell's own.
//!
//! One request at a time: the library routes only its main shell's calls
//! here (a background job would share the FIFOs), and runs the helper as a
//! program everywhere else. The server is not one of the shell's jobs (a
//! `wait` in a step must not wait for it); it exits when the shell's end
//! of the request FIFO is closed.

use super::ohelper_run;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;

/// The argument separator of a request.
pub const SEPARATOR: char = '\x1f';

/// First argument of a request whose output goes to the transcript FIFO.
pub const TRANSCRIPT_FLAG: &str = "@transcript";

/// What the shell prints, then a newline, where a transcript-mode call's
/// output goes: possibly after a partial line of its own, so it is
/// recognised at the end of a line (the record separator makes it
/// unlikely in real output).
pub const MARKER: &str = "\u{1e}@@OH";

/// One frame of the transcript FIFO.
pub fn encode_frame(out: &[u8]) -> Vec<u8> {
    let mut f = format!("{}\n", out.len()).into_bytes();
    f.extend_from_slice(out);
    f
}

/// Rebuilds the transcript from the shell's stdout lines and the frames
/// of the transcript FIFO: each [`MARKER`] line is replaced by the next
/// frame's bytes. A frame need not end with a newline; what follows then
/// continues its last line.
pub struct TranscriptMerger<R: BufRead> {
    frames: R,
    carry: Vec<u8>,
}

impl<R: BufRead> TranscriptMerger<R> {
    pub fn new(frames: R) -> Self {
        TranscriptMerger {
            frames,
            carry: Vec::new(),
        }
    }

    fn next_frame(&mut self) -> std::io::Result<Vec<u8>> {
        let mut header = String::new();
        if self.frames.read_line(&mut header)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the resident helper's transcript FIFO closed",
            ));
        }
        let len: usize = header.trim_end().parse().map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad frame header {header:?}"),
            )
        })?;
        let mut buf = vec![0; len];
        std::io::Read::read_exact(&mut self.frames, &mut buf)?;
        Ok(buf)
    }

    /// Take one stdout line of the shell (without its newline); returns
    /// the transcript text it completes (whole lines, lossily decoded).
    pub fn line(&mut self, line: &str) -> std::io::Result<String> {
        let mut bytes = std::mem::take(&mut self.carry);
        if let Some(before) = line.strip_suffix(MARKER) {
            bytes.extend_from_slice(before.as_bytes());
            bytes.extend(self.next_frame()?);
        } else {
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
        }
        let cut = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        self.carry = bytes.split_off(cut);
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// What is left of an unfinished last line.
    pub fn finish(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.carry)).into_owned()
    }
}

/// Encode one call's output as response lines (see the module doc).
pub fn encode_response(out: &[u8], err: &[u8], status: i32) -> Vec<u8> {
    let mut resp = Vec::with_capacity(out.len() + err.len() + 16);
    let mut tagged = |bytes: &[u8], full: u8, partial: u8| {
        let mut rest = bytes;
        while !rest.is_empty() {
            match rest.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    resp.push(full);
                    resp.extend_from_slice(&rest[..=i]);
                    rest = &rest[i + 1..];
                }
                None => {
                    resp.push(partial);
                    resp.extend_from_slice(rest);
                    resp.push(b'\n');
                    rest = &[];
                }
            }
        }
    };
    tagged(out, b'o', b'n');
    // A partial stderr line is completed: the library prints stderr by
    // lines.
    tagged(err, b'e', b'e');
    resp.extend_from_slice(format!("r{status}\n").as_bytes());
    resp
}

/// Split a request line into arguments.
pub fn decode_request(line: &str) -> Vec<String> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let mut args: Vec<String> = line.split(SEPARATOR).map(str::to_string).collect();
    // Every argument is terminated by the separator: the last piece is the
    // empty remainder.
    if args.last().is_some_and(String::is_empty) {
        args.pop();
    }
    args
}

/// Serve requests from `req`, answering on `resp` (and, in transcript
/// mode, writing output frames to `out`), until every writer of `req` has
/// closed it (the shell, and whatever inherited its descriptor, has
/// exited). Opening blocks until the shell opens its ends: `req` for
/// writing, then `resp` for reading; `out`'s reader is the runner, which
/// opened it before starting the shell.
pub fn serve(req: &Path, resp: &Path, out: Option<&Path>) -> i32 {
    let opened = File::open(req).and_then(|q| {
        let r = OpenOptions::new().write(true).open(resp)?;
        let o = match out {
            Some(p) => Some(OpenOptions::new().write(true).open(p)?),
            None => None,
        };
        Ok((q, r, o))
    });
    let (requests, mut responses, mut frames) = match opened {
        Ok((q, r, o)) => (BufReader::new(q), r, o),
        Err(e) => {
            eprintln!("ohelper serve: {e}");
            return 1;
        }
    };
    for line in requests.lines() {
        let Ok(line) = line else {
            break;
        };
        // Output goes back through the response FIFO, not straight into
        // the caller's stdout: that would overtake what the shell still
        // holds in its own buffer.
        let mut args = decode_request(&line);
        let to_transcript = args.first().is_some_and(|a| a == TRANSCRIPT_FLAG);
        if to_transcript {
            args.remove(0);
        }
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = ohelper_run(&args, &mut out, &mut err);
        let mut resp = Vec::new();
        if let (Some(f), true) = (&mut frames, to_transcript) {
            if f.write_all(&encode_frame(&out)).is_err() {
                break;
            }
            out.clear();
            // Tell the shell to print the marker (no frame, no marker).
            resp.extend_from_slice(b"f\n");
        }
        resp.extend(encode_response(&out, &err, status));
        if responses.write_all(&resp).is_err() {
            break;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_arguments_round_trip_including_empty_ones() {
        assert_eq!(
            decode_request("write\x1f/sys/x\x1f\x1f\n"),
            ["write", "/sys/x", ""]
        );
        assert_eq!(decode_request("ms\x1f"), ["ms"]);
    }

    #[test]
    fn merger_puts_frames_in_place_of_markers_and_joins_partial_lines() {
        let mut frames = encode_frame(b"a\nb\n");
        frames.extend(encode_frame(b"partial"));
        frames.extend(encode_frame(b""));
        let mut m = TranscriptMerger::new(&frames[..]);
        assert_eq!(m.line("before").unwrap(), "before\n");
        assert_eq!(m.line(MARKER).unwrap(), "a\nb\n");
        assert_eq!(m.line(MARKER).unwrap(), "");
        assert_eq!(m.line(" end").unwrap(), "partial end\n");
        assert_eq!(m.line(&format!("shell: {MARKER}")).unwrap(), "");
        assert_eq!(m.finish(), "shell: ");
        assert_eq!(m.finish(), "");
        assert!(m.line(MARKER).is_err());
    }

    #[test]
    fn response_tags_stdout_lines_a_partial_last_line_and_stderr() {
        let resp = encode_response(b"a\nb", b"usage\n", 2);
        assert_eq!(resp, b"oa\nnb\neusage\nr2\n");
        assert_eq!(encode_response(b"", b"", 0), b"r0\n");
    }
}
