//! x86-64 constants and size parsing (spec 01 §1).

/// Page size in bytes.
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;
/// One sparsemem section: 128 MiB.
pub const SECTION_SIZE: u64 = 128 << 20;
/// Pages per section (32768).
pub const PAGES_PER_SECTION: u64 = SECTION_SIZE / PAGE_SIZE;
/// Sub-section granularity used by span shrinking (2 MiB = 512 pages).
pub const PAGES_PER_SUBSECTION: u64 = 512;
/// Pageblock size in pages (order 9).
pub const PAGEBLOCK_NR_PAGES: u64 = 512;
/// Size of `struct page`.
pub const STRUCT_PAGE_SIZE: u64 = 64;
/// Smallest memory block size (one section).
pub const MIN_MEMORY_BLOCK_SIZE: u64 = SECTION_SIZE;
/// 6.1 x86-64 `MAX_PHYSMEM_BITS` with 4-level paging.
pub const MAX_PHYSMEM_BITS: u32 = 46;

/// Page frame number of a physical address.
pub const fn pfn_of(addr: u64) -> u64 {
    addr >> PAGE_SHIFT
}

/// Physical address of a page frame number.
pub const fn addr_of(pfn: u64) -> u64 {
    pfn << PAGE_SHIFT
}

/// Error from [`parse_size`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    #[error("empty size")]
    Empty,
    #[error("invalid size {0:?}: expected a number with an optional K/M/G/T/P/E suffix")]
    Invalid(String),
    #[error("size {0:?} overflows 64 bits")]
    Overflow(String),
}

/// Parse a size the way QEMU's `-m` and the kernel's `memparse` accept it:
/// a number (decimal, or `0x` hex) with an optional `K`, `M`, `G`, `T`, `P`
/// or `E` suffix (case-insensitive, optional trailing `B`/`iB`). A bare
/// number is bytes.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let t = s.trim();
    if t.is_empty() {
        return Err(SizeError::Empty);
    }
    let (digits, radix) = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(rest) => (rest, 16),
        None => (t, 10),
    };
    let end = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    if end == 0 {
        return Err(SizeError::Invalid(s.to_string()));
    }
    let n = u64::from_str_radix(&digits[..end], radix)
        .map_err(|_| SizeError::Overflow(s.to_string()))?;
    let suffix = digits[end..]
        .trim_end_matches("iB")
        .trim_end_matches(['b', 'B']);
    let shift = match suffix {
        "" => 0,
        "k" | "K" => 10,
        "m" | "M" => 20,
        "g" | "G" => 30,
        "t" | "T" => 40,
        "p" | "P" => 50,
        "e" | "E" => 60,
        _ => return Err(SizeError::Invalid(s.to_string())),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| SizeError::Overflow(s.to_string()))
}

/// Render a byte count the short way QEMU and people write it (`512M`, `4G`,
/// `300M`, `1536M`); exact, falling back to bytes.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [(u32, &str); 4] = [(40, "T"), (30, "G"), (20, "M"), (10, "K")];
    if bytes == 0 {
        return "0".to_string();
    }
    for (shift, unit) in UNITS {
        if bytes.is_multiple_of(1u64 << shift) {
            return format!("{}{}", bytes >> shift, unit);
        }
    }
    bytes.to_string()
}

/// The kernel's `fls`: one-based index of the highest set bit (0 for 0).
pub const fn fls(v: u64) -> u32 {
    u64::BITS - v.leading_zeros()
}

/// The kernel's `rounddown_pow_of_two` (1 for 0, as the callers need it).
pub const fn rounddown_pow_of_two(v: u64) -> u64 {
    if v == 0 {
        1
    } else {
        1 << (fls(v) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_size_accepts_qemu_and_memparse_forms() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("256m"), Ok(256 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("0x8000000"), Ok(128 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
    }

    #[test]
    fn parse_size_rejects_junk_and_overflow() {
        assert_eq!(parse_size(""), Err(SizeError::Empty));
        assert!(matches!(parse_size("G"), Err(SizeError::Invalid(_))));
        assert!(matches!(parse_size("12Q"), Err(SizeError::Invalid(_))));
        assert!(matches!(
            parse_size("99999999999E"),
            Err(SizeError::Overflow(_))
        ));
    }

    #[test]
    fn bit_helpers_are_the_kernels() {
        assert_eq!((fls(0), fls(1), fls(2 << 20)), (0, 1, 22));
        assert_eq!(rounddown_pow_of_two(0), 1);
        assert_eq!(rounddown_pow_of_two(3), 2);
        assert_eq!(rounddown_pow_of_two(4096), 4096);
    }

    #[test]
    fn format_size_is_exact() {
        assert_eq!(format_size(512 << 20), "512M");
        assert_eq!(format_size(1536 << 20), "1536M");
        assert_eq!(format_size(300 << 20), "300M");
        assert_eq!(format_size(4 << 30), "4G");
        assert_eq!(format_size(0), "0");
        assert_eq!(format_size(1000), "1000");
    }
}
