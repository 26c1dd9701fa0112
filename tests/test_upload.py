"""Upload through the real numerapi code path, against Numerai faked at the HTTP transport."""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import pytest
import requests

from pipeline.cli import main
from pipeline.images import sidecar_path
from pipeline.numerai_api import NetworkPolicy, NumeraiCallError, NumeraiClient
from pipeline.upload import UploadError, upload
from pipeline.verify import dump_predict, file_sha256
from tests.fake_numerai import FAST_RETRIES
from tests.test_pickle import bad_predict

SECRET = "SECRET-KEY-never-in-logs"
SEGFAULT = "Segmentation fault! Ensure python and library versions match our environment."


@pytest.fixture
def numerai(fake_numerai, tiny_world: Path, monkeypatch: pytest.MonkeyPatch):
    fake_numerai.serve_dir("v5.3", tiny_world)
    fake_numerai.serve_dir("v5.2", tiny_world)
    fake_numerai.models.update(
        {"my_model": "11111111-1111-4111-8111-111111111111", "other": "22222222-2222-4222-8222-222222222222"}
    )
    fake_numerai.data_versions.update(
        {"v5.3": "53535353-5353-4353-8353-535353535353", "v5.2": "52525252-5252-4252-8252-525252525252"}
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


def fast_client() -> NumeraiClient:
    return NumeraiClient("PUBLIC", SECRET, policy=FAST_RETRIES, show_progress_bars=False)


def status_queries(fake) -> int:
    return sum("computePickleUpload {" in body.get("query", "") for _, _, body in fake.requests_seen)


def test_upload_verifies_resolves_ids_and_sends_the_file(numerai, good_pickle: Path, caplog, capsys) -> None:
    with caplog.at_level(logging.DEBUG):
        code = main(["upload", str(good_pickle), "--model-name", "my_model", "--no-wait"])
    assert code == 0
    assert numerai.uploads["model.pkl"] == good_pickle.read_bytes()
    assert numerai.created == [
        {
            "filename": "model.pkl",
            "tournament": 8,
            "modelId": "11111111-1111-4111-8111-111111111111",
            "dataVersionId": "53535353-5353-4353-8353-535353535353",
            "dockerImageId": "31131131-1311-4311-8311-311311311311",
        }
    ]
    assert all(a == f"Token PUBLIC${SECRET}" for a in numerai.authorizations)
    gets = [url for method, url, _ in numerai.requests_seen if method == "GET"]
    assert any(url.endswith("v5.3/live.parquet") for url in gets), "verified on the default version's live file"
    assert all(isinstance(t, tuple) and None not in t for t in numerai.timeouts_seen), numerai.timeouts_seen
    assert status_queries(numerai) == 0, "--no-wait polls nothing"
    assert SECRET not in caplog.text and SECRET not in capsys.readouterr().out
    assert SECRET.encode() not in good_pickle.read_bytes()


def test_dry_run_uploads_nothing_and_v52_still_resolves(numerai, good_pickle: Path, tiny_world: Path) -> None:
    plan = upload(good_pickle, "other", "v5.2", "Python 3.11", live_path=tiny_world / "live.parquet", dry_run=True)
    assert (plan.model_id, plan.data_version_id, plan.docker_image_id, plan.upload_id) == (
        "22222222-2222-4222-8222-222222222222",
        "52525252-5252-4252-8252-525252525252",
        "31131131-1311-4311-8311-311311311311",
        None,
    )
    assert numerai.uploads == {} and numerai.created == []


def test_an_image_the_pickle_was_not_verified_for_is_refused(numerai, good_pickle: Path, tiny_world: Path) -> None:
    with pytest.raises(UploadError, match=r"not verified for that image.*verify .*--image \"Python 3.12\""):
        upload(good_pickle, "other", "v5.2", "Python 3.12", live_path=tiny_world / "live.parquet", dry_run=True)
    record = json.loads(sidecar_path(good_pickle).read_text())
    assert record["sha256"] == file_sha256(good_pickle) and set(record["images"]) == {"Python 3.11"}
    assert record["images"]["Python 3.11"]["match"] == "exact", "this environment is the 3.11 image's"
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


def test_5xx_answers_are_retried_until_the_upload_goes_through(numerai, good_pickle: Path) -> None:
    numerai.fail("GET https://files.fake-numer.ai/v5.3/live.parquet", status=502)
    numerai.fail("computePickleDataVersions", status=503, times=2)
    numerai.fail("PUT https://files.fake-numer.ai/upload/", status=503)
    plan = upload(good_pickle, "my_model", napi=fast_client())
    assert plan.upload_id == "upload-1"
    assert numerai.uploads["model.pkl"] == good_pickle.read_bytes(), "the PUT was retried, not taken as done"
    calls = [f"{m} {url} {body.get('query', '')}" for m, url, body in numerai.requests_seen]
    assert sum("v5.3/live.parquet" in c and c.startswith("GET") for c in calls) == 2
    assert sum("computePickleDataVersions" in c for c in calls) == 3
    assert sum(c.startswith("PUT") for c in calls) == 2
    assert len(numerai.created) == 1


@pytest.mark.parametrize(
    "how, says",
    [
        ({"error": requests.exceptions.ReadTimeout}, "no answer within 0.2 s to connect or 0.2 s to reply"),
        ({"error": requests.exceptions.ConnectTimeout}, "ConnectTimeout"),
        ({"error": requests.exceptions.ConnectionError}, "check this machine's network connection"),
        ({"status": 503}, "HTTP 503.*Numerai's side failed"),
    ],
)
def test_a_stalled_offline_or_failing_numerai_ends_in_a_clear_error(
    numerai, good_pickle: Path, tiny_world: Path, how: dict, says: str
) -> None:
    numerai.fail("account", times=100, **how)
    started = time.monotonic()
    with pytest.raises(UploadError) as raised:
        upload(good_pickle, "my_model", live_path=tiny_world / "live.parquet", napi=fast_client())
    assert time.monotonic() - started < 30
    assert "Numerai call account.models to api-tournament.numer.ai failed after 4 tries" in str(raised.value)
    assert re.search(says, str(raised.value)), str(raised.value)
    tries = [
        t
        for (_, _, body), t in zip(numerai.requests_seen, numerai.timeouts_seen, strict=True)
        if "account" in str(body)
    ]
    assert tries == [(0.2, 0.2)] * 4, "4 tries, each with the policy's timeouts"
    assert numerai.uploads == {}


def test_offline_upload_from_the_command_line_names_the_host(numerai, good_pickle: Path, caplog) -> None:
    numerai.fail("", error=requests.exceptions.ConnectionError, times=100)
    args = ["upload", str(good_pickle), "--model-name", "my_model", "--dry-run", "--retries", "0"]
    assert main(args) == 1
    assert "Numerai call dataset to api-tournament.numer.ai failed after 1 try" in caplog.text
    assert "KeyError" not in caplog.text


def test_a_query_never_outlasts_its_deadline(numerai) -> None:
    """Read timeouts of 10 s, but 0.5 s for the whole call: the stall ends at the deadline."""
    numerai.fail("account", error=requests.exceptions.ReadTimeout, times=100)
    policy = NetworkPolicy(read_timeout=10, retries=10, backoff=0.05, deadline=0.5)
    started = time.monotonic()
    with pytest.raises(NumeraiCallError, match="account.models"):
        NumeraiClient("PUBLIC", SECRET, policy=policy).get_models()
    assert time.monotonic() - started < 1.5
    assert len(numerai.timeouts_seen) == 1 and max(numerai.timeouts_seen[0]) <= 0.5


@pytest.mark.parametrize("fails_first", [False, True])
def test_a_passing_validation_ends_the_poll(numerai, good_pickle: Path, capsys, fails_first: bool) -> None:
    """Each status change is printed; an earlier pickle's failed status is not taken for this upload's."""
    numerai.pickle_statuses = [
        {"id": "an-earlier-upload", "validationStatus": "failed"},
        {"validationStatus": "queued"},
        {"validationStatus": "validating", "triggerStatus": "running"},
        {"validationStatus": "validating", "triggerStatus": "running"},
        {"validationStatus": "succeeded", "triggerStatus": "running"},
        {"validationStatus": "never read"},
    ]
    if fails_first:
        numerai.fail("computePickleUpload {", status=503)
    args = ["upload", str(good_pickle), "--model-name", "my_model", "--poll-interval", "0.01"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("Numerai")] == [
        "Numerai: waiting for Numerai to register the upload",
        "Numerai: validation queued, trigger none yet",
        "Numerai: validation validating, trigger running",
        "Numerai: validation succeeded, trigger running",
        "Numerai validated upload upload-1 of model my_model",
    ]
    assert numerai.status_polls == 5
    assert status_queries(numerai) == 5 + fails_first


def test_a_failed_validation_is_reported_with_what_to_do(numerai, good_pickle: Path, caplog, capsys) -> None:
    failed = {"id": "t1", "status": "failed", "statuses": [{"status": "failed", "description": SEGFAULT}]}
    numerai.pickle_statuses = [
        {"validationStatus": "validating"},
        {"validationStatus": "failed", "triggerStatus": "failed", "triggers": [failed]},
    ]
    args = ["upload", str(good_pickle), "--model-name", "my_model", "--poll-interval", "0.01"]
    assert main(args) == 1
    assert f"Numerai: validation failed, trigger failed ({SEGFAULT})" in capsys.readouterr().out
    assert "--runtime-env" in caplog.text and "--docker-image 'Python 3.11'" in caplog.text
    assert "--data-version v5.3" in caplog.text
    assert numerai.status_polls == 2


def test_the_poll_gives_up_after_wait_without_failing(numerai, good_pickle: Path, capsys) -> None:
    numerai.pickle_statuses = [{"validationStatus": "validating"}]
    args = ["upload", str(good_pickle), "--model-name", "my_model", "--wait", "0.2", "--poll-interval", "0.05"]
    assert main(args) == 0
    assert "after 0.2 s Numerai is still validation validating" in capsys.readouterr().out
    assert 2 <= numerai.status_polls <= 5


def test_a_status_poll_that_cannot_reach_numerai_says_the_upload_went_through(numerai, good_pickle, caplog) -> None:
    numerai.fail("computePickleUpload {", error=requests.exceptions.ConnectionError, times=100)
    args = ["upload", str(good_pickle), "--model-name", "my_model", "--retries", "0", "--poll-interval", "0.01"]
    assert main(args) == 1
    assert numerai.uploads["model.pkl"] == good_pickle.read_bytes()
    assert "upload upload-1 went through, but reading its status failed: Numerai call " in caplog.text
    assert "account.models.computePickleUpload to api-tournament.numer.ai" in caplog.text
