"""``python -m loadgen.bench`` (``make bench``): the self-benchmark of this machine.

Every figure the issues name is measured in one run, next to its in-run reference, and checked
against its target; the table is printed and written with ``bench.json`` and ``bench.html`` to
``results/bench/<UTC timestamp>/``. Absolute numbers belong to this machine; the ratios are what
carries over.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from loadgen.bench.asyncbench import async_loop_figures, inflight_memory_figures
from loadgen.bench.dashbench import TARGET_RATIO as TARGET_DASHBOARD
from loadgen.bench.dashbench import dashboard_figures
from loadgen.bench.devicebench import device_figures, memory_per_device
from loadgen.bench.figures import figure_lines, figure_rows
from loadgen.bench.httpbench import PairResult, parser_figures, run_pair
from loadgen.bench.northbench import north_figure
from loadgen.bench.openbench import open_figure, overload_figure
from loadgen.bench.peersbench import TARGET_VS_LOCUST, peer_figures, peer_lines
from loadgen.bench.procs import machine_control
from loadgen.bench.quietbench import CPU_LIMIT, TARGET_MS, quiet_figures
from loadgen.bench.senderbench import sender_figures
from loadgen.bench.systembench import callback_figures, merge_figure, pacing_figure, shard_figures
from loadgen.bench.tlsbench import tls_figures
from loadgen.report.html import CSS

Check = dict[str, Any]


def _check(
    figure: str, value: float | None, reference: str, target: float, unit: str = "x"
) -> Check:
    met = value is not None and value >= target
    return {"figure": figure, "value": value, "reference": reference, "target": target,
            "unit": unit, "met": met}  # fmt: skip


def _say(text: str) -> None:
    print(text, flush=True)


def _http_table(rows: list[PairResult]) -> str:
    head = (
        f"  {'pair':<30}{'req/s':>9}{'client µs/req':>15}{'server µs/req':>15}"
        f"{'req/s per core':>16}{'errors':>8}"
    )
    lines = [head, "  " + "-" * (len(head) - 2)]
    for row in rows:
        server_us = "n/a" if row.server_us is None else f"{row.server_us:.1f}"
        lines.append(
            f"  {row.name:<30}{row.rps:>9.0f}{row.client_us:>15.1f}{server_us:>15}"
            f"{row.per_core:>16.0f}{row.errors:>8}"
        )
    return "\n".join(lines)


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None


def run(duration: float, north_duration: float = 120.0) -> dict[str, Any]:
    started = time.perf_counter()
    out: dict[str, Any] = {}
    checks: list[Check] = []

    _say(f"loadgen self-benchmark on {platform.node()} ({os.cpu_count()} cores), "
         f"Python {platform.python_version()}; each pair: client on core 0, server on core 1")  # fmt: skip

    parse = parser_figures()
    out["parser"] = parse
    _say(f"\n[1] parse one request: fast path {parse['fast_parse_us']:.2f} µs, h11 "
         f"{parse['h11_parse_us']:.2f} µs (x{parse['h11_parse_us'] / parse['fast_parse_us']:.1f})")  # fmt: skip

    _say("\n[2] HTTP/1.1 transport, 16 keep-alive connections")
    pairs = {
        "fast": run_pair("fast path (raw trio sockets)", "fast", "fast", duration=duration),
        "h11": run_pair("h11 (same server and pool)", "h11", "h11", duration=duration),
        "httpx": run_pair("httpx / hypercorn", "hypercorn", "httpx", duration=duration),
    }
    _say(_http_table(list(pairs.values())))
    out["http"] = {key: row.as_dict() for key, row in pairs.items()}
    checks.append(_check("HTTP fast path vs h11 (req/s per core)",
                         _ratio(pairs["fast"].per_core, pairs["h11"].per_core), "h11 pair", 4.0))  # fmt: skip
    checks.append(_check("HTTP fast path vs httpx/hypercorn (req/s per core)",
                         _ratio(pairs["fast"].per_core, pairs["httpx"].per_core),
                         "httpx client + hypercorn", 30.0))  # fmt: skip

    _say("\n[3] device fleet: sync operations answered per CPU-second of the fleet")
    devices: list[dict[str, Any]] = device_figures(duration)
    for row in devices:
        _say(f"  {row['name']:<34}{row['ops_per_core_s'] or 0:>10.0f} ops per core-second"
             f"   x{row['vs_h11']} vs h11")  # fmt: skip
    memory: dict[str, Any] = memory_per_device(100_000)
    _say(f"  100,000 idle devices add {memory['delta_bytes'] / 1e6:.1f} MB "
         f"({memory['bytes_per_device']} bytes per device)")  # fmt: skip
    out["devices"] = {"pairs": devices, "memory": memory}
    checks.append(_check("device fleet fast path vs h11 (ops per core)", devices[0]["vs_h11"],
                         "same handler on h11", 3.0))  # fmt: skip
    checks.append(_check("MB added by 100,000 devices (at most 200)",
                         200.0 - float(memory["delta_bytes"]) / 1e6, "empty fleet", 0.0, "MB spare"))  # fmt: skip

    _say("\n[4] platform sender: sync operations per CPU-second of the sender (closed model)")
    senders = sender_figures(duration)
    platform_row, httpx_row = senders[0], senders[1]
    for row in senders:
        _say(f"  {row['sender']:<10}{row['ops_per_cpu_s']:>10.0f} ops per core-second"
             f"   ({row['cpu_us_per_op']} µs CPU per operation)")  # fmt: skip
    out["sender"] = senders
    checks.append(_check("sender ops per core-second (at least 25,000)",
                         platform_row["ops_per_cpu_s"], "-", 25_000.0, "ops/s"))  # fmt: skip
    checks.append(_check("sender vs httpx sender", platform_row.get("ratio_vs_httpx")
                         or _ratio(platform_row["ops_per_cpu_s"], httpx_row["ops_per_cpu_s"]),
                         "httpx sender", 20.0))  # fmt: skip

    _say("\n[5] async callback loop: device POSTs received by the south API per CPU-second")
    callbacks = callback_figures(duration)
    for row in callbacks:
        _say(f"  {row['name']:<34}{row['messages_per_core_s'] or 0:>10.0f} messages per "
             f"core-second   x{row['vs_h11']} vs h11")  # fmt: skip
    out["callbacks"] = callbacks

    _say("\n[6] scheduler lateness, open model at 50% of its own ceiling")
    flat_out = pacing_figure(float(platform_row["ops_per_cpu_s"]), duration=max(3.0, duration))
    open_ceiling = flat_out["sent"] / flat_out["load_cpu_s"] if flat_out["load_cpu_s"] else 0.0
    _say(f"  open-model ceiling: {open_ceiling:.0f} ops per CPU-second")
    pacing = pacing_figure(open_ceiling / 2, duration=max(3.0, duration))
    late = pacing["lateness_ms"]
    _say(f"  at {open_ceiling / 2:.0f} ops/s: lateness p50 {late['p50']} ms, p99 {late['p99']} ms, "
         f"p99.9 {late['p999']} ms, max {late['max']} ms; late sends (>2 ms) "
         f"{pacing['late_sends']} of {pacing['sent']}; generator saturated: {pacing['saturated']}")  # fmt: skip
    out["pacing"] = {"open_ceiling_ops_per_cpu_s": round(open_ceiling, 1), "at_half": pacing}
    # issue 17: 35,000 ops/s offered, then twice the ceiling, second by second (openbench)
    at35 = open_figure(35_000.0, duration)
    _say(f"  at 35,000 ops/s offered: CPU {at35['cpu_percent']}% ({at35['cpu_us_per_op']} µs per "
         f"operation), lateness p99 {at35['lateness_p99_ms']} ms, saturated: {at35['saturated']}")  # fmt: skip
    # The ceiling the issue asks for is what the open model sustains for 30 s, CPU-bound (a
    # few seconds' burst is more: memory kept for a window, e.g. the ended ids, fills first).
    # Offered the burst ceiling for 30 s, it sends what it sustains and refuses the rest.
    sustained = open_figure(open_ceiling, max(30.0, duration))
    ceiling_30s = float(sustained["ops_per_s"])
    _say(f"  offered the burst ceiling for 30 s: {ceiling_30s:.0f} ops/s sustained at "
         f"{sustained['cpu_percent']}% CPU ({sustained['cpu_us_per_op']} µs per operation)")  # fmt: skip
    over = overload_figure(ceiling_30s, max(30.0, duration))  # the issue: 2x, 30 s
    _say(f"  offered 2x that for 30 s: completed per second {over['per_second']}, worst second "
         f"{over['worst_second_vs_ceiling']} of it, RSS {over['rss_mb_first_last']} MB (bounded: "
         f"{over['rss_bounded']})")  # fmt: skip
    out["pacing"].update(at_35k=at35, sustained_30s=sustained, overload=over)
    out["pacing"]["ceiling_30s_ops_per_s"] = round(ceiling_30s, 1)
    checks.append(_check("open-model burst ceiling, ops per CPU-second (at least 45,000)",
                         round(open_ceiling, 1), "-", 45_000.0, "ops/s"))  # fmt: skip
    checks.append(_check("open-model ceiling sustained for 30 s (at least 45,000)",
                         round(ceiling_30s, 1), "-", 45_000.0, "ops/s"))  # fmt: skip
    checks.append(_check("open model at 35,000 ops/s: CPU under 90% (points spare)",
                         round(90.0 - at35["cpu_percent"], 1), "-", 0.0, "points"))  # fmt: skip
    checks.append(_check("open model at 35,000 ops/s: lateness p99 under 1 ms (ms spare)",
                         round(1.0 - (at35["lateness_p99_ms"] or math.inf), 3), "-", 0.0, "ms"))  # fmt: skip
    checks.append(_check("offered 2x the 30 s ceiling: worst second vs that ceiling",
                         over["worst_second_vs_ceiling"], "30 s ceiling", 0.9, "ratio"))  # fmt: skip

    _say("\n[7] scale out: sender operations per CPU-second, 1 shard process vs 2 at once")
    shards = shard_figures(4000.0, duration)
    for key in ("1_shard", "2_shard"):
        row = shards[key]
        _say(f"  {row['shards']} shard(s) at {shards['rate_per_shard']:.0f} ops/s each: "
             f"{row['operations']} operations, {row['ops_per_sender_cpu_s']:>8.0f} per sender "
             f"CPU-second, target server at {row['server_cpu_percent']}% CPU")  # fmt: skip
    per_device = float(memory["bytes_per_device"] or 0)
    shards["devices_per_shard_100k_2_shards"] = {
        "devices": 50_000,
        "mb": round(per_device * 50_000 / 1e6, 1),
    }
    merge = merge_figure()
    shards["merge"] = merge
    _say(f"  2 shards of 100,000 devices: 50,000 devices, "
         f"{per_device * 50_000 / 1e6:.1f} MB each; merging {merge['shards']} shard folders "
         f"({merge['interval_logs']} interval logs) took {merge['merge_s']} s")  # fmt: skip
    out["shards"] = shards
    control = machine_control()
    shards["machine_control"] = control
    per_shard = shards["2_shard"]["per_shard_ops_per_cpu_s"]
    _say(f"  2 shards: {per_shard[0]} ops per CPU-second on core 0 (alone on its core, like the "
         f"single shard), {per_shard[1]} on core 1 (beside the target server); pure-CPU control, "
         f"2 processes vs 1: {control['efficiency']}")  # fmt: skip
    checks.append(_check("2 shards vs 1: ops per sender CPU-second, shard alone on its core",
                         shards["efficiency_core_alone"], "1 shard", 0.90, "ratio"))  # fmt: skip
    checks.append(_check("2 shards vs 1: both shards (one shares a core with the target)",
                         shards["efficiency"], "1 shard", 0.90, "ratio"))  # fmt: skip

    _say("\n[8] end to end: north side -> OpenGate stand-in -> devices, 2 processes (issue 10)")
    north_rows = [
        north_figure(5000.0, north_duration),
        north_figure(2000.0, min(10.0, north_duration)),
    ]
    for row in north_rows:
        if "error" in row:
            _say(f"  at {row['rate']:.0f} jobs/s: failed: {row['error']}")
            continue
        hops = ", ".join(f"{hop} {'/'.join(str(v) for v in p99s)}"
                         for hop, p99s in row["hops_p99_ms"].items())  # fmt: skip
        _say(f"  offered {row['rate']:.0f} jobs/s for {row['duration_s']:g} s: "
             f"{row['jobs_per_s']:.0f} jobs/s, closed p99 {row['closed_p99_ms']} ms, saturated: "
             f"{row['saturated']}, {row['cpu_ms_per_job']} ms CPU per job (process CPU "
             f"{row['cpu_percent']} %), load average {row['load_average']}\n"
             f"    p99 per hop, ms (each process): {hops}; loop lag p99 {row['loop_lag_p99_ms']}\n"
             f"    memory by thirds of the load: {row['rss_mb_first_third']} -> "
             f"{row['rss_mb_middle_third']} -> {row['rss_mb_last_third']} MB (last vs middle "
             f"{row['rss_change']:+.1%}); sync loop of this run: "
             f"{platform_row['ops_per_cpu_s']:.0f} ops per core-second")  # fmt: skip
    out["north"] = {"rows": north_rows, "sync_loop_ops_per_cpu_s": platform_row["ops_per_cpu_s"]}
    target = north_rows[0]
    met = (
        "error" not in target
        and not target["saturated"]
        and max(p or math.inf for p in target["closed_p99_ms"]) <= 50.0
    )
    checks.append(_check("north -> stand-in -> devices jobs/s, closed p99 <= 50 ms, unsaturated",
                         target.get("jobs_per_s") if met else 0.0, "-", 5000.0, "jobs/s"))  # fmt: skip
    change = target.get("rss_change")
    checks.append(_check(f"north memory, last third vs middle of {north_duration:g} s (within 10 %)",
                         None if change is None else round(10.0 - abs(change) * 100, 1),
                         "middle third", 0.0, "points spare"))  # fmt: skip

    _say("\n[9] the live dashboard's cost to the sender, 1 client following it (issue 11)")
    dash = dashboard_figures(duration)
    _say(f"  {dash['with_dashboard']['ops_per_cpu_s']:.0f} ops per sender CPU-second with the "
         f"dashboard, {dash['without']['ops_per_cpu_s']:.0f} without: {dash['ratio']}")  # fmt: skip
    out["dashboard"] = dash
    checks.append(_check("dashboard open vs not: ops per sender CPU-second", dash["ratio"],
                         "no dashboard", TARGET_DASHBOARD, "ratio"))  # fmt: skip

    _say("\n[10] async loop: both sides, 2 shards, 1 s final delay, beside the sync loop")
    loops = async_loop_figures(duration=max(3.0, duration))
    for flow in ("async", "sync"):
        climb = loops[flow]
        for rung in climb["rungs"]:
            _say(f"  {flow:<6}{rung['rate']:>8.0f} ops/s: complete p99 {rung.get('complete_p99_ms')} "
                 f"ms, ack p99 {rung.get('ack_p99_ms')} ms, lateness p99 "
                 f"{rung.get('lateness_p99_ms')} ms  {'clean' if rung['clean'] else rung['reason']}")  # fmt: skip
        # (the async loop's answers come after its 1 s final delay: no 10 ms ceiling to read)
        tight = (f"; with complete p99 <= 10 ms: {climb['ceiling_10ms_ops_per_s'] or 0:.0f} ops/s"
                 if flow == "sync" else "")  # fmt: skip
        _say(f"  {flow} loop ceiling: {climb['ceiling_ops_per_s'] or 0:.0f} ops/s{tight}")
    inflight = inflight_memory_figures(50_000)
    _say(f"  bytes per operation in flight (50,000 waiting for their final): fleet "
         f"{inflight['fleet']['bytes_per_op']}, platform {inflight['platform']['bytes_per_op']}; "
         f"UPDATE between partials: fleet {inflight['fleet_update_steps']['bytes_per_op']}, "
         f"platform {inflight['platform_update']['bytes_per_op']}")  # fmt: skip
    out["async_loop"] = {**loops, "inflight_bytes": inflight}
    checks.append(_check("async loop ceiling, 2 shards, 1 s final delay (at least 10,000)",
                         loops["async"]["ceiling_ops_per_s"], "sync loop, same runs",
                         10_000.0, "ops/s"))  # fmt: skip
    checks.append(_check("fleet bytes per async operation in flight (at most 1 KB)",
                         round(1024.0 - inflight["fleet"]["bytes_per_op"], 1), "-", 0.0,
                         "bytes spare"))  # fmt: skip
    checks.append(_check("platform bytes per operation in flight (at most 1 KB)",
                         round(1024.0 - inflight["platform"]["bytes_per_op"], 1), "-", 0.0,
                         "bytes spare"))  # fmt: skip

    _say("\n[11] in-run peers and the limit: our sender and Locust against a C epoll server")
    peers = peer_figures(duration)
    for line in peer_lines(peers):
        _say(line)
    out["peers"] = peers
    checks.append(_check("sender closed model vs Locust FastHttpUser, same C target (per core)",
                         peers.get("ratio_vs_locust"), "Locust FastHttpUser", TARGET_VS_LOCUST))  # fmt: skip

    _say("\n[12] TLS vs plain: sender -> fleet, closed model, 64 connections, CPU per op\n"
         "     (two rounds each, in the order plain, TLS, TLS, plain)")  # fmt: skip
    tls = tls_figures(duration)
    for key in ("plain", "tls"):
        row = tls[key]
        _say(f"  {key:<6}{row['ops_per_s']:>9.0f} ops/s   CPU per operation: fleet "
             f"{row['fleet_us_per_op']} µs, sender {row['sender_us_per_op']} µs"
             + (f"; {row['errors']} errors" if row["errors"] else ""))  # fmt: skip
    _say(f"  TLS / plain per CPU-second: fleet {tls['fleet_ratio']}, sender {tls['sender_ratio']}")
    out["tls"] = tls
    checks.append(_check("TLS vs plain, fleet (ops per fleet CPU-second)", tls["fleet_ratio"],
                         "plain HTTP, same pair", tls["target_ratio"], "ratio"))  # fmt: skip
    checks.append(_check("TLS vs plain, sender (ops per sender CPU-second)", tls["sender_ratio"],
                         "plain HTTP, same pair", tls["target_ratio"], "ratio"))  # fmt: skip

    _say("\n[13] quiet generator: firmware-update, 500 ops/s, one core (issue 17)")
    quiet = quiet_figures()
    for row in quiet.get("intervals", []):
        _say(f"  {row['t_s']:>5.0f} s  CPU {row['cpu_percent']}%  send lateness p99 "
             f"{row['lateness_p99_ms']} ms  loop lag p99 {row['loop_lag_p99_ms']} ms")  # fmt: skip
    worst = quiet.get("worst_lateness_p99_ms")
    _say(f"  worst of the {quiet.get('judged', 0)} intervals below {CPU_LIMIT:g}% CPU: {worst} ms "
         f"(load average {quiet.get('load_average')})"
         + (f"; failed: {quiet['error']}" if "error" in quiet else ""))  # fmt: skip
    out["quiet"] = quiet
    checks.append(_check(f"lateness p99 below {CPU_LIMIT:g}% CPU, worst interval (at most "
                         f"{TARGET_MS:g} ms)", None if worst is None else round(TARGET_MS - worst, 3),
                         "-", 0.0, "ms spare"))  # fmt: skip

    _say("\nTargets")
    for check in checks:
        value = "n/a" if check["value"] is None else f"{check['value']:,}"
        _say(
            f"  {'OK  ' if check['met'] else 'MISS'} {check['figure']}: {value} "
            f"(target {check['target']:,} {check['unit']}, reference: {check['reference']})"
        )
    out["checks"] = checks
    out["issue_17"] = figure_rows(out)
    _say("\nIssue 17, figures to reach (-- : not measured by this tree's make bench)")
    for line in figure_lines(out["issue_17"]):
        _say(line)
    out["machine"] = {"node": platform.node(), "cores": os.cpu_count(),
                      "python": platform.python_version()}  # fmt: skip
    out["duration_s"] = round(time.perf_counter() - started, 1)
    return out


def _number(value: Any, unit: str = "") -> str:
    """A figure as a person reads it: thousands separated, at most 3 decimals, its unit."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if not isinstance(value, (int, float)):
        return html.escape(str(value))
    if unit:
        return f"{_number(value)} {html.escape(unit)}"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.3f}".rstrip("0").rstrip(".")


