"""Issue 13: the rendered manifests are valid Kubernetes (checked offline against the schemas by
kubernetes-validate), hold no time, render the same twice, make pods observable, and run: N
local processes given exactly a pod's arguments and environment meet at the barrier and merge,
and the merge Job's command, against a stand-in API server, merges their round."""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import trustme
import yaml
from scale_helpers import check_exact_merge, start_spread

from loadgen.cli import main
from loadgen.scale.k8s import INDEX_ANNOTATION, UID_LABEL, render_documents, render_manifest
from loadgen.scale.kube import job_state

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "scenarios" / "smoke.toml"
KUBERNETES_VERSIONS = ("1.27", kubernetes_validate.latest_version())
OPTIONS: tuple[dict[str, Any], ...] = (
    {"shards": 1},
    {"shards": 3, "merge": True},
    {"shards": 16, "merge": True, "name": "Big_Run.2", "cpu": "500m", "memory": "512Mi"},
    {"shards": 4, "metrics_port": 9100, "barrier_timeout": 30, "barrier_lead": 2.5},
)


def _render(**options: Any) -> list[dict[str, Any]]:
    return list(
        yaml.safe_load_all(render_manifest(SMOKE, image="reg.example/loadgen:1", **options))
    )


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize(
    "options", OPTIONS, ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items())
)
def test_every_document_passes_the_kubernetes_schema(options: dict[str, Any], version: str) -> None:
    documents = _render(**options)
    kinds = [d["kind"] for d in documents]
    expected = ["ConfigMap", "Service", "Job"]
    if options.get("merge"):
        expected += ["ServiceAccount", "Role", "RoleBinding", "Job"]
    assert kinds == expected
    for document in documents:  # strict: an unknown field is an error too
        kubernetes_validate.validate(document, version, strict=True)


def test_the_validator_does_catch_a_bad_document() -> None:
    """The check above could pass by validating nothing: a misspelled field fails it."""
    job = _render(shards=2)[2]
    job["spec"]["template"]["spec"]["containers"][0]["argz"] = job["spec"]["template"]["spec"][
        "containers"
    ][0].pop("args")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(job, KUBERNETES_VERSIONS[-1], strict=True)


