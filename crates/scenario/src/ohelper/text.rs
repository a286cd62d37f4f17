//! Byte-level text helpers with the guest helper's exact semantics:
//! escaping, C-escape decoding, `strverscmp`, `atoi`.

use std::cmp::Ordering;

/// Appends `"..."` with `\n \t \r \\ \"` escaped and other bytes outside
/// 0x20..0x7e as `\xHH`.
pub fn push_escaped(out: &mut Vec<u8>, bytes: &[u8]) {
    out.push(b'"');
    for &c in bytes {
        match c {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\t' => out.extend_from_slice(b"\\t"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'"' => out.extend_from_slice(b"\\\""),
            c if !(0x20..0x7f).contains(&c) => {
                out.extend_from_slice(format!("\\x{c:02x}").as_bytes());
            }
            c => out.push(c),
        }
    }
    out.push(b'"');
}

/// [`push_escaped`] into a new string.
pub fn escaped(bytes: &[u8]) -> String {
    let mut v = Vec::new();
    push_escaped(&mut v, bytes);
    // only ASCII is written
    String::from_utf8_lossy(&v).into_owned()
}

/// glibc `strtoul(text, NULL, 16)` truncated to a byte, for the (at most
/// two) characters after `\x`: leading white space, a sign, an optional
/// `0x`, then hex digits; a negative value wraps as C's unsigned negation.
fn strtoul16_byte(text: &[u8]) -> u8 {
    let mut i = 0;
    while i < text.len() && matches!(text[i], b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        i += 1;
    }
    let mut neg = false;
    if i < text.len() && (text[i] == b'+' || text[i] == b'-') {
        neg = text[i] == b'-';
        i += 1;
    }
    if text.get(i) == Some(&b'0')
        && matches!(text.get(i + 1), Some(b'x' | b'X'))
        && text.get(i + 2).is_some_and(u8::is_ascii_hexdigit)
    {
        i += 2;
    }
    let mut v: u64 = 0;
    let mut any = false;
    while let Some(d) = text.get(i).and_then(|&c| (c as char).to_digit(16)) {
        v = v.wrapping_mul(16).wrapping_add(u64::from(d));
        any = true;
        i += 1;
    }
    if !any {
        return 0;
    }
    (if neg { v.wrapping_neg() } else { v }) as u8
}

/// Decodes C-style escapes as the guest helper does: `\n \t \r \0 \\` and
/// `\xHH` (the next two characters, whatever they are, go to `strtoul(..,
/// 16)`); an unknown escape keeps its backslash; a trailing lone backslash
/// stays.
pub fn unescape(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let c = input[i];
        if c != b'\\' || i + 1 >= input.len() {
            out.push(c);
            i += 1;
            continue;
        }
        i += 1;
        match input[i] {
            b'n' => out.push(b'\n'),
            b't' => out.push(b'\t'),
            b'r' => out.push(b'\r'),
            b'0' => out.push(0),
            b'\\' => out.push(b'\\'),
            b'x' => {
                let take = input[i + 1..].len().min(2);
                out.push(strtoul16_byte(&input[i + 1..i + 1 + take]));
                i += take;
            }
            other => {
                out.push(b'\\');
                out.push(other);
            }
        }
        i += 1;
    }
    out
}

