"""Upload a verified pickle to Numerai's hosted compute with numerapi, then report Numerai's verdict.

Credentials come only from NUMERAI_PUBLIC_ID / NUMERAI_SECRET_KEY; the secret is handed to numerapi
and never logged, printed or pickled. Every call goes through `NumeraiClient` (timeouts, bounded
retries); a call that cannot be made raises `UploadError` naming the call, the host and what to check.

After an upload, Numerai validates the pickle by running it; `wait_for_validation` polls the model's
`computePickleUpload { validationStatus triggerStatus triggers { statuses } }`, the query of
example-scripts' upload skill (numerai/agents/skills/numerai-model-upload/SKILL.md), until a final
validation status or a timeout.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pipeline.data import DEFAULT_DATA_VERSION
from pipeline.images import DEFAULT_IMAGE, ImageError, check_image, record_run, sidecar_path
from pipeline.numerai_api import NetworkPolicy, NumeraiCallError, NumeraiClient
from pipeline.verify import BENCHMARKS_FILE, VerificationError, VerificationReport, file_sha256, verify_pickle

logger = logging.getLogger(__name__)

DEFAULT_DOCKER_IMAGE = DEFAULT_IMAGE
CREDENTIAL_VARS = ("NUMERAI_PUBLIC_ID", "NUMERAI_SECRET_KEY")
DEFAULT_WAIT_SECONDS = 300.0
DEFAULT_POLL_SECONDS = 10.0

# The model's current pickle; its first field names the call in errors (account.models.computePickleUpload).
STATUS_QUERY = """
query {
  account {
    models {
      computePickleUpload {
        id
        filename
        validationStatus
        triggerStatus
        triggers { id status statuses { status description insertedAt } }
      }
      id
      name
    }
  }
}"""
# Numerai does not publish its status vocabulary: a status naming one of these words is a failure, one
# of SUCCESS_STATUSES a pass, anything else (queued, running, validating, none yet) still going.
FAILURE_WORDS = ("fail", "error", "invalid", "reject", "crash", "timeout", "timed out")
SUCCESS_STATUSES = {"succeeded", "success", "successful", "passed", "pass", "valid", "validated", "complete"}
SUCCESS_STATUSES |= {"completed", "done", "ready", "ok"}


class UploadError(RuntimeError):
    """An upload that cannot go ahead: missing credentials, unknown names, a failing pickle, no network."""


@dataclass
class UploadPlan:
    """What an upload resolved to; a dry run stops here."""

    model_path: Path
    model_name: str
    model_id: str
    data_version: str
    data_version_id: str
    docker_image: str
    docker_image_id: str
    verification: VerificationReport
    upload_id: str | None = None


@dataclass(frozen=True)
class PickleStatus:
    """The model's current pickle as Numerai reports it; `attached` is False until it is the uploaded one."""

    attached: bool
    validation: str | None
    trigger: str | None
    notes: tuple[str, ...] = ()

    @property
    def validated(self) -> bool:
        return self.attached and _verdict(self.validation) == "passed"

    @property
    def failed(self) -> bool:
        """Validation failed, or a trigger failed before validation passed (a later trigger is only shown)."""
        trigger_failed = _verdict(self.trigger) == "failed" and not self.validated
        return self.attached and (_verdict(self.validation) == "failed" or trigger_failed)

    def line(self) -> str:
        if not self.attached:
            return "waiting for Numerai to register the upload"
        notes = f" ({'; '.join(self.notes)})" if self.notes else ""
        return f"validation {self.validation or 'not started'}, trigger {self.trigger or 'none yet'}{notes}"


def _verdict(status: str | None) -> str | None:
    text = (status or "").strip().lower()
    if any(word in text for word in FAILURE_WORDS):
        return "failed"
    return "passed" if text in SUCCESS_STATUSES else None


@contextmanager
def _numerai_errors() -> Iterator[None]:
    try:
        yield
    except NumeraiCallError as err:
        raise UploadError(str(err)) from err


def numerai_api(policy: NetworkPolicy | None = None) -> NumeraiClient:
    """A NumeraiClient logged in from the environment, or a clear error naming the missing variables."""
    missing = [name for name in CREDENTIAL_VARS if not os.environ.get(name)]
    if missing:
        raise UploadError(
            f"set {' and '.join(missing)} in the environment (API keys from numer.ai -> Account -> API keys, "
            "with the 'upload models' scope)"
        )
    return NumeraiClient(
        public_id=os.environ[CREDENTIAL_VARS[0]], secret_key=os.environ[CREDENTIAL_VARS[1]], policy=policy
    )


