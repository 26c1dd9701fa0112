"""What a build leaves next to its pickle so that next week's refresh can continue training it.

`<out>_artifacts/` (see the README, "Weekly refresh"):

    manifest.json         settings of the build, feature names, each shipped member (kind, blend weight,
                          target, trees, feature subset, newest era trained on), neutralization,
                          embargo, every era trained on with a fingerprint of its rows, and the
                          refreshes made so far
    feature_pipeline.npz  the fitted feature pipeline's arrays (its settings are in the manifest)
    members/NAME.txt      a LightGBM member's model text, every tree
    members/NAME.pt       a neural member's torch checkpoint: parameters, fitted inputs, state_dict

The pickle stays plain data and a closure; these files hold the same model in forms the training
side continues from (a LightGBM booster, a torch network).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.data import EraFrame
from pipeline.features import FeaturePipeline
from pipeline.members import Member, MemberSourceError, kinds_with
from pipeline.members.base import MEMBERS_DIR

FORMAT = 1
MANIFEST = "manifest.json"
PIPELINE_FILE = "feature_pipeline.npz"


class ArtifactError(ValueError):
    """Refresh artifacts that are missing, of another format, or that do not match the data or the
    options; the message names the file or option and what differs."""


@dataclass
class SavedMember:
    """A shipped member with its blend weight and the newest era whose labels it was trained on."""

    member: Member
    weight: float
    last_era: str

    @classmethod
    def trained(cls, member: Member, weight: float, frames: Sequence[EraFrame]) -> SavedMember:
        """A member a build has just fitted on `frames` with the CV's settings."""
        return cls(member, weight, labelled_eras(frames, member.train_target)[-1])


@dataclass
class Artifacts:
    """A fitted model in trainable form, with the facts a refresh checks the data against."""

    settings: dict[str, Any]  # the BuildConfig of the first build
    requested_features: list[str]  # the feature set the build was asked for
    feature_names: list[str]  # what the model takes (fewer with --drop-unstable)
    pipeline: FeaturePipeline
    members: list[SavedMember]
    neutralization: float
    embargo: int
    eras: dict[str, str]  # era -> fingerprint of its rows, for every era trained on
    history: list[dict[str, Any]] = field(default_factory=list)
    pickle_sha256: str = ""  # of the pickle these artifacts were written with
    neutralizers: list[str] | None = None  # the features the blend is neutralized against (None: all)

    @property
    def last_era(self) -> str:
        return max(self.eras)


def artifacts_dir_for(out: Path) -> Path:
    """Where a build writing `out` leaves its artifacts: `<out stem>_artifacts` beside it."""
    return Path(out).with_name(Path(out).stem + "_artifacts")


def era_fingerprints(frames: Sequence[EraFrame], eras: Iterable[str]) -> dict[str, str]:
    """Row count and a hash of the ids of each of `eras`: a refresh refuses to build on a history
    that changed (another data version, rows added or removed)."""
    wanted = set(eras)
    digests: dict[str, Any] = {}
    counts: dict[str, int] = {}
    for frame in frames:
        for era, rows in frame.era_slices().items():
            if era in wanted:
                digests.setdefault(era, hashlib.sha1()).update("\n".join(map(str, frame.ids[rows])).encode())
                counts[era] = counts.get(era, 0) + rows.stop - rows.start
    return {era: f"{counts[era]}:{digests[era].hexdigest()[:16]}" for era in sorted(digests)}


def labelled_eras(frames: Sequence[EraFrame], target: str) -> list[str]:
    """Eras (sorted) in which `target` is known for at least one row: a 60-day target resolves
    weeks after a 20-day one, so its newest eras come later."""
    eras: set[str] = set()
    for frame in frames:
        known = ~np.isnan(frame.targets[target].to_numpy())
        eras.update(str(e) for e in np.unique(frame.eras[known]))
    return sorted(eras)


def _member_entry(saved: SavedMember, directory: Path) -> dict[str, Any]:
    """Write one member's model files and return its manifest entry."""
    member = saved.member
    return {
        "name": member.name,
        "kind": member.kind,
        "weight": float(saved.weight),
        "train_target": member.train_target,
        "era_stride": int(member.era_stride),
        "last_era": saved.last_era,
    } | member.save(directory)


def save_artifacts(directory: Path, artifacts: Artifacts) -> Path:
    """Write the artifacts to `directory`, replacing what was there only once all are written."""
    directory = Path(directory)
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    (partial / MEMBERS_DIR).mkdir(parents=True)
    settings, arrays = artifacts.pipeline.state()
    np.savez(partial / PIPELINE_FILE, **arrays)
    manifest = {
        "format": FORMAT,
        "settings": artifacts.settings,
        "requested_features": artifacts.requested_features,
        "feature_names": artifacts.feature_names,
        "feature_pipeline": settings,
        "members": [_member_entry(m, partial) for m in artifacts.members],
        "neutralization": float(artifacts.neutralization),
        "neutralizers": artifacts.neutralizers,
        "embargo": int(artifacts.embargo),
        "last_era": artifacts.last_era,
        "eras": artifacts.eras,
        "history": artifacts.history,
        "pickle_sha256": artifacts.pickle_sha256,
    }
    (partial / MANIFEST).write_text(json.dumps(manifest, indent=1, default=str))
    if directory.exists():
        shutil.rmtree(directory)
    os.replace(partial, directory)
    return directory


def _load_member(
    entry: dict[str, Any], directory: Path, pipeline: FeaturePipeline, threads: int, kinds: dict[str, type[Member]]
) -> SavedMember:
    if entry.get("kind") not in kinds:
        raise ArtifactError(
            f"{directory / MANIFEST}: member {entry.get('name')!r} has kind {entry.get('kind')!r}; this build knows "
            f"{sorted(kinds)} (a member of your own needs the same --member FILE:CLASS as the first build)"
        )
    path = directory / entry["file"]
    if not path.is_file():
        raise ArtifactError(f"{path}: missing; {directory / MANIFEST} lists it for member {entry['name']!r}")
    member = kinds[entry["kind"]].load(entry, directory, pipeline, threads)
    return SavedMember(member, entry["weight"], entry["last_era"])


def load_artifacts(directory: Path, threads: int = 0) -> Artifacts:
    """Read what `save_artifacts` wrote; LightGBM members train with `threads` threads."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise ArtifactError(
            f"--init-model {directory}: no {MANIFEST} there; pass the <out>_artifacts directory a build wrote next to "
            "its pickle"
        )
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise ArtifactError(
            f"{manifest_path}: artifacts format {manifest.get('format')!r}, this version reads {FORMAT}; run a full "
            "build"
        )
    with np.load(directory / PIPELINE_FILE, allow_pickle=False) as stored:
        arrays = {key: stored[key] for key in stored.files}
    pipeline = FeaturePipeline.from_state(manifest["feature_pipeline"], arrays)
    try:
        kinds = kinds_with(list(manifest["settings"].get("members") or []))
    except MemberSourceError as err:
        raise ArtifactError(f"{manifest_path}: the previous build's own member cannot be loaded: {err}") from err
    return Artifacts(
        settings=manifest["settings"],
        requested_features=manifest["requested_features"],
        feature_names=manifest["feature_names"],
        pipeline=pipeline,
        members=[_load_member(entry, directory, pipeline, threads, kinds) for entry in manifest["members"]],
        neutralization=manifest["neutralization"],
        neutralizers=manifest.get("neutralizers"),
        embargo=manifest["embargo"],
        eras=manifest["eras"],
        history=manifest["history"],
    )
