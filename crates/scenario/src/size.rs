//! Byte sizes as scenarios write them, and QEMU's `-m` memory specification.

use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// Why a size or number could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SizeError {
    /// Empty text.
    #[error("empty size")]
    Empty,
    /// Not `DIGITS[SUFFIX]`.
    #[error("bad size `{0}` (expected digits with an optional K/M/G/T suffix)")]
    Syntax(String),
    /// Does not fit in 64 bits.
    #[error("size `{0}` overflows 64 bits")]
    Overflow(String),
}

fn multiplier(c: char) -> Option<u64> {
    Some(match c.to_ascii_uppercase() {
        'B' => 1,
        'K' => 1 << 10,
        'M' => 1 << 20,
        'G' => 1 << 30,
        'T' => 1 << 40,
        'P' => 1 << 50,
        'E' => 1 << 60,
        _ => return None,
    })
}

/// Parses a host-step size exactly as the oracle runner does
/// (`^(\d+)([KMGT]?)i?B?$`, case-insensitive): `512M`, `1G`, `256MiB`,
/// `100B`, `0`. Without a suffix the value is in bytes.
pub fn parse_size(text: &str) -> Result<u64, SizeError> {
    if text.is_empty() {
        return Err(SizeError::Empty);
    }
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits_end == 0 {
        return Err(SizeError::Syntax(text.to_string()));
    }
    let (digits, mut rest) = text.split_at(digits_end);
    let mut mult = 1u64;
    if let Some(c) = rest.chars().next() {
        if "KMGTkmgt".contains(c) {
            mult = multiplier(c).unwrap_or(1);
            rest = &rest[1..];
        }
    }
    rest = rest.strip_prefix(['i', 'I']).unwrap_or(rest);
    rest = rest.strip_prefix(['b', 'B']).unwrap_or(rest);
    if !rest.is_empty() {
        return Err(SizeError::Syntax(text.to_string()));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| SizeError::Overflow(text.to_string()))?;
    n.checked_mul(mult)
        .ok_or_else(|| SizeError::Overflow(text.to_string()))
}

/// Parses a size the way QEMU's `qemu_strtosz` family does for option
/// values: decimal digits (or `0x` hex without a suffix), an optional
/// fraction when a K-or-larger suffix follows (`1.5G`), and an optional
/// one-letter suffix `B K M G T P E` (case-insensitive). A value without a
/// suffix is multiplied by `default_unit` (1 for `size=`, `maxmem=`,
/// `requested-size=`; 1 MiB for the size in `-m`).
pub fn parse_qemu_size(text: &str, default_unit: u64) -> Result<u64, SizeError> {
    if text.is_empty() {
        return Err(SizeError::Empty);
    }
    let bad = || SizeError::Syntax(text.to_string());
    let overflow = || SizeError::Overflow(text.to_string());
    if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let n = u64::from_str_radix(hex, 16).map_err(|_| overflow())?;
        return n.checked_mul(default_unit).ok_or_else(overflow);
    }
    let num_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (num, suffix) = text.split_at(num_end);
    let mult = match suffix.len() {
        0 => default_unit,
        1 => multiplier(suffix.chars().next().unwrap_or(' ')).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    let (int_part, frac_part) = match num.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (num, None),
    };
    if int_part.is_empty() || !int_part.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let whole = int_part
        .parse::<u64>()
        .map_err(|_| overflow())?
        .checked_mul(mult)
        .ok_or_else(overflow)?;
    let Some(frac) = frac_part else {
        return Ok(whole);
    };
    if frac.is_empty() || !frac.chars().all(|c| c.is_ascii_digit()) || mult < 1024 {
        return Err(bad());
    }
    // fraction of the unit, truncated to whole bytes
    let mut extra: u128 = 0;
    let mut scale: u128 = 1;
    for d in frac.bytes().take(18) {
        extra = extra * 10 + u128::from(d - b'0');
        scale *= 10;
    }
    let extra = (extra * u128::from(mult) / scale) as u64;
    whole.checked_add(extra).ok_or_else(overflow)
}

/// QEMU's `-m [size=]SIZE[,slots=N][,maxmem=SIZE]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemSpec {
    /// Boot memory in bytes (a suffix-less `SIZE` is in MiB, as in QEMU).
    pub size: u64,
    /// Number of DIMM slots for hot-plugged memory.
    pub slots: Option<u32>,
    /// Maximum memory (boot + hot-plugged) in bytes.
    pub maxmem: Option<u64>,
    /// The text as written, e.g. `1G,slots=4,maxmem=4G` (what goes after `-m`).
    pub raw: String,
}

/// The scenario default, `1G,slots=4,maxmem=4G`.
pub const DEFAULT_MEM: &str = "1G,slots=4,maxmem=4G";

/// QEMU's RAM size when `-m` gives only options (`-m slots=4,maxmem=4G`).
const QEMU_DEFAULT_RAM: u64 = 128 << 20;

/// Why a `-m` specification is malformed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MemSpecError {
    /// A size value is malformed.
    #[error("{key}: {source}")]
    Size {
        /// `size` or `maxmem`.
        key: &'static str,
        /// The size error.
        source: SizeError,
    },
    /// `slots=` is not a number.
    #[error("slots: bad number `{0}`")]
    Slots(String),
    /// An option other than size/slots/maxmem.
    #[error("unknown -m option `{0}`")]
    UnknownOption(String),
    /// The same option twice.
    #[error("-m option `{0}` given twice")]
    Duplicate(String),
}

