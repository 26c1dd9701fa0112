"""numerapi with a timeout on every call and bounded retries, for this package's calls only.

numerapi 3.1.1 posts its GraphQL queries with no timeout, retries only 5xx, and on any other
failure logs and returns {} (its callers then fail with `KeyError: 'data'`); its file download and
its upload PUT call requests directly (600 s, no retry, the PUT's status never checked).
`NumeraiClient` is a NumerAPI whose `raw_query`, `download_dataset` and `model_upload` send through
its own `requests.Session` with (connect, read) timeouts and retries with exponential backoff on
connection errors, timeouts and 5xx; numerapi's other methods (list_datasets, get_models, the data
versions and docker images) reach the network only through `raw_query`. A call that still fails
raises `NumeraiCallError` naming the call, the host and what to check. Nothing in numerapi or
requests is patched: other code using numerapi is untouched.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import numerapi
import requests
import tqdm
from numerapi.base_api import API_TOURNAMENT_URL

logger = logging.getLogger(__name__)

T = TypeVar("T")
CHUNK_BYTES = 1 << 20
NETWORK_HINT = (
    "check this machine's network connection, its proxy settings (HTTPS_PROXY) and firewall, "
    "or try again later if Numerai is down"
)
SERVER_HINT = "Numerai's side failed; try again later"
KEYS_HINT = "check NUMERAI_PUBLIC_ID / NUMERAI_SECRET_KEY and that the key has the scopes this call needs"


class NumeraiCallError(RuntimeError):
    """A call to Numerai that failed after its retries, or that Numerai answered with an error."""


class ServerError(requests.RequestException):
    """A 5xx answer: worth another try."""


# What a retry may cure: no connection, no answer in time, a transfer cut short, a 5xx.
RETRYABLE = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError, ServerError)


@dataclass(frozen=True)
class NetworkPolicy:
    """Timeouts and retries of every call to Numerai; with the defaults a dead call ends within a minute.

    A GraphQL query's tries and the waits between them fit in `deadline` seconds (each try's timeouts
    are cut to what is left). A file transfer may take as long as its bytes keep coming: a broken one
    is retried (a download resumes where it stopped) until `deadline` seconds pass without a byte.
    """

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    transfer_timeout: float = 60.0
    retries: int = 4
    backoff: float = 1.0
    deadline: float = 45.0

    def __post_init__(self) -> None:
        for name in ("connect_timeout", "read_timeout", "transfer_timeout", "deadline"):
            if not getattr(self, name) > 0:
                raise ValueError(f"NetworkPolicy.{name} must be > 0 seconds, got {getattr(self, name)!r}")
        if self.retries < 0 or self.backoff < 0:
            raise ValueError(f"NetworkPolicy.retries and .backoff must be >= 0, got {self.retries}, {self.backoff}")


class _Budget:
    """Time a call has left: `deadline` seconds from its start, or from the last byte a transfer moved."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.started = self.mark = time.monotonic()

    def progressed(self) -> None:
        self.mark = time.monotonic()

    def left(self) -> float:
        return self.deadline - (time.monotonic() - self.mark)


_SELECTION = re.compile(r"\{\s*(\w+)\s*(?:\([^)]*\))?\s*")


def graphql_call_name(query: str) -> str:
    """The query's first field and the selections it opens, e.g. `account.models`: what an error names."""
    names, pos = [], query.find("{")
    while pos >= 0 and (match := _SELECTION.match(query, pos)):
        nested = query.startswith("{", match.end())
        if names and not nested:
            break
        names.append(match.group(1))
        pos = match.end() if nested else -1
    return ".".join(names) or "GraphQL query"


def _host(url: str) -> str:
    # Only the host: a presigned file URL carries signatures in its query string.
    return urlsplit(url).hostname or url.split("?")[0]


def _brief(err: BaseException) -> str:
    text = str(err)
    return f"{type(err).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


def _raise_for_server_error(response: requests.Response) -> None:
    if response.status_code >= 500:
        raise ServerError(f"HTTP {response.status_code} {response.reason or ''}".strip())


