"""Numerai's runtime images: which ones a pickle was verified for, and an upload that names another."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.images import (
    IMAGES,
    TOUCHED,
    ImageError,
    check_image,
    find_python,
    matched_images,
    record_run,
    sidecar_path,
)
from pipeline.verify import file_sha256
from tests.test_upload import good_pickle  # noqa: F401  (fixture)

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements.txt"


def versions_of(image: str, python: str) -> dict[str, str]:
    return {"python": python} | {lib: IMAGES[image].versions[lib] for lib in TOUCHED}


def test_this_project_builds_in_the_python_311_image_environment() -> None:
    pins = dict(re.findall(r"^([a-z-]+)==([\d.]+)", REQUIREMENTS.read_text(), flags=re.M))
    assert {lib: pins[lib] for lib in TOUCHED} == {lib: IMAGES["Python 3.11"].versions[lib] for lib in TOUCHED}
    assert matched_images(versions_of("Python 3.11", "3.11.7")) == {"Python 3.11": "exact"}
    assert matched_images(versions_of("Python 3.12", "3.11.7")) == {"Python 3.12": "libraries"}
    assert matched_images(versions_of("Python 3.12", "3.12.1")) == {"Python 3.12": "exact"}
    assert IMAGES["Python 3.10"].versions["numpy"] == "1.26.4" and IMAGES["Python 3.13"].versions["lightgbm"] == "4.5.0"


def test_upload_images_are_checked_against_the_sidecar(tmp_path: Path) -> None:
    model = tmp_path / "model.pkl"
    model.write_bytes(b"a pickle")
    sha = file_sha256(model)
    with pytest.raises(ImageError, match=r'not verified for that image.*verify .*model.pkl .*--image "Python 3.11"'):
        check_image(model, sha, "Python 3.11")
    record_run(sidecar_path(model), sha, versions_of("Python 3.11", "3.11.7"), True, parameters=2)
    check_image(model, sha, "Python 3.11")
    with pytest.raises(ImageError, match="not verified for that image"):
        check_image(model, sha, "Python 3.12")
    record_run(sidecar_path(model), sha, versions_of("Python 3.12", "3.11.7"), True, image="Python 3.12")
    with pytest.raises(ImageError, match=r"under Python 3.11.7, not under the image's Python 3.12.*crashes"):
        check_image(model, sha, "Python 3.12")
    with pytest.raises(ImageError, match=r"knows the libraries of .* only"):
        check_image(model, sha, "Python 3.14")
    record = record_run(sidecar_path(model), sha, versions_of("Python 3.11", "3.11.7"), False, image="Python 3.11")
    assert set(record["images"]) == {"Python 3.12"} and record["parameters"] == 2, "a failed run takes its image off"
    model.write_bytes(b"another pickle")
    with pytest.raises(ImageError, match="not verified for that image"):
        check_image(model, file_sha256(model), "Python 3.12")


def test_verify_records_the_images_it_passed(good_pickle: Path, tiny_world: Path, capsys) -> None:  # noqa: F811
    sidecar_path(good_pickle).unlink(missing_ok=True)
    assert main(["verify", str(good_pickle), "--live", str(tiny_world / "live.parquet")]) == 0
    assert "verified for: Python 3.11 (exact)" in capsys.readouterr().out
    record = json.loads(sidecar_path(good_pickle).read_text())
    assert record["sha256"] == file_sha256(good_pickle) and record["parameters"] == 1


def test_an_images_python_is_found_where_it_runs_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_python("3.11") is not None, "this interpreter"
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    assert find_python("3.12") is None
    shim = tmp_path / "python3.12"
    shim.write_text("#!/bin/sh\nexit 127\n")
    fake = tmp_path / "pyenv" / "versions" / "3.12.4" / "bin" / "python3.12"
    fake.parent.mkdir(parents=True)
    fake.write_text("#!/bin/sh\necho 3.12\n")
    for script in (shim, fake):
        script.chmod(0o755)
    assert find_python("3.12") == str(fake), "a shim that does not run is passed over"


@pytest.mark.slow
def test_verify_in_another_images_environment(
    good_pickle: Path,  # noqa: F811
    tiny_world: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys,
) -> None:
    """Needs the package registry (the image's wheels) the first time: this Python with the Python 3.12
    image's libraries passes; it is recorded as "libraries", which upload refuses."""
    monkeypatch.setenv("NUMERAI_PIPELINE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    monkeypatch.setenv("PATH", str(Path(__import__("sys").executable).parent))
    sidecar_path(good_pickle).unlink(missing_ok=True)
    live = str(tiny_world / "live.parquet")
    assert main(["verify", str(good_pickle), "--live", live, "--image", "Python 3.12"]) == 0
    out = capsys.readouterr().out
    assert "lightgbm 4.5.0" in out and "environment of 'Python 3.12': libraries" in out
    with pytest.raises(ImageError, match="not under the image's Python 3.12"):
        check_image(good_pickle, file_sha256(good_pickle), "Python 3.12")
