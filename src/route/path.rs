//! The path routes are matched on: percent-decoded, with dot segments removed (RFC 3986
//! §5.2.4), so that `/v1/../admin` is matched as `/admin` and `/%61dmin` as `/admin` — the
//! way the server will read it, not the way a prefix test on the raw bytes would.
//!
//! `%2F` stays encoded: decoding it would turn one segment into two and let a request
//! change its path's structure behind the router's back (Envoy keeps it too by default).

use std::borrow::Cow;

use percent_encoding::percent_decode;

/// The path (no query) of an origin-form target as routes see it. Borrowed when there is
/// nothing to decode or remove, the common case.
pub fn normalize(raw: &[u8]) -> Cow<'_, str> {
    let path = raw.split(|&b| b == b'?').next().unwrap_or_default();
    let plain = !path.contains(&b'%') && !has_dot_segment(path) && path.starts_with(b"/");
    if plain && let Ok(s) = std::str::from_utf8(path) {
        return Cow::Borrowed(s);
    }
    let decoded = decode_keeping_slashes(path);
    Cow::Owned(remove_dot_segments(&decoded))
}

/// Whether a `.` or `..` segment may be in `path` (a cheap over-approximation).
fn has_dot_segment(path: &[u8]) -> bool {
    path.windows(2).any(|w| w == b"/.")
}

fn decode_keeping_slashes(path: &[u8]) -> String {
    // Every `%2F`/`%2f` is kept as `%2F`; the rest decodes.
    let mut out = Vec::with_capacity(path.len());
    for (i, piece) in split_encoded_slashes(path).enumerate() {
        if i > 0 {
            out.extend_from_slice(b"%2F");
        }
        out.extend(percent_decode(piece));
    }
    let s = String::from_utf8_lossy(&out).into_owned();
    if s.starts_with('/') {
        s
    } else {
        format!("/{s}")
    }
}

fn split_encoded_slashes(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(path);
    std::iter::from_fn(move || {
        let r = rest?;
        let at = r
            .windows(3)
            .position(|w| w[0] == b'%' && w[1] == b'2' && (w[2] == b'F' || w[2] == b'f'));
        match at {
            Some(i) => {
                rest = r.get(i + 3..);
                r.get(..i)
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// RFC 3986 §5.2.4 on an absolute path; the result starts with `/`.
fn remove_dot_segments(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing_slash = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "." => trailing_slash = i == last,
            ".." => {
                out.pop();
                trailing_slash = i == last;
            }
            s => {
                out.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut s = String::with_capacity(path.len());
    for seg in &out {
        s.push('/');
        s.push_str(seg);
    }
    if trailing_slash || s.is_empty() {
        s.push('/');
    }
    s
}

/// The path to forward once `prefix` is stripped from the normalized `path` (which starts
/// with it): rooted at `/`, re-encoded where a byte cannot stand in a path as it is.
pub fn strip(path: &str, prefix: &str, query: Option<&[u8]>) -> Vec<u8> {
    let rest = path.get(prefix.len()..).unwrap_or_default();
    let mut out = Vec::with_capacity(rest.len() + 1);
    if !rest.starts_with('/') {
        out.push(b'/');
    }
    for &b in rest.as_bytes() {
        if b.is_ascii_graphic() && b != b'?' && b != b'#' {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    if let Some(q) = query {
        out.push(b'?');
        out.extend_from_slice(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths_are_borrowed() {
        assert!(matches!(
            normalize(b"/v1/books?x=1"),
            Cow::Borrowed("/v1/books")
        ));
    }

    #[test]
    fn dot_segments_and_escapes() {
        assert_eq!(normalize(b"/v1/../admin"), "/admin");
        assert_eq!(normalize(b"/v1/./x/"), "/v1/x/");
        assert_eq!(normalize(b"/a/b/.."), "/a/");
        assert_eq!(normalize(b"/../../etc"), "/etc");
        assert_eq!(normalize(b"/%61dmin"), "/admin");
        assert_eq!(normalize(b"/v1/%2e%2e/admin"), "/admin");
        assert_eq!(normalize(b"/a%2Fb"), "/a%2Fb");
        assert_eq!(normalize(b"/a%2f..%2fb"), "/a%2F..%2Fb");
        assert_eq!(normalize(b"/x/.hidden"), "/x/.hidden");
    }

    #[test]
    fn stripping_keeps_the_path_rooted() {
        assert_eq!(strip("/v1/books", "/v1", None), b"/books");
        assert_eq!(strip("/v1/books", "/v1/", Some(b"q=1")), b"/books?q=1");
        assert_eq!(strip("/v1", "/v1", None), b"/");
        assert_eq!(strip("/v1/a b", "/v1", None), b"/a%20b");
    }
}
