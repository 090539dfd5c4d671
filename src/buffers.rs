//! Per-thread pools of I/O buffers, so that a connection holds a buffer only while bytes
//! are in flight (HAProxy's release-when-empty): an idle keep-alive connection keeps its
//! socket, its task and a timer entry, and no buffer.
//!
//! Read buffers come in two sizes: a read starts in a [`SMALL`] one (a request or response
//! head, a small body: most exchanges never need more), and moves to a [`SIZE`] one when it
//! fills, or when the last read filled all the room it had (a body is streaming: reads of
//! 4 KiB would cost four times the syscalls). With 1,000 busy connections that is 4 KiB per
//! client buffer instead of 16 (a client's buffer holds its request for the whole exchange).
//! A server connection's reads start large ([`ReadBuf::large_first`]): answers carry the
//! bodies, and their buffer is held only while one is relayed.
//!
//! Output buffers come in the same two sizes: a request head is rendered into a [`SMALL`]
//! one, held until the answer comes (a retry sends it again), and bodies are relayed
//! through [`SIZE`] ones.
//!
//! Reads go into a buffer's spare capacity, which is never zero-filled
//! (`tokio_util::io::poll_read_buf` does the one `unsafe` step, so this module needs none).
//! What counts in RSS is the heap the buffers held at their peak rather than the bytes
//! written into them: the allocator reuses freed room at other offsets, and in time every
//! page it handed out has been touched. So buffers are sized for what they carry.
//! A buffer that grew to another size (a large head) is dropped instead of pooled, so the
//! pools hold buffers of two sizes only and their memory is bounded by
//! 2 × [`KEEP`] × ([`SMALL`] + [`SIZE`]) per thread.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BufMut;
use tokio::io::AsyncRead;

/// The size of a pooled buffer: one read of a typical head, or of a body's worth of a
/// socket's receive window.
pub const SIZE: usize = 16 * 1024;

/// The size of the read buffer a read starts with.
pub const SMALL: usize = 4 * 1024;

/// The most free buffers one thread keeps of each kind.
pub const KEEP: usize = 256;

/// One thread's free buffers of one kind.
type Pool = RefCell<Vec<Vec<u8>>>;

thread_local! {
    static READ_SMALL: Pool = const { RefCell::new(Vec::new()) };
    static READ: Pool = const { RefCell::new(Vec::new()) };
    static WRITE_SMALL: Pool = const { RefCell::new(Vec::new()) };
    static WRITE: Pool = const { RefCell::new(Vec::new()) };
}

/// An empty read buffer with room for [`SIZE`] (`large`) or [`SMALL`] bytes.
fn take_read(large: bool) -> Vec<u8> {
    if large {
        take(&READ, SIZE)
    } else {
        take(&READ_SMALL, SMALL)
    }
}

fn give_read(b: Vec<u8>) {
    give(b, &READ_SMALL, &READ);
}

/// An empty output buffer with room for [`SIZE`] bytes: for bodies relayed read by read.
pub fn take_write() -> Vec<u8> {
    take(&WRITE, SIZE)
}

/// An empty output buffer with room for [`SMALL`] bytes: for a request head (and a small
/// body coalesced with it, for which it grows). A head's buffer is held until the answer
/// comes, so with 1,000 requests waiting on their servers a [`SIZE`] one would hold 16 MB
/// of heap where these hold 4: c=1,000 peak RSS went from 36 to 28 MB (`bench/README.md`).
pub fn take_head_write() -> Vec<u8> {
    take(&WRITE_SMALL, SMALL)
}

/// Gives an output buffer back to this thread's pool.
pub fn give_write(b: Vec<u8>) {
    give(b, &WRITE_SMALL, &WRITE);
}

type PoolKey = std::thread::LocalKey<Pool>;

fn take(pool: &'static PoolKey, size: usize) -> Vec<u8> {
    pool.with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| Vec::with_capacity(size))
}

/// Pools `b` emptied, by its size, unless that pool already keeps [`KEEP`] buffers; one
/// that grew to another size is dropped.
fn give(mut b: Vec<u8>, small: &'static PoolKey, large: &'static PoolKey) {
    let pool = match b.capacity() {
        SMALL => small,
        SIZE => large,
        _ => return,
    };
    b.clear();
    pool.with_borrow_mut(|free| {
        if free.len() < KEEP {
            free.push(b);
        }
    });
}

/// Bytes read from a socket and not yet used: `pending()` is what arrived and was not
/// consumed. The memory is taken from the pool when a read needs it and given back as soon
/// as everything read has been consumed.
#[derive(Debug, Default)]
pub struct ReadBuf {
    /// What was read, up to its length; the rest of its capacity is room for the next read.
    mem: Option<Vec<u8>>,
    /// Where the pending bytes start (those before were consumed). 32 bits, as a buffer
    /// never holds more than [`MAX_HELD`]: an idle connection's task holds this struct,
    /// and 8 bytes less put it under tokio's next 128-byte step.
    start: u32,
    /// The last read filled all the room it had: more is coming, so the next buffer taken
    /// is a [`SIZE`] one. Kept across releases (a body relayed read by read releases the
    /// buffer after each one).
    streaming: bool,
}

