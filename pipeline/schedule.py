"""How the plan's work runs on a machine's cores: Amdahl's speedup over threads, the longest-first
schedule of tasks on processes (their threads growing onto idle ones' cores), the plan's items
(`pipeline.plan` makes them) and the plan itself, its stages' seconds and memory on a machine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pipeline.calibration import calibration_json
from pipeline.resources import threads_per_job

if TYPE_CHECKING:
    from pipeline.calibration import Costs, Size

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

    first = [(0, task) for task in longest_first(rounds[0])] if rounds else []
    waiting = first + [(-1, task) for task in longest_first(behind_first)]
    running: list[list[float]] = []
    clock, rounds_end, k = 0.0, 0.0, 0
    while True:
        while k < len(rounds) and not any(r == k for r, _ in waiting) and not any(left[2] == k for left in running):
            rounds_end, k = clock, k + 1
            waiting += [(k, task) for task in longest_first(rounds[k])] if k < len(rounds) else []
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


def by_round(items: Sequence[Item]) -> list[list[Item]]:
    """`items` grouped by their round, in the order the rounds run."""
    return [[item for item in items if item.round == round_] for round_ in sorted({item.round for item in items})]


@dataclass
class Plan:
    """A build's items on a machine of `cores` cores with `jobs` processes (see the module docstring)."""

    items: list[Item]
    costs: Costs
    size: Size
    cores: int
    jobs: int
    threads: int
    in_memory: bool
    assumptions: list[str]

    @property
    def threads_per_fit(self) -> int:
        return self.threads if self.jobs == 1 else threads_per_job(self.threads, self.jobs)

    def stage_items(self, stage: str) -> list[Item]:
        return [item for item in self.items if item.stage == stage]

    def stage_seconds(self, stage: str) -> float:
        items = self.stage_items(stage)
        own = sum(item.own_seconds(self.threads) for item in items if not item.beside)
        if self.jobs > 1:
            host = next((item.behind for item in items if item.behind), "")
            if host:
                rounds_end, end = self.queued_behind(host)
                return own + end - rounds_end
            if any(item.behind == stage for item in self.items):
                return own + self.queued_behind(stage)[0]
        run = 0.0
        for in_round in by_round(items):
            tasks = [task for item in in_round for task in item.tasks]
            beside = sum(item.own_seconds(self.threads_per_fit) for item in in_round if item.beside)
            if self.jobs == 1:
                fits = sum(task.seconds(self.threads_per_fit) for task in tasks)
            else:
                # The workers' fits grow onto idle workers' cores; this process's work beside them
                # holds one worker's share (`pipeline.resources.ThreadShare`).
                cores = self.threads - (self.threads_per_fit if beside else 0)
                fits = makespan(tasks, self.jobs, self.threads_per_fit, cores)
            run += max(fits, beside)
        return own + run

    def queued_behind(self, stage: str) -> tuple[float, float]:
        """When the rounds of `stage` end, and when the tasks queued behind its first round (items
        `behind` it) do, counted from the stage's start (`schedule.rounds_makespan`)."""
        rounds = [[task for item in in_round for task in item.tasks] for in_round in by_round(self.stage_items(stage))]
        behind = [task for item in self.items if item.behind == stage for task in item.tasks]
        return rounds_makespan(rounds, behind, self.jobs, self.threads_per_fit, self.threads)

    def stage_memory(self, stage: str) -> tuple[float, float]:
        """(this process's peak MB, one worker's peak MB or 0) in `stage`."""
        items = self.stage_items(stage)
        size = self.size
        matrices = (sum(size.train.values()) + sum(size.validation.values())) * size.features / 2**20
        queued = [item for item in self.items if self.jobs > 1 and item.behind == stage]
        tasks = max((task.memory_mb for item in items + queued for task in item.tasks), default=0.0)
        parent_items = max((item.memory_mb for item in items), default=0.0)
        parent = self.costs.base_mb + (matrices if self.in_memory else 0.0) + parent_items
        if self.jobs == 1:
            return parent + tasks, 0.0
        return parent, (self.costs.base_mb + tasks) if tasks else 0.0

    @property
    def stages(self) -> list[str]:
        return list(dict.fromkeys(item.stage for item in self.items))

    @property
    def total_seconds(self) -> float:
        return sum(self.stage_seconds(stage) for stage in self.stages)

    @property
    def peak_rss_mb(self) -> float:
        """The machine's peak: this process and, with --jobs, every worker at its peak."""
        return max(parent + self.jobs * worker for parent, worker in map(self.stage_memory, self.stages))

    def to_json(self) -> dict[str, Any]:
        stages = {}
        for stage in self.stages:
            parent, worker = self.stage_memory(stage)
            items = [
                {
                    "name": item.name,
                    "fits": item.fits,
                    "rows": item.rows,
                    "features": item.features,
                    "work": item.work,
                    "seconds_one_thread": round(item.seconds(1), 2),
                    "binning_one_thread": round(sum(task.binning for task in item.tasks), 2),
                }
                for item in self.stage_items(stage)
            ]
            stages[stage] = {"seconds": round(self.stage_seconds(stage), 2), "peak_rss_mb": round(parent, 1)}
            stages[stage] |= {"worker_peak_rss_mb": round(worker, 1)} if worker else {}
            stages[stage]["items"] = items
        return {
            "total_seconds": round(self.total_seconds, 1),
            "total_hours": round(self.total_seconds / 3600, 2),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "machine": {"cores": self.cores, "jobs": self.jobs, "threads_per_fit": self.threads_per_fit},
            "size": {
                "train_rows": sum(self.size.train.values()),
                "train_eras": len(self.size.train),
                "validation_rows": sum(self.size.validation.values()),
                "validation_eras": len(self.size.validation),
                "features": self.size.features,
            },
            "stages": stages,
            "assumptions": self.assumptions,
            "calibration": calibration_json(self.costs)
            | {"tree_parallel": TREE_PARALLEL, "blas_parallel": BLAS_PARALLEL},
        }

    def table(self) -> str:
        """The plan as printed: one line per item, a total per stage, the total."""
        lines = [
            f"plan: {self.size.features} features, {sum(self.size.train.values()):,} training rows in "
            f"{len(self.size.train)} eras, {sum(self.size.validation.values()):,} validation rows; {self.cores} cores, "
            f"--jobs {self.jobs}, {self.threads_per_fit} threads per fit",
            f"{'stage / item':<58} {'fits':>5} {'rows':>10} {'feat':>5} {'work':>12} {'seconds':>9} {'peak MB':>8}",
        ]
        for stage in self.stages:
            parent, worker = self.stage_memory(stage)
            memory = f"{parent:>8.0f}" + (f" + {self.jobs} x {worker:.0f}" if worker else "")
            lines.append(f"{stage:<58} {'':>5} {'':>10} {'':>5} {'':>12} {self.stage_seconds(stage):>9.0f} {memory}")
            for item in self.stage_items(stage):
                lines.append(
                    f"  {item.name[:56]:<56} {item.fits:>5} {item.rows:>10,} {item.features:>5} {item.work[:12]:>12} "
                    f"{item.seconds(self.threads_per_fit, self.threads):>9.0f}"
                )
        lines.append(
            f"{'total':<58} {'':>5} {'':>10} {'':>5} {'':>12} {self.total_seconds:>9.0f} {self.peak_rss_mb:>8.0f}"
            f"   ({self.total_seconds / 3600:.2f} h)"
        )
        lines += [f"assuming {text}" for text in self.assumptions]
        return "\n".join(lines)
