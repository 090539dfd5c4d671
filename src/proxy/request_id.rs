//! Request ids: made for every request that comes without an `x-request-id`, forwarded as
//! one and logged, so a request can be followed from the client's log to the server's.

/// A random 128-bit id as 32 lower-case hex digits. Not a secret: `fastrand`'s per-thread
/// generator (one multiply per 64 bits) is enough for ids that must not collide by chance.
pub fn make() -> [u8; 32] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut n = fastrand::u128(..);
    let mut out = [0u8; 32];
    for b in out.iter_mut().rev() {
        *b = HEX[(n & 0xf) as usize];
        n >>= 4;
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_hex_and_differ() {
        let (a, b) = (super::make(), super::make());
        assert!(a.iter().all(u8::is_ascii_hexdigit));
        assert_ne!(a, b);
    }
}
