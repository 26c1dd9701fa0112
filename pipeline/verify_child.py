"""Runs a model pickle the way numerai-predict does, in a process where this package is blocked.

Started by `pipeline.verify` as `python -I verify_child.py MODEL LIVE BENCHMARKS RESULT_JSON MARKER`
with one thread and a minimal environment. It must not import anything from `pipeline`: it stands in
for Numerai's container. It always writes RESULT_JSON (problems found, measurements) unless it is
killed, and sets `"completed": true` there only once predict has returned on the live rows and every
check has run; MARKER appears when the first predict call and its checks are done, so the parent
can give the determinism check (a second call) its own time.
"""

import importlib.abc
import importlib.metadata
import inspect
import json
import os
import pickle
import resource
import sys
import time
import warnings

BLOCKED = ("pipeline", "torch")
PARAMETERS = "1 or 2 parameters (live_features[, live_benchmark_models])"


class BlockImports(importlib.abc.MetaPathFinder):
    """Makes the training-side packages unimportable, as they are in Numerai's container."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {fullname!r} (not available in Numerai's container)")
        return None


class Failed(Exception):
    """A step after which the run cannot go on; its message is the problem reported."""


def peak_rss_mb() -> float:
    """Peak resident memory of this process image. VmHWM starts afresh at exec, whereas ru_maxrss
    would carry over the parent's peak from before the fork."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def check_result(result, live, pd, np) -> list:
    """numerai-predict's checks, in its order, then the submission contract Numerai validates."""
    if result is None:
        return ["predict returned None"]
    if type(result) is not pd.DataFrame:
        return [
            f"predict must return exactly a pandas DataFrame, got {type(result).__module__}.{type(result).__name__}"
        ]
    if result.empty:
        return ["predict returned an empty DataFrame"]
    problems = []
    if result.isna().any().any():
        problems.append(f"predictions contain {int(result.isna().sum().sum())} NaN value(s)")
    first = pd.to_numeric(result.iloc[:, 0], errors="coerce")
    if not first.between(0, 1).all():
        problems.append(f"first column must lie within [0, 1]; found values in [{first.min()}, {first.max()}]")
    if list(result.columns) != ["prediction"]:
        problems.append(f"columns must be exactly ['prediction'], got {list(result.columns)}")
    if result.index.name != "id":
        problems.append(f"index must be named 'id', got {result.index.name!r}")
    if not result.index.is_unique:
        problems.append("predictions repeat some ids")
    missing = live.index.difference(result.index)
    extra = result.index.difference(live.index)
    if len(missing) or len(extra):
        problems.append(f"ids differ from the live ids: {len(missing)} live id(s) missing, {len(extra)} unknown id(s)")
    if len(result) > 1 and np.isclose(float(first.std()), 0.0):
        problems.append("predictions are constant (standard deviation ~0)")
    if not problems:
        # The three steps of validate_submission_numerai; numerai-tools 0.4.3 (Numerai's image) has
        # these but not the combined function.
        from numerai_tools.submissions import validate_headers_numerai, validate_ids_numerai, validate_values

        try:
            submission = result.reset_index()
            id_col, prediction_col = validate_headers_numerai(submission)
            filtered, _ = validate_ids_numerai(pd.Series(live.index.astype(str)), submission, id_col)
            validate_values(filtered, prediction_col)
        except AssertionError as err:
            problems.append(f"numerai_tools submission check: {err}")
    return problems


def read_parquet(pd, path: str, what: str, hint: str = ""):
    """`pd.read_parquet` as numerai-predict reads its inputs, with the file named in any failure."""
    if not os.path.isfile(path):
        raise Failed(f"{path}: {what} not found{hint}")
    try:
        return pd.read_parquet(path)
    except Exception as err:
        raise Failed(f"{path}: {what} is not a readable parquet file ({type(err).__name__}: {err}){hint}") from None


