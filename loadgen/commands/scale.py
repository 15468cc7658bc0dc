"""``loadgen merge`` and ``loadgen k8s-manifest``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from loadgen.scale.k8s import render_manifest
from loadgen.scale.merge import merge_runs

__all__ = ["register"]


def _merge(args: argparse.Namespace) -> int:
    from loadgen.report.console import format_summary
    from loadgen.report.rebuild import rebuild

    started = time.perf_counter()
    out = merge_runs([Path(p) for p in args.dirs], Path(args.out), force=args.force)
    summary, report = rebuild(out)
    print(format_summary(summary))
    print(
        f"\nmerged {len(args.dirs)} result folders in {time.perf_counter() - started:.2f} s "
        f"into {out}\nreport: {report}"
    )
    return 0


def _manifest(args: argparse.Namespace) -> int:
    start_at = args.start_at if args.start_at is not None else time.time() + args.lead
    text = render_manifest(
        Path(args.scenario),
        shards=args.shards,
        image=args.image,
        start_at=start_at,
        name=args.name,
        results_claim=args.results_claim,
        cpu=args.cpu,
        memory=args.memory,
    )
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"manifest written to {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    merge = sub.add_parser(
        "merge",
        help="merge shard results exactly (histograms added, counters summed)",
        description="Merge the results folders of the shards of one campaign into one folder, "
        "then rebuild its summary and report with the same code as a single run.",
    )
    merge.add_argument("dirs", nargs="+", metavar="DIR", help="shard results folders")
    merge.add_argument("--out", required=True, metavar="DIR", help="merged results folder")
    merge.add_argument(
        "--force", action="store_true", help="merge runs of different campaigns anyway"
    )
    merge.set_defaults(func=_merge)

    manifest = sub.add_parser(
        "k8s-manifest",
        help="render a Kubernetes Indexed Job running one shard per pod",
        description="Print a ConfigMap (the scenario) and an Indexed Job whose pod i runs "
        "'loadgen run SCENARIO --shard i/N --start-at T'. Apply with kubectl apply -f -.",
    )
    manifest.add_argument("scenario", metavar="SCENARIO")
    manifest.add_argument("--shards", type=int, required=True)
    manifest.add_argument("--image", required=True)
    manifest.add_argument("--name", default=None, help="job name (default: loadgen-<scenario>)")
    manifest.add_argument(
        "--start-at", type=float, default=None, help="common start, epoch seconds"
    )
    manifest.add_argument(
        "--lead", type=float, default=120.0, help="without --start-at: start this many s from now"
    )
    manifest.add_argument("--results-claim", default="loadgen-results", help="PVC for results")
    manifest.add_argument("--cpu", default="1")
    manifest.add_argument("--memory", default="2Gi")
    manifest.add_argument("-o", "--output", default=None, help="write to a file, not stdout")
    manifest.set_defaults(func=_manifest)
