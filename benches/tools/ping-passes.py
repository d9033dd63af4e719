#!/usr/bin/env python3
"""Splits ping round trips through two tunnel gateways into their passes,
from the scheduler's wake-ups.

Input: `perf sched timehist -w -i FILE` of a `perf sched record -a` taken
while pings cross the tunnel (netns-compare --ping-only). For each ping it
finds: the ping waking a thread of gateway A (the packet is in A's TUN),
A waking a thread of gateway B (the sealed datagram reached B's socket),
B waking A (the reply's datagram reached A), and A waking the ping. The
three intervals are A's outbound pass, B's whole pass (receive, TUN write,
the kernel's echo reply, TUN read, send) and A's inbound pass, each with
the kernel work done in that thread's context. Pings where a gateway
thread was already awake (no wake-up to time) are counted but left out.

perf names a process's main thread `comm[pid]` and its other threads
`comm[tid/pid]`. Given the gateways' process ids, a wake-up of either
kind counts; without them only `comm[tid/pid]` names can be told from
kernel threads and other programs, so a gateway whose pass runs on its
main thread is missed (the pass is then timed from a later wake-up or the
ping left out), and the script says so.

Usage: perf sched timehist -w -i sched.data | ping-passes.py [PID_A PID_B]
"""
import re
import statistics
import sys

WAKE = re.compile(r'\s*([\d.]+)\s+\[\d+\]\s+(\S+)\s+awakened: (\S+)')


GATEWAYS = set(sys.argv[1:])


def tgid(name):
    """The process id of a gateway thread named `name`, else None."""
    m = re.search(r'\[(?:\d+/)?(\d+)\]$', name)
    if not m:
        return None
    if GATEWAYS:
        return m[1] if m[1] in GATEWAYS else None
    return m[1] if '/' in name[m.start():] else None


def main():
    if not GATEWAYS:
        print('no gateway pids given: wake-ups of main threads (comm[pid]) are not counted', file=sys.stderr)
    events = [(float(m[1]), m[2], m[3]) for m in map(WAKE.match, sys.stdin) if m]
    passes, skipped, i = [], 0, 0
    whole, outbound = [], []
    while i < len(events):
        t0, waker, woken = events[i]
        i += 1
        if not waker.startswith('ping[') or tgid(woken) is None:
            continue
        a, stage, times = tgid(woken), 1, [t0]
        while i < len(events) and events[i][0] - t0 < 0.003:
            t, _, w = events[i]
            i += 1
            if w.startswith('ping['):
                whole.append((t - t0) * 1e6)
                if stage == 3:
                    times.append(t)
                    stage = 4
                break
            if stage == 1 and tgid(w) not in (None, a):
                stage = 2
                times.append(t)
                outbound.append((t - t0) * 1e6)
            elif stage == 2 and tgid(w) == a:
                stage = 3
                times.append(t)
        if stage == 4:
            passes.append([(times[k + 1] - times[k]) * 1e6 for k in range(3)])
        else:
            skipped += 1
    if not passes:
        sys.exit('no complete round trips found')
    def q(xs, f):
        xs = sorted(xs)
        return round(xs[min(len(xs) - 1, int(f * len(xs)))])
    print(f'all {len(whole)} round trips, ping to ping: median {round(statistics.median(whole))} us, '
          f'q25 {q(whole, .25)}, q75 {q(whole, .75)}; A out alone: median {round(statistics.median(outbound))} us')
    print(f'{len(passes)} with every pass timed, {skipped} not (a gateway thread was already awake):')
    print('microseconds        median   q25   q75')
    for k, label in enumerate(['A out', 'B in and out', 'A in']):
        xs = [p[k] for p in passes]
        print(f'{label:18s} {round(statistics.median(xs)):6d} {q(xs, .25):5d} {q(xs, .75):5d}')
    xs = [sum(p) for p in passes]
    print(f'{"total":18s} {round(statistics.median(xs)):6d} {q(xs, .25):5d} {q(xs, .75):5d}')


if __name__ == '__main__':
    main()
