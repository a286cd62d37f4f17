//! The kernel's string parsers, with their exact acceptance rules
//! (spec 01 §3.4): `sysfs_streq`, `kstrtobool`, `kstrtoull`/`kstrtoll`/
//! `kstrtouint` with base 0, and `memparse`.

/// Why a kernel string conversion failed, as the errno it returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KstrError {
    /// -EINVAL: no digits, junk, or a sign where none is allowed.
    #[error("invalid number (EINVAL)")]
    Invalid,
    /// -ERANGE: the value does not fit.
    #[error("number out of range (ERANGE)")]
    Range,
}

/// The bytes a store method sees: everything up to the first NUL.
fn until_nul(s: &[u8]) -> &[u8] {
    match s.iter().position(|&b| b == 0) {
        Some(i) => &s[..i],
        None => s,
    }
}

/// `sysfs_streq(a, b)`: byte-exact, except that one trailing `\n` at the very
/// end of either string is ignored; comparison stops at a NUL byte.
pub fn sysfs_streq(a: &[u8], b: &[u8]) -> bool {
    let strip = |s: &'_ [u8]| -> Vec<u8> {
        let s = until_nul(s);
        s.strip_suffix(b"\n").unwrap_or(s).to_vec()
    };
    strip(a) == strip(b)
}

/// `kstrtobool`: looks only at the first one or two characters.
pub fn kstrtobool(s: &[u8]) -> Result<bool, KstrError> {
    let s = until_nul(s);
    match s.first() {
        Some(b'y' | b'Y' | b't' | b'T' | b'1') => Ok(true),
        Some(b'n' | b'N' | b'f' | b'F' | b'0') => Ok(false),
        Some(b'o' | b'O') => match s.get(1) {
            Some(b'n' | b'N') => Ok(true),
            Some(b'f' | b'F') => Ok(false),
            _ => Err(KstrError::Invalid),
        },
        _ => Err(KstrError::Invalid),
    }
}

/// Parse the digits of an unsigned number with auto base (`_parse_integer`
/// after `_parse_integer_fixup_radix`). Returns the value and the rest.
fn parse_unsigned_auto(s: &[u8]) -> Result<(u64, &[u8]), KstrError> {
    let (radix, digits) = if (s.starts_with(b"0x") || s.starts_with(b"0X"))
        && s.get(2).is_some_and(|c| c.is_ascii_hexdigit())
    {
        (16, &s[2..])
    } else if s.first() == Some(&b'0') {
        (8, s)
    } else {
        (10, s)
    };
    parse_digits(radix, digits)
}

/// `_parse_integer` in `radix`: the value of the leading digits and the
/// rest.
fn parse_digits(radix: u64, digits: &[u8]) -> Result<(u64, &[u8]), KstrError> {
    let mut value: u64 = 0;
    let mut n = 0;
    let mut overflow = false;
    for &c in digits {
        let d = match c {
            b'0'..=b'9' => u64::from(c - b'0'),
            b'a'..=b'f' => u64::from(c - b'a' + 10),
            b'A'..=b'F' => u64::from(c - b'A' + 10),
            _ => break,
        };
        if d >= radix {
            break;
        }
        match value.checked_mul(radix).and_then(|v| v.checked_add(d)) {
            Some(v) => value = v,
            None => overflow = true,
        }
        n += 1;
    }
    if n == 0 {
        return Err(KstrError::Invalid);
    }
    if overflow {
        return Err(KstrError::Range);
    }
    Ok((value, &digits[n..]))
}

/// What may follow the digits: nothing, or exactly one `\n`.
fn check_tail(rest: &[u8]) -> Result<(), KstrError> {
    match rest {
        [] | [b'\n'] => Ok(()),
        _ => Err(KstrError::Invalid),
    }
}

/// `kstrtoull(s, 0)`: optional `+`, auto base, one optional trailing `\n`.
pub fn kstrtoull(s: &[u8]) -> Result<u64, KstrError> {
    let s = until_nul(s);
    let s = s.strip_prefix(b"+").unwrap_or(s);
    let (v, rest) = parse_unsigned_auto(s)?;
    check_tail(rest)?;
    Ok(v)
}

