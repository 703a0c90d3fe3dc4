#!/usr/bin/env python3
"""Reads the `EXPTAIL` lines an experiment build prints (tail-trace.patch) and tells, for each
event slower than a threshold at the sink, what overlapped it: a slow group commit (`commit`),
a slow segment `fdatasync` (`sync`), slow deferred work after a commit (`after`), or a stall of
a thread that sleeps 1 ms at a time in the loadtest process (`stall`: the CPU, or the VM).

    python3 bench/experiments/tail.py /tmp/t.err [threshold_us, default 5000]
"""
import collections
import sys

spans = collections.defaultdict(list)  # kind -> [(start_us, duration_us)]
slow = []  # (sent_us, latency_us)
for line in open(sys.argv[1]):
    if not line.startswith("EXPTAIL"):
        continue
    kind, *fields = line.split()[1:]
    kv = dict(f.split("=") for f in fields)
    if kind == "slow":
        slow.append((int(kv["sent"]), int(kv["us"])))
    else:
        spans[kind].append((int(kv["at"]) - int(kv["us"]), int(kv["us"])))

threshold = int(sys.argv[2]) if len(sys.argv) > 2 else 5000
for kind, s in sorted(spans.items()):
    durations = sorted(d for _, d in s)
    print(f"{kind}: {len(s)} logged, over 10 ms: {sum(d > 10000 for d in durations)}, "
          f"longest {durations[-1] / 1000 if durations else 0:.1f} ms")
over = [e for e in slow if e[1] > threshold]
causes = collections.Counter()
for sent, lat in over:
    hit = [k for k, s in sorted(spans.items()) if any(a < sent + lat and a + d > sent for a, d in s)]
    causes["+".join(hit) or "nothing logged"] += 1
print(f"events over {threshold} us: {len(over)}; overlapping: {dict(causes)}")
