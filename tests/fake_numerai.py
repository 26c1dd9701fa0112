"""A fake of Numerai's servers at the HTTP transport, below the real numerapi and requests code.

`requests.adapters.HTTPAdapter.send` is the last step before a socket; replacing it lets every
numerapi call run its real code path (GraphQL queries, download, upload) without a network.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

FILES_HOST = "https://files.fake-numer.ai"


@dataclass
class FakeNumerai:
    """Serves Numerai's data files, models and upload endpoints; records every request and upload."""

    files: dict[str, bytes] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)
    data_versions: dict[str, str] = field(default_factory=dict)
    docker_images: dict[str, str] = field(default_factory=dict)
    requests_seen: list[tuple[str, str, dict]] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)
    created: list[dict] = field(default_factory=list)

    def serve_dir(self, version: str, directory: Path) -> None:
        for path in sorted(Path(directory).iterdir()):
            if path.is_file():
                self.files[f"{version}/{path.name}"] = path.read_bytes()

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
            return {
                "data": {"account": {"models": [{"name": n, "id": i, "tournament": 8} for n, i in self.models.items()]}}
            }
        return {"errors": [{"message": f"fake Numerai does not know this query: {query[:80]}"}]}

    def send(self, adapter: HTTPAdapter, request: requests.PreparedRequest, **kwargs) -> requests.Response:
        url = request.url or ""
        body = json.loads(request.body) if request.body and request.method == "POST" else {}
        self.requests_seen.append((request.method or "", url, body))
        response = requests.Response()
        response.url = url
        response.request = request
        response.status_code = 200
        if url.startswith("https://api-tournament.numer.ai"):
            payload = json.dumps(self._graphql(body, request.headers.get("Authorization"))).encode()
        elif request.method == "PUT" and url.startswith(f"{FILES_HOST}/upload/"):
            self.uploads[url.rsplit("/", 1)[1]] = bytes(request.body or b"")
            payload = b""
        elif url.startswith(f"{FILES_HOST}/") and url[len(FILES_HOST) + 1 :] in self.files:
            payload = self.files[url[len(FILES_HOST) + 1 :]]
        else:
            response.status_code = 404
            payload = b"not found"
        response.headers["content-length"] = str(len(payload))
        response.raw = io.BytesIO(payload)
        return response
