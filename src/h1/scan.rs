//! The strict checks httparse leaves to us, shared by request and response heads: line
//! endings, obs-fold, NUL, header-line shape, and the two framing fields.
//!
//! Why on top of httparse: it accepts a bare LF as a line end (RFC 9112 §2.2 allows that
//! leniency, and it is exactly the kind of disagreement between two parsers that request
//! smuggling lives on), and what it rejects depends on its configuration and version. One
//! pass over the head's bytes here makes the rules ours whatever httparse does.

use thiserror::Error;

/// Why a head's bytes were refused (a client gets 400, a server's answer is a 502).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum Malformed {
    /// httparse refused the request or status line or a header.
    #[error("malformed head ({0})")]
    Syntax(&'static str),
    /// A NUL byte (RFC 9110 §5.5: never valid in a field).
    #[error("NUL byte in head")]
    Nul,
    /// A CR not followed by LF (RFC 9112 §2.2).
    #[error("bare CR in head")]
    BareCr,
    /// A LF not preceded by CR: the leniency RFC 9112 §2.2 allows and fulcrum refuses.
    #[error("bare LF in head")]
    BareLf,
    /// A line starting with whitespace: obs-fold (RFC 9112 §5.2).
    #[error("obsolete line folding")]
    ObsFold,
    /// Whitespace between a field name and its colon (RFC 9112 §5.1).
    #[error("whitespace before colon")]
    SpaceBeforeColon,
    /// A header line without a colon, or with an empty name.
    #[error("header line without a name and colon")]
    NoColon,
    /// A `Content-Length` that is not digits, or several that differ (RFC 9112 §6.3).
    #[error("invalid Content-Length")]
    ContentLength,
    /// A `Transfer-Encoding` that is empty, applies chunked twice, or (in a request) does
    /// not end in chunked (RFC 9112 §6.1, §6.3).
    #[error("invalid Transfer-Encoding")]
    TransferEncoding,
}

/// `bytes` without leading and trailing SP/HTAB (OWS).
pub(crate) fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != b' ' && b != b'\t');
    let end = bytes.iter().rposition(|&b| b != b' ' && b != b'\t');
    match (start, end) {
        (Some(s), Some(e)) => bytes.get(s..=e).unwrap_or_default(),
        // Empty, but still a sub-slice of `bytes`, so its span points at the right place.
        _ => bytes.get(bytes.len()..).unwrap_or_default(),
    }
}

/// The bytes [`check_head`] must look at; every other byte of a line is skipped with one
/// table load.
const NOTABLE: [bool; 256] = {
    let mut t = [false; 256];
    t[b'\n' as usize] = true;
    t[b'\r' as usize] = true;
    t[0] = true;
    t[b':' as usize] = true;
    t[b' ' as usize] = true;
    t[b'\t' as usize] = true;
    t
};

/// What one pass over a line found.
struct Line {
    /// Offset of the line's LF.
    lf: usize,
    /// CRs in the line, and where the last one is.
    crs: u32,
    last_cr: usize,
    nul: bool,
    /// The first colon, and whether SP or HTAB came before it.
    colon: Option<usize>,
    space_before_colon: bool,
}

/// One pass over the bytes up to the first LF of `rest` (`None`: there is none).
fn scan_line(rest: &[u8]) -> Option<Line> {
    let mut line = Line {
        lf: 0,
        crs: 0,
        last_cr: usize::MAX,
        nul: false,
        colon: None,
        space_before_colon: false,
    };
    for (i, &b) in rest.iter().enumerate() {
        if !NOTABLE[b as usize] {
            continue;
        }
        match b {
            b'\n' => {
                line.lf = i;
                return Some(line);
            }
            b'\r' => {
                line.crs += 1;
                line.last_cr = i;
            }
            0 => line.nul = true,
            b':' if line.colon.is_none() => line.colon = Some(i),
            b' ' | b'\t' if line.colon.is_none() => line.space_before_colon = true,
            _ => {}
        }
    }
    None
}

/// Checks every byte of a complete head (`head` ends with its empty line). Leading empty
/// lines before the start line are allowed (RFC 9112 §2.2 says a server SHOULD ignore
/// them; httparse skips them too). One pass over each line's bytes: a head is checked on
/// every request and every response.
pub(crate) fn check_head(head: &[u8]) -> Result<(), Malformed> {
    let mut rest = head;
    while let Some(r) = rest.strip_prefix(b"\r\n") {
        rest = r;
    }
    let mut first = true;
    while !rest.is_empty() {
        let scan = scan_line(rest).ok_or(Malformed::BareCr)?;
        // The line must end in CRLF, and hold no other CR.
        if scan.lf == 0 || scan.last_cr != scan.lf - 1 {
            return Err(Malformed::BareLf);
        }
        if scan.crs > 1 {
            return Err(Malformed::BareCr);
        }
        if scan.nul {
            return Err(Malformed::Nul);
        }
        let line = rest.get(..scan.lf - 1).unwrap_or_default();
        rest = rest.get(scan.lf + 1..).unwrap_or_default();
        if first {
            first = false;
            continue;
        }
        if line.is_empty() {
            // The empty line ends the head: nothing may follow it in `head`.
            return if rest.is_empty() {
                Ok(())
            } else {
                Err(Malformed::Syntax("bytes after the head"))
            };
        }
        if matches!(line.first(), Some(b' ' | b'\t')) {
            return Err(Malformed::ObsFold);
        }
        match scan.colon {
            None | Some(0) => return Err(Malformed::NoColon),
            Some(_) if scan.space_before_colon => return Err(Malformed::SpaceBeforeColon),
            Some(_) => {}
        }
    }
    Err(Malformed::Syntax("head without its empty line"))
}

