"""Waiting for a Kubernetes Job from inside the cluster (the merge Job of ``k8s-manifest``).

The merge pod reads one object, the shard Job, through the API server with its service
account (the rendered Role allows ``get`` on that Job and nothing else): its uid names the
round's folder on the volume, its ``completions`` the number of shards, and its conditions say
when it has ended and how. ``job_state`` is the pure reading of that object; ``wait_for_job`` is
the thin shell (HTTPS with the pod's token and CA, a poll every few seconds).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

import httpx

from loadgen.errors import ConfigError

__all__ = ["ApiAccess", "JobState", "job_state", "wait_for_job"]

SERVICE_ACCOUNT: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True, slots=True, kw_only=True)
class JobState:
    phase: Literal["running", "complete", "failed"]
    uid: str
    completions: int
    reason: str = ""


def job_state(job: Mapping[str, Any]) -> JobState:
    """The state of a Job object (``GET .../jobs/NAME``): ended once a Complete or Failed
    condition is True (SuccessCriteriaMet and FailureTarget come first; the pods may still be
    terminating then, so they do not count as the end)."""
    metadata, spec = job.get("metadata", {}), job.get("spec", {})
    uid, completions = str(metadata.get("uid", "")), int(spec.get("completions") or 1)
    for condition in job.get("status", {}).get("conditions") or ():
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Complete":
            return JobState(phase="complete", uid=uid, completions=completions)
        if condition.get("type") == "Failed":
            reason = ": ".join(
                str(part) for part in (condition.get("reason"), condition.get("message")) if part
            )
            return JobState(phase="failed", uid=uid, completions=completions, reason=reason)
    return JobState(phase="running", uid=uid, completions=completions)


@dataclass(frozen=True, slots=True, kw_only=True)
class ApiAccess:
    base_url: str
    token: str
    namespace: str
    ca: Path | None

    @classmethod
    def in_cluster(cls, environ: Mapping[str, str] = os.environ) -> ApiAccess:
        """The pod's own access: the API server's address from the environment the kubelet
        sets, the token, namespace and CA from the mounted service account
        (``LOADGEN_SERVICE_ACCOUNT`` points elsewhere, e.g. for a rehearsal outside a pod)."""
        folder = Path(environ.get("LOADGEN_SERVICE_ACCOUNT", str(SERVICE_ACCOUNT)))
        host = environ.get("KUBERNETES_SERVICE_HOST")
        if not host:
            raise ConfigError(
                "not inside a Kubernetes pod (no KUBERNETES_SERVICE_HOST)", key="--wait-for-job"
            )
        port = environ.get("KUBERNETES_SERVICE_PORT", "443")
        try:
            token = (folder / "token").read_text(encoding="utf-8").strip()
            namespace = (folder / "namespace").read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"no service account mounted at {folder} ({exc.strerror})", key="--wait-for-job"
            ) from None
        host = f"[{host}]" if ":" in host else host
        ca = folder / "ca.crt"
        return cls(
            base_url=f"https://{host}:{port}",
            token=token,
            namespace=namespace,
            ca=ca if ca.exists() else None,
        )


def wait_for_job(
    name: str,
    access: ApiAccess,
    *,
    poll: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
    notice: Callable[[str], None] = lambda text: None,
) -> JobState:
    """Poll the Job until it has ended; its last state. A refused or missing Job is one line."""
    url = f"{access.base_url}/apis/batch/v1/namespaces/{access.namespace}/jobs/{name}"
    headers = {"Authorization": f"Bearer {access.token}", "Accept": "application/json"}
    verify: Any = str(access.ca) if access.ca is not None else True
    shown = False
    with httpx.Client(headers=headers, verify=verify, timeout=30.0) as client:
        while True:
            try:
                response = client.get(url)
            except httpx.HTTPError as exc:
                notice(f"merge: the API server did not answer ({exc}); trying again")
                sleep(poll)
                continue
            if response.status_code != 200:
                raise ConfigError(
                    f"reading Job {name!r} in {access.namespace!r}: HTTP {response.status_code} "
                    f"{response.reason_phrase}",
                    key="--wait-for-job",
                )
            state = job_state(response.json())
            if state.phase != "running":
                return state
            if not shown:
                notice(f"merge: waiting for Job {name} ({state.completions} shards) to end")
                shown = True
            sleep(poll)
