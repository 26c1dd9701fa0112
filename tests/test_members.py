"""A kind of member of one's own goes through CV, blend, pickle, verification and refresh: added by one
module (tests/ridge_member.py) and one registry line, or from the command line (`--member`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import members
from pipeline.artifacts import load_artifacts
from pipeline.cli import main
from pipeline.members import MemberEntry, MemberSourceError, kinds_with, load_member_class
from pipeline.presets import PRESETS
from pipeline.synthetic import earlier_world
from tests.ridge_member import RidgeMember

RIDGE_FILE = Path(__file__).with_name("ridge_member.py")
# No neutralization: the pickle's output is then the members' blend itself.
OPTIONS = ["--trees", "40", "--threads", "1", "--embargo", "2", "--no-refit", "--neutralization", "0"]


def check_ridge_build(out: Path, names: set[str]) -> dict:
    """The build's report carries every member, the ridge one with what it chose, and its pickle passed
    verification in a process where neither this package nor the tests can be imported."""
    report = json.loads(out.with_name(out.stem + "_report").joinpath("report.json").read_text())
    assert set(report["models"]) == names | {"ensemble"}
    ridge = next(name for name in names if name.startswith("ridge"))
    assert report["models"][ridge]["chosen"]["penalty"] == 1.0 and report["models"][ridge]["cv"]["eras"] > 0
    assert report["verification"]["problems"] == []
    assert set(report["models"]["ensemble"]["chosen"]["weights"]) == names
    return report


def test_a_kind_added_by_one_registry_line_builds_verifies_and_refreshes(
    tiny_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(members.KINDS, "ridge", RidgeMember)
    monkeypatch.setitem(PRESETS, "example", (MemberEntry("ridge_0", "ridge", {"penalty": 1.0}),))
    earlier = earlier_world(tiny_world, tmp_path / "earlier", eras_back=8)
    out = tmp_path / "model.pkl"
    assert main(["--data-dir", str(earlier), "--out", str(out), "--preset", "example", *OPTIONS]) == 0
    check_ridge_build(out, {"ridge_0"})
    live = pd.read_parquet(tiny_world / "live.parquet")
    predictions = pd.read_pickle(out)(live)
    assert predictions["prediction"].between(0, 1).all() and predictions.index.equals(live.index)
    (saved,) = load_artifacts(tmp_path / "model_artifacts").members
    assert isinstance(saved.member, RidgeMember) and saved.member.moments_[2] > 0, "saved fitted"
    expected = saved.member.predict(live.filter(like="feature_").to_numpy(np.float32), None)
    ranks = pd.Series(expected, index=live.index).corr(predictions["prediction"], method="spearman")
    assert ranks > 0.999, "the pickle ranks the live rows as the saved member scores them"

    refreshed = tmp_path / "refreshed.pkl"
    args = ["--data-dir", str(tiny_world), "--out", str(refreshed), "--preset", "example", *OPTIONS]
    assert main([*args, "--init-model", str(tmp_path / "model_artifacts")]) == 0
    steps = json.loads((tmp_path / "refreshed_report" / "report.json").read_text())["refresh"]["members"]
    assert steps["ridge_0"]["rows_added"] > 0, "the ridge member took the new eras"
    (again,) = load_artifacts(tmp_path / "refreshed_artifacts").members
    assert again.member.moments_[2] == saved.member.moments_[2] + steps["ridge_0"]["rows_added"]


def test_a_member_of_ones_own_from_the_command_line(tiny_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "own.pkl"
    source = f"{RIDGE_FILE}:RidgeMember"
    args = ["--data-dir", str(tiny_world), "--out", str(out), "--preset", "example", "--member", source, *OPTIONS]
    assert main(args) == 0
    check_ridge_build(out, {"lgbm_example", "ridge"})
    manifest = json.loads((tmp_path / "own_artifacts" / "manifest.json").read_text())
    assert manifest["settings"]["members"] == [source], "a refresh finds the member's class again"
    loaded = {m.member.name: m.member for m in load_artifacts(tmp_path / "own_artifacts").members}
    assert all(type(member).__name__ in ("LightGBMMember", "RidgeMember") for member in loaded.values())
    live = pd.read_parquet(tiny_world / "live.parquet")
    assert np.isfinite(pd.read_pickle(out)(live)["prediction"]).all()


def test_a_member_source_that_cannot_work_is_named(tmp_path: Path) -> None:
    with pytest.raises(MemberSourceError, match="expected FILE.py:CLASS"):
        load_member_class("no_colon_here")
    with pytest.raises(MemberSourceError, match="no file"):
        load_member_class(f"{tmp_path / 'absent.py'}:Thing")
    with pytest.raises(MemberSourceError, match="defines no class 'Absent'"):
        load_member_class(f"{RIDGE_FILE}:Absent")
    half = tmp_path / "half.py"
    half.write_text("class Half:\n    kind = 'half'\n    def fit(self):\n        pass\n")
    with pytest.raises(MemberSourceError, match="does not implement pipeline.members.Member: missing .*cross_validate"):
        load_member_class(f"{half}:Half")
    builtin = tmp_path / "builtin.py"
    builtin.write_text(RIDGE_FILE.read_text().replace('kind: ClassVar[str] = "ridge"', 'kind: ClassVar[str] = "mlp"'))
    with pytest.raises(MemberSourceError, match="kind 'mlp' is built in"):
        kinds_with([f"{builtin}:RidgeMember"])
