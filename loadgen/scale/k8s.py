"""Kubernetes: an Indexed Job that runs one shard per pod (``loadgen k8s-manifest``).

Why this shape: the job completion index *is* the shard index, so every pod runs the same
command with ``--shard $(SHARD_INDEX)/N`` and a common ``--start-at``, and nothing coordinates the
pods while they run (k6-operator's execution segments). A chatty master that streams every sample
to one process is the known bottleneck of Locust's distributed mode; here each shard measures on
its own and the histograms are merged exactly afterwards (``loadgen merge``).

The index reaches the container through the downward API (the
``batch.kubernetes.io/job-completion-index`` annotation), as the Kubernetes documentation shows
for Indexed Jobs, and ``$(SHARD_INDEX)`` in ``args`` is expanded by the kubelet.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from loadgen.errors import ConfigError

__all__ = ["render_manifest"]

_NAME_RE = re.compile(r"[^a-z0-9-]+")


def _dns_name(text: str) -> str:
    name = _NAME_RE.sub("-", text.lower()).strip("-")[:50]
    return name or "loadgen"


def render_manifest(
    scenario: Path,
    *,
    shards: int,
    image: str,
    start_at: float,
    name: str | None = None,
    results_claim: str = "loadgen-results",
    cpu: str = "1",
    memory: str = "2Gi",
    extra_args: tuple[str, ...] = (),
) -> str:
    """A ConfigMap holding the scenario and an Indexed Job running ``shards`` pods."""
    if shards < 1:
        raise ConfigError(f"expected --shards >= 1, got {shards}", key="--shards")
    if not image:
        raise ConfigError("expected an image name", key="--image")
    job = _dns_name(name or f"loadgen-{scenario.stem}")
    config_map: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": f"{job}-scenario"},
        "data": {"scenario.toml": scenario.read_text(encoding="utf-8")},
    }
    args = [
        "run",
        "/scenario/scenario.toml",
        "--shard",
        f"$(SHARD_INDEX)/{shards}",
        "--start-at",
        f"{start_at:.3f}",
        "--results",
        "/results",
        "--quiet",
        *extra_args,
    ]
    job_spec: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": job, "labels": {"app.kubernetes.io/name": "loadgen"}},
        "spec": {
            "completionMode": "Indexed",
            "completions": shards,
            "parallelism": shards,
            "backoffLimit": 0,
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "loadgen", "job": job}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [
                        {
                            "name": "loadgen",
                            "image": image,
                            "args": args,
                            "env": [
                                {
                                    "name": "SHARD_INDEX",
                                    "valueFrom": {
                                        "fieldRef": {
                                            "fieldPath": "metadata.annotations"
                                            "['batch.kubernetes.io/job-completion-index']"
                                        }
                                    },
                                }
                            ],
                            "resources": {
                                "requests": {"cpu": cpu, "memory": memory},
                                "limits": {"cpu": cpu, "memory": memory},
                            },
                            "volumeMounts": [
                                {"name": "scenario", "mountPath": "/scenario"},
                                {"name": "results", "mountPath": "/results"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "scenario", "configMap": {"name": f"{job}-scenario"}},
                        {"name": "results", "persistentVolumeClaim": {"claimName": results_claim}},
                    ],
                },
            },
        },
    }
    return yaml.safe_dump_all([config_map, job_spec], sort_keys=False, width=100)