def _html(report: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td>{html.escape(c['figure'])}</td><td class=n>{_number(c['value'])}</td>"
        f"<td class=n>{_number(c['target'])} {html.escape(c['unit'])}</td>"
        f"<td>{html.escape(c['reference'])}</td>"
        f"<td class={'ok' if c['met'] else 'fail'}>{'met' if c['met'] else 'missed'}</td></tr>"
        for c in report["checks"]
    )
    issue = "".join(
        f"<tr><td>{html.escape(r['figure'])}</td>"
        f"<td class=n>{'not measured' if r['value'] is None else _number(r['value'], r['unit'])}"
        f"</td><td class=n>{html.escape(r['compare'])} {_number(r['target'], r['unit'])}</td>"
        f"<td class={'ok' if r['met'] else 'fail'}>"
        f"{'met' if r['met'] else 'missed' if r['value'] is not None else ''}</td></tr>"
        for r in report.get("issue_17", [])
    )
    machine = report["machine"]
    figures = html.escape(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode())
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>loadgen bench</title>"
        f"<style>{CSS}</style></head><body><h1>loadgen self-benchmark</h1>"
        f"<p>{html.escape(str(machine['node']))}, {machine['cores']} cores, Python "
        f"{html.escape(str(machine['python']))}; the run took {report['duration_s']} s</p>"
        f"<table><tr><th>figure</th><th>value</th><th>target</th><th>in-run reference</th>"
        f"<th></th></tr>{rows}</table>"
        f"<h2>Issue 17, figures to reach</h2><table><tr><th>figure</th><th>measured</th>"
        f"<th>target</th><th></th></tr>{issue}</table>"
        f"<h2>All figures</h2><pre>{figures}</pre></body></html>"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loadgen bench", description=__doc__)
    parser.add_argument("--duration", type=float, default=3.0, help="measured seconds per pair")
    parser.add_argument("--results", type=Path, default=Path("results/bench"))
    parser.add_argument(
        "--north-duration", type=float, default=120.0,
        help="seconds of the 5,000 jobs/s end-to-end run (the issue's 2-minute memory figure)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    report = run(args.duration, args.north_duration)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.results / stamp
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    (out / "bench.html").write_text(_html(report), encoding="utf-8")
    _say(
        f"\nbench took {report['duration_s']} s; figures written to {out}/bench.json and bench.html"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
