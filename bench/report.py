"""Turns the harness's results into docs/benchmarks.md (tables, targets) and a PNG plot.

Figures across repeats are medians; ratios to etcd are the median of each repeat's own
ratio (kds and etcd ran back to back in that repeat).
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench.report_text import NOTE, PROFILED


def _med(xs: list[float]) -> float:
    return round(statistics.median(xs), 2) if xs else float("nan")


def summarize(results: dict[str, Any]) -> dict[str, Any]:
    prop: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in results.get("propagation", []):
        z = r["kds"]["zones"]
        for side in ("kds", "etcd"):
            prop[z][f"{side}_p50"].append(r[side]["p50_ms"])
            prop[z][f"{side}_p99"].append(r[side]["p99_ms"])
            prop[z][f"{side}_send_p50"].append(r[side]["from_send_p50_ms"])
            prop[z][f"{side}_send_p99"].append(r[side]["from_send_p99_ms"])
            if "answer_p50_ms" in r[side]:  # runs before it was recorded lack it
                prop[z][f"{side}_answer_p50"].append(r[side]["answer_p50_ms"])
                prop[z][f"{side}_answer_p99"].append(r[side]["answer_p99_ms"])
        if "server_cpu_ms_per_write" in r["kds"] and "server_cpu_ms_per_write" in r["etcd"]:
            totals = []
            for side in ("kds", "etcd"):
                server = r[side]["server_cpu_ms_per_write"]
                member = r[side]["member_cpu_ms_per_write"]
                prop[z][f"{side}_server_cpu"].append(server)
                prop[z][f"{side}_member_cpu"].append(member)
                if "harness_cpu_ms_per_write" in r[side]:  # recorded since a later run
                    prop[z][f"{side}_harness_cpu"].append(r[side]["harness_cpu_ms_per_write"])
                totals.append(server + member * z)
                prop[z][f"{side}_total_cpu"].append(totals[-1])
            prop[z]["ratio_cpu"].append(totals[0] / max(totals[1], 1e-3))
        prop[z]["ratio_p50"].append(r["kds"]["p50_ms"] / max(r["etcd"]["p50_ms"], 1e-3))
        prop[z]["ratio_p99"].append(r["kds"]["p99_ms"] / max(r["etcd"]["p99_ms"], 1e-3))
        prop[z]["ratio_send_p99"].append(
            r["kds"]["from_send_p99_ms"] / max(r["etcd"]["from_send_p99_ms"], 1e-3)
        )
        if "kds_spread" in r:
            _spread(prop[z], r["kds_spread"], r["etcd_spread"])
        if "kds_plain" in r:
            prop[z]["plain_p50"].append(r["kds_plain"]["p50_ms"])
            prop[z]["plain_p99"].append(r["kds_plain"]["p99_ms"])
            prop[z]["plain_send_p99"].append(r["kds_plain"]["from_send_p99_ms"])
    bulk: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in results.get("bulk", []):
        z = r["kds"]["zones"]
        for side in ("kds", "etcd"):
            bulk[z][f"{side}_s"].append(r[side]["all_zones_s"])
            bulk[z][f"{side}_per_s"].append(r[side]["per_s"])
        bulk[z]["kds_apply_s"].append(r["kds"]["apply_s"])
        bulk[z]["ratio"].append(r["kds"]["all_zones_s"] / max(r["etcd"]["all_zones_s"], 1e-3))
        for key in ("kdsctl_cpu_s", "global_cpu_s"):
            if key in r["kds"]:
                bulk[z][key].append(r["kds"][key])
        if "kds_plain" in r:
            bulk[z]["plain_s"].append(r["kds_plain"]["all_zones_s"])
    return {
        "propagation": {z: {k: _med(v) for k, v in d.items()} for z, d in sorted(prop.items())},
        "bulk": {z: {k: _med(v) for k, v in d.items()} for z, d in sorted(bulk.items())},
        "repeats": len({r["repeat"] for r in results.get("propagation", [])}) or 1,
    }


def _spread(d: dict[str, list[float]], kds: dict[str, Any], etcd: dict[str, Any]) -> None:
    """One repeat's propagation with each zone and each watcher in a process of its own."""
    for side, r in (("kds", kds), ("etcd", etcd)):
        d[f"spread_{side}_p50"].append(r["p50_ms"])
        d[f"spread_{side}_p99"].append(r["p99_ms"])
        d[f"spread_{side}_send_p99"].append(r["from_send_p99_ms"])
        if "member_cpu_ms_per_write" in r:
            d[f"spread_{side}_member_cpu"].append(r["member_cpu_ms_per_write"])
    d["spread_ratio_p99"].append(kds["p99_ms"] / max(etcd["p99_ms"], 1e-3))
    d["spread_ratio_send_p99"].append(kds["from_send_p99_ms"] / max(etcd["from_send_p99_ms"], 1e-3))


