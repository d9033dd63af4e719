//! Maps byte offsets in the TOML source to line numbers and field paths,
//! for errors that come from the TOML parser itself (syntax, unknown
//! fields, wrong types), where serde knows the position but not the path.

/// 1-based line of a byte offset.
pub(crate) fn line_of(source: &str, offset: usize) -> usize {
    source[..offset.min(source.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

/// The table an offset lies in, as `interface`, `peer[N]` or `site[N]`
/// (N counts `[[peer]]` or `[[site]]` headers from 1), or empty at top
/// level.
pub(crate) fn table_at(source: &str, offset: usize) -> String {
    let mut table = String::new();
    let mut peers = 0;
    let mut sites = 0;
    let mut pos = 0;
    for line in source.split_inclusive('\n') {
        if pos > offset {
            break;
        }
        pos += line.len();
        let t = line.trim();
        if let Some(name) = t.strip_prefix("[[").and_then(|r| r.split("]]").next()) {
            let name = name.trim();
            if name == "peer" {
                peers += 1;
                table = format!("peer[{peers}]");
            } else if name == "site" {
                sites += 1;
                table = format!("site[{sites}]");
            } else {
                table = name.to_string();
            }
        } else if let Some(name) = t.strip_prefix('[').and_then(|r| r.split(']').next()) {
            table = name.trim().to_string();
        }
    }
    table
}

/// The key at the start of the line holding `offset`, if the line is a
/// `key = value` line.
pub(crate) fn key_at(source: &str, offset: usize) -> Option<String> {
    let start = source[..offset.min(source.len())].rfind('\n').map_or(0, |i| i + 1);
    let line = source[start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    (!key.is_empty() && !key.starts_with('[')).then(|| key.to_string())
}

/// `table.key`, or whichever of the two is known.
pub(crate) fn join(table: &str, key: &str) -> String {
    match (table.is_empty(), key.is_empty()) {
        (false, false) => format!("{table}.{key}"),
        (true, false) => key.to_string(),
        (false, true) => table.to_string(),
        (true, true) => "(top level)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_line_table_and_key() {
        let src = "[interface]\nlisten_port = 1\n\n[[peer]]\nname = \"a\"\n[[peer]]\nname = \"b\"\nendpoints = []\n";
        let off = src.find("endpoints").unwrap() + 3;
        assert_eq!(line_of(src, off), 8);
        assert_eq!(table_at(src, off), "peer[2]");
        assert_eq!(key_at(src, off).as_deref(), Some("endpoints"));
        assert_eq!(table_at(src, src.find("listen").unwrap()), "interface");
        assert_eq!(join("peer[1]", "name"), "peer[1].name");
        let src = "[[site]]\nname = \"w\"\n[[peer]]\nname = \"a\"\n[[site]]\nprefixes = 1\n";
        assert_eq!(table_at(src, src.find("prefixes").unwrap()), "site[2]");
        assert_eq!(table_at(src, src.find("name = \"a").unwrap()), "peer[1]");
    }
}
