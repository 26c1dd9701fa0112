"""A runner that runs everything here, as `--jobs 1` does, and records what it was given in order."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from pipeline.binning import DatasetCache
from pipeline.parallel import Fit, InProcess, task_name


@dataclass
class Recording(InProcess):
    """`InProcess` that records the name of each fit and task in the order submitted, and each fit's
    training seconds (its binning left out)."""

    submitted: list[str] = field(default_factory=list)
    train_seconds: dict[str, float] = field(default_factory=dict)

    def submit_fit(self, fit: Fit, cache: DatasetCache) -> Future:
        future = super().submit_fit(fit, cache)
        self.submitted.append(fit.name)
        self.train_seconds[fit.name] = future.result().seconds - future.result().bin_seconds
        return future

    def submit(self, function: Callable[..., Any], *args: Any) -> Future:
        self.submitted.append(task_name(function, args))
        return super().submit(function, *args)
