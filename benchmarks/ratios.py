"""Turns what the benchmarks recorded into the lines ``make bench`` prints and
docs/benchmarks.md records: ratios against baselines measured in the same run,
absolute figures beside the goals that are fixed limits, and the raw figures."""

from __future__ import annotations

# Same-run ratios: (group, numerator, denominator, goal, what); ratio = denominator_time / numerator_time
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
    (
        "storage-latency",
        "service_s",
        "bare_s",
        0.8,
        "service (defaults) / bare obstore loop with the service's read-ahead slots in flight, objects per second, "
        "fake object server adding 50 ms per request",
    ),
    (
        "storage-latency-moto",
        "service_s",
        "bare_s",
        None,
        "the same against moto + 50 ms (moto sets the pace: no goal)",
    ),
    # CPU per object read: ratio = the bare client's / the project's (above 1: the project's costs less)
    ("storage-clients", "s3_cpu_ms", "boto3_cpu_ms", None, "CPU per object, bare boto3 / the project's S3Storage"),
    (
        "storage-clients",
        "gcs_cpu_ms",
        "gcs-lib_cpu_ms",
        None,
        "CPU per object, bare google-cloud-storage / the project's GCSStorage",
    ),
    (
        "storage-clients",
        "s3_cpu_ms",
        "obstore_cpu_ms",
        None,
        "CPU per object, bare obstore / the project's S3Storage (below 1: what the wrapper adds)",
    ),
    *(
        (f"service-{size}", "baseline_s", "ceiling_s", None, f"baseline build vs transport ceiling, {size}, cold")
        for size in ("large", "small")
    ),
]

# Same-run A/B (``--baseline-python``): the service (after) and the baseline build (before), each as the
# median over rounds of the round's own ceiling/server pair; after/before against the goal, judged only
# over enough rounds. (group, after, before, goal, least rounds, what)
AB = [
    (f"service-{size}", "paired_ratio", "baseline_paired_ratio", 0.97, 6, f"{size} ledgers, cold")
    for size in ("large", "small")
]

# stellar.v1 vs raw_ledger_service, the same cold stream: the median of the rounds' own pairs (raw seconds /
# v1 seconds, so ledgers/s v1 / raw), judged only over enough rounds. (group, goal, least rounds, what)
V1 = [(f"v1-{size}", 0.95, 6, f"{size} ledgers, cold") for size in ("large", "small")]

# Goals that are a fixed limit, not a same-run baseline: the figure beside its limit, both recorded by the
# benchmark. (group, figure, limit, what, unit, what the limit is)
LIMITS = [
    ("service-fanout", "peak_rss_MiB", "limit_MiB", "peak RSS", "MiB", "CACHE_BYTES + 256 MiB"),
    ("tip-latency", "max_ms", "goal_ms", "worst", "ms", "poll interval + 100 ms"),
    *(
        ("storage-clients", f"{c}_cpu_ms", "goal_cpu_ms", f"the project's {api} CPU per object read", "ms", "issue 12")
        for c, api in (
            ("s3", "S3Storage (signed), get with on_size,"),
            ("s3-ranged", "S3Storage (signed), get as one ranged GET,"),
            ("gcs", "GCSStorage (token), get with on_size,"),
            ("gcs-ranged", "GCSStorage (token), get as one ranged GET,"),
        )
    ),
]