def test_no_time_in_the_manifest_and_the_same_text_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    first = render_manifest(SMOKE, shards=4, image="x", merge=True)
    monkeypatch.setattr(time, "time", lambda: 4_000_000_000.0)
    assert render_manifest(SMOKE, shards=4, image="x", merge=True) == first
    manifest_only = first.replace(SMOKE.read_text(encoding="utf-8"), "")
    assert not re.search(r"\d{9,}", manifest_only)  # no epoch, in seconds or milliseconds
    assert "start-at" not in first
    names = [(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(first)]
    assert all("generateName" not in d["metadata"] for d in yaml.safe_load_all(first))
    assert len(set(names)) == len(names)  # apply creates or leaves each, by its fixed name


def test_pods_are_observable() -> None:
    _, service, job = _render(shards=3)
    pod = job["spec"]["template"]
    container = pod["spec"]["containers"][0]
    args = container["args"]
    assert args[args.index("--progress") + 1] == "lines"
    assert "--quiet" not in args
    assert "-q" not in args
    assert args[args.index("--metrics-host") + 1] == "0.0.0.0"
    assert args[args.index("--metrics-port") + 1] == "9464"
    assert container["ports"] == [{"name": "metrics", "containerPort": 9464}]
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert pod["spec"]["subdomain"] == service["metadata"]["name"]
    for scrape in (pod["metadata"]["annotations"], service["metadata"]["annotations"]):
        assert scrape == {
            "prometheus.io/scrape": "true",
            "prometheus.io/port": "9464",
            "prometheus.io/path": "/metrics",
        }
    assert {"name": "PYTHONUNBUFFERED", "value": "1"} in container["env"]


def test_the_merge_job_may_read_only_the_shard_job() -> None:
    *_, job, account, role, binding, merge = _render(shards=2, merge=True)
    assert role["rules"] == [
        {"apiGroups": ["batch"], "resources": ["jobs"], "resourceNames": [job["metadata"]["name"]],
         "verbs": ["get"]},
    ]  # fmt: skip
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account["metadata"]["name"]}]
    assert merge["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]
    args = merge["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == ["merge", "--wait-for-job", "loadgen-smoke", "/results/loadgen-smoke"]


def test_k8s_manifest_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["k8s-manifest", str(SMOKE), "--shards", "2", "--image", "x", "--merge"]) == 0
    assert len(list(yaml.safe_load_all(capsys.readouterr().out))) == 7
    out = tmp_path / "job.yaml"
    assert main(["k8s-manifest", str(SMOKE), "--shards", "2", "--image", "x", "-o", str(out)]) == 0
    assert [d["kind"] for d in yaml.safe_load_all(out.read_text())] == [
        "ConfigMap",
        "Service",
        "Job",
    ]


@pytest.mark.parametrize(
    ("status", "phase"),
    [
        ({}, "running"),
        ({"conditions": [{"type": "SuccessCriteriaMet", "status": "True"}]}, "running"),
        ({"conditions": [{"type": "Complete", "status": "True"}]}, "complete"),
        ({"conditions": [{"type": "Failed", "status": "False"}]}, "running"),
        ({"conditions": [{"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded"}]},
         "failed"),
    ],
)  # fmt: skip
def test_job_state(status: dict[str, Any], phase: str) -> None:
    job = {"metadata": {"uid": "u"}, "spec": {"completions": 3}, "status": status}
    state = job_state(job)
    assert (state.phase, state.uid, state.completions) == (phase, "u", 3)


# --- pods simulated by local processes -------------------------------------------------------


def _expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion of container args."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m[1], m[0]), text)


def _pod_env(
    container: dict[str, Any], annotations: dict[str, str], labels: dict[str, str]
) -> dict[str, str]:
    """The container's environment as the kubelet builds it: values, and the downward API."""
    env = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
            continue
        path = item["valueFrom"]["fieldRef"]["fieldPath"]
        where, key = re.fullmatch(r"metadata\.(annotations|labels)\['([^']+)'\]", path).groups()  # type: ignore[union-attr]
        env[item["name"]] = (annotations if where == "annotations" else labels)[key]
    return env


def _local(arg: str, mounts: dict[str, Path]) -> str:
    for mount, local in mounts.items():
        if arg == mount or arg.startswith(mount + "/"):
            return str(local) + arg[len(mount) :]
    return arg


class _FakeApi:
    """A stand-in API server (HTTPS, bearer token) serving one Job object."""

    def __init__(self, ca: trustme.CA, job: dict[str, Any], token: str) -> None:
        self.job = job
        self.requests: list[str] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                api.requests.append(self.path)
                ok = self.headers.get("Authorization") == f"Bearer {token}"
                body = json.dumps(api.job if ok else {"kind": "Status"}).encode()
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(context)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> _FakeApi:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def pod_mounts(tmp_path: Path) -> dict[str, Path]:
    return {"/scenario": tmp_path / "scenario", "/results": tmp_path / "results"}


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_pods_run_as_local_processes_through_the_barrier_and_the_merge_job(
    tmp_path: Path, pod_mounts: dict[str, Path]
) -> None:
    """Real time and processes, ~15 s. Each shard process gets the pod's args and environment
    exactly (index from the completion-index annotation, the Job's uid from its label, through
    the downward API env vars), except three things a test must change: the mount paths
    (to folders here), the metrics address (127.0.0.1, port 0: tests bind only loopback) and
    the barrier lead (5 s in the cluster, for slow volumes; 1 s on a local disk)."""
    count, uid = 3, "3f1c0f0e-5d5e-4b8e-9a43-0c2b9c0d1e11"
    documents = render_documents(
        SMOKE, shards=count, image="x", merge=True, barrier_lead=1.0,
        extra_args=("--set", 'platform.arrival.stages=[{duration="1s", rate=30}]',
                    "--set", "devices.count=15", "--no-html",
                    "--set", 'thresholds=["issued == 30"]'),  # judged by the merge
    )  # fmt: skip
    config_map, _, job, *_, merge_job = documents
    pod_mounts["/scenario"].mkdir()
    for name, text in config_map["data"].items():
        (pod_mounts["/scenario"] / name).write_text(text, encoding="utf-8")
    container = job["spec"]["template"]["spec"]["containers"][0]
    processes = []
    for index in range(count):  # what the Job controller gives pod i
        env = _pod_env(container, {INDEX_ANNOTATION: str(index)}, {UID_LABEL: uid})
        args = [_local(_expand(arg, env), pod_mounts) for arg in container["args"]]
        args[args.index("--metrics-host") + 1] = "127.0.0.1"
        args[args.index("--metrics-port") + 1] = "0"
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "loadgen", *args],
                env={**os.environ, **env},
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
            )
        )
        time.sleep(0.5)
    logs = [p.communicate(timeout=90)[0].decode() for p in processes]
    assert [p.returncode for p in processes] == [0] * count, logs
    round_folder = pod_mounts["/results"] / "loadgen-smoke" / uid
    folders = [round_folder / f"shard-{i}-of-{count}" for i in range(count)]
    assert start_spread(folders) < 0.050
    assert "barrier: all 3 shards ready" in logs[0]  # kubectl logs shows the pod's progress
    print(logs[0])

    # the merge Job, against a stand-in API server that says the shard Job has completed
    ca = trustme.CA()
    account = tmp_path / "serviceaccount"
    account.mkdir()
    (account / "token").write_text("t0ken")
    (account / "namespace").write_text("load")
    ca.cert_pem.write_to_path(str(account / "ca.crt"))
    job_object = {
        "metadata": {"name": "loadgen-smoke", "uid": uid},
        "spec": {"completions": count},
        "status": {"conditions": [{"type": "Complete", "status": "True"}]},
    }
    merge_container = merge_job["spec"]["template"]["spec"]["containers"][0]
    with _FakeApi(ca, job_object, "t0ken") as api:
        env = {
            **os.environ,
            **_pod_env(merge_container, {}, {}),
            "KUBERNETES_SERVICE_HOST": "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(api.port),
            "LOADGEN_SERVICE_ACCOUNT": str(account),
        }
        args = [_local(arg, pod_mounts) for arg in merge_container["args"]]
        done = subprocess.run(
            [sys.executable, "-m", "loadgen", *args], env=env, capture_output=True, timeout=60,
            check=False,
        )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert api.requests == ["/apis/batch/v1/namespaces/load/jobs/loadgen-smoke"]
    merged = round_folder / "merged"
    check_exact_merge(folders, merged, sent=30)
    assert f"into {merged}" in done.stdout.decode()
