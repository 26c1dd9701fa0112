"""Runs a model pickle the way numerai-predict does, in a process where this package is blocked.

Started by `pipeline.verify` as `python -I verify_child.py MODEL LIVE RESULT_JSON` with one thread.
It must not import anything from `pipeline`: it stands in for Numerai's container.
"""

import importlib.abc
import inspect
import json
import resource
import sys
import time
import traceback

BLOCKED = ("pipeline", "torch")


class BlockImports(importlib.abc.MetaPathFinder):
    """Makes the training-side packages unimportable, as they are in Numerai's container."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {fullname!r} (not available in Numerai's container)")
        return None


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


def main(model_path: str, live_path: str, out_path: str) -> None:
    sys.meta_path.insert(0, BlockImports())
    import lightgbm
    import numpy as np
    import pandas as pd

    report = {
        "problems": [],
        "versions": {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "pandas": pd.__version__,
            "lightgbm": lightgbm.__version__,
        },
    }
    try:
        live = pd.read_parquet(live_path)
        report["live_rows"] = len(live)
        start = time.perf_counter()
        try:
            model = pd.read_pickle(model_path)
        except Exception as err:
            report["problems"].append(f"Import error reading pickle: {type(err).__name__}: {err}")
            return
        report["load_s"] = time.perf_counter() - start
        if not callable(model):
            report["problems"].append(f"the pickle holds a {type(model).__name__}, not a callable")
            return
        n_params = len(inspect.signature(model).parameters)
        report["parameters"] = n_params
        if n_params != 1:
            report["problems"].append(f"predict must take exactly 1 parameter (live_features); it takes {n_params}")
            return
        start = time.perf_counter()
        try:
            result = model(live)
        except Exception as err:
            report["problems"].append(f"predict raised {type(err).__name__}: {err}")
            report["traceback"] = traceback.format_exc()
            return
        report["predict_s"] = time.perf_counter() - start
        report["peak_rss_mb"] = peak_rss_mb()
        report["modules"] = sorted(m for m in ("lightgbm", "sklearn", "scipy", "torch") if m in sys.modules)
        report["problems"].extend(check_result(result, live, pd, np))
        if not report["problems"]:
            again = model(live)
            if not (type(again) is pd.DataFrame and again.equals(result)):
                report["problems"].append("predict is not deterministic: a second call on the same frame differs")
            report["prediction_std"] = float(result["prediction"].std())
    finally:
        with open(out_path, "w") as handle:
            json.dump(report, handle)


if __name__ == "__main__":
    main(*sys.argv[1:4])
