"""Kubernetes: an Indexed Job that runs one shard per pod (``loadgen k8s-manifest``).

Why this shape: the job completion index *is* the shard index, so every pod runs the same
command with ``--shard $(SHARD_INDEX)/N``, and nothing coordinates the pods while they run
(k6-operator's execution segments). A chatty master that streams every sample to one process is
the known bottleneck of Locust's distributed mode; here each shard measures on its own and the
histograms are merged exactly afterwards (``loadgen merge``).

What the documents do:

- the ConfigMap holds the scenario; the pods mount it;
- the Job's pods meet at the start barrier (``loadgen.scale.barrier``) in a folder of the results
  claim named by the Job's uid, so the manifest holds no time at all and a Job deleted and
  applied again starts a fresh round (and a fresh results folder) instead of finding the last
  one's files; every name is fixed, so applying the same manifest twice changes nothing;
- pods print plain progress lines (``kubectl logs``) and serve ``/metrics`` on all interfaces,
  with Prometheus scrape annotations and a headless Service (one DNS name per pod);
- with ``merge``, a second Job waits for the first through the Kubernetes API (a Role that may
  only read that one Job) and merges the shard folders into ``<uid>/merged`` on the volume.

The index and the uid reach the container through the downward API (the
``batch.kubernetes.io/job-completion-index`` annotation and the ``batch.kubernetes.io/
controller-uid`` label, Kubernetes >= 1.27), and ``$(VAR)`` in ``args`` is expanded by the
kubelet.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Final

import yaml

from loadgen.errors import ConfigError

__all__ = ["INDEX_ANNOTATION", "UID_LABEL", "render_documents", "render_manifest"]

_NAME_RE = re.compile(r"[^a-z0-9-]+")
INDEX_ANNOTATION: Final = "batch.kubernetes.io/job-completion-index"
UID_LABEL: Final = "batch.kubernetes.io/controller-uid"
RESULTS: Final = "/results"


def _dns_name(text: str) -> str:
    name = _NAME_RE.sub("-", text.lower()).strip("-")[:50].strip("-")
    return name or "loadgen"


def _field(path: str) -> dict[str, Any]:
    return {"fieldRef": {"fieldPath": path}}


def render_documents(
    scenario: Path,
    *,
    shards: int,
    image: str,
    name: str | None = None,
    results_claim: str = "loadgen-results",
    cpu: str = "1",
    memory: str = "2Gi",
    metrics_port: int = 9464,
    barrier_timeout: float = 300.0,
    barrier_lead: float = 5.0,
    merge: bool = False,
    extra_args: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """The documents, in the order ``kubectl apply`` should create them."""
    if shards < 1:
        raise ConfigError(f"expected --shards >= 1, got {shards}", key="--shards")
    if not image:
        raise ConfigError("expected an image name", key="--image")
    if not 1 <= metrics_port <= 65535:
        raise ConfigError(f"expected a port 1..65535, got {metrics_port}", key="--metrics-port")
    job = _dns_name(name or f"loadgen-{scenario.stem}")
    labels = {"app.kubernetes.io/name": "loadgen", "app.kubernetes.io/instance": job}
    shard_labels = {**labels, "app.kubernetes.io/component": "shard"}
    scrape = {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": str(metrics_port),
        "prometheus.io/path": "/metrics",
    }
    round_folder = f"{RESULTS}/{job}/$(JOB_UID)"
    documents: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{job}-scenario", "labels": labels},
            "data": {"scenario.toml": scenario.read_text(encoding="utf-8")},
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": job, "labels": shard_labels, "annotations": scrape},
            "spec": {
                "clusterIP": "None",  # headless: one DNS name per pod, for scraping each shard
                "selector": shard_labels,
                "ports": [{"name": "metrics", "port": metrics_port, "targetPort": "metrics"}],
            },
        },
    ]
    args = [
        "run", "/scenario/scenario.toml",
        "--shard", f"$(SHARD_INDEX)/{shards}",
        "--barrier", f"{round_folder}/barrier",
        "--barrier-timeout", f"{barrier_timeout:g}",
        "--barrier-lead", f"{barrier_lead:g}",
        "--directory", f"{round_folder}/shard-$(SHARD_INDEX)-of-{shards}",
        "--progress", "lines",
        "--metrics-host", "0.0.0.0",
        "--metrics-port", str(metrics_port),
        *extra_args,
    ]  # fmt: skip
    documents.append(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": job, "labels": shard_labels},
            "spec": {
                "completionMode": "Indexed",
                "completions": shards,
                "parallelism": shards,
                "backoffLimit": 0,  # one shard failing fails the campaign: no lone reruns
                "template": {
                    "metadata": {"labels": shard_labels, "annotations": scrape},
                    "spec": {
                        "restartPolicy": "Never",
                        "subdomain": job,
                        "containers": [
                            {
                                "name": "loadgen",
                                "image": image,
                                "args": args,
                                "env": [
                                    {
                                        "name": "SHARD_INDEX",
                                        "valueFrom": _field(
                                            f"metadata.annotations['{INDEX_ANNOTATION}']"
                                        ),
                                    },
                                    {
                                        "name": "JOB_UID",
                                        "valueFrom": _field(f"metadata.labels['{UID_LABEL}']"),
                                    },
                                    {"name": "PYTHONUNBUFFERED", "value": "1"},
                                ],
                                "ports": [{"name": "metrics", "containerPort": metrics_port}],
                                "resources": {
                                    "requests": {"cpu": cpu, "memory": memory},
                                    "limits": {"cpu": cpu, "memory": memory},
                                },
                                "volumeMounts": [
                                    {"name": "scenario", "mountPath": "/scenario"},
                                    {"name": "results", "mountPath": RESULTS},
                                ],
                            }
                        ],
                        "volumes": _volumes(job, results_claim),
                    },
                },
            },
        }
    )
    if merge:
        documents += _merge_documents(job, labels, image, results_claim)
    return documents


def _volumes(job: str, results_claim: str) -> list[dict[str, Any]]:
    return [
        {"name": "scenario", "configMap": {"name": f"{job}-scenario"}},
        {"name": "results", "persistentVolumeClaim": {"claimName": results_claim}},
    ]


def _merge_documents(
    job: str, labels: dict[str, str], image: str, results_claim: str
) -> list[dict[str, Any]]:
    """A Job that waits for the shard Job (reading only that Job through the API) and merges."""
    merger = f"{job}-merge"
    merge_labels = {**labels, "app.kubernetes.io/component": "merge"}
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": merger, "labels": merge_labels},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": merger, "labels": merge_labels},
            "rules": [
                {
                    "apiGroups": ["batch"],
                    "resources": ["jobs"],
                    "resourceNames": [job],
                    "verbs": ["get"],
                }
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": merger, "labels": merge_labels},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": merger},
            "subjects": [{"kind": "ServiceAccount", "name": merger}],
        },
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": merger, "labels": merge_labels},
            "spec": {
                "backoffLimit": 0,
                "template": {
                    "metadata": {"labels": merge_labels},
                    "spec": {
                        "restartPolicy": "Never",
                        "serviceAccountName": merger,
                        "containers": [
                            {
                                "name": "merge",
                                "image": image,
                                "args": ["merge", "--wait-for-job", job, f"{RESULTS}/{job}"],
                                "env": [{"name": "PYTHONUNBUFFERED", "value": "1"}],
                                "volumeMounts": [{"name": "results", "mountPath": RESULTS}],
                            }
                        ],
                        "volumes": _volumes(job, results_claim)[1:],
                    },
                },
            },
        },
    ]


def render_manifest(scenario: Path, **options: Any) -> str:
    """``render_documents`` as one YAML stream (``kubectl apply -f -``)."""
    documents = render_documents(scenario, **options)
    return yaml.safe_dump_all(documents, sort_keys=False, width=100)
