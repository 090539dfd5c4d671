//! The discrete-event engine: virtual time, simulated servers and clients, and the real
//! `Backend::acquire` choosing every server.
//!
//! Everything runs on the calling thread: the selection clock is set to virtual time, and
//! fastrand's thread-local generator (which the algorithms draw from) is seeded from the
//! scenario, so the same scenario gives the same run, event for event.
//!
//! Requests meet the balancer as the proxy's do: a first slot from the same steps as
//! `Backend::acquire_or_wait` (the real FIFO queue of `pool/queue.rs`, `max_queue` and
//! `queue_timeout` included), retries from `Backend::acquire` without waiting. A queued
//! request holds a real [`Ticket`]; the queue hands it a freed slot inside `Slot::drop`, and
//! the engine polls the waiting tickets, oldest first, after every event (virtual time
//! stands still between them, so nothing is seen late).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::task::Poll;

use super::keys::{key_ip, key_request};
use super::scenario::{Action, KeyDistribution, Scenario};
use crate::balance::{self, clock};
use crate::config::{self, Algorithm, HashKey};
use crate::events::Bus;
use crate::pool::queue::Ticket;
use crate::pool::{Backend, Health, NoSlot, Server, ServerId, Slot};

const SEC: u64 = 1_000_000_000;

/// What one run produced.
#[derive(Clone, Debug)]
pub struct Run {
    pub algorithm: Algorithm,
    /// Whether the servers' `max_connections` were applied.
    pub limits: bool,
    pub offered: u64,
    pub served: u64,
    /// Answered 503 by the balancer: no server, queue full, or waited too long.
    pub rejected: u64,
    /// Lost to a crashed server (in flight when it died, or sent to it before it was noticed).
    pub failed: u64,
    /// Crashes from overload (memory past the limit); scripted crashes are not counted.
    pub crashes: u32,
    /// Latency of served requests, nanoseconds, sorted.
    pub latencies: Vec<u64>,
    /// Most requests in flight at each server at once.
    pub peak: Vec<u32>,
    /// In-flight requests per server, sampled every second.
    pub samples: Vec<Vec<u32>>,
}

impl Run {
    /// The `q` quantile (0..1) of served latency, in milliseconds.
    pub fn quantile_ms(&self, q: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let i = ((self.latencies.len() as f64 * q).ceil() as usize).clamp(1, self.latencies.len());
        self.latencies[i - 1] as f64 / 1e6
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Arrival,
    Done {
        server: usize,
        epoch: u32,
        req: usize,
    },
    QueueTimeout {
        req: usize,
    },
    Scenario {
        event: usize,
    },
    EndMaintenance {
        server: usize,
    },
    Restarted {
        server: usize,
        epoch: u32,
    },
    NoticedDown {
        server: usize,
        epoch: u32,
    },
    NoticedUp {
        server: usize,
        epoch: u32,
    },
    Sample,
}

/// A simulated server process.
struct Sim {
    server: Arc<Server>,
    workers: u32,
    busy: u32,
    /// Requests held (being served or waiting for a worker).
    held: Vec<usize>,
    /// Requests waiting for a worker, in order.
    backlog: VecDeque<usize>,
    alive: bool,
    in_rotation: bool,
    slow: f64,
    /// Bumped at each crash, so events of the old process are ignored.
    epoch: u32,
    peak: u32,
}

struct Req {
    arrival: u64,
    key: u32,
    sent_at: u64,
    slot: Option<Slot>,
    tried: Vec<ServerId>,
}

struct Engine<'a> {
    sc: &'a Scenario,
    backend: Arc<Backend>,
    hash_key: HashKey,
    sims: Vec<Sim>,
    reqs: Vec<Req>,
    /// Requests in the backend's queue with their tickets, oldest first.
    waiting: VecDeque<(usize, Ticket)>,
    heap: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    seq: u64,
    now: u64,
    end: u64,
    traffic_rng: fastrand::Rng,
    service_rng: fastrand::Rng,
    zipf: Vec<f64>,
    run: Run,
}

