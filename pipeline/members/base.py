"""The one shape every ensemble member has, and the preset entry that asks for one.

A member is a model the build cross-validates, blends, refits, exports into the pickle and saves for
the weekly refresh. Every kind (LightGBM, the MLP, TSMixer-Ext, a user's own) implements `Member`
in its own module and is found through `pipeline.members.KINDS`; nothing else in the package knows
a kind by name. The exported state is a plain dict that `pipeline.runtime` runs without this package.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np

from pipeline.data import EraFrame
from pipeline.evaluate import CVResult
from pipeline.features import FeaturePipeline
from pipeline.runtime import MemberState

if TYPE_CHECKING:
    from pipeline.binning import DatasetCache

# Model files of members inside an artifacts directory.
MEMBERS_DIR = "members"
# Eras of one frame to train on: what a refresh passes to `continue_training`.
EraParts = Sequence[tuple[EraFrame, Sequence[str]]]
Stage = Literal["holdout", "refit", "full retrain"]


@dataclass(frozen=True)
class MemberEntry:
    """One member of a preset: its kind, settings and the target and eras it trains on.

    `target` is "main" or "aux": the auxiliary target of `horizon` days whose ridge model best predicts
    the main target (`pipeline.targets.best_aux_target`). `rounds` caps a boosted member's trees (the CV
    chooses how many). `raw`: the member takes the raw features, not the feature pipeline's output
    (Numerai's example model, so that its figures are the example's). `without`: named sets of
    features.json whose raw features the member leaves out (a member over a feature subset).
    `search`: the member's settings are searched on the CV and the best `search` trials become members
    (`pipeline.members.lgbm_search`); 0: its settings as given.
    """

    name: str
    kind: str
    params: Mapping[str, Any] = field(default_factory=dict)
    rounds: int | None = None
    target: Literal["main", "aux"] = "main"
    horizon: int = 20
    era_stride: int = 1
    raw: bool = False
    without: tuple[str, ...] = ()
    search: int = 0
    search: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        object.__setattr__(self, "without", tuple(self.without))
        if self.target not in ("main", "aux"):
            raise ValueError(f"member {self.name!r}: target must be 'main' or 'aux', got {self.target!r}")
        if self.era_stride < 1:
            raise ValueError(f"member {self.name!r}: era_stride must be at least 1, got {self.era_stride}")

    @property
    def horizon_suffix(self) -> str:
        """The ending of the target columns of this entry's horizon (`target_*_20`)."""
        return f"_{self.horizon}"


@dataclass(frozen=True)
class MemberContext:
    """What every member is made from besides its entry: the training frame (feature names, targets),
    the build's seed and threads, the options that override presets, features.json's sets, the
    build's embargo (members that hold out eras of their own keep it), the build's cache of binned
    LightGBM datasets and its scale of LightGBM trees (`--tree-scale`)."""

    frame: EraFrame
    main_target: str
    seed: int = 0
    threads: int = 0
    num_boost_round: int | None = None
    era_stride: int | None = None
    feature_sets: Mapping[str, Sequence[str]] = field(default_factory=dict)
    processes: int = 1
    embargo: int | None = None
    bins: DatasetCache | None = None
    # LightGBM members train this many times their trees at 1 / tree_scale their learning rate.
    tree_scale: float = 1.0


@dataclass(frozen=True)
class RefreshSettings:
    """How far a refresh continues each member: LightGBM members add `trees` times the trees their CV
    chose, neural members fine-tune for `epochs` at `lr_factor` times their learning rate."""

    trees: float = 0.1
    epochs: int = 3
    lr_factor: float = 0.1


@runtime_checkable
class Member(Protocol):
    """What the build, the blend, the pickle and the refresh need of a member.

    scikit-learn's conventions: construction only stores settings; what fitting learns ends in `_`.
    """

    kind: ClassVar[str]
    # Whether it learns the 20-day auxiliary targets as extra outputs (the build then loads them).
    learns_aux_targets: ClassVar[bool]
    name: str
    train_target: str
    era_stride: int

    @classmethod
    def from_entry(cls, entry: MemberEntry, target: str, context: MemberContext, seed: int) -> Member | None:
        """The member a preset entry asks for, training on `target` (resolved from the entry), or None
        when this data cannot support it (the reason logged)."""
        ...

    @property
    def uses_pipeline(self) -> bool:
        """Whether the member reads the feature pipeline's output (its CV needs fold pipelines)."""
        ...

    def cross_validate(
        self, frame: EraFrame, folds: list, score_target: str, pipelines: list[FeaturePipeline]
    ) -> CVResult:
        """Out-of-fold predictions on the folds' scored eras; fixes what the CV chooses (trees, epochs)."""
        ...

    def fit(self, splits: list[EraFrame], pipeline: FeaturePipeline, stage: Stage) -> None:
        """Train on every era of the splits with the CV's settings (`pipeline` fitted on the same eras)."""
        ...

    def predict(self, features: np.ndarray, eras: np.ndarray | None) -> np.ndarray:
        """Raw scores of whole eras' int8 rows (only their per-era ranks are blended)."""
        ...

    def export(self, weight: float) -> MemberState:
        """The plain data `pipeline.runtime` predicts from inside Numerai's container."""
        ...

    def save(self, directory: Path) -> dict[str, Any]:
        """Write the fitted model in a trainable form into `directory`; returns its manifest fields."""
        ...

    @classmethod
    def load(cls, entry: Mapping[str, Any], directory: Path, pipeline: FeaturePipeline, threads: int) -> Member:
        """The member `save` wrote, fitted, with `entry` its manifest fields."""
        ...

    def continue_training(self, parts: EraParts, settings: RefreshSettings) -> dict[str, Any]:
        """Train further on the given eras (a refresh); returns what was done, for the report: figures, and
        "done", one line of text (e.g. "+20 trees (220 in all)")."""
        ...

    def untrained(self, threads: int, processes: int = 1) -> Member:
        """An unfitted copy with the settings the CV chose (a refresh's full retrain)."""
        ...

    def importance(self) -> dict[str, float] | None:
        """Importance per model feature (LightGBM's gain), or None for kinds without one."""
        ...

    def chosen(self) -> dict[str, Any]:
        """The settings a report shows for the member: target, era stride, what the CV chose."""
        ...
