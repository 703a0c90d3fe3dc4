#!/usr/bin/env python3
"""Reads the `EXPWIN window odd appends` lines an experiment build prints (see
commit-policy-windows.patch) and compares each odd window (the variant) with the mean of the
two even windows beside it (the control): the same process, the same seconds of the machine."""
import statistics
import sys

rows = []
for line in open(sys.argv[1]):
    if line.startswith("EXPWIN"):
        _, w, odd, n = line.split()
        rows.append((int(w), int(odd), int(n)))
rows = rows[1:]  # the first window holds the start
ratios = []
for i, (_, odd, n) in enumerate(rows):
    if odd and 0 < i < len(rows) - 1 and not rows[i - 1][1] and not rows[i + 1][1]:
        control = (rows[i - 1][2] + rows[i + 1][2]) / 2
        if control > 0:
            ratios.append(n / control)
print(
    f"pairs {len(ratios)} median variant/control {statistics.median(ratios):.3f} "
    f"mean {statistics.mean(ratios):.3f} variant ahead in {sum(r > 1 for r in ratios)} of {len(ratios)}"
)