def targets(results: dict[str, Any], s: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(target, figure, met) for each performance target; met is None when not measured."""
    out: list[tuple[str, str, bool | None]] = []
    prop, bulk = s["propagation"], s["bulk"]

    def add(name: str, value: float | None, limit: float, fmt: str) -> None:
        if value is None:
            out.append((name, "not measured in this run", None))
        else:
            out.append((name, fmt.format(value), value <= limit))

    for z, limit in ((1, 2), (10, 2), (100, 3)):
        d = prop.get(z, {})
        add(f"propagation p99, {z} zone(s), from the answer, <= {limit}x etcd",
            d.get("ratio_p99"), limit, "{}x")  # fmt: skip
        add(f"  same, from sending the write, <= {limit}x etcd",
            d.get("ratio_send_p99"), limit, "{}x")  # fmt: skip
        if z in results["plan"].get("spread_zones", ()):
            add(f"  same, a process each, from the answer, <= {limit}x etcd",
                d.get("spread_ratio_p99"), limit, "{}x")  # fmt: skip
            add(f"  same, a process each, from sending the write, <= {limit}x etcd",
                d.get("spread_ratio_send_p99"), limit, "{}x")  # fmt: skip
    b10 = bulk.get(10, {})
    add("10,000 secrets to 10 zones <= 3 s", b10.get("kds_s"), 3, "{} s")
    add("  same, <= 5x etcd", b10.get("ratio"), 5, "{}x")
    add("  kdsctl apply's CPU <= 0.4 s", b10.get("kdsctl_cpu_s"), 0.4, "{} s")
    add("  global's CPU until every zone holds them <= 1 s", b10.get("global_cpu_s"), 1, "{} s")
    resume = results.get("resume")
    add("resume bytes <= 2x changed resources", resume and resume["ratio"], 2, "{}x")
    foot = results.get("footprint")
    big = foot and foot["idle_zones"] >= 100 and foot["secrets"] >= 100_000
    add(
        "global RSS <= 150 MB, 100 zones + 100,000 secrets",
        foot["global_rss_mb_idle_zones"] if big and foot else None,
        150,
        "{} MB",
    )
    if foot and big:
        add(
            f"  same, while {foot['storm_zones']} new zones take the snapshot at once",
            foot["global_rss_mb_storm_peak"],
            150,
            "{} MB",
        )
        add("  same, peak over the scenario", foot["global_peak_rss_mb"], 150, "{} MB")
    return out


def _load(machine: dict[str, Any]) -> str:
    load = machine.get("load_at_start")
    if load is None:
        return f"load average at the start not recorded ({machine.get('note', '')})"
    return "load average at the start " + " / ".join(map(str, load)) + " (1 / 5 / 15 min)"


def _table(
    prop: dict[int, dict[str, float]], needs: str, intro: str, header: str, keys: str
) -> list[str]:
    """A table of the propagation figures named in ``keys`` (space-separated; a row per zone
    count, "-" where a figure is missing) under the Markdown ``header`` row, for the zone
    counts whose figures include ``needs``; nothing if none does."""
    rows = {z: d for z, d in prop.items() if needs in d}
    if not rows:
        return []
    out = ["", intro, "", header, "|" + "---|" * header.count(" | ") + "---|"]
    for z, d in rows.items():
        out.append("| " + " | ".join(map(str, [z, *(d.get(k, "-") for k in keys.split())])) + " |")
    return out


def _with_overall_peak(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` with the footprint's peak over the whole scenario taken as the highest of
    the kernel's high-water mark (VmHWM) and the resident sizes sampled during it. The
    kernel does not update that mark at every change of the resident size: one run sampled
    144.6 MB during the snapshot storm where VmHWM, read after it, said 144.3 MB."""
    foot = results.get("footprint")
    if not foot or "global_peak_rss_mb" not in foot:
        return results
    sampled = [
        foot.get(k, 0.0) for k in ("global_rss_mb_storm_peak", "global_rss_mb_idle_connect_peak")
    ]
    peak = max(foot["global_peak_rss_mb"], *sampled)
    return {**results, "footprint": {**foot, "global_peak_rss_mb": peak}}


def markdown(results: dict[str, Any]) -> str:
    s = summarize(results)
    m = results["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Run {results['started']} to {results['finished']} on commit "
        f"{results.get('commit', 'not recorded')}; {_load(m)}; {m['cpus']} CPUs, Python "
        f"{m['python']}, {m['etcd']}; {s['repeats']} repeat(s); plan: "
        + ", ".join(f"{k}={v}" for k, v in results["plan"].items())
        + ".",
        "",
        *([results["runs"], ""] if results.get("runs") else []),
        NOTE,
        *(
            ["![propagation and bulk, kds-sync and etcd](benchmarks.png)", ""]
            if s["propagation"] or s["bulk"]
            else []
        ),
        "## Targets",
        "",
        "| target | figure | met |",
        "|---|---|---|",
    ]
    for name, fig, met in targets(results, s):
        lines.append(f"| {name} | {fig} | {'-' if met is None else 'yes' if met else '**no**'} |")
    lines += [
        "",
        "## 1 and 5. Single-write propagation (ms, acknowledgement to applied everywhere)",
        "",
        "| zones | kds p50 | kds p99 | kds plaintext p50 | kds plaintext p99 | etcd p50 "
        "| etcd p99 | p50 x etcd | p99 x etcd |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for z, d in s["propagation"].items():
        # A p50 at or below zero (zones had it before the writer heard the answer) has no ratio.
        r50 = d["ratio_p50"] if d["kds_p50"] > 0 and d["etcd_p50"] > 0 else "-"
        lines.append(
            f"| {z} | {d['kds_p50']} | {d['kds_p99']} | {d.get('plain_p50', '-')} "
            f"| {d.get('plain_p99', '-')} | {d['etcd_p50']} | {d['etcd_p99']} "
            f"| {r50} | {d['ratio_p99']} |"
        )
    lines += [
        "",
        "The same writes timed from sending the write (so each side's own commit counts too):",
        "",
        "| zones | kds p50 | kds p99 | kds plaintext p99 | etcd p50 | etcd p99 | p99 x etcd |",
        "|---|---|---|---|---|---|---|",
    ]
    for z, d in s["propagation"].items():
        lines.append(
            f"| {z} | {d['kds_send_p50']} | {d['kds_send_p99']} | {d.get('plain_send_p99', '-')} "
            f"| {d['etcd_send_p50']} | {d['etcd_send_p99']} | {d['ratio_send_p99']} |"
        )
    prop = s["propagation"]
    lines += _table(
        prop,
        "kds_answer_p50",
        "The write itself, from sending it to hearing the answer (what a writer waits; "
        "global answers once every connected zone's stream has handed the change to grpc):",
        "| zones | kds p50 | kds p99 | etcd p50 | etcd p99 |",
        "kds_answer_p50 kds_answer_p99 etcd_answer_p50 etcd_answer_p99",
    )
    lines += _table(
        prop,
        "kds_total_cpu",
        "CPU per write, each side's processes (ms of user and system time over the run's "
        "writes, idle time included; a zone or watcher is its fleet processes' time "
        "divided by the members). On 2 cores, what both sides need per write bounds "
        "how fast the last member can have it. The harness's own process (sending the "
        "writes, reading every member's reports) is in neither side's figures; its CPU "
        "per write is in the last two columns:",
        "| zones | global | each zone | kds in all | etcd | each watcher | etcd in all "
        "| kds in all x etcd | harness, kds | harness, etcd |",
        "kds_server_cpu kds_member_cpu kds_total_cpu etcd_server_cpu etcd_member_cpu "
        "etcd_total_cpu ratio_cpu kds_harness_cpu etcd_harness_cpu",
    )
    lines += _table(
        prop,
        "spread_ratio_p99",
        "The same scenario with each zone, and each etcd watcher, in a process of its own, "
        "as zones are deployed (above, several share a process), in the same repeats: "
        "latency in ms, from the answer and then from sending the write; CPU in ms per "
        "write of each member:",
        "| zones | kds p50 | kds p99 | etcd p50 | etcd p99 | p99 x etcd "
        "| kds p99 from sending | etcd p99 from sending | x etcd | each zone's CPU "
        "| each watcher's CPU |",
        "spread_kds_p50 spread_kds_p99 spread_etcd_p50 spread_etcd_p99 spread_ratio_p99 "
        "spread_kds_send_p99 spread_etcd_send_p99 spread_ratio_send_p99 "
        "spread_kds_member_cpu spread_etcd_member_cpu",
    )
    n = results["plan"]["bulk_n"]
    lines += [
        "",
        f"## 2 and 5. Bulk: {n:,} secrets in one apply until every zone holds them",
        "",
        "| zones | kds s (apply returns) | kds secrets/s | kds plaintext s | kdsctl CPU s "
        "| global CPU s | etcd s | etcd secrets/s | x etcd |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for z, d in s["bulk"].items():
        lines.append(
            f"| {z} | {d['kds_s']} ({d['kds_apply_s']}) | {d['kds_per_s']:.0f} "
            f"| {d.get('plain_s', '-')} | {d.get('kdsctl_cpu_s', '-')} "
            f"| {d.get('global_cpu_s', '-')} | {d['etcd_s']} "
            f"| {d['etcd_per_s']:.0f} | {d['ratio']} |"
        )
    r = results.get("resume")
    if r:
        lines += [
            "",
            f"## 3. Resume: a zone offline while {r['changed']:,} of {r['secrets']:,} secrets "
            "changed",
            "",
            "| what | figure |",
            "|---|---|",
            f"| changed resources, protobuf Resource bytes | {r['changed_resource_bytes']:,} |",
            f"| bytes global sent the zone on reconnect (TCP payload) | {r['wire_bytes_to_zone']:,} |",
            f"| ratio | {r['ratio']}x |",
            f"| bytes the zone sent global | {r['wire_bytes_from_zone']:,} |",
            f"| reconnect to caught up | {r['resume_s']} s |",
            f"| for comparison: the zone's first snapshot | {r['snapshot_s']} s, "
            f"{r['snapshot_wire_bytes']:,} bytes |",
            f"| prefill through POST /_apply | {r['prefill_apply_s']} s |",
        ]
    f = results.get("footprint")
    if f:
        lines += [
            "",
            f"## 4. Footprint: {f['secrets']:,} secrets",
            "",
            "| what | figure |",
            "|---|---|",
            f"| global RSS, empty store | {f['global_rss_mb_empty']} MB |",
            f"| global RSS, secrets held, no zone | {f['global_rss_mb_no_zones']} MB |",
            f"| global RSS, {f['idle_zones']} idle zones | {f['global_rss_mb_idle_zones']} MB |",
        ]
        if "global_rss_mb_idle_checking" in f:
            lines += [
                f"|   same, 5 s after they connected, their first anti-entropy checks running "
                f"| {f['global_rss_mb_idle_checking']} MB |",
                f"|   same, peak while they connected and were checked "
                f"| {f['global_rss_mb_idle_connect_peak']} MB |",
            ]
        lines += [
            f"| global RSS, {f['idle_zones'] + f['extra_zones']} idle zones "
            f"| {f['global_rss_mb_more_zones']} MB |",
            f"| each further zone adds | {f['per_zone_kb']} KB |",
            f"| global RSS peak while {f['storm_zones']} new zones take the snapshot at once "
            f"(sampled every 0.1 s) | {f['global_rss_mb_storm_peak']} MB |",
            f"| ... until the last of them holds it | {f['storm_s']} s |",
            f"| global peak RSS over the whole scenario (prefill included; the kernel's "
            f"high-water mark, or a figure sampled above it) "
            f"| {f['global_peak_rss_mb']} MB |",
            f"| global store on disk | {f['global_store_mb']} MB |",
            f"| a zone's store on disk | {f['zone_store_mb']} MB |",
            "",
            "The idle zones start from copies of the first zone's synced store, so they resume "
            "instead of each taking a snapshot; each is checked (anti-entropy) when it resumes, "
            "and the idle figures are taken once every check is done.",
        ]
    a = results.get("anti_entropy")
    if a:
        e, d = a["equal"], a["one_damaged"]
        lines += [
            "",
            f"## 6. Anti-entropy: {a['secrets']:,} secrets",
            "",
            "| what | rounds | bytes | s |",
            "|---|---|---|---|",
            f"| check of an equal store ({e['result']}) | {e['rounds']} | {e['bytes']:,} "
            f"| {e['seconds']} |",
            f"| find and repair one damaged secret ({d['result']}, then {d['after']}) "
            f"| {d['rounds']} | {d['check_bytes']:,} + repair {d['repair_bytes']:,} "
            f"| {d['seconds']} |",
            "",
            "In one process, with the daemons' code on both sides: encoded message bytes, and "
            "the work of both sides with no network between them (a link adds a round trip "
            "per round).",
        ]
    if results.get("components"):
        lines += [
            "",
            "## 7. Components",
            "",
            "Each tool once, in this run; its table as it printed it.",
        ]
    for c in results.get("components", []):
        lines += [
            "",
            f"### {c['what']}",
            "",
            f"`{c['command']}` ({c['seconds']} s):",
            "",
            c["output"],
        ]
    return "\n".join(lines) + "\n\n" + PROFILED


def before_after(before: dict[str, Any], after: dict[str, Any]) -> str:
    """Key figures of the first harness run (before the fixes) beside this run's."""
    b, a = summarize(before), summarize(after)
    rows = ["| figure | before the fixes | now |", "|---|---|---|"]
    for z in sorted(set(b["propagation"]) & set(a["propagation"])):
        for k, name in (("kds_p50", "p50"), ("kds_p99", "p99")):
            rows.append(
                f"| propagation {name}, {z} zone(s), ms | {b['propagation'][z][k]} "
                f"| {a['propagation'][z][k]} |"
            )
    for z in sorted(set(b["bulk"]) & set(a["bulk"])):
        rows.append(
            f"| bulk to {z} zones, s (apply returns) | {b['bulk'][z]['kds_s']} "
            f"({b['bulk'][z]['kds_apply_s']}) | {a['bulk'][z]['kds_s']} "
            f"({a['bulk'][z]['kds_apply_s']}) |"
        )
    for key, name in (
        ("global_rss_mb_idle_zones", "global RSS, idle zones, MB"),
        (
            "global_peak_rss_mb",
            "global peak RSS over the footprint scenario, MB (before: one zone's snapshot; "
            "now: 100 zones' snapshots at once too)",
        ),
    ):
        rows.append(f"| {name} | {before['footprint'][key]} | {after['footprint'][key]} |")
    rows.append(
        f"| resume bytes ratio | {before['resume']['ratio']} | {after['resume']['ratio']} |"
    )
    rows.append(
        f"| 100,000-secret snapshot to a new zone, s | {before['resume']['snapshot_s']} "
        f"| {after['resume']['snapshot_s']} |"
    )
    return (
        "## Before and after the fixes\n\n"
        f"The first run of the harness ({before['started']}, one repeat, before any fix) beside "
        "this run (medians).\n\n" + "\n".join(rows) + "\n"
    )


def _plot_propagation(a: Any, s: dict[str, Any], results: dict[str, Any]) -> None:
    zs = list(s["propagation"])
    x = range(len(zs))
    series = [("kds_p50", "kds p50"), ("kds_p99", "kds p99")]
    if all("plain_p99" in s["propagation"][z] for z in zs):
        series.append(("plain_p99", "kds plaintext p99"))
    series += [("etcd_p50", "etcd p50"), ("etcd_p99", "etcd p99")]
    w = 0.8 / len(series)
    for i, (key, label) in enumerate(series):
        values = [s["propagation"][z][key] for z in zs]
        xs = [j + (i - (len(series) - 1) / 2) * w for j in x]
        a.bar(xs, [max(0.01, v) for v in values], w, label=label)  # log scale: no <= 0
        for xv, v in zip(xs, values, strict=True):
            if v <= 0:  # a member had it before the writer heard the answer
                a.annotate("<=0", (xv, 0.012), ha="center", fontsize=7)
    a.set_xticks(list(x), [f"{z} zone{'s' if z != 1 else ''}" for z in zs])
    a.set_yscale("log")
    a.set_ylabel("ms, write acknowledged -> on every zone")
    a.set_title("Single-write propagation")
    a.legend(fontsize=8)


def _plot_bulk(b: Any, s: dict[str, Any], results: dict[str, Any]) -> None:
    bz = list(s["bulk"])
    xb = range(len(bz))
    plain = all("plain_s" in s["bulk"][z] for z in bz)
    series = [("kds_s", "kds-sync")] + ([("plain_s", "kds plaintext")] if plain else [])
    series.append(("etcd_s", "etcd"))
    w = 0.8 / len(series)
    for i, (key, label) in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * w for j in xb]
        b.bar(xs, [s["bulk"][z][key] for z in bz], w, label=label)
    b.set_xticks(list(xb), [f"{z} zones" for z in bz])
    b.set_ylabel("s until every zone holds them")
    b.set_title(f"Bulk: {results['plan']['bulk_n']:,} secrets in one apply")
    b.legend(fontsize=8)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summarize(results)
    panels = [k for k in ("propagation", "bulk") if s[k]]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, kind in zip(axes[0], panels, strict=True):
        (_plot_propagation if kind == "propagation" else _plot_bulk)(ax, s, results)
    fig.suptitle("kds-sync vs etcd watch (shared 2-core machine, loopback)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write(results: dict[str, Any], out: Path) -> None:
    results = _with_overall_peak(results)
    md = markdown(results)
    baseline = out / "benchmarks-baseline.json"
    if baseline.exists():
        before = _with_overall_peak(json.loads(baseline.read_text()))
        head, sep, tail = md.partition("## What was profiled")
        md = head + before_after(before, results) + "\n" + sep + tail
    (out / "benchmarks.md").write_text(md)
    png = out / "benchmarks.png"
    png.unlink(missing_ok=True)  # a run that measured neither panel draws no plot
    plot(results, png)


if __name__ == "__main__":  # python -m bench.report docs/benchmarks.json: redo the .md and .png
    import sys

    path = Path(sys.argv[1])
    write(json.loads(path.read_text()), path.parent)