def _resolve(kind: str, name: str, options: dict[str, str]) -> str:
    if name not in options:
        raise UploadError(f"unknown {kind} {name!r}; Numerai offers {sorted(options)}")
    return options[name]


def upload(
    model_path: str | Path,
    model_name: str,
    data_version: str = DEFAULT_DATA_VERSION,
    docker_image: str = DEFAULT_DOCKER_IMAGE,
    live_path: str | Path | None = None,
    dry_run: bool = False,
    napi: NumeraiClient | None = None,
    benchmarks_path: str | Path | None = None,
) -> UploadPlan:
    """Verify the pickle on a live file, check that it was verified for `docker_image`, resolve names to
    Numerai's ids, and upload (unless dry run).

    Without `live_path`, the data version's current live.parquet is downloaded to verify on (and its
    live_benchmark_models.parquet for a two-parameter predict).
    """
    model_path = Path(model_path)
    if model_path.suffix != ".pkl":
        raise UploadError(f"{model_path}: Numerai accepts only files ending in .pkl")
    api = napi if napi is not None else numerai_api()
    with _numerai_errors():
        with tempfile.TemporaryDirectory() as scratch:
            verification = verify_for_upload(api, model_path, data_version, live_path, benchmarks_path, Path(scratch))
        if not verification.ok:
            raise VerificationError(f"refusing to upload a pickle that fails verification\n{verification.summary()}")
        plan = UploadPlan(
            model_path=model_path,
            model_name=model_name,
            model_id=_resolve("model name", model_name, api.get_models()),
            data_version=data_version,
            data_version_id=_resolve("data version", data_version, api.model_upload_data_versions()),
            docker_image=docker_image,
            docker_image_id=_resolve("docker image", docker_image, api.model_upload_docker_images()),
            verification=verification,
        )
        sha256 = file_sha256(model_path)
        record_run(sidecar_path(model_path), sha256, verification.versions, True, verification.parameters)
        try:
            check_image(model_path, sha256, docker_image)
        except ImageError as err:
            raise UploadError(str(err)) from err
        if dry_run:
            logger.info(
                "dry run: would upload %s to model %s (%s), %s, %s",
                model_path,
                model_name,
                plan.model_id,
                data_version,
                docker_image,
            )
            return plan
        plan.upload_id = api.model_upload(
            str(model_path),
            model_id=plan.model_id,
            data_version=plan.data_version_id,
            docker_image=plan.docker_image_id,
        )
    logger.info("uploaded %s to model %s: upload id %s", model_path, model_name, plan.upload_id)
    return plan


def verify_for_upload(
    api: NumeraiClient,
    model_path: Path,
    data_version: str,
    live_path: str | Path | None,
    benchmarks_path: str | Path | None,
    scratch: Path,
) -> VerificationReport:
    """The pickle's verification on `live_path`, or on the data version's live.parquet downloaded into
    `scratch`; a two-parameter predict without its benchmark file gets the version's
    live_benchmark_models.parquet downloaded beside it, as numerai-predict downloads it."""
    downloaded = live_path is None
    if downloaded:
        live_path = api.download_dataset(f"{data_version}/live.parquet", dest_path=str(scratch / "live.parquet"))
    verification = verify_pickle(model_path, live_path, benchmarks_path=benchmarks_path)
    beside = Path(live_path).with_name(BENCHMARKS_FILE)
    if downloaded and verification.parameters == 2 and benchmarks_path is None and not beside.is_file():
        api.download_dataset(f"{data_version}/{BENCHMARKS_FILE}", dest_path=str(beside))
        verification = verify_pickle(model_path, live_path)
    return verification


def pickle_status(api: NumeraiClient, model_id: str, upload_id: str) -> PickleStatus:
    """The validation and trigger status Numerai reports for the model's current pickle."""
    with _numerai_errors():
        models = api.raw_query(STATUS_QUERY, authorization=True)["data"]["account"]["models"]
    model = next((m for m in models if m.get("id") == model_id), None)
    if model is None:
        raise UploadError(f"Numerai lists no model with id {model_id} on this account")
    pickle = model.get("computePickleUpload") or {}
    if pickle.get("id") != upload_id:
        return PickleStatus(attached=False, validation=None, trigger=None)
    statuses = [s for t in pickle.get("triggers") or [] for s in t.get("statuses") or []]
    statuses.sort(key=lambda s: s.get("insertedAt") or "")
    notes = tuple(dict.fromkeys(s["description"] for s in statuses if s.get("description")))
    return PickleStatus(True, pickle.get("validationStatus"), pickle.get("triggerStatus"), notes[-3:])


