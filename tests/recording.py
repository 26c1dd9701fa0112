"""A runner that runs everything here, as `--jobs 1` does, and records what it was given in order."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, ClassVar

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


class Later:
    """A result computed when it is first asked for."""

    def __init__(self, compute: Callable[[], Any]):
        self.compute, self.value, self.computed = compute, None, False

    def result(self) -> Any:
        if not self.computed:
            self.value, self.computed = self.compute(), True
        return self.value


@dataclass
class Deferred(InProcess):
    """A `concurrent` runner here: each fit and task runs when its result is collected, as one on the
    workers would be done only then, so what the build does meanwhile with the members shows. Records
    each submission, and whatever else a test adds, in `events`."""

    concurrent: ClassVar[bool] = True
    events: list[str] = field(default_factory=list)

    def submit_fit(self, fit: Fit, cache: DatasetCache) -> Later:
        self.events.append(fit.name)
        return Later(lambda: InProcess.submit_fit(self, fit, cache).result())

    def submit(self, function: Callable[..., Any], *args: Any) -> Later:
        self.events.append(task_name(function, args))
        return Later(lambda: InProcess.submit(self, function, *args).result())