# (group, name, unit): absolute figures printed beside the ratios
FIGURES = [
    *(
        (f"service-{size}", f"{server}_{name}", unit)
        for size in ("large", "small")
        for server in ("ceiling", "service", "warm", "baseline")
        for name, unit in (("MB/s", "MB/s"), ("ledgers/s", "ledgers/s"), ("cpu_s/GB", "server CPU-seconds per GB"))
    ),
    *(
        (f"service-{size}", name, f"{server}/ceiling, median of the rounds' own pairs")
        for size in ("large", "small")
        for server, name in (("service", "paired_ratio"), ("baseline", "baseline_paired_ratio"))
    ),
    ("service-fanout", "streams", "concurrent streams"),
    ("service-fanout", "ledgers/s", "ledgers/s, all streams together"),
    ("service-fanout", "cpu_s/GB", "server CPU-seconds per GB"),
    ("storage-latency", "paired_ratio", "service/bare, median of the rounds' own pairs"),
    ("storage-latency", "bare_inflight", "reads in flight, bare loop (STORAGE_MAX_INFLIGHT - 8)"),
    *(
        (group, f"{kind}_objects/s", "objects/s, best round")
        for group in ("storage-latency", "storage-latency-moto")
        for kind in ("bare", "service")
    ),
    *(
        ("storage-latency", f"{kind}_cpu_ms", f"ms of {what} CPU per object (all threads), lowest round")
        for kind, what in (("bare", "the bare loop's"), ("service", "the service's"))
    ),
    ("storage-latency", "service_gets", "object reads during the service's stream"),
    ("storage-latency", "service_other_requests", "other requests of the service (start-up's listings, look-ups)"),
    ("storage-latency", "service_lists", "LIST requests over the service's life (start-up's searches)"),
    *(
        ("storage-clients", f"{c}_{name}", unit)
        for c in ("s3", "s3-ranged", "gcs", "gcs-ranged", "obstore", "boto3", "gcs-lib")
        for name, unit in (("cpu_ms", "ms CPU per object read, median"), ("objects/s", "objects/s, median"))
    ),
    *(
        ("tip-latency", f"{q}_ms", "ms from landing to arrival, 1 ledger per object, poll 1 s")
        for q in ("p95", "p50", "min")
    ),
]


def _num(v: float) -> str:
    return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"


def report(results: dict[str, dict[str, float]]) -> list[str]:
    lines = []
    for group, num, den, goal, what in SPEED:
        times = results.get(group, {})
        if num in times and den in times:
            ratio = times[den] / times[num]
            verdict = "" if goal is None else f"  goal >= {goal:g}: {'met' if ratio >= goal else 'NOT met'}"
            lines.append(f"{group}: {what}: {_num(ratio)}x{verdict}")
    for group, after, before, goal, least, what in AB:
        got = results.get(group, {})
        if after in got and before in got:
            rounds = min(got[f"{after}_rounds"], got[f"{before}_rounds"])
            quotient = got[after] / got[before]
            judged = "met" if quotient >= goal else "NOT met"
            n = f"{rounds:.0f} round{'' if rounds == 1 else 's'}"
            verdict = judged if rounds >= least else f"not judged over {n} (it needs {least})"
            lines.append(
                f"{group}: A/B, {what}, paired medians of {n}: after (service/ceiling) "
                f"{got[after]:.3f}, before (baseline/ceiling) {got[before]:.3f}, after/before {quotient:.3f}"
                f"  goal >= {goal:g}: {verdict}"
            )
    for group, goal, least, what in V1:
        got = results.get(group, {})
        if "paired_ratio" in got:
            rounds = got["paired_ratio_rounds"]
            n = f"{rounds:.0f} round{'' if rounds == 1 else 's'}"
            judged = "met" if got["paired_ratio"] >= goal else "NOT met"
            verdict = judged if rounds >= least else f"not judged over {n} (it needs {least})"
            lines.append(
                f"{group}: stellar.v1 / raw_ledger_service stream, {what}, ledgers/s, paired median of {n}: "
                f"{got['paired_ratio']:.3f}  goal >= {goal:g}: {verdict}"
            )
    fanout = results.get("service-fanout", {})
    if "fetches" in fanout and "objects" in fanout:  # 32 streams over one range: each object read once
        held = fanout.get("held", 0)  # read at start-up, before the streams
        verdict = "met" if fanout["fetches"] + held == fanout["objects"] else "NOT met"
        reads = f"storage reads {fanout['fetches']:,.0f} for {fanout['objects']:,.0f} objects"
        reads += f" ({held:,.0f} held from start-up)" if held else ""
        lines.append(f"service-fanout: {reads}, goal one per object: {verdict}")
    for group, figure, limit, what, unit, basis in LIMITS:
        got = results.get(group, {})
        if figure in got and limit in got:
            verdict = "met" if got[figure] <= got[limit] else "NOT met"
            figure_, limit_ = _num(got[figure]), _num(got[limit])
            lines.append(f"{group}: {what} {figure_} {unit}, goal at most {limit_} {unit} ({basis}): {verdict}")
    for group, times in sorted(results.items()):
        if "size" in times:
            for name, t in sorted(times.items()):
                if name != "size":
                    lines.append(f"{group}: {name}: {times['size'] / t / 1e9:.3f} GB/s of decompressed output")
    for group, name, unit in FIGURES:
        if name in results.get(group, {}):
            lines.append(f"{group}: {name}: {_num(results[group][name])} {unit}")
    return lines
