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

/// The key whose value holds `offset`: the key of the `key = value` line
/// it is on, or, inside a value spread over lines (a multi-line array or
/// inline table), the key that opened that value. None at a table header
/// or where no key applies.
pub(crate) fn key_at(source: &str, offset: usize) -> Option<String> {
    let mut key = None;
    // Brackets and braces of a value left open at the end of a line.
    let mut depth = 0usize;
    let mut start = 0;
    for line in source.split_inclusive('\n') {
        if start > offset {
            break;
        }
        start += line.len();
        let value = if depth == 0 {
            let t = line.trim_start();
            match t.split_once('=') {
                _ if t.starts_with('[') => {
                    key = None;
                    continue;
                }
                Some((k, v)) => {
                    let k = k.trim().trim_matches('"');
                    key = (!k.is_empty()).then(|| k.to_string());
                    v
                }
                None => {
                    key = None;
                    continue;
                }
            }
        } else {
            line
        };
        depth = open_after(value, depth);
    }
    key
}

/// The nesting of `[`/`{` after `text`, from `depth` before it; brackets in
/// strings and comments do not count. (Multi-line strings are not
/// followed: no field of this file takes one.)
fn open_after(text: &str, mut depth: usize) -> usize {
    let mut quote = None;
    let mut escaped = false;
    for c in text.chars() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '#' => break,
                '[' | '{' => depth += 1,
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
    }
    depth
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

    #[test]
    fn an_element_of_a_value_over_several_lines_names_its_key() {
        let src =
            "[[peer]]\nendpoints = [\n  \"a:1\", # a [comment\n  \"]x\",\n  7,\n]\nname = 3\n[interface]\nx = 1\n";
        assert_eq!(key_at(src, src.find('7').unwrap()).as_deref(), Some("endpoints"));
        assert_eq!(key_at(src, src.find("name").unwrap()).as_deref(), Some("name"), "the array closed");
        assert_eq!(key_at(src, src.find("[interface]").unwrap()), None, "a header has no key");
        assert_eq!(key_at(src, src.find("x = 1").unwrap()).as_deref(), Some("x"));
        let src = "[[peer]]\nopts = { a = [\n 1,\n ], b = \"}\" }\nafter = 1\n";
        assert_eq!(key_at(src, src.find(" 1,").unwrap()).as_deref(), Some("opts"));
        assert_eq!(key_at(src, src.find("after").unwrap()).as_deref(), Some("after"));
    }
}
