"""Upload through the real numerapi code path, against Numerai faked at the HTTP transport."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from pipeline.cli import main
from pipeline.upload import UploadError, upload
from pipeline.verify import dump_predict
from tests.test_pickle import bad_predict

SECRET = "SECRET-KEY-never-in-logs"


@pytest.fixture
def numerai(fake_numerai, tiny_world: Path, monkeypatch: pytest.MonkeyPatch):
    fake_numerai.serve_dir("v5.2", tiny_world)
    fake_numerai.models.update(
        {"my_model": "11111111-1111-4111-8111-111111111111", "other": "22222222-2222-4222-8222-222222222222"}
    )
    fake_numerai.data_versions.update(
        {"v5.2": "52525252-5252-4252-8252-525252525252", "v5.1": "51515151-5151-4151-8151-515151515151"}
    )
    fake_numerai.docker_images.update(
        {"Python 3.11": "31131131-1311-4311-8311-311311311311", "Python 3.12": "31231231-2312-4312-8312-312312312312"}
    )
    monkeypatch.setenv("NUMERAI_PUBLIC_ID", "PUBLIC")
    monkeypatch.setenv("NUMERAI_SECRET_KEY", SECRET)
    return fake_numerai


@pytest.fixture(scope="module")
def good_pickle(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from pipeline.runtime import make_predict
    from tests.test_pickle import train_state

    path = tmp_path_factory.mktemp("upload") / "model.pkl"
    dump_predict(make_predict(train_state(tiny_world, trees=10)), path)
    return path


def test_upload_verifies_resolves_ids_and_sends_the_file(numerai, good_pickle: Path, caplog, capsys) -> None:
    with caplog.at_level(logging.DEBUG):
        code = main(["upload", str(good_pickle), "--model-name", "my_model"])
    assert code == 0
    assert numerai.uploads["model.pkl"] == good_pickle.read_bytes()
    assert numerai.created == [
        {
            "filename": "model.pkl",
            "tournament": 8,
            "modelId": "11111111-1111-4111-8111-111111111111",
            "dataVersionId": "52525252-5252-4252-8252-525252525252",
            "dockerImageId": "31131131-1311-4311-8311-311311311311",
        }
    ]
    assert all(a == f"Token PUBLIC${SECRET}" for a in numerai.authorizations)
    gets = [url for method, url, _ in numerai.requests_seen if method == "GET"]
    assert any(url.endswith("v5.2/live.parquet") for url in gets), "verified on the current live file"
    assert SECRET not in caplog.text and SECRET not in capsys.readouterr().out
    assert SECRET.encode() not in good_pickle.read_bytes()


def test_dry_run_uploads_nothing(numerai, good_pickle: Path, tiny_world: Path) -> None:
    plan = upload(good_pickle, "other", docker_image="Python 3.12", live_path=tiny_world / "live.parquet", dry_run=True)
    assert (plan.model_id, plan.docker_image_id, plan.upload_id) == (
        "22222222-2222-4222-8222-222222222222",
        "31231231-2312-4312-8312-312312312312",
        None,
    )
    assert numerai.uploads == {} and numerai.created == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"model_name": "nobody"}, r"unknown model name 'nobody'; Numerai offers \['my_model', 'other'\]"),
        ({"model_name": "my_model", "data_version": "v9"}, r"unknown data version 'v9'"),
        ({"model_name": "my_model", "docker_image": "Python 2.7"}, r"unknown docker image 'Python 2.7'"),
    ],
)
def test_unknown_names_are_refused(numerai, good_pickle: Path, tiny_world: Path, kwargs, message) -> None:
    with pytest.raises(UploadError, match=message):
        upload(good_pickle, live_path=tiny_world / "live.parquet", **kwargs)
    assert numerai.uploads == {}


def test_missing_credentials_are_named(fake_numerai, good_pickle: Path, monkeypatch) -> None:
    monkeypatch.delenv("NUMERAI_PUBLIC_ID", raising=False)
    monkeypatch.delenv("NUMERAI_SECRET_KEY", raising=False)
    with pytest.raises(UploadError, match="set NUMERAI_PUBLIC_ID and NUMERAI_SECRET_KEY"):
        upload(good_pickle, "my_model")


def test_a_pickle_failing_verification_is_never_uploaded(numerai, tiny_world: Path, tmp_path: Path, caplog) -> None:
    bad = tmp_path / "bad.pkl"
    dump_predict(bad_predict("nan_output"), bad)
    assert main(["upload", str(bad), "--model-name", "my_model", "--live", str(tiny_world / "live.parquet")]) == 1
    assert "refusing to upload" in caplog.text and "NaN" in caplog.text
    assert numerai.uploads == {} and numerai.created == []
