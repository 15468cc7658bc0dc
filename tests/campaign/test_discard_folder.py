"""What a run that never began removes (``runner._discard_folder``): its own ``scenario.toml``
and the folders it leaves empty that are its own (made by the run, or below the results root),
nothing of anyone else's."""

from __future__ import annotations

from pathlib import Path

from loadgen.campaign.runner import _discard_folder, _new_folder
from loadgen.campaign.scenario import load_scenario

SMOKE = Path(__file__).parents[2] / "scenarios" / "smoke.toml"


def never_began(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "scenario.toml").write_text("[campaign]\n")
    return folder


def test_the_run_folder_and_an_emptied_campaign_folder_go_the_root_stays(tmp_path: Path) -> None:
    root = tmp_path / "results"
    _discard_folder(never_began(root / "smoke" / "20261201T000000Z"), root)
    assert root.is_dir()
    assert list(root.iterdir()) == []


def test_a_shards_folder_goes_with_its_emptied_stamp_and_campaign(tmp_path: Path) -> None:
    root = tmp_path / "results"
    _discard_folder(never_began(root / "smoke" / "20261201T000000Z" / "shard-1-of-2"), root)
    assert list(root.iterdir()) == []


def test_another_run_of_the_campaign_is_kept(tmp_path: Path) -> None:
    root = tmp_path / "results"
    earlier = root / "smoke" / "20261130T000000Z"
    earlier.mkdir(parents=True)
    (earlier / "summary.json").write_text("{}")
    _discard_folder(never_began(root / "smoke" / "20261201T000000Z"), root)
    assert [p.name for p in (root / "smoke").iterdir()] == ["20261130T000000Z"]
    assert (earlier / "summary.json").read_text() == "{}"


def test_an_exact_folder_the_run_made_goes_up_to_what_existed(tmp_path: Path) -> None:
    """``--directory pod/out/shard-0`` outside the results root, made by the run: removed, with
    the parents it made, down to the folder that was there before."""
    loaded = load_scenario(SMOKE)
    directory = tmp_path / "pod" / "out" / "shard-0"
    made = _new_folder(directory, loaded)
    assert made == [directory, directory.parent, directory.parent.parent]
    assert (directory / "scenario.toml").is_file()
    _discard_folder(directory, tmp_path / "results", made)
    assert list(tmp_path.iterdir()) == []


def test_a_folder_outside_the_root_keeps_everything_but_the_scenario_written(
    tmp_path: Path,
) -> None:
    """An exact folder (``--directory``) of the user's, there before the run, with a file of
    theirs in it."""
    root = tmp_path / "results"
    mine = never_began(tmp_path / "pod" / "out")
    (mine / "notes.txt").write_text("keep me")
    _discard_folder(mine, root)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    empty = never_began(tmp_path / "pod" / "empty")
    _discard_folder(empty, root)
    assert empty.is_dir()  # outside the root: never removed, even empty
