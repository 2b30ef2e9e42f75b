"""Turns the same-run timings into the ratios the README quotes."""

from __future__ import annotations

# (group, numerator, denominator, goal, what)  ratio = denominator_time / numerator_time
SPEED = [
    ("core-large", "walk_c", "bare_zstd", 0.6, "compiled walk vs bare decompression, same bytes"),
    ("core-large", "decode_c", "bare_zstd", 0.35, "whole decode vs bare decompression"),
    ("core-large", "decode_c", "zstd_plus_sdk", 300.0, "whole decode vs bare decompression + stellar-sdk"),
    ("core-large", "walk_py", "bare_zstd", None, "pure-Python walk vs bare decompression (reference)"),
    ("core-small", "walk_c", "bare_zstd", 0.6, "compiled walk vs bare decompression, small ledgers"),
    ("core-small", "decode_c", "bare_zstd", 0.35, "whole decode vs bare decompression, small ledgers"),
    ("core-small", "decode_c", "zstd_plus_sdk", 300.0, "whole decode vs decompression + stellar-sdk, small ledgers"),
]


def report(results: dict[str, dict[str, float]]) -> list[str]:
    lines = []
    for group, num, den, goal, what in SPEED:
        times = results.get(group, {})
        if num in times and den in times:
            ratio = times[den] / times[num]
            verdict = "" if goal is None else ("  goal >= %g: %s" % (goal, "met" if ratio >= goal else "NOT met"))
            lines.append(f"{group}: {what}: {ratio:.3g}x{verdict}")
    for group, times in sorted(results.items()):
        if "size" in times:
            for name, t in sorted(times.items()):
                if name != "size":
                    lines.append(f"{group}: {name}: {times['size'] / t / 1e9:.3f} GB/s of decompressed output")
    return lines