/// Runs `sc` once with `algorithm`, with or without the servers' `max_connections`, over
/// the backend settings `settings` (from a configuration, or defaults).
pub fn run(sc: &Scenario, settings: &config::Backend, algorithm: Algorithm, limits: bool) -> Run {
    fastrand::seed(sc.seed);
    clock::set_virtual(Some(0));
    let mut settings = settings.clone();
    settings.algorithm = algorithm;
    settings.hash_balance_factor = sc.settings.hash_balance_factor;
    // The real queue enforces the scenario's (or the configuration's) queue settings.
    settings.max_queue = sc.settings.max_queue;
    settings.queue_timeout = sc.settings.queue_timeout;
    // Simulated clients carry no cookies from earlier answers.
    settings.sticky_cookie = String::new();
    let servers: Vec<Arc<Server>> = sc
        .servers
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let cfg = config::Server {
                name: m.name.clone(),
                address: format!("simulated-{i}:80"),
                weight: m.weight,
                max_connections: if limits { m.max_connections } else { 0 },
                backup: m.backup,
                discovered: false,
            };
            let s = Server::new("simulated", &cfg, ([192, 0, 2, 1], 80).into());
            s.set_health(Health::Up);
            Arc::new(s)
        })
        .collect();
    let (bus, tasks) = (Bus::new(), crate::tasks::Tasks::new());
    let backend = Backend::new("simulated", settings.clone(), servers.clone(), bus, tasks);
    let sims = servers
        .iter()
        .zip(&sc.servers)
        .map(|(s, m)| Sim {
            server: Arc::clone(s),
            workers: m.workers,
            busy: 0,
            held: Vec::new(),
            backlog: VecDeque::new(),
            alive: true,
            in_rotation: true,
            slow: 1.0,
            epoch: 0,
            peak: 0,
        })
        .collect();
    let zipf = match sc.keys.distribution {
        KeyDistribution::Uniform => Vec::new(),
        KeyDistribution::Zipf => {
            let mut sum = 0.0;
            (1..=sc.keys.count)
                .map(|k| {
                    sum += 1.0 / f64::from(k).powf(sc.keys.exponent);
                    sum
                })
                .collect()
        }
    };
    let n = sc.servers.len();
    let mut e = Engine {
        sc,
        backend,
        hash_key: settings.hash_key.clone(),
        sims,
        reqs: Vec::new(),
        waiting: VecDeque::new(),
        heap: BinaryHeap::new(),
        seq: 0,
        now: 0,
        end: sc.duration.get().as_nanos() as u64,
        traffic_rng: fastrand::Rng::with_seed(sc.seed ^ 0x7472_6166_6669_6321),
        service_rng: fastrand::Rng::with_seed(sc.seed ^ 0x7365_7276_6963_6521),
        zipf,
        run: Run {
            algorithm,
            limits,
            offered: 0,
            served: 0,
            rejected: 0,
            failed: 0,
            crashes: 0,
            latencies: Vec::new(),
            peak: vec![0; n],
            samples: Vec::new(),
        },
    };
    e.start();
    e.drive();
    clock::set_virtual(None);
    let mut run = e.run;
    run.peak = e.sims.iter().map(|s| s.peak).collect();
    run.latencies.sort_unstable();
    run
}

