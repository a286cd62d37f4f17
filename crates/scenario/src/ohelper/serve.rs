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

/// Serve requests from `req`, answering on `resp`, until every writer of
/// `req` has closed it (the shell, and whatever inherited its descriptor,
/// has exited). Opening blocks until the shell opens its ends: `req` for
/// writing, then `resp` for reading.
pub fn serve(req: &Path, resp: &Path) -> i32 {
    let opened = File::open(req).and_then(|q| Ok((q, OpenOptions::new().write(true).open(resp)?)));
    let (requests, mut responses) = match opened {
        Ok((q, r)) => (BufReader::new(q), r),
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
        let args = decode_request(&line);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = ohelper_run(&args, &mut out, &mut err);
        if responses
            .write_all(&encode_response(&out, &err, status))
            .is_err()
        {
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
    fn response_tags_stdout_lines_a_partial_last_line_and_stderr() {
        let resp = encode_response(b"a\nb", b"usage\n", 2);
        assert_eq!(resp, b"oa\nnb\neusage\nr2\n");
        assert_eq!(encode_response(b"", b"", 0), b"r0\n");
    }
}