impl MemSpec {
    /// Parses the text of a `mem:` header (QEMU `-m` argument).
    pub fn parse(text: &str) -> Result<Self, MemSpecError> {
        let mut size = None;
        let mut slots = None;
        let mut maxmem = None;
        for (i, part) in split_qemu_opts(text).into_iter().enumerate() {
            let (key, value) = match part.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None if i == 0 => ("size".to_string(), part),
                None => return Err(MemSpecError::UnknownOption(part)),
            };
            match key.as_str() {
                "size" => {
                    let v =
                        parse_qemu_size(&value, 1 << 20).map_err(|source| MemSpecError::Size {
                            key: "size",
                            source,
                        })?;
                    if size.replace(v).is_some() {
                        return Err(MemSpecError::Duplicate(key));
                    }
                }
                "slots" => {
                    let v = value
                        .parse::<u32>()
                        .map_err(|_| MemSpecError::Slots(value.clone()))?;
                    if slots.replace(v).is_some() {
                        return Err(MemSpecError::Duplicate(key));
                    }
                }
                "maxmem" => {
                    let v = parse_qemu_size(&value, 1).map_err(|source| MemSpecError::Size {
                        key: "maxmem",
                        source,
                    })?;
                    if maxmem.replace(v).is_some() {
                        return Err(MemSpecError::Duplicate(key));
                    }
                }
                _ => return Err(MemSpecError::UnknownOption(key)),
            }
        }
        Ok(MemSpec {
            size: size.unwrap_or(QEMU_DEFAULT_RAM),
            slots,
            maxmem,
            raw: text.to_string(),
        })
    }
}

impl Default for MemSpec {
    fn default() -> Self {
        MemSpec {
            size: 1 << 30,
            slots: Some(4),
            maxmem: Some(4 << 30),
            raw: DEFAULT_MEM.to_string(),
        }
    }
}

impl FromStr for MemSpec {
    type Err = MemSpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        MemSpec::parse(s)
    }
}

impl fmt::Display for MemSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// Splits a QEMU option string at commas; `,,` stands for a literal comma.
pub fn split_qemu_opts(text: &str) -> Vec<String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                cur.push(',');
            } else {
                parts.push(std::mem::take(&mut cur));
            }
        } else {
            cur.push(c);
        }
    }
    parts.push(cur);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_sizes_follow_run_py_regex() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("1536M"), Ok(1536 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("4KB"), Ok(4096));
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("100B"), Ok(100));
        assert!(matches!(parse_size("1.5G"), Err(SizeError::Syntax(_))));
        assert!(matches!(parse_size("G"), Err(SizeError::Syntax(_))));
        assert!(matches!(parse_size("12X"), Err(SizeError::Syntax(_))));
        assert!(matches!(parse_size("1P"), Err(SizeError::Syntax(_))));
        assert!(matches!(
            parse_size("99999999999999999999"),
            Err(SizeError::Overflow(_))
        ));
        assert!(matches!(
            parse_size("16777216T"),
            Err(SizeError::Overflow(_))
        ));
        assert_eq!(parse_size(""), Err(SizeError::Empty));
    }

    #[test]
    fn qemu_sizes_take_fractions_hex_and_default_units() {
        assert_eq!(parse_qemu_size("2G", 1), Ok(2 << 30));
        assert_eq!(parse_qemu_size("2M", 1), Ok(2 << 20));
        assert_eq!(parse_qemu_size("1.5G", 1), Ok(3 << 29));
        assert_eq!(parse_qemu_size("1024", 1 << 20), Ok(1 << 30));
        assert_eq!(parse_qemu_size("4096B", 1 << 20), Ok(4096));
        assert_eq!(parse_qemu_size("0x1000", 1), Ok(4096));
        assert!(parse_qemu_size("1.5", 1).is_err());
        assert!(parse_qemu_size("1GB", 1).is_err());
        assert!(parse_qemu_size("x", 1).is_err());
    }

    #[test]
    fn mem_spec_parses_all_scenario_forms() {
        let m = MemSpec::parse("1G,slots=4,maxmem=4G").unwrap();
        assert_eq!(
            (m.size, m.slots, m.maxmem),
            (1 << 30, Some(4), Some(4 << 30))
        );
        assert_eq!(m, MemSpec::default());
        let m = MemSpec::parse("4G,slots=4,maxmem=8G").unwrap();
        assert_eq!(
            (m.size, m.slots, m.maxmem),
            (4 << 30, Some(4), Some(8 << 30))
        );
        let m = MemSpec::parse("1G,maxmem=4G").unwrap();
        assert_eq!((m.size, m.slots, m.maxmem), (1 << 30, None, Some(4 << 30)));
        let m = MemSpec::parse("2048").unwrap();
        assert_eq!((m.size, m.slots, m.maxmem), (2 << 30, None, None));
        let m = MemSpec::parse("size=512M,slots=2,maxmem=1073741824").unwrap();
        assert_eq!(
            (m.size, m.slots, m.maxmem),
            (512 << 20, Some(2), Some(1 << 30))
        );
        assert_eq!(m.to_string(), "size=512M,slots=2,maxmem=1073741824");
    }

    #[test]
    fn mem_spec_rejects_bad_sizes_and_options() {
        assert!(matches!(
            MemSpec::parse("1Q,slots=4"),
            Err(MemSpecError::Size { key: "size", .. })
        ));
        assert!(matches!(
            MemSpec::parse("1G,slots=x"),
            Err(MemSpecError::Slots(_))
        ));
        assert!(matches!(
            MemSpec::parse("1G,foo=1"),
            Err(MemSpecError::UnknownOption(k)) if k == "foo"
        ));
        assert!(matches!(
            MemSpec::parse("1G,maxmem=1G,maxmem=2G"),
            Err(MemSpecError::Duplicate(_))
        ));
    }

    #[test]
    fn qemu_opts_double_comma_is_literal() {
        assert_eq!(split_qemu_opts("a,b=c,,d,e"), vec!["a", "b=c,d", "e"]);
    }
}
