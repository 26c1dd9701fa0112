"""The options of a build (and of a refresh), checked in one place before any data is read."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from pipeline import data as nd
from pipeline.objective import CORR_MULTIPLIER, MMC_MULTIPLIER, Objective
from pipeline.presets import PRESETS, TSMIXER_MEMBER


@dataclass
class BuildConfig:
    """Everything a build depends on; saved in the report and the artifacts so a build can be repeated.

    Each field is the command-line option of the same name (`--num-boost-round` is `--trees`)."""

    data_dir: Path | None = None
    out: Path = Path("model.pkl")
    report_dir: Path | None = None
    feature_set: str = "all"
    features: list[str] | None = None
    target: str = nd.MAIN_TARGET
    preset: str = "demo"
    members: list[str] = field(default_factory=list)
    embargo: int | None = None
    cv_folds: int = 3
    cv_max_train_eras: int | None = None
    era_stride: int | None = None
    num_boost_round: int | None = None
    # LightGBM members train tree_scale times their trees at 1 / tree_scale their learning rate.
    tree_scale: float = 1.0
    drop_unstable: bool = False
    refit: bool = True
    neutralization: float | None = None
    # What the blend weights, member selection and neutralization are chosen on (`pipeline.objective`),
    # and the benchmark model BMC is measured against (None: Numerai's main one).
    objective: str = "corr"
    corr_multiplier: float = CORR_MULTIPLIER
    mmc_multiplier: float = MMC_MULTIPLIER
    benchmark_model: str | None = None
    seed: int = 0
    threads: int = 0
    # Fits run as this many processes on this machine, --threads divided among them (pipeline.parallel).
    jobs: int = 1
    # Hours the build may take: the largest settings whose plan fits (pipeline.budget.fit_budget).
    time_budget: float | None = None
    dask_scheduler: str | None = None
    dask_local: int | None = None
    torch_processes: int = 1
    spill_dir: Path | None = None
    # Hyperparameter search of the TSMixer-Ext member (0 trials: its preset settings, no search).
    tsmixer_search: int = 0
    tsmixer_search_budget: float = 3600.0
    # The search of the LightGBM members' settings (entries with `search`): this many trials (None: the
    # preset's, `pipeline.presets.SEARCH_TRIALS`), within this many seconds when given.
    gbdt_search_trials: int | None = None
    gbdt_search_budget: float | None = None
    # Weekly refresh (`pipeline.refresh`): continue the model saved in this artifacts directory.
    init_model: Path | None = None
    refresh_trees: float = 0.1
    refresh_epochs: int = 3
    refresh_test_eras: int = 4

    @classmethod
    def from_options(cls, options: Any) -> BuildConfig:
        """The config of parsed command-line options (an argparse Namespace with a field's name each)."""
        values = {f.name: getattr(options, f.name) for f in fields(cls) if hasattr(options, f.name)}
        if isinstance(values.get("features"), str):
            values["features"] = [name.strip() for name in values["features"].split(",") if name.strip()] or None
        return cls(**values)

    def problems(self) -> list[str]:
        """Every option that cannot work, each naming the option and what it expects."""
        checks = [
            (self.preset in PRESETS, f"--preset {self.preset!r} is unknown; expected one of {sorted(PRESETS)}"),
            (self.cv_folds >= 1, f"--cv-folds must be at least 1, got {self.cv_folds}"),
            (self.embargo is None or self.embargo >= 0, f"--embargo must be 0 or more eras, got {self.embargo}"),
            (
                self.cv_max_train_eras is None or self.cv_max_train_eras >= 1,
                f"--cv-max-train-eras must be at least 1, got {self.cv_max_train_eras}",
            ),
            (
                self.era_stride is None or self.era_stride >= 1,
                f"--era-stride must be at least 1, got {self.era_stride}",
            ),
            (
                self.num_boost_round is None or self.num_boost_round >= 1,
                f"--trees must be at least 1 boosting round, got {self.num_boost_round}",
            ),
            (
                0 < self.tree_scale <= 1,
                f"--tree-scale must be within (0, 1], a share of each member's trees, got {self.tree_scale}",
            ),
            (
                self.neutralization is None or 0 <= self.neutralization <= 1,
                f"--neutralization must be within 0..1, got {self.neutralization}",
            ),
            (
                self.tsmixer_search >= 0,
                f"--tsmixer-search must be a number of trials, at least 0 (0: no search), got {self.tsmixer_search}",
            ),
            (
                self.tsmixer_search_budget > 0,
                f"--tsmixer-search-budget must be a positive number of seconds, got {self.tsmixer_search_budget}",
            ),
            (
                self.gbdt_search_trials is None or self.gbdt_search_trials >= 1,
                f"--gbdt-search-trials must be at least 1, got {self.gbdt_search_trials}",
            ),
            (
                self.gbdt_search_budget is None or self.gbdt_search_budget >= 0,
                f"--gbdt-search-budget must be 0 or more seconds, got {self.gbdt_search_budget}",
            ),
            (
                self.data_dir is None or Path(self.data_dir).is_dir(),
                f"--data-dir {self.data_dir} is not a directory; expected Numerai's v5 layout "
                "(features.json, train.parquet, validation.parquet)",
            ),
        ]
        problems = [message for ok, message in checks if not ok] + self.resource_problems() + self.scoring().problems()
        with_tsmixer = sorted(
            name for name, entries in PRESETS.items() if any(e.kind == TSMIXER_MEMBER.kind for e in entries)
        )
        if self.tsmixer_search and self.preset in PRESETS and self.preset not in with_tsmixer:
            problems.append(
                f"--tsmixer-search needs a preset with a TSMixer-Ext member ({', '.join(with_tsmixer)}); "
                f"preset {self.preset!r} has none"
            )
        if self.init_model is not None:
            problems += self.refresh_problems()
        return problems

    def resource_problems(self) -> list[str]:
        """The options of where and how wide the build runs (threads, processes, Dask, spill) that
        cannot work."""
        checks = [
            (self.threads >= 0, f"--threads must be 0 (all cores) or more, got {self.threads}"),
            (self.jobs >= 1, f"--jobs must be at least 1 process, got {self.jobs}"),
            (
                self.time_budget is None or self.time_budget > 0,
                f"--time-budget must be a positive number of hours, got {self.time_budget}",
            ),
            (
                self.jobs == 1 or not (self.dask_scheduler or self.dask_local),
                "--jobs runs fits as processes on this machine and --dask-scheduler / --dask-local on a cluster's "
                "workers: give one",
            ),
            (self.torch_processes >= 1, f"--torch-processes must be at least 1, got {self.torch_processes}"),
            (
                self.spill_dir is None or Path(self.spill_dir).is_dir(),
                f"--spill-dir {self.spill_dir} is not a directory; expected one with room for the int8 feature matrix",
            ),
            (
                not (self.dask_scheduler and self.dask_local),
                "--dask-scheduler and --dask-local are exclusive: give one",
            ),
            (
                self.dask_local is None or self.dask_local >= 1,
                f"--dask-local must be at least 1, got {self.dask_local}",
            ),
        ]
        return [message for ok, message in checks if not ok]

    def scoring(self) -> Objective:
        """The objective the build chooses on (--objective and the payout multipliers)."""
        return Objective(self.objective, self.corr_multiplier, self.mmc_multiplier)

    def refresh_problems(self) -> list[str]:
        """The options of a refresh (`--init-model`) that cannot work."""
        checks = [
            (
                0 < self.refresh_trees <= 1,
                f"--refresh-trees must be within (0, 1], a share of the CV's trees; got {self.refresh_trees}",
            ),
            (self.refresh_epochs >= 1, f"--refresh-epochs must be at least 1, got {self.refresh_epochs}"),
            (self.refresh_test_eras >= 1, f"--refresh-test-eras must be at least 1, got {self.refresh_test_eras}"),
            (
                not (self.dask_scheduler or self.dask_local),
                "--init-model refreshes on this machine: leave out --dask-scheduler and --dask-local",
            ),
        ]
        return [message for ok, message in checks if not ok]

    def validate(self) -> None:
        """Raise one ValueError listing every option that cannot work."""
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))
