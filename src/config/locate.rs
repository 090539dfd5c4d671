//! Maps a key path to a line and column and back, so every error names where to look.
//!
//! serde sees values, not places; toml_edit keeps the span of every key, so validation can
//! report `backends.b.servers[1].address` and we find its line here.

use std::fmt;

use toml_edit::{Item, Table, Value};

/// One step of a path into the document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seg {
    Key(String),
    Index(usize),
}

/// A dotted path like `backends.booktiful.servers[1].address`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<Seg>);

impl KeyPath {
    /// Starts a path at a top-level key.
    pub fn root(key: &str) -> Self {
        KeyPath(vec![Seg::Key(key.to_string())])
    }

    /// This path extended by a key.
    pub fn key(&self, key: &str) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Key(key.to_string()));
        p
    }

    /// This path extended by an array index.
    pub fn index(&self, i: usize) -> Self {
        let mut p = self.clone();
        p.0.push(Seg::Index(i));
        p
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => write!(f, "{k}")?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// The text and its span-keeping parse.
pub struct Locator<'a> {
    text: &'a str,
    doc: Option<toml_edit::Document<&'a str>>,
}

impl<'a> Locator<'a> {
    /// Parses `text` for spans; a text that does not parse still gives line/column by offset.
    pub fn new(text: &'a str) -> Self {
        Locator {
            text,
            doc: toml_edit::Document::parse(text).ok(),
        }
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text.as_bytes()[..offset];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = before
            .iter()
            .rposition(|&b| b == b'\n')
            .map(|p| p + 1)
            .unwrap_or(0);
        let column = self.text[line_start..offset].chars().count() + 1;
        (line, column)
    }

    /// Line and column of the deepest existing part of `path`: the key itself when present,
    /// else the table that should have held it.
    pub fn find(&self, path: &KeyPath) -> Option<(usize, usize)> {
        let doc = self.doc.as_ref()?;
        let mut best = None;
        let mut here = Here::Table(doc.as_table());
        for seg in &path.0 {
            let (span, next) = match (seg, here) {
                (Seg::Key(k), Here::Table(t)) => match t.get_key_value(k) {
                    Some((key, item)) => (key.span(), Here::of_item(item)),
                    None => break,
                },
                (Seg::Key(k), Here::Inline(t)) => match t.get_key_value(k) {
                    Some((key, item)) => (key.span(), Here::of_item(item)),
                    None => break,
                },
                (Seg::Index(i), Here::Tables(a)) => match a.get(*i) {
                    Some(t) => (t.span(), Here::Table(t)),
                    None => break,
                },
                (Seg::Index(i), Here::Array(a)) => match a.get(*i) {
                    Some(v) => (v.span(), Here::of_value(v)),
                    None => break,
                },
                _ => break,
            };
            if let Some(span) = span {
                best = Some(self.line_col(span.start));
            }
            here = next;
        }
        best
    }

    /// Line and column of `path` only when the whole path is written in the file (not a
    /// table that could have held it): tells a key set explicitly from a default.
    pub fn exact(&self, path: &KeyPath) -> Option<(usize, usize)> {
        let parent = KeyPath(path.0.get(..path.0.len().checked_sub(1)?)?.to_vec());
        let Some(Seg::Key(last)) = path.0.last() else {
            return None;
        };
        let doc = self.doc.as_ref()?;
        let mut here = Here::Table(doc.as_table());
        for seg in &parent.0 {
            here = match (seg, here) {
                (Seg::Key(k), Here::Table(t)) => Here::of_item(t.get(k)?),
                (Seg::Key(k), Here::Inline(t)) => Here::of_value(t.get(k)?),
                (Seg::Index(i), Here::Tables(a)) => Here::Table(a.get(*i)?),
                (Seg::Index(i), Here::Array(a)) => Here::of_value(a.get(*i)?),
                _ => return None,
            };
        }
        let span = match here {
            Here::Table(t) => t.key(last)?.span(),
            Here::Inline(t) => t.key(last)?.span(),
            _ => return None,
        }?;
        Some(self.line_col(span.start))
    }

