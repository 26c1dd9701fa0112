"""Numerai's runtime images, one per Python version, and which of them a pickle was verified for.

numerai-predict builds an image for each of Python 3.10, 3.11, 3.12 and 3.13 from its own lock file,
and they carry different library versions (`IMAGES`). The upload names one (`--docker-image`).
cloudpickle stores the predict closure's code by value, as code objects of the Python that wrote it,
and another minor version of Python cannot run them: a pickle written by Python 3.11 crashes Python
3.12's interpreter with a segmentation fault, the failure numerai-predict reports as "Ensure python and
library versions match our environment". So the image to choose is the one whose Python built the
pickle; this project's environment is the Python 3.11 image's.

`verify --image NAME` runs the pickle in a virtual environment (made once in the cache) with the
image's locked versions:
- "exact": with the image's own Python, where it runs here (this interpreter, `python3.X` on PATH or a
  pyenv version), and every library the image locks;
- "libraries": otherwise under this Python, with the image's versions of the libraries; it catches a
  library that cannot read the pickle or runs it differently, not a Python that cannot.
Every passing run also counts for each image whose Python and whose versions of the libraries the
pickle touches (`TOUCHED`) equal the run's, so a build in this environment is verified for
"Python 3.11". The sidecar `<pickle>.verified.json` records the pickle's sha256 and the images it
passed; `upload --docker-image` refuses an image without an exact record (`check_image`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The libraries a pickle of this project touches when Numerai loads and runs it.
TOUCHED = ("numpy", "pandas", "lightgbm", "cloudpickle")
SIDECAR_SUFFIX = ".verified.json"
DEFAULT_IMAGE = "Python 3.11"
# Wheels only: an image's locked versions all have them, and a source build would take minutes.
PIP = ("--quiet", "--only-binary=:all:")


class ImageError(ValueError):
    """An image a pickle was not verified for, or one this project does not know; says what to run."""


@dataclass(frozen=True)
class RuntimeImage:
    """One of numerai-predict's images: numerapi's name for it, its Python and its locked libraries."""

    name: str
    python: str
    pins: tuple[str, ...]

    @property
    def versions(self) -> dict[str, str]:
        return dict(pin.split("==") for pin in self.pins)


def _image(python: str, *pins: str) -> RuntimeImage:
    return RuntimeImage(f"Python {python}", python, pins)


# numerai-predict's py3.X/poetry.lock (commit 19d1769, 2026-04-14); torch is left out: the pickle
# never imports it and its wheels are gigabytes.
IMAGES: dict[str, RuntimeImage] = {
    image.name: image
    for image in (
        _image(
            "3.10",
            "pandas==2.2.1",
            "numpy==1.26.4",
            "lightgbm==4.0.0",
            "scikit-learn==1.6.1",
            "cloudpickle==2.2.1",
            "pyarrow==14.0.1",
            "scipy==1.11.4",
            "numerai-tools==0.3.3",
        ),
        _image(
            "3.11",
            "pandas==2.3.2",
            "numpy==2.1.3",
            "lightgbm==4.6.0",
            "scikit-learn==1.6.1",
            "cloudpickle==3.1.1",
            "pyarrow==21.0.0",
            "scipy==1.16.2",
            "numerai-tools==0.4.3",
        ),
        _image(
            "3.12",
            "pandas==2.3.2",
            "numpy==2.1.3",
            "lightgbm==4.5.0",
            "scikit-learn==1.6.1",
            "cloudpickle==3.1.1",
            "pyarrow==18.1.0",
            "scipy==1.16.2",
            "numerai-tools==0.4.3",
        ),
        _image(
            "3.13",
            "pandas==2.3.3",
            "numpy==2.2.6",
            "lightgbm==4.5.0",
            "scikit-learn==1.6.1",
            "cloudpickle==3.1.2",
            "pyarrow==18.1.0",
            "scipy==1.17.1",
            "numerai-tools==0.4.3",
        ),
    )
}


def this_python() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def runs_as(python: str, minor: str) -> bool:
    """Whether `python` starts and is Python `minor` (a pyenv shim of a version not selected is not)."""
    try:
        done = subprocess.run(
            [python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.strip() == minor


def find_python(minor: str) -> str | None:
    """An interpreter of Python `minor` ("3.12") that runs on this machine: this one, `python3.12` on
    PATH, or the newest pyenv version of it ($PYENV_ROOT, default ~/.pyenv); None when there is none."""
    if minor == this_python():
        return sys.executable
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    pyenv = sorted(root.glob(f"versions/{minor}.*/bin/python{minor}"), key=lambda p: p.parts[-3], reverse=True)
    on_path = shutil.which(f"python{minor}")
    candidates = ([on_path] if on_path else []) + [str(path) for path in pyenv]
    return next((candidate for candidate in candidates if runs_as(candidate, minor)), None)


@dataclass(frozen=True)
class ImageEnvironment:
    """A virtual environment that stands for an image: its Python and whether it is "exact"."""

    image: RuntimeImage
    python: Path
    match: str


def image_environment(cache_dir: str | Path, image: RuntimeImage) -> ImageEnvironment:
    """The virtual environment of `image` (made once in `cache_dir`; needs the package registry then):
    the image's Python where it runs here, else this Python, with the image's locked libraries."""
    base = find_python(image.python)
    match = "exact" if base is not None else "libraries"
    base = base or sys.executable
    tag = image.python.replace(".", "")
    env_dir = Path(cache_dir) / (f"numerai-runtime-py{tag}" if match == "exact" else f"numerai-libraries-py{tag}")
    python, marker = env_dir / "bin" / "python", env_dir / "pins.txt"
    wanted = "\n".join([base, *image.pins])
    if not (marker.is_file() and marker.read_text() == wanted and python.is_file()):
        install = [str(python), "-m", "pip", "install", *PIP, *image.pins]
        steps = ([base, "-m", "venv", "--clear", str(env_dir)], install)
        for step in steps:
            try:
                subprocess.run(step, check=True)
            except (OSError, subprocess.CalledProcessError) as err:
                raise ImageError(
                    f"could not make the environment of {image.name!r} in {env_dir} ({' '.join(step[:4])}...: {err}); "
                    "it needs the package registry the first time"
                ) from err
        marker.write_text(wanted)
    return ImageEnvironment(image, python, match)


def matched_images(versions: Mapping[str, str]) -> dict[str, str]:
    """The images a run with these versions stands for: "exact" where its Python's minor version and
    every `TOUCHED` library equal the image's, "libraries" where only the libraries do."""
    python = ".".join(str(versions.get("python", "")).split(".")[:2])
    found = {}
    for name, image in IMAGES.items():
        if all(versions.get(lib) == image.versions[lib] for lib in TOUCHED):
            found[name] = "exact" if python == image.python else "libraries"
    return found