def load_model(pd, model_path: str):
    """The unpickled callable and its parameter count, counted as numerai-predict counts them."""
    try:
        model = pd.read_pickle(model_path)
    except BaseException as err:  # unpickling runs the pickle's code: SystemExit and the like included
        reason = f"{type(err).__name__}: {err}"
        if isinstance(err, ImportError):
            raise Failed(f"Import error reading pickle {model_path}: {reason}") from None
        if isinstance(err, (pickle.UnpicklingError, EOFError)):
            raise Failed(f"{model_path}: not a valid pickle ({reason})") from None
        raise Failed(f"{model_path}: loading the pickle raised {reason}") from None
    if not callable(model):
        raise Failed(f"the pickle holds a {type(model).__name__}, not a callable")
    try:
        n_params = len(inspect.signature(model).parameters)
    except (TypeError, ValueError) as err:
        raise Failed(f"cannot read the parameters of the pickled {type(model).__name__}: {err}") from None
    return model, n_params


def call_predict(model, args: tuple):
    """predict's result and the warnings it raised; any exception it raises, of any kind, is a problem."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result = model(*args)
        except BaseException as err:  # SystemExit, KeyboardInterrupt, GeneratorExit too: none may pass
            raise Failed(f"predict raised {type(err).__name__}: {err}") from None
    notes = [f"predict warned: {w.category.__name__}: {w.message}" for w in caught]
    return result, list(dict.fromkeys(notes))


def run(report: dict, model_path: str, live_path: str, benchmarks_path: str, marker_path: str) -> None:
    """numerai-predict's steps (load, count parameters, read the inputs, predict, check), filling `report`."""
    sys.meta_path.insert(0, BlockImports())
    import lightgbm
    import numpy as np
    import pandas as pd

    report["versions"] = {
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "lightgbm": lightgbm.__version__,
    } | {name: importlib.metadata.version(name) for name in ("cloudpickle", "pyarrow")}
    start = time.perf_counter()
    model, n_params = load_model(pd, model_path)
    report["load_s"] = time.perf_counter() - start
    report["parameters"] = n_params
    if n_params not in (1, 2):
        raise Failed(f"predict must take {PARAMETERS}, as numerai-predict calls it; it takes {n_params}")
    live = read_parquet(pd, live_path, "live file")
    if live.empty:
        raise Failed(f"{live_path}: the live file has no rows")
    report["live_rows"] = len(live)
    args = (live,)
    if n_params == 2:
        hint = (
            "; predict takes 2 parameters (live_features, live_benchmark_models), so it is passed the live "
            "benchmark models: give their file with --benchmarks FILE"
        )
        args = (live, read_parquet(pd, benchmarks_path, "benchmark file", hint))
    start = time.perf_counter()
    result, report["notes"] = call_predict(model, args)
    report["predict_s"] = time.perf_counter() - start
    report["peak_rss_mb"] = peak_rss_mb()
    report["modules"] = sorted(m for m in ("lightgbm", "sklearn", "scipy", "torch") if m in sys.modules)
    report["problems"].extend(check_result(result, live, pd, np))
    open(marker_path, "w").close()
    if not report["problems"]:
        again, _ = call_predict(model, args)
        if not (type(again) is pd.DataFrame and again.equals(result)):
            report["problems"].append("predict is not deterministic: a second call on the same frame differs")
    report["completed"] = True


def write_result(report: dict, out_path: str) -> None:
    """Written under a temporary name and renamed, so the parent never reads half a result."""
    pending = out_path + ".partial"
    with open(pending, "w") as handle:
        json.dump(report, handle)
    os.replace(pending, out_path)


def main(model_path: str, live_path: str, benchmarks_path: str, out_path: str, marker_path: str) -> None:
    """Every outcome short of this process being killed ends in a written result."""
    report = {"problems": [], "notes": [], "completed": False}
    try:
        run(report, model_path, live_path, benchmarks_path, marker_path)
    except Failed as failed:
        report["problems"].append(str(failed))
    except BaseException as err:  # a check failing on an odd result: still a verdict, never a traceback
        report["problems"].append(f"the verification could not finish: {type(err).__name__}: {err}")
    finally:
        write_result(report, out_path)


if __name__ == "__main__":
    main(*sys.argv[1:6])
    sys.stdout.flush()
    sys.stderr.flush()
    # Threads or atexit hooks the pickle left behind must not hold the verdict back.
    os._exit(0)
