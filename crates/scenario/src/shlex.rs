//! POSIX shell-like word splitting and quoting, as Python's `shlex.split` /
//! `shlex.quote` do it (the oracle runner `run.py` uses both).

use thiserror::Error;

/// Why a line could not be split into words.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ShlexError {
    /// A `'` or `"` quote is never closed.
    #[error("no closing quotation")]
    UnclosedQuote,
    /// The line ends with a lone backslash.
    #[error("no escaped character after a trailing backslash")]
    TrailingBackslash,
}

/// Splits `s` into words like Python's `shlex.split(s)` (POSIX mode, no
/// comments): whitespace separates words; `'...'` is literal; inside
/// `"..."` a backslash escapes only `"` and `\`; outside quotes a backslash
/// escapes any character. Quotes adjacent to text join the same word, and
/// `''` alone is an empty word.
pub fn split(s: &str) -> Result<Vec<String>, ShlexError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => cur.push(c),
                        None => return Err(ShlexError::UnclosedQuote),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\')) => cur.push(e),
                            Some(e) => {
                                cur.push('\\');
                                cur.push(e);
                            }
                            None => return Err(ShlexError::UnclosedQuote),
                        },
                        Some(c) => cur.push(c),
                        None => return Err(ShlexError::UnclosedQuote),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some(e) => cur.push(e),
                    None => return Err(ShlexError::TrailingBackslash),
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

/// Quotes `s` for a POSIX shell like Python's `shlex.quote`: unchanged when
/// it only holds `[A-Za-z0-9_@%+=:,./-]` (and is not empty), otherwise
/// wrapped in single quotes with each `'` written as `'"'"'`.
pub fn quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_@%+=:,./-".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "'\"'\"'"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_joins_quoted_parts_and_keeps_empty_words() {
        assert_eq!(
            split(r#"a 'b c'd "e\"f\g" '' x\ y"#).unwrap(),
            vec!["a", "b cd", "e\"f\\g", "", "x y"]
        );
    }

    #[test]
    fn split_reports_unclosed_quotes_and_trailing_backslash() {
        assert_eq!(split("a 'b"), Err(ShlexError::UnclosedQuote));
        assert_eq!(split("a \"b"), Err(ShlexError::UnclosedQuote));
        assert_eq!(split("a b\\"), Err(ShlexError::TrailingBackslash));
    }

    #[test]
    fn quote_matches_python_shlex_quote() {
        assert_eq!(quote("## before hot-add"), "'## before hot-add'");
        assert_eq!(quote("plain-word_1.2/x"), "plain-word_1.2/x");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("it's"), "'it'\"'\"'s'");
    }
}