/// `kstrtoul(s, 10)`: optional `+`, decimal digits, one optional trailing
/// `\n` (the hugetlb `nr_hugepages` files: `0x6` is EINVAL there).
pub fn kstrtoul_dec(s: &[u8]) -> Result<u64, KstrError> {
    let s = until_nul(s);
    let s = s.strip_prefix(b"+").unwrap_or(s);
    let (v, rest) = parse_digits(10, s)?;
    check_tail(rest)?;
    Ok(v)
}

/// The separators of `proc_doulongvec_minmax` and `proc_dointvec`.
fn proc_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')
}

/// A one-value sysctl write (`proc_doulongvec_minmax`, `proc_dointvec`):
/// leading blanks, an optional `-`, a number in auto base that must end at a
/// blank or the end, then blanks. Returns the value (`None` for a write with
/// nothing but blanks) and how many bytes the write consumed (what
/// write(2) returns: the rest after the first value is left unread).
pub fn proc_long(s: &[u8]) -> Result<(Option<i64>, usize), KstrError> {
    let skip = |from: usize| from + s[from..].iter().take_while(|&&c| proc_space(c)).count();
    let start = skip(0);
    if start == s.len() {
        return Ok((None, s.len()));
    }
    let (neg, body) = match s[start..].strip_prefix(b"-") {
        Some(rest) => (true, rest),
        None => (false, &s[start..]),
    };
    let (v, rest) = parse_unsigned_auto(body)?;
    if rest.first().is_some_and(|&c| !proc_space(c)) {
        return Err(KstrError::Invalid);
    }
    let end = s.len() - rest.len();
    let v = i64::try_from(v).map_err(|_| KstrError::Invalid)?;
    Ok((Some(if neg { -v } else { v }), skip(end)))
}

/// `kstrtoll(s, 0)`: like [`kstrtoull`] with an optional `-`.
pub fn kstrtoll(s: &[u8]) -> Result<i64, KstrError> {
    let s = until_nul(s);
    if let Some(neg) = s.strip_prefix(b"-") {
        let v = kstrtoull(neg)?;
        if v > i64::MAX as u64 + 1 {
            return Err(KstrError::Range);
        }
        Ok((v as i64).wrapping_neg())
    } else {
        let v = kstrtoull(s)?;
        i64::try_from(v).map_err(|_| KstrError::Range)
    }
}

/// `kstrtouint(s, 0)`.
pub fn kstrtouint(s: &[u8]) -> Result<u32, KstrError> {
    let v = kstrtoull(s)?;
    u32::try_from(v).map_err(|_| KstrError::Range)
}

/// `memparse`: a number with auto base and an optional K/M/G/T/P/E suffix;
/// returns the value and the unparsed rest (the kernel does not reject junk).
pub fn memparse(s: &str) -> Option<(u64, &str)> {
    let (v, rest) = parse_unsigned_auto(s.as_bytes()).ok()?;
    let rest = &s[s.len() - rest.len()..];
    let shift = match rest.as_bytes().first() {
        Some(b'E' | b'e') => 60,
        Some(b'P' | b'p') => 50,
        Some(b'T' | b't') => 40,
        Some(b'G' | b'g') => 30,
        Some(b'M' | b'm') => 20,
        Some(b'K' | b'k') => 10,
        _ => 0,
    };
    let rest = if shift > 0 { &rest[1..] } else { rest };
    Some((v.checked_shl(shift).unwrap_or(u64::MAX), rest))
}

#[cfg(test)]
mod tests {

    /// As recorded for `/proc/sys/vm/nr_hugepages` on 6.1
    /// (`conformance/behaviour/hugetlb-sysctl`).
    #[test]
    fn proc_long_takes_one_value_and_reports_what_it_consumed() {
        assert_eq!(proc_long(b" 3"), Ok((Some(3), 2)));
        assert_eq!(proc_long(b"4 "), Ok((Some(4), 2)));
        assert_eq!(proc_long(b"0x5"), Ok((Some(5), 3)));
        assert_eq!(proc_long(b"2\n"), Ok((Some(2), 2)));
        assert_eq!(proc_long(b"1 2"), Ok((Some(1), 2)));
        assert_eq!(proc_long(b""), Ok((None, 0)));
        assert_eq!(proc_long(b"-1"), Ok((Some(-1), 2)));
        assert_eq!(proc_long(b"foo"), Err(KstrError::Invalid));
        assert_eq!(proc_long(b"1x"), Err(KstrError::Invalid));
    }

