//! `memhp show`: boot a machine and print its tree, in the oracle's `dump`
//! line format (`d MODE path/`, `l path -> target`, `f MODE path = "..."`).

use memhp_sysfs::tree::natural_cmp;
use memhp_sysfs::vfs::{EntryKind, Tree};
use std::io::Write;

/// C-style escaping of file content, as the oracle prints it.
pub fn escape(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() + 2);
    s.push('"');
    for &c in bytes {
        match c {
            b'\n' => s.push_str("\\n"),
            b'\t' => s.push_str("\\t"),
            b'\r' => s.push_str("\\r"),
            b'\\' => s.push_str("\\\\"),
            b'"' => s.push_str("\\\""),
            0x20..=0x7e => s.push(c as char),
            _ => s.push_str(&format!("\\x{c:02x}")),
        }
    }
    s.push('"');
    s
}

fn errno_name(e: i32) -> String {
    let name = match e {
        2 => "ENOENT",
        5 => "EIO",
        13 => "EACCES",
        _ => return format!("E?({e})"),
    };
    format!("{name}({e})")
}

/// Print `path` (relative to the tree root) and everything below it.
pub fn dump(tree: &dyn Tree, path: &str, out: &mut dyn Write) -> std::io::Result<()> {
    let shown = format!("/{path}");
    match tree.lookup(path) {
        None => writeln!(out, "? {shown} <lstat:ENOENT(2)>"),
        Some(EntryKind::Symlink { target }) => writeln!(out, "l {shown} -> {target}"),
        Some(EntryKind::File { mode }) => {
            let content = tree.open(path, true, false).and_then(|_| tree.read(path));
            match content {
                Ok(bytes) => writeln!(out, "f {mode:04o} {shown} = {}", escape(&bytes)),
                Err(e) if tree.open(path, true, false).is_err() => {
                    writeln!(out, "f {mode:04o} {shown} = <open:{}>", errno_name(e.0))
                }
                Err(e) => writeln!(out, "f {mode:04o} {shown} = <read:{}>", errno_name(e.0)),
            }
        }
        Some(EntryKind::Dir) => {
            writeln!(out, "d 0755 {shown}/")?;
            let mut entries = tree.readdir(path).unwrap_or_default();
            entries.sort_by(|a, b| natural_cmp(&a.0, &b.0));
            for (name, _) in entries {
                let child = if path.is_empty() {
                    name
                } else {
                    format!("{path}/{name}")
                };
                dump(tree, &child, out)?;
            }
            Ok(())
        }
    }
}
