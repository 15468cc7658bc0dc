"""``loadgen merge`` and ``loadgen k8s-manifest``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from loadgen.campaign.scenario import load_scenario
from loadgen.errors import ConfigError
from loadgen.scale.k8s import render_manifest
from loadgen.scale.merge import merge_runs

__all__ = ["register"]


def _stderr(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _from_job(args: argparse.Namespace) -> tuple[list[Path], Path, bool]:
    """``--wait-for-job``: wait for the shard Job, then its round's folders (those that began),
    the merged folder, and whether the campaign is incomplete (a shard failed or is missing)."""
    from loadgen.scale.kube import ApiAccess, wait_for_job

    if len(args.dirs) != 1:
        raise ConfigError("expected one folder, the Job's on the volume", key="--wait-for-job")
    state = wait_for_job(args.wait_for_job, ApiAccess.in_cluster(), notice=_stderr)
    root = Path(args.dirs[0]) / state.uid
    count = state.completions
    folders = [root / f"shard-{index}-of-{count}" for index in range(count)]
    usable = [folder for folder in folders if (folder / "run.json").exists()]
    if state.phase == "failed":
        _stderr(f"merge: Job {args.wait_for_job} failed ({state.reason or 'no reason given'})")
    if not usable:
        raise ConfigError(f"no shard of Job {args.wait_for_job} left results in {root}")
    out = Path(args.out) if args.out else root / "merged"
    return usable, out, state.phase == "failed" or len(usable) < count


def _merge(args: argparse.Namespace) -> int:
    from loadgen.report.console import format_summary
    from loadgen.report.rebuild import rebuild

    started = time.perf_counter()
    if args.wait_for_job:
        dirs, out, incomplete = _from_job(args)
    elif args.out is None:
        raise ConfigError("expected the merged folder", key="--out")
    else:
        dirs, out, incomplete = [Path(p) for p in args.dirs], Path(args.out), False
    out = merge_runs(dirs, out, force=args.force, incomplete=incomplete)
    summary, report = rebuild(out)
    print(format_summary(summary))
    print(
        f"\nmerged {len(dirs)} result folders in {time.perf_counter() - started:.2f} s "
        f"into {out}\nreport: {report}",
        flush=True,
    )
    if incomplete:
        return 1
    return 99 if any(not t.get("ok") for t in summary.get("thresholds", [])) else 0


def _manifest(args: argparse.Namespace) -> int:
    # The scenario is checked here, once, as ``loadgen validate`` does (a missing file or a bad
    # key is one line now, not N pods failing later); ``${ENV}`` may be set only in the pods.
    load_scenario(args.scenario, missing=[])
    text = render_manifest(
        Path(args.scenario),
        shards=args.shards,
        image=args.image,
        name=args.name,
        results_claim=args.results_claim,
        cpu=args.cpu,
        memory=args.memory,
        metrics_port=args.metrics_port,
        barrier_timeout=args.barrier_timeout,
        barrier_lead=args.barrier_lead,
        merge=args.merge,
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
        "then rebuild its summary and report with the same code as a single run. In a "
        "Kubernetes pod, --wait-for-job JOB waits for the shard Job and merges its round "
        "(DIR/<job uid>/shard-*) into DIR/<job uid>/merged. Exit 1 when shards are missing, 99 "
        "when a threshold of the campaign failed.",
    )
    merge.add_argument("dirs", nargs="+", metavar="DIR", help="shard results folders")
    merge.add_argument("--out", metavar="DIR", help="merged results folder")
    merge.add_argument(
        "--force", action="store_true", help="merge runs of different campaigns anyway"
    )
    merge.add_argument(
        "--wait-for-job", metavar="JOB", help="in a pod: wait for this shard Job, merge its round"
    )
    merge.set_defaults(func=_merge)

    manifest = sub.add_parser(
        "k8s-manifest",
        help="render a Kubernetes Indexed Job running one shard per pod",
        description="Print a ConfigMap (the scenario), a headless Service and an Indexed Job "
        "whose pod i runs 'loadgen run SCENARIO --shard i/N' behind a start barrier on the "
        "results volume (and, with --merge, a Job that merges them). Apply with "
        "kubectl apply -f -.",
    )
    manifest.add_argument("scenario", metavar="SCENARIO")
    manifest.add_argument("--shards", type=int, required=True)
    manifest.add_argument("--image", required=True)
    manifest.add_argument("--name", default=None, help="job name (default: loadgen-<scenario>)")
    manifest.add_argument("--results-claim", default="loadgen-results", help="PVC for results")
    manifest.add_argument("--cpu", default="1")
    manifest.add_argument("--memory", default="2Gi")
    manifest.add_argument("--metrics-port", type=int, default=9464, help="scraped port (9464)")
    manifest.add_argument(
        "--barrier-timeout", type=float, default=300.0, help="wait for all pods at most S (300)"
    )
    manifest.add_argument(
        "--barrier-lead",
        type=float,
        default=5.0,
        help="start S after the last pod is ready (5; more than the volume's listing delay)",
    )
    manifest.add_argument(
        "--merge", action="store_true", help="add a Job that waits for the shards and merges"
    )
    manifest.add_argument("-o", "--output", default=None, help="write to a file, not stdout")
    manifest.set_defaults(func=_manifest)