    #[test]
    fn kstrtoul_dec_rejects_hex_and_blanks() {
        assert_eq!(kstrtoul_dec(b"7\n"), Ok(7));
        assert_eq!(kstrtoul_dec(b"0x6"), Err(KstrError::Invalid));
        assert_eq!(kstrtoul_dec(b" 3"), Err(KstrError::Invalid));
        assert_eq!(kstrtoul_dec(b"010"), Ok(10));
    }

    use super::*;

    #[test]
    fn sysfs_streq_ignores_exactly_one_trailing_newline() {
        assert!(sysfs_streq(b"online\n", b"online"));
        assert!(sysfs_streq(b"online", b"online"));
        assert!(!sysfs_streq(b"online\n\n", b"online"));
        assert!(!sysfs_streq(b"online \n", b"online"));
        assert!(!sysfs_streq(b" online", b"online"));
        assert!(!sysfs_streq(b"ONLINE", b"online"));
        assert!(sysfs_streq(b"online\0junk", b"online"));
    }

    #[test]
    fn kstrtobool_reads_only_the_first_two_characters() {
        for t in [&b"1abc"[..], b"yes", b"true", b"on", b"Y", b"T", b"oN"] {
            assert_eq!(kstrtobool(t), Ok(true), "{:?}", t);
        }
        for f in [&b"0x"[..], b"no", b"off", b"foo", b"N", b"F", b"0"] {
            assert_eq!(kstrtobool(f), Ok(false), "{:?}", f);
        }
        for e in [&b""[..], b"\n", b"2", b"o", b"ox", b"x"] {
            assert_eq!(kstrtobool(e), Err(KstrError::Invalid), "{:?}", e);
        }
    }

    #[test]
    fn kstrtoull_base0_prefixes_and_tails() {
        assert_eq!(kstrtoull(b"0x100000000"), Ok(0x1_0000_0000));
        assert_eq!(kstrtoull(b"0X10\n"), Ok(16));
        assert_eq!(kstrtoull(b"010"), Ok(8));
        assert_eq!(kstrtoull(b"+10"), Ok(10));
        assert_eq!(kstrtoull(b"0"), Ok(0));
        assert_eq!(kstrtoull(b"0x"), Err(KstrError::Invalid));
        assert_eq!(kstrtoull(b"-1"), Err(KstrError::Invalid));
        assert_eq!(kstrtoull(b"10 "), Err(KstrError::Invalid));
        assert_eq!(kstrtoull(b"10\n\n"), Err(KstrError::Invalid));
        assert_eq!(kstrtoull(b""), Err(KstrError::Invalid));
        assert_eq!(kstrtoull(b"foo"), Err(KstrError::Invalid));
        assert_eq!(kstrtoull(b"99999999999999999999"), Err(KstrError::Range));
        assert_eq!(kstrtoull(b"09"), Err(KstrError::Invalid));
    }

    #[test]
    fn kstrtoll_and_kstrtouint_ranges() {
        assert_eq!(kstrtoll(b"-12"), Ok(-12));
        assert_eq!(kstrtoll(b"-4096\n"), Ok(-4096));
        assert_eq!(kstrtoll(b"-0x10"), Ok(-16));
        assert_eq!(kstrtoll(b"foo"), Err(KstrError::Invalid));
        assert_eq!(kstrtoll(b"9223372036854775808"), Err(KstrError::Range));
        assert_eq!(kstrtoll(b"-9223372036854775808"), Ok(i64::MIN));
        assert_eq!(kstrtouint(b"301"), Ok(301));
        assert_eq!(kstrtouint(b"4294967296"), Err(KstrError::Range));
    }

    #[test]
    fn memparse_suffixes() {
        assert_eq!(memparse("256M"), Some((256 << 20, "")));
        assert_eq!(memparse("2G"), Some((2 << 30, "")));
        assert_eq!(memparse("0x1000"), Some((4096, "")));
        assert_eq!(memparse("50%"), Some((50, "%")));
        assert_eq!(memparse("x"), None);
    }
}