/// The one length named by every `Content-Length` value: each value is a comma list of
/// `1*DIGIT` elements, and every element must be the same number. Identical repeats (two
/// `Content-Length: 42` lines, or `42, 42`) are merged, as RFC 9110 §8.6 allows and HAProxy
/// does; the proxy writes its own single `Content-Length` line from the result.
pub(crate) fn content_length<'a>(
    values: impl Iterator<Item = &'a [u8]>,
) -> Result<Option<u64>, Malformed> {
    let mut found: Option<u64> = None;
    for value in values {
        for item in value.split(|&b| b == b',') {
            let n = digits(trim_ows(item)).ok_or(Malformed::ContentLength)?;
            match found {
                Some(f) if f != n => return Err(Malformed::ContentLength),
                _ => found = Some(n),
            }
        }
    }
    Ok(found)
}

/// `1*DIGIT` as a number; `None` when empty, not all digits, or past u64.
fn digits(s: &[u8]) -> Option<u64> {
    if s.is_empty() {
        return None;
    }
    s.iter().try_fold(0u64, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(b - b'0'))
        } else {
            None
        }
    })
}

/// Whether the codings of every `Transfer-Encoding` value, in order, end in `chunked`:
/// `Ok(None)` without the field, `Ok(Some(true))` when the last coding is chunked,
/// `Ok(Some(false))` when it is another coding. Empty list elements are ignored (RFC 9110
/// §5.6.1); no coding at all, or chunked applied twice, is an error.
pub(crate) fn chunked_last<'a>(
    values: impl Iterator<Item = &'a [u8]>,
) -> Result<Option<bool>, Malformed> {
    let mut present = false;
    let mut codings = 0usize;
    let mut chunked_seen = false;
    for value in values {
        present = true;
        for item in value.split(|&b| b == b',').map(trim_ows) {
            if item.is_empty() {
                continue;
            }
            if chunked_seen {
                // chunked must be the final coding and applied once (RFC 9112 §6.1).
                return Err(Malformed::TransferEncoding);
            }
            if !item.iter().all(|&b| is_tchar(b) || b" \t;=\"".contains(&b)) {
                return Err(Malformed::TransferEncoding);
            }
            codings += 1;
            chunked_seen = item.eq_ignore_ascii_case(b"chunked");
        }
    }
    match (present, codings) {
        (false, _) => Ok(None),
        (true, 0) => Err(Malformed::TransferEncoding),
        (true, _) => Ok(Some(chunked_seen)),
    }
}

/// RFC 9110 §5.6.2 token characters.
pub(crate) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The plain reading `scan_line` must agree with: every byte, one at a time.
    fn reference(rest: &[u8]) -> Option<(usize, u32, usize, bool, Option<usize>, bool)> {
        let (mut crs, mut last_cr, mut nul, mut colon, mut space) =
            (0, usize::MAX, false, None, false);
        for (i, &b) in rest.iter().enumerate() {
            match b {
                b'\n' => return Some((i, crs, last_cr, nul, colon, space)),
                b'\r' => {
                    crs += 1;
                    last_cr = i;
                }
                0 => nul = true,
                b':' if colon.is_none() => colon = Some(i),
                b' ' | b'\t' if colon.is_none() => space = true,
                _ => {}
            }
        }
        None
    }

    proptest! {
        /// Lines made mostly of the bytes that matter, anywhere in them, and of long runs
        /// of ordinary ones (so that `memchr3` takes its vector path).
        #[test]
        fn scan_line_agrees_with_a_byte_by_byte_reading(
            parts in proptest::collection::vec(
                prop_oneof![
                    proptest::sample::select(vec![b'\n', b'\r', 0, b':', b' ', b'\t', b'a'])
                        .prop_map(|b| vec![b]),
                    (1usize..80).prop_map(|n| vec![b'x'; n]),
                ],
                0..40,
            )
        ) {
            let line: Vec<u8> = parts.concat();
            let got = scan_line(&line)
                .map(|l| (l.lf, l.crs, l.last_cr, l.nul, l.colon, l.space_before_colon));
            prop_assert_eq!(got, reference(&line));
        }
    }
}