def sidecar_path(model_path: str | Path) -> Path:
    model_path = Path(model_path)
    return model_path.with_name(model_path.name + SIDECAR_SUFFIX)


def read_sidecar(path: Path, sha256: str) -> dict[str, Any]:
    """The sidecar's record of the pickle with this sha256 (an empty one when absent, unreadable or
    about another pickle)."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        found = None
    if not isinstance(found, dict) or found.get("sha256") != sha256 or not isinstance(found.get("images"), dict):
        return {"sha256": sha256, "images": {}}
    return found


def record_run(
    path: Path,
    sha256: str,
    versions: Mapping[str, str],
    passed: bool,
    parameters: int | None = None,
    image: str | None = None,
) -> dict[str, Any]:
    """Update the sidecar at `path` with one verification run of the pickle `sha256`: a pass records
    the images its versions stand for (and `image`, the one asked for, with the match of its
    environment); a failure removes `image`. Returns the record written."""
    record = read_sidecar(path, sha256)
    matches = matched_images(versions) if passed else {}
    if image is not None and not passed:
        record["images"].pop(image, None)
    for name, match in matches.items():
        if record["images"].get(name, {}).get("match") != "exact" or match == "exact":
            record["images"][name] = {
                "match": match,
                "versions": {"python": versions.get("python")} | {lib: versions.get(lib) for lib in TOUCHED},
                "verified_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
    if parameters is not None:
        record["parameters"] = parameters
    path.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return record


def verify_command(model_path: Path, image: str) -> str:
    return f'python build_model.py verify {model_path} --live live.parquet --image "{image}"'


def check_image(model_path: Path, sha256: str, image: str) -> None:
    """Refuse an image the pickle has no exact verification for, saying which command would verify it."""
    if image not in IMAGES:
        raise ImageError(
            f"--docker-image {image!r}: this project knows the libraries of {sorted(IMAGES)} only, so it cannot "
            f"verify {model_path.name} for it; choose {DEFAULT_IMAGE!r}, the Python this project builds with"
        )
    record = read_sidecar(sidecar_path(model_path), sha256)["images"].get(image)
    if record is None:
        raise ImageError(
            f"--docker-image {image!r}: {model_path.name} was not verified for that image ({sidecar_path(model_path)} "
            f"has no record of it for this pickle); verify it with: {verify_command(model_path, image)}"
        )
    if record.get("match") != "exact":
        raise ImageError(
            f"--docker-image {image!r}: {model_path.name} passed with that image's libraries under Python "
            f"{record['versions'].get('python')}, not under the image's Python {IMAGES[image].python}, which cannot "
            f"run code pickled by another Python (it crashes); upload with the image of the Python that built the "
            f"pickle, or install python{IMAGES[image].python} and run: {verify_command(model_path, image)}"
        )
