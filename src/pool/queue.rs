//! The backend's FIFO queue: a request whose candidates are all at `max_connections` waits
//! here, and the first slot that frees on any eligible server goes to the oldest waiter.
//!
//! A freed slot is handed over directly (the server's in-flight count never drops), so a
//! request arriving later cannot take it ahead of those already waiting, and the limit stays
//! exact: every slot, handed over or new, comes from `Server::try_acquire`'s compare-and-swap.
//! A waiter whose client goes away drops its [`Ticket`], which leaves the queue at once.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use arc_swap::ArcSwap;
use tokio::sync::oneshot;

use super::{Server, Slot};

#[derive(Debug)]
struct Waiter {
    id: u64,
    tx: oneshot::Sender<Slot>,
}

/// Requests waiting for a slot, oldest first.
///
/// A std `Mutex`, never held across an `.await` nor while a [`Slot`] is dropped (a dropped
/// slot dispatches, which takes the lock): the critical sections are pushes and pops.
#[derive(Debug)]
pub struct Queue {
    waiters: Mutex<VecDeque<Waiter>>,
    /// `waiters.len()`, readable without the lock so that a freed slot with nobody waiting
    /// (the common case) costs one atomic load.
    len: AtomicUsize,
    next_id: AtomicU64,
    /// The servers that may serve waiters: the backend's current candidates.
    candidates: ArcSwap<Vec<Arc<Server>>>,
}

impl Default for Queue {
    fn default() -> Self {
        Queue {
            waiters: Mutex::new(VecDeque::new()),
            len: AtomicUsize::new(0),
            next_id: AtomicU64::new(0),
            candidates: ArcSwap::from_pointee(Vec::new()),
        }
    }
}

/// One place in the queue. Dropping it (the client went away, the wait timed out) leaves
/// the queue at once. It holds the queue by `Arc` so that a waiter can be kept anywhere,
/// e.g. beside the backend in the simulator's event loop.
#[derive(Debug)]
pub struct Ticket {
    queue: Arc<Queue>,
    id: u64,
    rx: Option<oneshot::Receiver<Slot>>,
    served: bool,
}

impl Ticket {
    /// Waits for a slot; `None` when the queue gave up on this waiter (no server left).
    pub async fn wait(&mut self) -> Option<Slot> {
        let rx = self.rx.as_mut()?;
        let slot = rx.await.ok();
        self.served = true;
        slot
    }