/// The most a read buffer holds, whatever limit a caller asks for (heads are limited to
/// 1 MiB, bodies are relayed a [`SIZE`] at a time).
const MAX_HELD: usize = u32::MAX as usize;

/// The buffer is at its limit and what it holds is still not enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

impl ReadBuf {
    /// An empty buffer holding no memory.
    pub const fn new() -> Self {
        ReadBuf::empty(false)
    }

    /// An empty buffer whose first read takes a [`SIZE`] buffer: for a server's answers,
    /// where bodies come from (a 64 KiB answer read 4 KiB first costs a read and a write
    /// more), and whose buffer is held only while an answer is relayed, not for the whole
    /// exchange as a client's is.
    pub const fn large_first() -> Self {
        ReadBuf::empty(true)
    }

    const fn empty(streaming: bool) -> Self {
        ReadBuf {
            mem: None,
            start: 0,
            streaming,
        }
    }

    /// The bytes read and not yet consumed.
    pub fn pending(&self) -> &[u8] {
        match &self.mem {
            Some(m) => m.get(self.start()..).unwrap_or_default(),
            None => &[],
        }
    }

    /// Whether nothing is pending.
    pub fn is_empty(&self) -> bool {
        self.start() >= self.end()
    }

    /// Where the pending bytes start.
    fn start(&self) -> usize {
        self.start as usize
    }

    /// Moves the start to `at` (at most the end, which is at most [`MAX_HELD`]).
    fn set_start(&mut self, at: usize) {
        self.start = u32::try_from(at.min(self.end())).unwrap_or(u32::MAX);
    }

    /// Where the pending bytes end.
    fn end(&self) -> usize {
        self.mem.as_ref().map_or(0, Vec::len)
    }

    /// Whether the buffer holds memory now (idle connections must not).
    pub fn holds_memory(&self) -> bool {
        self.mem.is_some()
    }

    /// Marks the first `n` pending bytes as used; the memory goes back to the pool when
    /// nothing is left.
    pub fn consume(&mut self, n: usize) {
        self.set_start(self.start().saturating_add(n));
        if self.is_empty() {
            self.release();
        }
    }

    /// Removes `n` pending bytes starting `at` bytes into the pending ones (a body's bytes
    /// behind a head that is still needed); what follows them moves down.
    pub fn cut(&mut self, at: usize, n: usize) {
        let start = self.start();
        let Some(m) = self.mem.as_mut() else { return };
        let from = start.saturating_add(at).min(m.len());
        let to = (from + n).min(m.len());
        m.drain(from..to);
        if self.is_empty() {
            self.release();
        }
    }

    /// Gives the memory back (whatever was pending is dropped).
    pub fn release(&mut self) {
        if let Some(m) = self.mem.take() {
            give_read(m);
        }
        self.start = 0;
    }

    /// The buffer, with room to read into and at most `limit` bytes pending in all, and how
    /// many bytes the next read may add: the pending bytes are moved to the front first, and
    /// the buffer grows past [`SIZE`] only as far as `limit`.
    fn spare(&mut self, limit: usize) -> Result<(&mut Vec<u8>, usize), Full> {
        let limit = limit.min(MAX_HELD);
        let (streaming, mut start) = (self.streaming, self.start());
        let mem = self.mem.get_or_insert_with(|| take_read(streaming));
        if mem.len() == mem.capacity() && start > 0 {
            mem.drain(..start);
            (start, self.start) = (0, 0);
        }
        if mem.len() == mem.capacity() {
            if limit <= mem.capacity() {
                return Err(Full);
            }
            if mem.capacity() < SIZE {
                // A small buffer that filled: its bytes move to a large one from the pool.
                let mut large = take_read(true);
                large.extend_from_slice(mem);
                give_read(std::mem::replace(mem, large));
            } else {
                mem.reserve_exact((mem.capacity() * 2).min(limit) - mem.len());
            }
        }
        let pending = mem.len().saturating_sub(start);
        if pending >= limit {
            return Err(Full);
        }
        let room = (mem.capacity() - mem.len()).min(limit - pending);
        Ok((mem, room))
    }

    /// Reads once from `io` into the buffer: `Ok(0)` at end of stream. With `limit` bytes
    /// already pending it fails with `InvalidData` (the caller asked for too much).
    pub fn poll_fill<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        cx: &mut Context<'_>,
        limit: usize,
    ) -> Poll<io::Result<usize>> {
        let (mem, room) = match self.spare(limit) {
            Ok(s) => s,
            Err(Full) => return Poll::Ready(Err(io::ErrorKind::InvalidData.into())),
        };
        match tokio_util::io::poll_read_buf(Pin::new(io), cx, &mut mem.limit(room)) {
            Poll::Ready(Ok(n)) => {
                self.streaming = n == room;
                if self.is_empty() {
                    self.release();
                }
                Poll::Ready(Ok(n))
            }
            Poll::Ready(Err(e)) => {
                if self.is_empty() {
                    self.release();
                }
                Poll::Ready(Err(e))
            }
            Poll::Pending => {
                // Nothing arrived: an empty buffer goes back rather than wait with the socket.
                if self.is_empty() {
                    self.release();
                }
                Poll::Pending
            }
        }
    }

    /// [`poll_fill`](Self::poll_fill) as a future.
    pub async fn fill<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
        limit: usize,
    ) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.poll_fill(io, cx, limit)).await
    }
}

