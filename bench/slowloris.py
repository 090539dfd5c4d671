#!/usr/bin/env python3
"""Slowloris clients for bench/slowloris.sh: CONNS connections to 127.0.0.1:PORT, each
sending a request head one byte every INTERVAL seconds and never finishing it.

Bounded in every way: the ramp has a deadline, the hold has a length, reconnects (of
connections the proxy closed, as a real slowloris does) have a budget, and the whole run
ends by RAMP + HOLD + 5 seconds. Loopback only. While it runs, the status file is
rewritten every 0.5 s with {"open", "opened", "closed_by_peer", "failed", "phase"} so the
shell script can wait for the ramp and read how many connections are held.
"""
import argparse
import asyncio
import json
import os
import random
import sys
import time


class Stats:
    def __init__(self):
        self.open = 0
        self.opened = 0
        self.closed_by_peer = 0
        self.failed = 0
        self.phase = "ramp"

    def dump(self, path):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(self.__dict__, f)
        os.replace(tmp, path)


async def one(port, interval, stop_at, stats, budget, gate):
    """One slowloris connection, reconnected while the budget and the time last."""
    head = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: slowloris\r\n"
    while time.monotonic() < stop_at:
        async with gate:
            try:
                r, w = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
            except (OSError, asyncio.TimeoutError):
                stats.failed += 1
                await asyncio.sleep(0.5)
                continue
        stats.open += 1
        stats.opened += 1
        closed = False
        try:
            # The request line and two headers at once, then one byte of one more header
            # every `interval` seconds (jittered so the writes spread out).
            w.write(head)
            await w.drain()
            filler = b"X-Slow: " + b"a" * 4000
            for i in range(len(filler)):
                left = stop_at - time.monotonic()
                if left <= 0:
                    break
                await asyncio.sleep(min(left, interval * random.uniform(0.8, 1.2)))
                if r.at_eof():  # the proxy closed it (its header timeout)
                    closed = True
                    break
                w.write(filler[i:i + 1])
                await w.drain()
        except (OSError, ConnectionError):
            closed = True
        finally:
            stats.open -= 1
            w.close()
        if not closed:
            return
        stats.closed_by_peer += 1
        if budget[0] <= 0:
            return
        budget[0] -= 1


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--interval", type=float, default=3.0, help="seconds between header bytes")
    ap.add_argument("--ramp", type=float, default=30.0, help="longest the ramp may take")
    ap.add_argument("--hold", type=float, default=20.0, help="seconds to hold after the ramp")
    ap.add_argument("--reconnects", type=int, default=100000, help="reconnect budget")
    ap.add_argument("--status", required=True, help="file rewritten with the counts")
    a = ap.parse_args()

    stats = Stats()
    budget = [a.reconnects]
    gate = asyncio.Semaphore(512)  # connects in flight at once
    start = time.monotonic()
    stop_at = start + a.ramp + a.hold
    tasks = [asyncio.create_task(one(a.port, a.interval, stop_at, stats, budget, gate))
             for _ in range(a.conns)]
    ramp_end = start + a.ramp
    while time.monotonic() < stop_at and not all(t.done() for t in tasks):
        if stats.phase == "ramp" and (stats.open >= a.conns or time.monotonic() > ramp_end):
            stats.phase = "hold"
            stop_at = min(stop_at, time.monotonic() + a.hold)
        stats.dump(a.status)
        await asyncio.sleep(0.5)
    stats.phase = "done"
    stats.dump(a.status)
    for t in tasks:
        t.cancel()
    await asyncio.wait(tasks, timeout=5)
    print(json.dumps(stats.__dict__))


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(130)
