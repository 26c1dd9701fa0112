"""How the plan's work runs on a machine's cores: Amdahl's speedup over threads, the longest-first
schedule of tasks on processes (their threads growing onto idle ones' cores), and the plan's items
(`pipeline.plan`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

# Share of LightGBM's tree building that runs in parallel over threads (Amdahl's law); see the
# README ("What a build costs") for the measurement on 2 cores behind it.
TREE_PARALLEL = 0.85
# The same for the least squares of neutralization (the blend's choice, the permutation importance)
# over numpy's BLAS threads in the build's own process (`bench.threads`, on 2 cores; README, "What a
# build costs").
BLAS_PARALLEL = 0.7


def speedup(threads: int, parallel: float = TREE_PARALLEL) -> float:
    """Amdahl's law: how much faster `threads` threads build trees than one."""
    return 1.0 / ((1.0 - parallel) + parallel / max(1, threads))


def makespan(tasks: Sequence[Task], slots: int, threads: int, cores: int | None = None) -> float:
    """Wall time of independent tasks on `slots` processes of `threads` threads each, the next-longest
    to the first process free. With `cores`, the running fits' threads grow as the workers' do
    (`pipeline.resources.ThreadShare`): once no task waits, each of the `n` running takes
    `max(threads, cores // n)` threads for its trees. A task bins (`serial`) before its trees."""
    return rounds_makespan([tasks], [], slots, threads, cores)[1]


def rounds_makespan(
    rounds: Sequence[Sequence[Task]],
    behind_first: Sequence[Task],
    slots: int,
    threads: int,
    cores: int | None = None,
) -> tuple[float, float]:
    """`makespan` of rounds that run one after the other (each queued when the one before has ended),
    with `behind_first` queued after the first round's tasks: a process pool takes tasks first come,
    first served, so those fill the slots the rounds' last tasks leave idle. Each round and
    `behind_first` longest first. Returns (when the last round ends, when every task has)."""

    def longest_first(tasks: Sequence[Task]) -> list[Task]:
        return sorted(tasks, key=lambda task: task.seconds(threads), reverse=True)

    waiting: list[tuple[int, Task]] = []
    running: list[list[float]] = []
    clock, rounds_end, k = 0.0, 0.0, -1
    while True:
        while k < len(rounds) and not any(r == k for r, _ in waiting) and not any(left[2] == k for left in running):
            rounds_end, k = clock, k + 1
            if k < len(rounds):
                waiting += [(k, task) for task in longest_first(rounds[k])]
            if k == 0:
                waiting += [(-1, task) for task in longest_first(behind_first)]
        if not waiting and not running:
            return rounds_end, clock
        while waiting and len(running) < max(1, slots):
            r, task = waiting.pop(0)
            running.append([task.serial, task.cpu, r])
        share = threads if waiting or cores is None else max(threads, cores // len(running))
        rate = speedup(share)
        step = min(serial if serial > 0 else cpu / rate for serial, cpu, _ in running)
        clock += step
        for left in running:
            if left[0] > 0:
                left[0] = max(0.0, left[0] - step)
            else:
                left[1] = max(0.0, left[1] - step * rate)
        running = [left for left in running if left[0] > 1e-9 or left[1] > 1e-9]


@dataclass
class Task:
    """One fit or task the runner runs: one-thread seconds of its trees (`cpu`, which scale with
    threads) and of the rest (`serial`; `binning` of them binning its dataset), and the memory it
    holds at its peak."""

    cpu: float
    serial: float
    memory_mb: float
    binning: float = 0.0

    def seconds(self, threads: int) -> float:
        return self.cpu / speedup(threads) + self.serial


@dataclass
class Item:
    """One line of the plan: its fits (or tasks) on rows x features with their work (trees, epochs),
    the runner's tasks, the one-thread seconds it takes in the build's own process (`parent`; `blas`
    of them in least squares, which run on the build's threads) and the memory that needs there
    beyond the interpreter and the int8 matrices."""

    stage: str
    name: str
    fits: int
    rows: int
    features: int
    work: str
    tasks: list[Task] = field(default_factory=list)
    parent: float = 0.0
    blas: float = 0.0
    memory_mb: float = 0.0
    # Rounds of a stage run one after the other (the search's folds); a round's tasks side by side.
    round: int = 0
    # Work of this process that runs while its round's tasks run on the workers (`--jobs`), on as
    # many threads as one of them (`train_holdout`).
    beside: bool = False
    # The stage whose first round this item's tasks are queued behind, with --jobs (the CV of the members
    # no search touches, behind the search's: `pipeline.searches.search_gbdt`); "": its own stage's.
    behind: str = ""

    def seconds(self, threads: int, parent_threads: int = 1) -> float:
        return self.own_seconds(parent_threads) + sum(task.seconds(threads) for task in self.tasks)

    def own_seconds(self, threads: int) -> float:
        """Seconds in the build's own process on `threads` threads."""
        return self.parent + self.blas / speedup(threads, BLAS_PARALLEL)