    /// The key whose value holds `offset`, for parse errors that only carry a span.
    pub fn key_at(&self, offset: usize) -> Option<KeyPath> {
        let doc = self.doc.as_ref()?;
        let mut path = KeyPath::default();
        walk_table(doc.as_table(), offset, &mut path);
        if path.0.is_empty() { None } else { Some(path) }
    }
}

/// Where a path walk stands in the document.
#[derive(Clone, Copy)]
enum Here<'t> {
    Table(&'t Table),
    Inline(&'t toml_edit::InlineTable),
    Tables(&'t toml_edit::ArrayOfTables),
    Array(&'t toml_edit::Array),
    Leaf,
}

impl<'t> Here<'t> {
    fn of_item(item: &'t Item) -> Self {
        match item {
            Item::Table(t) => Here::Table(t),
            Item::ArrayOfTables(a) => Here::Tables(a),
            Item::Value(v) => Here::of_value(v),
            Item::None => Here::Leaf,
        }
    }

    fn of_value(v: &'t Value) -> Self {
        match v {
            Value::InlineTable(t) => Here::Inline(t),
            Value::Array(a) => Here::Array(a),
            _ => Here::Leaf,
        }
    }
}

fn contains(span: Option<std::ops::Range<usize>>, offset: usize) -> bool {
    span.is_some_and(|s| s.start <= offset && offset <= s.end)
}

fn walk_table(t: &Table, offset: usize, path: &mut KeyPath) -> bool {
    for (key, item) in t.iter() {
        let key_span = t.key(key).and_then(|k| k.span());
        match item {
            Item::Table(inner) => {
                path.0.push(Seg::Key(key.to_string()));
                if walk_table(inner, offset, path) || contains(key_span.clone(), offset) {
                    return true;
                }
                path.0.pop();
            }
            Item::ArrayOfTables(arr) => {
                for (i, inner) in arr.iter().enumerate() {
                    path.0.push(Seg::Key(key.to_string()));
                    path.0.push(Seg::Index(i));
                    if walk_table(inner, offset, path) || contains(inner.span(), offset) {
                        return true;
                    }
                    path.0.pop();
                    path.0.pop();
                }
            }
            Item::Value(v) => {
                if contains(key_span.clone(), offset) || contains(v.span(), offset) {
                    path.0.push(Seg::Key(key.to_string()));
                    return true;
                }
            }
            Item::None => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[global]\nthreads = 2\n\n[backends.b]\nalgorithm = \"first\"\n\n[[backends.b.servers]]\nname = \"a\"\naddress = \"x\"\n\n[[backends.b.servers]]\nname = \"c\"\naddress = \"y\"\n";

    #[test]
    fn finds_nested_keys() {
        let l = Locator::new(TEXT);
        assert_eq!(
            l.find(&KeyPath::root("global").key("threads")),
            Some((2, 1))
        );
        let p = KeyPath::root("backends")
            .key("b")
            .key("servers")
            .index(1)
            .key("address");
        assert_eq!(p.to_string(), "backends.b.servers[1].address");
        assert_eq!(l.find(&p), Some((13, 1)));
        let a = KeyPath::root("backends").key("b").key("algorithm");
        assert_eq!(l.find(&a), Some((5, 1)));
    }

    #[test]
    fn exact_finds_only_keys_that_are_written() {
        let l = Locator::new(TEXT);
        let servers = KeyPath::root("backends").key("b").key("servers");
        assert_eq!(l.exact(&servers.index(1).key("name")), Some((12, 1)));
        assert_eq!(l.exact(&servers.index(1).key("weight")), None);
        assert_eq!(l.exact(&KeyPath::root("global").key("grace_period")), None);
        assert_eq!(l.exact(&KeyPath::root("admin").key("bind")), None);
    }

    #[test]
    fn names_the_key_at_an_offset() {
        let l = Locator::new(TEXT);
        let offset = TEXT.find("\"y\"").unwrap();
        assert_eq!(
            l.key_at(offset).unwrap().to_string(),
            "backends.b.servers[1].address"
        );
    }
}