impl Engine<'_> {
    fn at(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((t, self.seq, ev)));
    }

    fn start(&mut self) {
        if let Some(t) = self.next_arrival(0) {
            self.at(t, Ev::Arrival);
        }
        for (i, ev) in self.sc.events.iter().enumerate() {
            self.at(ev.at.get().as_nanos() as u64, Ev::Scenario { event: i });
        }
        self.at(0, Ev::Sample);
    }

    fn drive(&mut self) {
        while let Some(Reverse((t, _, ev))) = self.heap.pop() {
            self.now = t;
            clock::set_virtual(Some(t));
            match ev {
                Ev::Arrival => self.arrival(),
                Ev::Done { server, epoch, req } => self.done(server, epoch, req),
                Ev::QueueTimeout { req } => self.queue_timeout(req),
                Ev::Scenario { event } => self.scenario_event(event),
                Ev::EndMaintenance { server } => self.set_rotation(server, true),
                Ev::Restarted { server, epoch } => self.restarted(server, epoch),
                Ev::NoticedDown { server, epoch } => {
                    if self.sims[server].epoch == epoch && !self.sims[server].alive {
                        self.set_health(server, Health::Down);
                    }
                }
                Ev::NoticedUp { server, epoch } => {
                    let s = &self.sims[server];
                    if s.epoch == epoch && s.alive && s.in_rotation {
                        self.set_health(server, Health::Up);
                    }
                }
                Ev::Sample => {
                    self.run
                        .samples
                        .push(self.sims.iter().map(|s| s.held.len() as u32).collect());
                    if t + SEC <= self.end {
                        self.at(t + SEC, Ev::Sample);
                    }
                }
            }
            self.poll_queue();
        }
    }

    /// The next arrival after `t` under the piecewise rate, or `None` past the end.
    fn next_arrival(&mut self, mut t: u64) -> Option<u64> {
        loop {
            let phases = &self.sc.traffic;
            let idx = phases.partition_point(|p| p.at.get().as_nanos() as u64 <= t);
            let rate = if idx == 0 { 0.0 } else { phases[idx - 1].rate };
            let next_change = phases
                .get(idx)
                .map_or(u64::MAX, |p| p.at.get().as_nanos() as u64);
            if rate > 0.0 {
                let u = 1.0 - self.traffic_rng.f64();
                let gap = (-u.ln() / rate * SEC as f64) as u64;
                let cand = t + gap.max(1);
                if cand < next_change {
                    return (cand < self.end).then_some(cand);
                }
            }
            // No arrival before the rate changes: memoryless, so draw again from there.
            if next_change >= self.end {
                return None;
            }
            t = next_change;
        }
    }

    fn draw_key(&mut self) -> u32 {
        let count = self.sc.keys.count;
        if self.zipf.is_empty() {
            return self.traffic_rng.u32(..count);
        }
        let total = self.zipf[self.zipf.len() - 1];
        let r = self.traffic_rng.f64() * total;
        self.zipf
            .partition_point(|&c| c <= r)
            .min(count as usize - 1) as u32
    }

    fn arrival(&mut self) {
        let key = self.draw_key();
        let id = self.reqs.len();
        self.reqs.push(Req {
            arrival: self.now,
            key,
            sent_at: 0,
            slot: None,
            tried: Vec::new(),
        });
        self.run.offered += 1;
        self.first_slot(id);
        if let Some(t) = self.next_arrival(self.now) {
            self.at(t, Ev::Arrival);
        }
    }

    /// The proxy's first attempt, step for step as `Backend::acquire_or_wait`: a slot now if
    /// nobody waits, else a place at the back of the real queue (503 when it is full).
    fn first_slot(&mut self, id: usize) {
        if self.backend.queue_len() == 0 {
            match self.acquire(id) {
                Ok(slot) => return self.send(id, slot),
                Err(NoSlot::AllBusy) => {}
                Err(_) => {
                    self.run.rejected += 1;
                    return;
                }
            }
        } else if self.backend.snapshot().candidates.is_empty() {
            self.run.rejected += 1;
            return;
        }
        match self.backend.enqueue() {
            Ok(ticket) => {
                self.waiting.push_back((id, ticket));
                let t = self.now + self.sc.settings.queue_timeout.get().as_nanos() as u64;
                self.at(t, Ev::QueueTimeout { req: id });
            }
            Err(_) => self.run.rejected += 1,
        }
    }

    /// `Backend::acquire` for request `id`, skipping the servers it has tried.
    fn acquire(&self, id: usize) -> Result<Slot, NoSlot> {
        let r = &self.reqs[id];
        let (uri, headers) = key_request(&self.hash_key, r.key);
        let req = balance::Request::http(key_ip(r.key), &uri, &headers);
        self.backend.acquire(&req, &r.tried)
    }

    /// Sends request `id` over `slot`. A dead server refuses the connection: the next server
    /// is tried, as the proxy retries, with a slot free now (a retry never queues), up to
    /// `retries`; past them, or with no other server free, the request fails.
    fn send(&mut self, id: usize, mut slot: Slot) {
        let mut failures = 0;
        loop {
            let Some(s) = self
                .sims
                .iter()
                .position(|s| s.server.id == slot.server().id)
            else {
                self.run.rejected += 1;
                return;
            };
            if self.sims[s].alive {
                self.reqs[id].slot = Some(slot);
                self.reqs[id].sent_at = self.now;
                self.deliver(s, id);
                return;
            }
            failures += 1;
            self.reqs[id].tried.push(slot.server().id);
            drop(slot);
            if failures > self.sc.settings.retries {
                self.run.failed += 1;
                return;
            }
            slot = match self.acquire(id) {
                Ok(next) => next,
                Err(_) => {
                    self.run.failed += 1;
                    return;
                }
            };
        }
    }

    /// Takes the slots the real queue handed to waiting requests and sends them; a ticket
    /// the queue gave up on (no server left) is a 503. Slots go to the oldest waiter first,
    /// so polling stops at the first still waiting. Sending may free slots (a server that
    /// crashes under the load), which the queue hands on at once: the loop sees those too.
    fn poll_queue(&mut self) {
        while let Some((id, ticket)) = self.waiting.front_mut() {
            let id = *id;
            match ticket.try_take() {
                Poll::Pending => return,
                Poll::Ready(got) => {
                    self.waiting.pop_front();
                    match got {
                        Some(slot) => self.send(id, slot),
                        None => self.run.rejected += 1,
                    }
                }
            }
        }
    }

    /// `queue_timeout` passed: the request leaves the queue (dropping its ticket) with a 503.
    /// One already served was polled away after the event that served it.
    fn queue_timeout(&mut self, id: usize) {
        if let Some(i) = self.waiting.iter().position(|(r, _)| *r == id) {
            self.waiting.remove(i);
            self.run.rejected += 1;
        }
    }

    /// The request reaches server `s`: a worker if one is free, else its backlog.
    fn deliver(&mut self, s: usize, id: usize) {
        let sim = &mut self.sims[s];
        sim.held.push(id);
        sim.peak = sim.peak.max(sim.held.len() as u32);
        if sim.busy < sim.workers {
            self.begin(s, id);
        } else {
            sim.backlog.push_back(id);
        }
        let m = &self.sc.servers[s];
        let memory = self.sims[s].held.len() as f64 * m.memory_per_request_mb;
        if m.memory_limit_mb > 0.0 && memory > m.memory_limit_mb {
            self.crash(s, true);
        }
    }

    fn begin(&mut self, s: usize, id: usize) {
        let sim = &mut self.sims[s];
        sim.busy += 1;
        let d = self.sc.servers[s].service.sample(&mut self.service_rng) as f64 * sim.slow;
        let ev = Ev::Done {
            server: s,
            epoch: sim.epoch,
            req: id,
        };
        self.at(self.now + d as u64, ev);
    }

    fn done(&mut self, s: usize, epoch: u32, id: usize) {
        if self.sims[s].epoch != epoch {
            return;
        }
        let sim = &mut self.sims[s];
        sim.busy -= 1;
        sim.held.retain(|&r| r != id);
        let req = &mut self.reqs[id];
        // The same hook as the data path: the response time feeds peak EWMA.
        sim.server.ewma.observe_at(self.now - req.sent_at, self.now);
        drop(req.slot.take());
        req.tried = Vec::new();
        self.run.served += 1;
        self.run.latencies.push(self.now - req.arrival);
        if let Some(next) = self.sims[s].backlog.pop_front() {
            self.begin(s, next);
        }
    }

    /// The process dies: from overload (counted in `crashes`) or by the scenario's script.
    fn crash(&mut self, s: usize, overload: bool) {
        if !self.sims[s].alive {
            return;
        }
        if overload {
            self.run.crashes += 1;
        }
        let sim = &mut self.sims[s];
        sim.alive = false;
        sim.epoch += 1;
        sim.busy = 0;
        sim.backlog.clear();
        let lost = std::mem::take(&mut sim.held);
        let epoch = sim.epoch;
        self.run.failed += lost.len() as u64;
        for id in lost {
            drop(self.reqs[id].slot.take());
        }
        let hc = &self.sc.settings;
        let interval = hc.health_interval.get().as_nanos() as u64;
        self.at(
            self.now + interval * u64::from(hc.fall.max(1)),
            Ev::NoticedDown { server: s, epoch },
        );
        let restart = self.sc.servers[s].restart_after.get().as_nanos() as u64;
        self.at(self.now + restart, Ev::Restarted { server: s, epoch });
    }

    fn restarted(&mut self, s: usize, epoch: u32) {
        if self.sims[s].epoch != epoch {
            return;
        }
        self.sims[s].alive = true;
        let hc = &self.sc.settings;
        let interval = hc.health_interval.get().as_nanos() as u64;
        let noticed = self.now + interval * u64::from(hc.rise.max(1));
        self.at(noticed, Ev::NoticedUp { server: s, epoch });
    }

    fn set_health(&mut self, s: usize, h: Health) {
        if self.sims[s].server.set_health(h) != h {
            self.backend.rebuild();
        }
    }

    /// In or out of rotation. The real server has a maintenance state (issue 4); here being
    /// out of rotation is modelled as marked down, which takes it out of the candidate set
    /// the same way, while what it holds finishes.
    fn set_rotation(&mut self, s: usize, on: bool) {
        self.sims[s].in_rotation = on;
        if !on {
            self.set_health(s, Health::Down);
        } else if self.sims[s].alive {
            self.set_health(s, Health::Up);
        }
    }

    fn scenario_event(&mut self, i: usize) {
        let ev = &self.sc.events[i];
        let Some(s) = self.sc.servers.iter().position(|m| m.name == ev.server) else {
            return;
        };
        let (action, factor, duration, every) = (ev.action, ev.factor, ev.duration, ev.every);
        match action {
            Action::Remove => self.set_rotation(s, false),
            Action::Maintenance => {
                self.set_rotation(s, false);
                if let Some(d) = duration {
                    let t = self.now + d.get().as_nanos() as u64;
                    self.at(t, Ev::EndMaintenance { server: s });
                }
            }
            Action::Return => self.set_rotation(s, true),
            Action::Slow => self.sims[s].slow = factor,
            Action::Crash => self.crash(s, false),
        }
        if let Some(every) = every {
            let t = self.now + every.get().as_nanos() as u64;
            if t < self.end {
                self.at(t, Ev::Scenario { event: i });
            }
        }
    }
}
