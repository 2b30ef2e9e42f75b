"""Turns the same-run timings into the ratios the README quotes."""

from __future__ import annotations

# (group, numerator, denominator, goal, what)  ratio = denominator_time / numerator_time
SPEED = [
    ("core-large", "walk_c", "bare_zstd", 0.6, "compiled walk vs bare decompression, same bytes"),
    ("core-large", "decode_c", "bare_zstd", 0.35, "whole decode vs bare decompression"),
    ("core-large", "decode_c", "zstd_plus_sdk", 300.0, "whole decode vs bare decompression + stellar-sdk"),
    ("core-large", "frame_c", "bare_zstd", None, "the service's decode (frames, every check) vs bare decompression"),
    ("core-large", "walk_py", "bare_zstd", None, "pure-Python walk vs bare decompression (reference)"),
    ("core-small", "walk_c", "bare_zstd", 0.6, "compiled walk vs bare decompression, small ledgers"),
    ("core-small", "decode_c", "bare_zstd", 0.35, "whole decode vs bare decompression, small ledgers"),
    ("core-small", "frame_c", "bare_zstd", None, "the service's decode vs bare decompression, small ledgers"),
    ("core-small", "decode_c", "zstd_plus_sdk", 300.0, "whole decode vs decompression + stellar-sdk, small ledgers"),
    # service vs transport ceiling: the same range and bytes, so a ratio of times is one of MB/s and of ledgers/s
    ("service-large", "service_s", "ceiling_s", 0.7, "service vs transport ceiling in MB/s, large ledgers, cold"),
    ("service-small", "service_s", "ceiling_s", 0.9, "service vs transport ceiling in ledgers/s, small ledgers, cold"),
    (
        "service-large",
        "warm_s",
        "ceiling_s",
        None,
        "service from its cache (nothing read or decoded) vs ceiling, large",
    ),
    (
        "service-small",
        "warm_s",
        "ceiling_s",
        None,
        "service from its cache (nothing read or decoded) vs ceiling, small",
    ),
    ("service-fanout", "peak_rss_MiB", "limit_MiB", 1.0, "(CACHE_BYTES + 256 MiB) / server peak RSS, 32 clients"),
    ("storage-latency", "service_s", "bare_s", 0.8, "service / bare boto3 objects per second, 50 ms per request"),
    ("tip-latency", "max_ms", "goal_ms", 1.0, "(poll interval + 100 ms) / worst tip latency"),
]

# (group, name, unit): absolute figures printed beside the ratios
FIGURES = [
    *(
        (f"service-{size}", f"{server}_{name}", unit)
        for size in ("large", "small")
        for server in ("ceiling", "service", "warm")
        for name, unit in (("MB/s", "MB/s"), ("ledgers/s", "ledgers/s"), ("cpu_s/GB", "server CPU-seconds per GB"))
    ),
    *(
        (f"service-{size}", "paired_ratio", "service/ceiling, median of the rounds' own pairs")
        for size in ("large", "small")
    ),
    ("service-fanout", "streams", "concurrent streams"),
    ("service-fanout", "ledgers/s", "ledgers/s, all streams together"),
    ("service-fanout", "cpu_s/GB", "server CPU-seconds per GB"),
    ("service-fanout", "objects", "objects in the range"),
    ("service-fanout", "fetches", "storage reads"),
    ("service-fanout", "peak_rss_MiB", "MiB server peak RSS"),
    ("service-fanout", "limit_MiB", "MiB CACHE_BYTES + 256 MiB"),
    *(("storage-latency", f"{kind}_objects/s", "objects/s, 16 at once, best round") for kind in ("bare", "service")),
    ("storage-latency", "service_gets", "GET requests during the service's stream"),
    ("storage-latency", "service_lists", "LIST requests during the service's stream"),
    *(
        ("tip-latency", f"{q}_ms", "ms from landing to arrival, 1 ledger per object, poll 1 s")
        for q in ("max", "p95", "p50", "min")
    ),
]


def report(results: dict[str, dict[str, float]]) -> list[str]:
    lines = []
    for group, num, den, goal, what in SPEED:
        times = results.get(group, {})
        if num in times and den in times:
            ratio = times[den] / times[num]
            verdict = "" if goal is None else f"  goal >= {goal:g}: {'met' if ratio >= goal else 'NOT met'}"
            lines.append(f"{group}: {what}: {ratio:.3g}x{verdict}")
    for group, times in sorted(results.items()):
        if "size" in times:
            for name, t in sorted(times.items()):
                if name != "size":
                    lines.append(f"{group}: {name}: {times['size'] / t / 1e9:.3f} GB/s of decompressed output")
    for group, name, unit in FIGURES:
        if name in results.get(group, {}):
            v = results[group][name]
            lines.append(f"{group}: {name}: {f'{v:,.0f}' if v >= 100 else f'{v:.3g}'} {unit}")
    return lines
