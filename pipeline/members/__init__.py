"""Ensemble members behind one protocol (`Member`), found by kind in one registry (`KINDS`).

A new kind is one module implementing `Member` and one line in `KINDS`; a user's own kind comes from
a Python file on the command line (`--member my_members.py:MyMember`, `load_member_class`).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from collections.abc import Mapping
from pathlib import Path

from pipeline.members.base import EraParts, Member, MemberContext, MemberEntry, RefreshSettings, Stage
from pipeline.members.benchmark import BenchmarkMember, predict_rows
from pipeline.members.lgbm import LightGBMMember
from pipeline.members.neural import MLPMember, NeuralMember, TSMixerMember

KINDS: Mapping[str, type[Member]] = {
    cls.kind: cls for cls in (LightGBMMember, MLPMember, TSMixerMember, BenchmarkMember)
}

# What a class must have to be a member: the protocol's methods and attributes.
PROTOCOL = tuple(
    name for name in dir(Member) if not name.startswith("_") and name not in ("name", "train_target", "era_stride")
)


class MemberSourceError(ValueError):
    """A `--member FILE:CLASS` that cannot be loaded; the message names the file or class."""


def load_member_class(source: str) -> type[Member]:
    """The member class of `source`, "path/to/file.py:ClassName", imported from that file."""
    path_text, _, class_name = source.rpartition(":")
    path = Path(path_text).expanduser()
    if not path_text or not class_name:
        raise MemberSourceError(f"--member {source!r}: expected FILE.py:CLASS, e.g. my_members.py:MyMember")
    if not path.is_file():
        raise MemberSourceError(f"--member {source!r}: no file {path}")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:10]
    module_name = f"numerai_pipeline_user_member_{digest}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        try:
            spec.loader.exec_module(module)
        except Exception:
            del sys.modules[module_name]
            raise
    cls = getattr(sys.modules[module_name], class_name, None)
    if not inspect.isclass(cls):
        raise MemberSourceError(f"--member {source!r}: {path} defines no class {class_name!r}")
    missing = [name for name in PROTOCOL if not hasattr(cls, name)]
    if missing or not isinstance(getattr(cls, "kind", None), str):
        raise MemberSourceError(
            f"--member {source!r}: {class_name} does not implement pipeline.members.Member: "
            f"missing {', '.join(missing) or 'a string class attribute kind'}"
        )
    return cls


def kinds_with(sources: list[str]) -> dict[str, type[Member]]:
    """`KINDS` plus the classes of the `--member` sources, which may not reuse a built-in kind."""
    kinds = dict(KINDS)
    for source in sources:
        cls = load_member_class(source)
        if cls.kind in KINDS:
            raise MemberSourceError(f"--member {source!r}: kind {cls.kind!r} is built in; give the class its own kind")
        kinds[cls.kind] = cls
    return kinds


__all__ = [
    "KINDS",
    "BenchmarkMember",
    "EraParts",
    "LightGBMMember",
    "Member",
    "MemberContext",
    "MemberEntry",
    "MemberSourceError",
    "MLPMember",
    "NeuralMember",
    "RefreshSettings",
    "Stage",
    "TSMixerMember",
    "kinds_with",
    "load_member_class",
    "predict_rows",
]