class NumeraiClient(numerapi.NumerAPI):
    """numerapi's client whose every request has timeouts and bounded retries (see the module docstring)."""

    def __init__(
        self,
        public_id: str | None = None,
        secret_key: str | None = None,
        policy: NetworkPolicy | None = None,
        show_progress_bars: bool = True,
    ) -> None:
        super().__init__(public_id=public_id, secret_key=secret_key, show_progress_bars=show_progress_bars)
        self.policy = policy or NetworkPolicy()
        self.session = requests.Session()

    def _retrying(self, call: str, url: str, read: float, attempt: Callable[[_Budget], T]) -> T:
        """`attempt(budget)` until it returns, its error is not worth a retry, or the retries or time run out.

        `read` is the read timeout the attempts use, for the error message."""
        policy, budget = self.policy, _Budget(self.policy.deadline)
        delay, tries = policy.backoff, 0
        while True:
            tries += 1
            try:
                return attempt(budget)
            except RETRYABLE as err:
                last = err
            if tries > policy.retries or budget.left() <= delay:
                break
            logger.warning(
                "Numerai call %s to %s failed (%s); retry %d of %d in %.1f s",
                call,
                _host(url),
                _brief(last),
                tries,
                policy.retries,
                delay,
            )
            time.sleep(delay)
            delay *= 2
        waited = (
            f"; no answer within {policy.connect_timeout:g} s to connect or {read:g} s to reply"
            if isinstance(last, requests.Timeout)
            else ""
        )
        raise NumeraiCallError(
            f"Numerai call {call} to {_host(url)} failed after {tries} {'try' if tries == 1 else 'tries'} in "
            f"{time.monotonic() - budget.started:.1f} s ({_brief(last)}{waited}): "
            f"{SERVER_HINT if isinstance(last, ServerError) else NETWORK_HINT}"
        ) from last

    def _timeouts(self, budget: _Budget, read: float, cap_read: bool) -> tuple[float, float]:
        """(connect, read) timeouts of one try: connecting never outlasts the budget; a query's reply neither."""
        left = max(budget.left(), 0.001)
        return min(self.policy.connect_timeout, left), min(read, left) if cap_read else read

    def raw_query(self, query: str, variables: dict | None = None, authorization: bool = False) -> dict:
        """numerapi's GraphQL call, with timeouts and retries; Numerai's errors raise NumeraiCallError."""
        call = graphql_call_name(query)
        headers = {"Content-type": "application/json", "Accept": "application/json"}
        if authorization:
            if not self.token:
                raise NumeraiCallError(f"Numerai call {call} needs API keys: {KEYS_HINT}")
            public_id, secret_key = self.token
            headers["Authorization"] = f"Token {public_id}${secret_key}"

        def attempt(budget: _Budget) -> requests.Response:
            response = self.session.post(
                API_TOURNAMENT_URL,
                json={"query": query, "variables": variables},
                headers=headers,
                timeout=self._timeouts(budget, self.policy.read_timeout, cap_read=True),
            )
            _raise_for_server_error(response)
            return response

        return _graphql_result(
            call, self._retrying(call, API_TOURNAMENT_URL, self.policy.read_timeout, attempt), authorization
        )

    def download_dataset(self, filename: str, dest_path: str | None = None, round_num: int | None = None) -> str:
        """numerapi's download_dataset through the session; a broken transfer resumes with a Range request."""
        dest = Path(dest_path if dest_path is not None else filename)
        dest.parent.mkdir(parents=True, exist_ok=True)
        query = """
        query ($filename: String! $round: Int $tournament: Int) {
            dataset(filename: $filename round: $round tournament: $tournament)
        }"""
        answer = self.raw_query(query, {"filename": filename, "round": round_num, "tournament": self.tournament_id})
        url = answer["data"]["dataset"]
        part = dest.with_name(dest.name + ".part")
        part.unlink(missing_ok=True)
        try:
            self._retrying(
                f"download of {filename}", url, self.policy.transfer_timeout, partial(self._fetch, url, part)
            )
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        os.replace(part, dest)
        return str(dest)

    def _fetch(self, url: str, part: Path, budget: _Budget) -> None:
        have = part.stat().st_size if part.exists() else 0
        headers = {"Range": f"bytes={have}-"} if have else {}
        timeout = self._timeouts(budget, self.policy.transfer_timeout, cap_read=False)
        with self.session.get(url, headers=headers, stream=True, timeout=timeout) as response:
            budget.progressed()
            _raise_for_server_error(response)
            if response.status_code >= 400:
                raise NumeraiCallError(
                    f"{_host(url)} answered HTTP {response.status_code} to the download of {part.stem} "
                    f"({response.text[:100]!r}); Numerai's download links expire: run the download again"
                )
            resumed = response.status_code == 206
            start = have if resumed else 0
            total = start + int(response.headers.get("content-length", 0))
            bar = tqdm.tqdm(
                total=total,
                initial=start,
                unit="B",
                unit_scale=True,
                desc=part.stem,
                disable=not self.show_progress_bars,
            )
            with part.open("ab" if resumed else "wb") as out, bar:
                for chunk in response.iter_content(CHUNK_BYTES):
                    out.write(chunk)
                    bar.update(len(chunk))
                    budget.progressed()
        got = part.stat().st_size
        if got < total:
            raise requests.exceptions.ChunkedEncodingError(f"the transfer ended after {got} of {total} bytes")

    def model_upload(
        self,
        file_path: str,
        tournament: int | None = None,
        model_id: str | None = None,
        data_version: str | None = None,
        docker_image: str | None = None,
    ) -> str:
        """numerapi's model_upload for ids (not names), its PUT through the session and its status checked."""
        auth = self.raw_query(
            """query($filename: String! $modelId: String) {
                computePickleUploadAuth(filename: $filename modelId: $modelId) { filename url }
            }""",
            {"filename": os.path.basename(file_path), "modelId": model_id},
            authorization=True,
        )["data"]["computePickleUploadAuth"]
        payload = Path(file_path).read_bytes()
        url = auth["url"]
        self._retrying(
            f"upload of {auth['filename']}",
            url,
            self.policy.transfer_timeout,
            lambda budget: self._put(url, payload, budget),
        )
        created = self.raw_query(
            """mutation($filename: String! $tournament: Int! $modelId: String $dataVersionId: String
                        $dockerImageId: String) {
                createComputePickleUpload(filename: $filename tournament: $tournament modelId: $modelId
                                          dataVersionId: $dataVersionId dockerImageId: $dockerImageId) { id }
            }""",
            {
                "filename": auth["filename"],
                "tournament": self.tournament_id if tournament is None else tournament,
                "modelId": model_id,
                "dataVersionId": data_version,
                "dockerImageId": docker_image,
            },
            authorization=True,
        )
        return created["data"]["createComputePickleUpload"]["id"]

    def _put(self, url: str, payload: bytes, budget: _Budget) -> None:
        timeout = self._timeouts(budget, self.policy.transfer_timeout, cap_read=False)
        response = self.session.put(url, data=payload, timeout=timeout)
        budget.progressed()  # the bytes went through: a 5xx now is worth a retry, however long the PUT took
        _raise_for_server_error(response)
        if not response.ok:
            raise NumeraiCallError(
                f"{_host(url)} refused the pickle's upload: HTTP {response.status_code} {response.text[:300]}"
            )


def _graphql_result(call: str, response: requests.Response, authorization: bool) -> dict:
    """The JSON of a GraphQL answer that carries `data`; anything else raises NumeraiCallError."""
    host = _host(API_TOURNAMENT_URL)
    try:
        payload = response.json()
    except ValueError:
        raise NumeraiCallError(
            f"Numerai call {call} to {host} got HTTP {response.status_code} without JSON "
            f"({response.text[:200]!r}): is a proxy or captive portal in the way?"
        ) from None
    errors = payload.get("errors") if isinstance(payload, dict) else None
    if errors:
        messages = "; ".join(str(e.get("message", e)) if isinstance(e, dict) else str(e) for e in errors)
        hint = f" ({KEYS_HINT})" if authorization else ""
        raise NumeraiCallError(f"Numerai answered {call} with an error: {messages}{hint}")
    if response.status_code >= 400 or not isinstance(payload, dict) or payload.get("data") is None:
        raise NumeraiCallError(
            f"Numerai call {call} to {host} got HTTP {response.status_code} without data: {response.text[:200]!r}"
        )
    return payload