    /// [`wait`](Self::wait) without waiting, for a caller that drives time itself (the
    /// simulator): `Ready(Some(slot))` once a slot was handed over, `Ready(None)` when the
    /// queue gave up on this waiter, `Pending` while it still waits.
    pub fn try_take(&mut self) -> Poll<Option<Slot>> {
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(None);
        };
        match rx.try_recv() {
            Ok(slot) => {
                self.served = true;
                Poll::Ready(Some(slot))
            }
            Err(oneshot::error::TryRecvError::Empty) => Poll::Pending,
            Err(oneshot::error::TryRecvError::Closed) => {
                self.served = true;
                Poll::Ready(None)
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        // The receiver may hold a slot handed over at the last moment: drop it (which frees
        // or re-dispatches the slot) before taking the lock.
        drop(self.rx.take());
        if self.served {
            return;
        }
        let mut waiters = self.queue.lock();
        if let Some(i) = waiters.iter().position(|w| w.id == self.id) {
            waiters.remove(i);
            self.queue.len.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Waiter>> {
        // A poisoned lock means a panic elsewhere mid-push/pop; the deque itself is intact.
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Requests waiting now.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::SeqCst)
    }

    /// Whether nobody waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sets the servers that may serve waiters (called on every rebuild).
    pub fn set_candidates(&self, servers: Vec<Arc<Server>>) {
        self.candidates.store(Arc::new(servers));
    }

    /// Joins the queue at the back; `None` when `max` are waiting already.
    ///
    /// The caller must [`dispatch`](Self::dispatch) afterwards: a slot freed between its
    /// failed attempt and joining saw an empty queue and was not handed to anyone. The
    /// length is written (SeqCst) before dispatch reads the servers' counts, and a freed slot
    /// writes its count before reading the length, so one of the two always sees the other.
    pub fn join(self: &Arc<Self>, max: usize) -> Option<Ticket> {
        let mut waiters = self.lock();
        if waiters.len() >= max {
            return None;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        waiters.push_back(Waiter { id, tx });
        self.len.fetch_add(1, Ordering::SeqCst);
        Some(Ticket {
            queue: Arc::clone(self),
            id,
            rx: Some(rx),
            served: false,
        })
    }

    /// Hands free slots to the oldest waiters: first on `freed` (the server whose slot just
    /// freed) if it is a candidate, then on any candidate.
    pub fn dispatch(&self, freed: Option<&Arc<Server>>) {
        if self.is_empty() {
            return;
        }
        let candidates = self.candidates.load();
        let first = freed.filter(|f| candidates.iter().any(|c| c.id == f.id));
        let mut spare: Option<Slot> = None;
        {
            let mut waiters = self.lock();
            'servers: for server in first.into_iter().chain(candidates.iter()) {
                while !waiters.is_empty() {
                    let slot = match spare.take().or_else(|| server.try_acquire()) {
                        Some(s) => s,
                        None => continue 'servers,
                    };
                    let Some(w) = waiters.pop_front() else {
                        spare = Some(slot);
                        break 'servers;
                    };
                    self.len.fetch_sub(1, Ordering::SeqCst);
                    // A waiter that is going away returns the slot; the next one gets it.
                    if let Err(slot) = w.tx.send(slot) {
                        spare = Some(slot);
                    }
                }
                break;
            }
        }
        // Dropped outside the lock: a slot's drop dispatches again.
        drop(spare);
    }

    /// Sends every waiter away (no server can serve): they answer `no_server` at once
    /// rather than wait out `queue_timeout`.
    pub fn fail_all(&self) {
        let gone: Vec<Waiter> = {
            let mut waiters = self.lock();
            self.len.fetch_sub(waiters.len(), Ordering::SeqCst);
            waiters.drain(..).collect()
        };
        drop(gone);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    fn server(name: &str, max: u32) -> Arc<Server> {
        let cfg = config::Server {
            name: name.into(),
            address: "127.0.0.1:1".into(),
            weight: 1,
            max_connections: max,
            backup: false,
            discovered: false,
        };
        Arc::new(Server::new("b", &cfg, ([127, 0, 0, 1], 1).into()))
    }

    fn queue_over(servers: &[&Arc<Server>]) -> Arc<Queue> {
        let q = Arc::new(Queue::default());
        for s in servers {
            s.attach_queue(&q);
        }
        q.set_candidates(servers.iter().map(|s| Arc::clone(s)).collect());
        q
    }

    #[tokio::test]
    async fn freed_slots_go_to_the_oldest_waiter() {
        let s = server("s", 1);
        let q = queue_over(&[&s]);
        let held = s.try_acquire().unwrap();
        let mut t1 = q.join(10).unwrap();
        let mut t2 = q.join(10).unwrap();
        q.dispatch(None);
        assert_eq!(q.len(), 2, "nothing free yet");
        drop(held);
        let first = t1.wait().await.unwrap();
        assert_eq!(s.active(), 1, "handed over, never freed");
        assert_eq!(q.len(), 1);
        drop(first);
        assert!(t2.wait().await.is_some());
        assert_eq!(q.len(), 0);
    }

    #[tokio::test]
    async fn a_full_queue_refuses_and_a_leaver_leaves_at_once() {
        let s = server("s", 1);
        let q = queue_over(&[&s]);
        let _held = s.try_acquire().unwrap();
        let t1 = q.join(2).unwrap();
        let _t2 = q.join(2).unwrap();
        assert!(q.join(2).is_none(), "full");
        drop(t1);
        assert_eq!(q.len(), 1);
        assert!(q.join(2).is_some());
    }

    #[tokio::test]
    async fn a_slot_sent_to_a_leaver_goes_to_the_next() {
        let s = server("s", 1);
        let q = queue_over(&[&s]);
        let held = s.try_acquire().unwrap();
        let mut t1 = q.join(10).unwrap();
        let mut t2 = q.join(10).unwrap();
        // t1's client goes away without its ticket being dropped yet: close its receiver.
        if let Some(rx) = t1.rx.as_mut() {
            rx.close();
        }
        drop(held);
        let got = t2.wait().await;
        assert!(got.is_some());
        assert_eq!(s.active(), 1);
        assert!(t1.wait().await.is_none());
    }

    #[test]
    fn try_take_polls_without_waiting() {
        let s = server("s", 1);
        let q = queue_over(&[&s]);
        let held = s.try_acquire().unwrap();
        let mut t1 = q.join(10).unwrap();
        let mut t2 = q.join(10).unwrap();
        assert!(t1.try_take().is_pending());
        drop(held);
        let Poll::Ready(Some(first)) = t1.try_take() else {
            panic!("the slot is handed over in Slot::drop");
        };
        assert_eq!(s.active(), 1);
        assert!(
            t2.try_take().is_pending(),
            "the slot went to the oldest only"
        );
        q.fail_all();
        assert!(matches!(t2.try_take(), Poll::Ready(None)), "sent away");
        assert_eq!(q.len(), 0);
        drop(t2);
        drop(first);
        assert_eq!((q.len(), s.active()), (0, 0));
    }

    #[tokio::test]
    async fn fail_all_sends_waiters_away() {
        let s = server("s", 1);
        let q = queue_over(&[&s]);
        let _held = s.try_acquire().unwrap();
        let mut t = q.join(10).unwrap();
        q.fail_all();
        assert_eq!(q.len(), 0);
        assert!(t.wait().await.is_none());
    }
}