/// glibc `strverscmp` on byte strings (C locale): digit runs compare as
/// numbers, with runs of leading zeros ordered as fractional parts.
pub fn strverscmp(s1: &[u8], s2: &[u8]) -> Ordering {
    const S_N: usize = 0;
    const S_I: usize = 3;
    const S_F: usize = 6;
    const S_Z: usize = 9;
    const CMP: i8 = 2;
    const LEN: i8 = 3;
    const NEXT_STATE: [usize; 12] = [
        S_N, S_I, S_Z, // S_N
        S_N, S_I, S_I, // S_I
        S_N, S_F, S_F, // S_F
        S_N, S_F, S_Z, // S_Z
    ];
    const RESULT_TYPE: [i8; 36] = [
        CMP, CMP, CMP, CMP, LEN, CMP, CMP, CMP, CMP, // S_N
        CMP, -1, -1, 1, LEN, LEN, 1, LEN, LEN, // S_I
        CMP, CMP, CMP, CMP, CMP, CMP, CMP, CMP, CMP, // S_F
        CMP, 1, 1, -1, CMP, CMP, -1, CMP, CMP, // S_Z
    ];
    let at = |s: &[u8], i: usize| s.get(i).copied().unwrap_or(0);
    let class = |c: u8| usize::from(c == b'0') + usize::from(c.is_ascii_digit());
    let (mut p1, mut p2) = (0usize, 0usize);
    let mut c1 = at(s1, p1);
    let mut c2 = at(s2, p2);
    p1 += 1;
    p2 += 1;
    let mut state = S_N + class(c1);
    let mut diff = i32::from(c1) - i32::from(c2);
    while diff == 0 {
        if c1 == 0 {
            return Ordering::Equal;
        }
        state = NEXT_STATE[state];
        c1 = at(s1, p1);
        c2 = at(s2, p2);
        p1 += 1;
        p2 += 1;
        state += class(c1);
        diff = i32::from(c1) - i32::from(c2);
    }
    let result = RESULT_TYPE[state * 3 + class(c2)];
    let r = match result {
        CMP => diff,
        LEN => {
            loop {
                let d1 = at(s1, p1);
                p1 += 1;
                if !d1.is_ascii_digit() {
                    break;
                }
                let d2 = at(s2, p2);
                p2 += 1;
                if !d2.is_ascii_digit() {
                    return Ordering::Greater;
                }
            }
            if at(s2, p2).is_ascii_digit() {
                -1
            } else {
                diff
            }
        }
        other => i32::from(other),
    };
    r.cmp(&0)
}

/// C `atoi`: optional leading white space and sign, then decimal digits up
/// to the first other character; 0 when there are none.
pub fn atoi(text: &str) -> i64 {
    let t = text.trim_start_matches([' ', '\t', '\n', '\x0b', '\x0c', '\r']);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let mut v: i64 = 0;
    for b in digits.bytes().take_while(u8::is_ascii_digit) {
        v = v.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if neg {
        -v
    } else {
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_matches_put_escaped() {
        assert_eq!(escaped(b"online\n"), "\"online\\n\"");
        assert_eq!(
            escaped(b"a\t\"b\\\r\x01\x7f\xff"),
            "\"a\\t\\\"b\\\\\\r\\x01\\x7f\\xff\""
        );
        assert_eq!(escaped(b""), "\"\"");
    }

    #[test]
    fn unescape_decodes_like_the_c_helper() {
        assert_eq!(unescape(b"offline\\n"), b"offline\n");
        assert_eq!(unescape(b"a\\tb\\rc\\0d\\\\e"), b"a\tb\rc\0d\\e");
        assert_eq!(unescape(b"\\x41\\x4"), b"A\x04");
        assert_eq!(unescape(b"\\x4Z"), b"\x04");
        assert_eq!(unescape(b"\\xZZ!"), b"\0!");
        assert_eq!(unescape(b"\\x-1"), b"\xff");
        assert_eq!(unescape(b"\\x"), b"\0");
        assert_eq!(unescape(b"\\q\\"), b"\\q\\");
    }

    #[test]
    fn strverscmp_sorts_naturally() {
        let mut v: Vec<&[u8]> = vec![
            b"memory10",
            b"memory2",
            b"memory1",
            b"memory0",
            b"node0",
            b"memory32",
            b"power",
            b"a01",
            b"a1",
            b"a001",
            b"a",
        ];
        v.sort_by(|a, b| strverscmp(a, b));
        let got: Vec<_> = v
            .iter()
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect();
        assert_eq!(
            got,
            [
                "a", "a001", "a01", "a1", "memory0", "memory1", "memory2", "memory10", "memory32",
                "node0", "power"
            ]
        );
        assert_eq!(strverscmp(b"abc", b"abc"), Ordering::Equal);
        assert_eq!(strverscmp(b"item#99", b"item#100"), Ordering::Less);
        assert_eq!(strverscmp(b"alpha1", b"alpha001"), Ordering::Greater);
        assert_eq!(strverscmp(b"part1_f012", b"part1_f01"), Ordering::Greater);
        assert_eq!(strverscmp(b"foo.009", b"foo.0"), Ordering::Less);
    }

    #[test]
    fn atoi_stops_at_the_first_non_digit() {
        assert_eq!(atoi("60"), 60);
        assert_eq!(atoi(" 7s"), 7);
        assert_eq!(atoi("-3"), -3);
        assert_eq!(atoi("x"), 0);
    }
}