impl Drop for ReadBuf {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_is_held_only_while_bytes_are_pending() {
        let mut buf = ReadBuf::new();
        let mut src: &[u8] = b"hello world";
        assert!(!buf.holds_memory());
        assert_eq!(buf.fill(&mut src, 1024).await.unwrap(), 11);
        assert_eq!(buf.pending(), b"hello world");
        buf.consume(6);
        assert_eq!(buf.pending(), b"world");
        assert!(buf.holds_memory());
        buf.consume(5);
        assert!(!buf.holds_memory());
        assert_eq!(buf.fill(&mut src, 1024).await.unwrap(), 0);
        assert!(!buf.holds_memory());
    }

    /// What `poll_fill` has taken: the size of the memory it holds.
    fn held(buf: &ReadBuf) -> usize {
        buf.mem.as_ref().map_or(0, Vec::capacity)
    }

    #[tokio::test]
    async fn a_read_starts_small_and_moves_to_a_large_buffer_when_it_fills() {
        let data: Vec<u8> = (0..3 * SIZE).map(|i| (i % 251) as u8).collect();
        let mut src: &[u8] = &data;
        let mut buf = ReadBuf::new();
        assert_eq!(buf.fill(&mut src, 64 * 1024).await.unwrap(), SMALL);
        assert_eq!(held(&buf), SMALL);
        // Full: the pending bytes move into a large buffer, and reading goes on there.
        buf.fill(&mut src, 64 * 1024).await.unwrap();
        assert_eq!(held(&buf), SIZE);
        assert_eq!(buf.pending(), &data[..buf.pending().len()]);
        // Relayed read by read: the last read filled its room, so the next one is large
        // from the start even though the buffer was given back in between.
        buf.consume(buf.pending().len());
        assert!(!buf.holds_memory());
        assert_eq!(buf.fill(&mut src, 64 * 1024).await.unwrap(), SIZE);
        buf.consume(SIZE);
        // A short read: the next one is small again.
        let mut short: &[u8] = b"hello";
        buf.fill(&mut short, 64 * 1024).await.unwrap();
        buf.consume(5);
        let mut more: &[u8] = b"world";
        buf.fill(&mut more, 64 * 1024).await.unwrap();
        assert_eq!(held(&buf), SMALL);
        assert_eq!(buf.pending(), b"world");
    }

    #[tokio::test]
    async fn a_buffer_for_answers_reads_large_from_the_start() {
        let data = vec![1u8; 2 * SIZE];
        let mut src: &[u8] = &data;
        let mut buf = ReadBuf::large_first();
        assert_eq!(buf.fill(&mut src, 64 * 1024).await.unwrap(), SIZE);
        assert_eq!(held(&buf), SIZE);
    }

    #[test]
    fn output_buffers_go_back_to_the_pool_of_their_size() {
        let pooled = |pool: &'static PoolKey| pool.with_borrow(Vec::len);
        let head = take_head_write();
        let body = take_write();
        assert_eq!((head.capacity(), body.capacity()), (SMALL, SIZE));
        let (small, large) = (pooled(&WRITE_SMALL), pooled(&WRITE));
        give_write(body);
        give_write(head);
        assert_eq!(
            (pooled(&WRITE_SMALL), pooled(&WRITE)),
            (small + 1, large + 1)
        );
        // A head that grew past its room is dropped, not pooled under either size.
        let mut grown = take_head_write();
        grown.extend_from_slice(&[0; SMALL + 1]);
        give_write(grown);
        assert_eq!((pooled(&WRITE_SMALL), pooled(&WRITE)), (small, large + 1));
    }

    #[tokio::test]
    async fn cutting_keeps_what_surrounds_the_cut() {
        let mut buf = ReadBuf::new();
        let mut src: &[u8] = b"HEADbodyNEXT";
        buf.fill(&mut src, 1024).await.unwrap();
        buf.cut(4, 4);
        assert_eq!(buf.pending(), b"HEADNEXT");
    }

    #[tokio::test]
    async fn the_limit_bounds_what_is_pending() {
        let mut buf = ReadBuf::new();
        let big = vec![b'x'; SIZE * 3];
        let mut src: &[u8] = &big;
        let mut total = 0;
        loop {
            match buf.fill(&mut src, SIZE + 10).await {
                Ok(n) => total += n,
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
                    break;
                }
            }
        }
        assert_eq!(total, SIZE + 10);
        assert_eq!(buf.pending().len(), SIZE + 10);
    }
}
