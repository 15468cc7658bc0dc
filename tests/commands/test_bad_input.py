"""Every bad input is one line on stderr, exit 2, no traceback, and no results folder left.

Table-driven (h11's style): each case is a command line as a user would type it, run in process
through ``loadgen.cli.main``, with what the one line must name. A port in use and an address this
machine does not have are real binds on loopback (nothing is sent anywhere).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from loadgen.cli import main

Case = Callable[[Path], list[str]]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield held.getsockname()[1]


def _folder_with(tmp_path: Path, name: str, text: str) -> Path:
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "run.json").write_text('{"campaign": "x", "started_at": 1}')
    (folder / name).write_text(text)
    return folder


#: ``provision`` against a north API that is not there (port 9): a bad flag must be found first.
PROVISION = [
    "provision", "create", "--template", "scenarios/provision-device.template.json",
    "--url", "http://127.0.0.1:9", "--count", "2",
]  # fmt: skip

CASES: list[tuple[str, Case, tuple[str, ...]]] = [
    ("a folder as the scenario", lambda tmp: ["run", str(tmp)], ("is a folder", "scenario file")),
    ("no such scenario", lambda tmp: ["run", str(tmp / "nope.toml")], ("no such scenario file",)),
    (
        "no such scenario for a Kubernetes manifest",
        lambda tmp: ["k8s-manifest", str(tmp / "nope.toml"), "--shards", "2", "--image", "x"],
        ("no such scenario file",),
    ),
    (
        "a negative duration",
        lambda tmp: ["devices", "--duration", "-1", "--results", str(tmp / "r")],
        ("--duration (campaign.duration)", "greater than 0"),
    ),
    (
        "a duration without sense",
        lambda tmp: ["platform", "--timeout", "soon", "--results", str(tmp / "r")],
        ("--timeout", "expected a duration such as 250ms"),
    ),
    (
        "a listen backlog of nothing",
        lambda tmp: ["devices", "--backlog", "0", "--results", str(tmp / "r")],
        ("--backlog (devices.backlog)", "expected an integer 1..65535, got 0"),
    ),
    (
        "a south backlog beyond a port number",
        lambda tmp: ["platform", "--south-backlog", "70000", "--results", str(tmp / "r")],
        ("--south-backlog (platform.south.backlog)", "expected an integer 1..65535, got 70000"),
    ),
    (
        "a misspelled operation",
        lambda tmp: ["platform", "--op", "REBOT_EQUIPMENT", "--results", str(tmp / "r")],
        ("--op (platform.mix[0].name)", "did you mean REBOOT_EQUIPMENT?", "custom = true"),
    ),
    (
        "a misspelled operation profile",
        lambda tmp: ["devices", "--op", "UPDATEE=async", "--results", str(tmp / "r")],
        ("--op (devices.profiles.UPDATEE)", "did you mean UPDATE?"),
    ),
    (
        "an unknown fault",
        lambda tmp: ["devices", "--fault", "explode=0.1", "--results", str(tmp / "r")],
        ("--fault", "unknown fault 'explode'"),
    ),
    (
        "a start barrier without a shard",
        lambda tmp: [
            "run",
            "scenarios/smoke.toml",
            "--barrier",
            str(tmp / "barrier"),
            "--results",
            str(tmp / "r"),
        ],
        ("--barrier", "expected --shard I/N"),
    ),
    (
        "a corrupt run.json",
        lambda tmp: ["report", str(_folder_with(tmp, "run.json", "{not json"))],
        ("run.json", "corrupt"),
    ),
    (
        "a corrupt summary.json",
        lambda tmp: ["compare", str(_folder_with(tmp, "summary.json", "[1, 2")), str(tmp)],
        ("summary.json", "corrupt"),
    ),
    (
        "a capacity dashboard port beyond a port number",
        lambda tmp: [
            "capacity",
            "scenarios/smoke.toml",
            "--dashboard",
            "127.0.0.1:99999",
            "--results",
            str(tmp / "r"),
        ],
        ("--dashboard: expected HOST:PORT with a port 0-65535, got '127.0.0.1:99999'",),
    ),
    (
        "a capacity dashboard that took the scenario",
        lambda tmp: [
            "capacity",
            "scenarios/smoke.toml",
            "--dashboard=smoke.toml",
            "--results",
            str(tmp / "r"),
        ],
        ("--dashboard: expected HOST:PORT, got the scenario 'smoke.toml'",),
    ),
    *(
        (
            f"provision {' '.join(flag)}",
            lambda tmp, flag=flag: [*PROVISION, *flag],
            words,
        )
        for flag, words in [
            (("--concurrency", "0"), ("argument --concurrency: expected an integer >= 1, got 0",)),
            (("--timeout", "0"), ("argument --timeout: expected a duration > 0, got 0",)),
            (("--rate", "0"), ("argument --rate: expected a number > 0, got 0",)),
            (
                ("--id-pattern", "site/{:04d}"),
                ("--id-pattern (devices.id_pattern):", "distinct ids without '/'"),
            ),
            (
                ("--http-port", "70000"),
                ("--http-port (devices.http_port): expected a port", "got 70000"),
            ),
            (("--http-port", "0"), ("--http-port:", "the port the devices listen on")),
            (("--first-index", "-1"), ("--first-index (devices.first_index):", ">= 0")),
        ]
    ),
    ("a usage error", lambda tmp: ["devices", "--count"], ("--count", "expected one argument")),
    ("an unknown flag", lambda tmp: ["platform", "--rat", "5"], ("unrecognized arguments",)),
]


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize(("case", "words"), [pytest.param(c, w, id=i) for i, c, w in CASES])
def test_bad_input_is_one_line_and_exit_2(
    case: Case, words: tuple[str, ...], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(case(tmp_path))
    except SystemExit as usage:  # argparse's own usage errors
        code = usage.code
    line = _one_line(capsys.readouterr().err)
    assert code == 2
    for word in words:
        assert word in line
    assert not (tmp_path / "r").exists()  # no half-written results folder


def test_a_port_in_use_names_the_port_and_the_flag(
    busy_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["devices", "--http-port", str(busy_port), "--duration", "1s", "--results", str(tmp_path)]
    )
    line = _one_line(capsys.readouterr().err)
    assert code == 2
    assert f"--http-port (devices.http_port): cannot listen on 127.0.0.1:{busy_port}" in line
    assert "in use" in line
    assert list(tmp_path.iterdir()) == []  # no run folder, and no empty campaign folder


def test_a_host_that_cannot_be_bound_names_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # 203.0.113.7 (TEST-NET-3) is no address of this machine: the bind fails at once, no traffic
    code = main(
        ["devices", "--host", "203.0.113.7", "--http-port", "0", "--duration", "1s",
         "--results", str(tmp_path)]
    )  # fmt: skip
    line = _one_line(capsys.readouterr().err)
    assert code == 2
    assert "--host (devices.host): cannot listen on 203.0.113.7:0" in line
    assert not any(tmp_path.rglob("*.json"))


def test_a_busy_dashboard_port_stops_capacity_before_any_folder(
    busy_port: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["capacity", "scenarios/smoke.toml", f"--dashboard=127.0.0.1:{busy_port}",
         "--results", str(tmp_path / "r")]
    )  # fmt: skip
    line = _one_line(capsys.readouterr().err)
    assert code == 2
    assert line.startswith(
        f"loadgen capacity: --dashboard (output.dashboard): cannot serve the dashboard on "
        f"127.0.0.1:{busy_port}: the port is in use"
    )
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "flag", [("--concurrency", "0"), ("--timeout", "0"), ("--http-port", "70000")]
)
def test_provision_finds_a_bad_flag_before_it_contacts_the_north_api(
    flag: tuple[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as north:
        north.bind(("127.0.0.1", 0))
        north.listen()
        north.setblocking(False)
        url = f"http://127.0.0.1:{north.getsockname()[1]}"
        try:
            code = main([*PROVISION[:-4], "--url", url, "--count", "2", *flag])
        except SystemExit as usage:
            code = usage.code
        with pytest.raises(BlockingIOError):
            north.accept()  # nobody knocked
    line = _one_line(capsys.readouterr().err)
    assert code == 2
    assert flag[0] in line


def test_an_async_only_fault_on_sync_flows_is_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(
        ["devices", "--fault", "no_final=0.1", "--http-port", "0", "--duration", "100ms", "-q",
         "--results", str(tmp_path)]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 0
    assert "loadgen: warning: devices.faults.no_final: only asynchronous flows" in err


def _run_folder(root: Path, campaign: str, sent: int) -> Path:
    folder = root / campaign
    folder.mkdir(parents=True)
    (folder / "run.json").write_bytes(orjson.dumps({"campaign": campaign, "started_at": 1.0}))
    (folder / "counters.jsonl").write_bytes(
        orjson.dumps({"t_s": 1.0, "final": True, "counters": {"ops.sent": sent}}) + b"\n"
    )
    return folder


def test_merge_refuses_runs_of_different_campaigns_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = _run_folder(tmp_path, "alpha", 3), _run_folder(tmp_path, "beta", 4)
    code = main(["merge", str(a), str(b), "--out", str(tmp_path / "m")])
    line = _one_line(capsys.readouterr().err)
    assert code == 2
    assert "different campaigns (alpha, beta); --force merges them anyway" in line
    assert not (tmp_path / "m").exists()
    assert main(["merge", str(a), str(b), "--out", str(tmp_path / "m"), "--force"]) == 0
    merged = orjson.loads((tmp_path / "m" / "summary.json").read_bytes())
    assert merged["operations"]["sent"] == 7


def test_seeds_left_open_are_drawn_once_and_saved() -> None:
    from loadgen.campaign.scenario import load_scenario
    from loadgen.commands.run import with_seeds

    open_ = load_scenario("scenarios/default.toml")  # no seeds: each run draws its own
    assert open_.scenario.platform is not None
    assert open_.scenario.platform.seed is None
    first, second = with_seeds(open_), with_seeds(open_)
    assert first.scenario.platform is not None
    assert second.scenario.platform is not None
    assert isinstance(first.scenario.platform.seed, int)
    assert first.scenario.platform.seed != second.scenario.platform.seed  # 1 in 2**32 to fail
    assert first.document["platform"]["seed"] == first.scenario.platform.seed  # saved with it
    assert "seed" not in open_.document.get("platform", {})  # the loaded one is left alone
    pinned = load_scenario("scenarios/smoke.toml")
    assert with_seeds(pinned) is pinned
