"""Upload a verified pickle to Numerai's hosted compute with numerapi.

Credentials come only from NUMERAI_PUBLIC_ID / NUMERAI_SECRET_KEY; the secret is handed to numerapi
and never logged, printed or pickled.
"""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.data import DEFAULT_DATA_VERSION
from pipeline.verify import VerificationError, VerificationReport, verify_pickle

logger = logging.getLogger(__name__)

DEFAULT_DOCKER_IMAGE = "Python 3.11"
CREDENTIAL_VARS = ("NUMERAI_PUBLIC_ID", "NUMERAI_SECRET_KEY")


class UploadError(RuntimeError):
    """An upload that cannot go ahead: missing credentials, unknown names, a failing pickle."""


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


def numerai_api() -> object:
    """A NumerAPI logged in from the environment, or a clear error naming the missing variables."""
    import numerapi

    missing = [name for name in CREDENTIAL_VARS if not os.environ.get(name)]
    if missing:
        raise UploadError(
            f"set {' and '.join(missing)} in the environment (API keys from numer.ai -> Account -> API keys, "
            "with the 'upload models' scope)"
        )
    return numerapi.NumerAPI(public_id=os.environ[CREDENTIAL_VARS[0]], secret_key=os.environ[CREDENTIAL_VARS[1]])


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
    napi: object | None = None,
) -> UploadPlan:
    """Verify the pickle on a live file, resolve names to Numerai's ids, and upload (unless dry run).

    Without `live_path`, the data version's current live.parquet is downloaded to verify on.
    """
    model_path = Path(model_path)
    if model_path.suffix != ".pkl":
        raise UploadError(f"{model_path}: Numerai accepts only files ending in .pkl")
    api = napi if napi is not None else numerai_api()
    with tempfile.TemporaryDirectory() as scratch:
        if live_path is None:
            live_path = api.download_dataset(
                f"{data_version}/live.parquet", dest_path=str(Path(scratch) / "live.parquet")
            )
        verification = verify_pickle(model_path, live_path)
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
        str(model_path), model_id=plan.model_id, data_version=plan.data_version_id, docker_image=plan.docker_image_id
    )
    logger.info("uploaded %s to model %s: upload id %s", model_path, model_name, plan.upload_id)
    return plan
