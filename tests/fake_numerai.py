"""A fake of Numerai's servers at the HTTP transport, below the real numerapi and requests code.

`requests.adapters.HTTPAdapter.send` is the last step before a socket; replacing it lets every
numerapi call run its real code path (GraphQL queries, download, upload) without a network.
Scripted failures (`fail`) make it answer or break the way a real network does: a 5xx, an exception
`HTTPAdapter.send` raises (ConnectionError offline; ConnectTimeout / ReadTimeout after waiting the
request's own timeout, as a stalled socket would), or a body cut off part way.
"""

from __future__ import annotations

import io
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

from pipeline.numerai_api import NetworkPolicy

FILES_HOST = "https://files.fake-numer.ai"
# Retries that keep no test waiting: 3 retries 10 ms apart, 0.2 s timeouts.
FAST_RETRIES = NetworkPolicy(
    connect_timeout=0.2, read_timeout=0.2, transfer_timeout=0.2, retries=3, backoff=0.01, deadline=10
)


@dataclass
class Failure:
    """The next `times` requests whose "METHOD URL query" contains `match` fail this way."""

    match: str
    status: int | None = None
    error: type[requests.RequestException] | None = None
    cut_after: int | None = None
    times: int = 1


class _CutStream(io.BytesIO):
    """A body whose connection drops after `limit` bytes, as requests reports it to iter_content's caller."""

    def __init__(self, payload: bytes, limit: int) -> None:
        super().__init__(payload[:limit])

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        if not chunk:
            raise requests.exceptions.ChunkedEncodingError("Connection broken: connection reset by peer")
        return chunk


def _stall(error: type[requests.RequestException], timeout: object) -> None:
    """Wait as long as a stalled socket makes requests wait (the request's own timeout), then raise."""
    if timeout is None:
        raise AssertionError("a stalled request without a timeout never returns: this request has no timeout")
    connect, read = timeout if isinstance(timeout, tuple) else (timeout, timeout)
    wait = connect if issubclass(error, requests.exceptions.ConnectTimeout) else read
    if wait is None:
        raise AssertionError(f"a stalled request without a timeout never returns: timeout={timeout!r}")
    time.sleep(wait)
    raise error(f"fake stall: no answer in {wait} s")


@dataclass
class FakeNumerai:
    """Serves Numerai's data files, models, upload endpoints and pickle status; records every request."""

    files: dict[str, bytes] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    data_versions: dict[str, str] = field(default_factory=dict)
    docker_images: dict[str, str] = field(default_factory=dict)
    requests_seen: list[tuple[str, str, dict]] = field(default_factory=list)
    timeouts_seen: list[object] = field(default_factory=list)
    headers_seen: list[dict] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)
    created: list[dict] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    # Successive states of the uploaded pickle, one per status query (the last one repeats).
    pickle_statuses: list[dict] = field(default_factory=list)
    status_polls: int = 0

    def serve_dir(self, version: str, directory: Path) -> None:
        for path in sorted(Path(directory).iterdir()):
            if path.is_file():
                self.files[f"{version}/{path.name}"] = path.read_bytes()

    def fail(self, match: str = "", **how: object) -> None:
        """Script a failure of the next requests matching `match` (see `Failure`)."""
        self.failures.append(Failure(match, **how))

    def _scripted(self, key: str) -> Failure | None:
        for failure in self.failures:
            if failure.match in key:
                failure.times -= 1
                if failure.times <= 0:
                    self.failures.remove(failure)
                return failure
        return None

    def _pickle(self, model_id: str, state: dict) -> dict | None:
        mine = [(f"upload-{i}", c) for i, c in enumerate(self.created, 1) if c["modelId"] == model_id]
        if not mine:
            return None
        upload_id, created = mine[-1]
        return {"id": upload_id, "filename": created["filename"], "triggers": [], **state}

    def _account(self, query: str) -> dict:
        models = [{"name": n, "id": i, "tournament": 8} for n, i in self.models.items()]
        if "computePickleUpload" in query:
            script = self.pickle_statuses or [{}]
            state = script[min(self.status_polls, len(script) - 1)]
            self.status_polls += 1
            models = [m | {"computePickleUpload": self._pickle(m["id"], state)} for m in models]
        return {"data": {"account": {"models": models}}}

    def _graphql(self, body: dict, authorization: str | None) -> dict:
        query, variables = body["query"], body.get("variables") or {}
        if "listDatasets" in query:
            return {"data": {"listDatasets": sorted(self.files)}}
        if "dataset(" in query:
            return {"data": {"dataset": f"{FILES_HOST}/{variables['filename']}"}}
        if authorization is None:
            return {"errors": [{"message": "You must be authenticated to perform this action"}]}
        self.authorizations.append(authorization)
        if "computePickleUploadAuth" in query:
            name = variables["filename"]
            return {"data": {"computePickleUploadAuth": {"filename": name, "url": f"{FILES_HOST}/upload/{name}"}}}
        if "createComputePickleUpload" in query:
            self.created.append(dict(variables))
            return {"data": {"createComputePickleUpload": {"id": f"upload-{len(self.created)}"}}}
        if "computePickleDataVersions" in query:
            return {
                "data": {"computePickleDataVersions": [{"name": n, "id": i} for n, i in self.data_versions.items()]}
            }
        if "computePickleDockerImages" in query:
            return {
                "data": {"computePickleDockerImages": [{"name": n, "id": i} for n, i in self.docker_images.items()]}
            }
        if "account" in query and "models" in query:
            return self._account(query)
        return {"errors": [{"message": f"fake Numerai does not know this query: {query[:80]}"}]}

    def _file(self, request: requests.PreparedRequest, name: str) -> tuple[int, bytes]:
        if name not in self.files:
            return 404, b"not found"
        ranged = re.fullmatch(r"bytes=(\d+)-", request.headers.get("Range", ""))
        if ranged:
            return 206, self.files[name][int(ranged.group(1)) :]
        return 200, self.files[name]

    def _answer(self, request: requests.PreparedRequest, url: str, body: dict) -> tuple[int, bytes]:
        if url.startswith("https://api-tournament.numer.ai"):
            return 200, json.dumps(self._graphql(body, request.headers.get("Authorization"))).encode()
        if request.method == "PUT" and url.startswith(f"{FILES_HOST}/upload/"):
            self.uploads[url.rsplit("/", 1)[1]] = bytes(request.body or b"")
            return 200, b""
        if url.startswith(f"{FILES_HOST}/"):
            return self._file(request, url[len(FILES_HOST) + 1 :])
        return 404, b"not found"

    def send(self, adapter: HTTPAdapter, request: requests.PreparedRequest, **kwargs) -> requests.Response:
        url = request.url or ""
        body = json.loads(request.body) if request.body and request.method == "POST" else {}
        self.requests_seen.append((request.method or "", url, body))
        self.timeouts_seen.append(kwargs.get("timeout"))
        self.headers_seen.append(dict(request.headers))
        failure = self._scripted(f"{request.method} {url} {body.get('query', '')}")
        if failure is not None and failure.error is not None:
            if issubclass(failure.error, requests.Timeout):
                _stall(failure.error, kwargs.get("timeout"))
            raise failure.error(f"fake network failure of {url}")
        if failure is not None and failure.status is not None:
            status, payload = failure.status, b"scripted failure"
        else:
            status, payload = self._answer(request, url, body)
        response = requests.Response()
        response.url = url
        response.request = request
        response.status_code = status
        response.headers["content-length"] = str(len(payload))
        cut = failure.cut_after if failure is not None else None
        response.raw = _CutStream(payload, cut) if cut is not None else io.BytesIO(payload)
        return response