def wait_for_validation(
    api: NumeraiClient,
    plan: UploadPlan,
    wait: float = DEFAULT_WAIT_SECONDS,
    poll_interval: float = DEFAULT_POLL_SECONDS,
    echo: Callable[[str], None] = print,
) -> PickleStatus:
    """Poll the uploaded pickle's status, echoing each change, until it passes, fails or `wait` runs out."""
    if plan.upload_id is None:
        raise UploadError("nothing was uploaded (a dry run?): there is no validation to wait for")
    deadline = time.monotonic() + wait
    shown = None
    while True:
        try:
            status = pickle_status(api, plan.model_id, plan.upload_id)
        except UploadError as err:
            raise UploadError(f"upload {plan.upload_id} went through, but reading its status failed: {err}") from err
        if status != shown:
            echo(f"Numerai: {status.line()}")
            shown = status
        if status.failed or status.validated or time.monotonic() + poll_interval > deadline:
            return status
        time.sleep(poll_interval)


def verdict(plan: UploadPlan, status: PickleStatus, wait: float) -> tuple[bool, str]:
    """Whether the upload ended well, and what to tell the user: on failure, what to do about it."""
    if status.failed:
        return False, (
            f"Numerai could not run {plan.model_path.name} ({status.line()}). Run it the way Numerai does, with the "
            f"image's pinned versions: python build_model.py verify {plan.model_path} --live live.parquet "
            f"--runtime-env; check that --data-version {plan.data_version} is the data the model was built on and "
            f"that --docker-image {plan.docker_image!r} is the Python the pickle was verified with (a segmentation "
            "fault means a version mismatch); the model's page on numer.ai shows the run's log."
        )
    if status.validated:
        return True, f"Numerai validated upload {plan.upload_id} of model {plan.model_name}"
    return True, (
        f"after {wait:g} s Numerai is still {status.line()}: it goes on without us; see numer.ai -> Models, or "
        "wait longer next time with --wait SECONDS"
    )


def add_numerai_options(parser: argparse.ArgumentParser) -> None:
    """The upload command's options for waiting on Numerai's validation and for its network calls."""
    parser.add_argument(
        "--wait",
        type=float,
        default=DEFAULT_WAIT_SECONDS,
        metavar="SECONDS",
        help=f"after the upload, poll Numerai's validation of the pickle for up to SECONDS (default "
        f"{DEFAULT_WAIT_SECONDS:g}); a failed validation exits non-zero",
    )
    parser.add_argument("--no-wait", dest="wait", action="store_const", const=0.0, help="do not poll the validation")
    parser.add_argument(
        "--poll-interval", type=float, default=DEFAULT_POLL_SECONDS, metavar="SECONDS", help="seconds between polls"
    )
    parser.add_argument(
        "--network-timeout",
        type=float,
        default=NetworkPolicy.deadline,
        metavar="SECONDS",
        help=f"give up a call to Numerai after SECONDS without an answer, retries included (default "
        f"{NetworkPolicy.deadline:g})",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=NetworkPolicy.retries,
        help=f"retries of a call after a connection error, timeout or 5xx, with exponential backoff "
        f"(default {NetworkPolicy.retries})",
    )


def upload_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """`build_model.py upload`: verify, upload, then report Numerai's validation; 1 when anything failed."""
    try:
        policy = NetworkPolicy(deadline=args.network_timeout, retries=args.retries)
    except ValueError as err:
        parser.error(str(err))
    log = logging.getLogger("build_model")
    try:
        api = numerai_api(policy)
        plan = upload(
            args.model,
            args.model_name,
            args.data_version,
            args.docker_image,
            args.live,
            args.dry_run,
            api,
            args.benchmarks,
        )
        print(plan.verification.summary())
        action = "would upload (dry run)" if args.dry_run else f"uploaded, upload id {plan.upload_id}"
        print(
            f"{plan.model_path} -> model {plan.model_name} ({plan.model_id}), {plan.data_version}, "
            f"{plan.docker_image}: {action}"
        )
        if args.dry_run or args.wait <= 0:
            return 0
        ok, message = verdict(plan, wait_for_validation(api, plan, args.wait, args.poll_interval), args.wait)
    except (UploadError, VerificationError) as err:
        log.error("%s", err)
        return 1
    if not ok:
        log.error("%s", message)
        return 1
    print(message)
    return 0
