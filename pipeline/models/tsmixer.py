"""TSMixer-Ext adapted to Numerai, and a plain multi-target MLP baseline: the estimators.

Scikit-learn style estimators over whole eras of an `EraFrame`: they choose their inputs from the
fit eras (`pipeline.models.tokens`), build a network (`pipeline.models.networks`), train it with the
shared loop (`pipeline.models.training`, or data-parallel over processes: `pipeline.distributed`),
and export plain numpy arrays that `pipeline.runtime` runs without torch. `search` random-searches
an estimator's settings on walk-forward CV; it lives here, beside `DEFAULT_SPACE`, because it
trains these estimators, while `pipeline.tuning` stays a torch-free search over any scorer.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from pipeline.cv import EraWalkForward, default_embargo
from pipeline.data import MAIN_TARGET, EraFrame
from pipeline.distributed import train_data_parallel
from pipeline.metrics import per_era_corr
from pipeline.models.networks import CLASS_VALUES, CONTEXT_EPS, N_BINS, NORM_EPS, MLPNet, TSMixerNet
from pipeline.models.tokens import fit_tokens
from pipeline.models.training import EraBatches, TrainResult, TrainSettings, predict_batches, torch_settings, train
from pipeline.runtime import token_index
from pipeline.tuning import random_search

HEADS = ("ce", "regression")
DEVICES = ("cpu", "cuda")


class EraNetEstimator:
    """Shared by TSMixerExt and MLPBaseline: fitting on whole eras, prediction and export.

    Scikit-learn style: `__init__` only stores parameters; `fit` sets attributes ending in `_`.
    """

    kind = ""
    # Attributes chosen from the fit data that the network's shape depends on (saved in a checkpoint).
    fitted_inputs: tuple[str, ...] = ()

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters, so that `type(est)(**est.get_params())` is an unfitted copy."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def set_params(self, **params: Any) -> "EraNetEstimator":
        valid = self.get_params()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"{type(self).__name__} has no parameter {name!r}; expected one of {sorted(valid)}")
            setattr(self, name, value)
        return self

    def _build_network(self, frame: EraFrame, fit_eras: Sequence[str], n_main: int, n_aux: int) -> nn.Module:
        """The untrained network; `fit_eras` are the only eras a fitted input choice may look at."""
        return self._make_network(frame.features.shape[1], n_main, n_aux)

    def _make_network(self, n_features: int, n_main: int, n_aux: int) -> nn.Module:
        """The untrained network for inputs already chosen (`fitted_inputs`)."""
        raise NotImplementedError

    def _export_config(self) -> dict[str, Any]:
        raise NotImplementedError

    def _check_params(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' was asked for but torch sees no CUDA device; use device='cpu'")
        for name in ("max_epochs", "patience", "eras_per_batch", "threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.aux_weight <= 1:
            raise ValueError(f"aux_weight must be in [0, 1], got {self.aux_weight}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

    def split_eras(self, frame: EraFrame, eras: Sequence[str], embargo: int) -> tuple[list[str], list[str]]:
        """(fit eras, early-stopping eras): the newest eras held out after an embargo counted on the
        frame's own era timeline, so it holds when `eras` is a sample such as every 4th era."""
        eras = sorted(eras)
        timeline = [e for e in frame.era_order if eras[0] <= e <= eras[-1]]
        n_valid = self.n_valid_eras or max(2, len(timeline) // 5)
        splitter = EraWalkForward(n_splits=1, embargo=embargo, validation_eras=n_valid, min_train_eras=1)
        fit_part, valid_part = splitter.era_folds(timeline)[-1]
        fit_set, valid_set = set(fit_part), set(valid_part)
        fit_eras = [e for e in eras if e in fit_set]
        valid_eras = [e for e in eras if e in valid_set]
        if not fit_eras or not valid_eras:
            raise ValueError(
                f"eras {eras[0]}..{eras[-1]} leave no fit or early-stopping era with n_valid_eras={n_valid} "
                f"and an embargo of {embargo}; pass more eras or set n_valid_eras"
            )
        return fit_eras, valid_eras

    def fit(
        self,
        frame: EraFrame,
        eras: Sequence[str] | None = None,
        *,
        target: str = MAIN_TARGET,
        aux_targets: Sequence[str] = (),
        valid_eras: Sequence[str] | None = None,
        processes: int = 1,
    ) -> "EraNetEstimator":
        """Train on whole eras of `frame` (all eras when None), early-stopping on validation CORR.

        Without `valid_eras`, the newest `n_valid_eras` eras of `eras` are held out after an embargo
        (`embargo`, or 8/16 eras from the targets' horizon). Auxiliary targets are outputs only.
        `processes` > 1 trains data-parallel over that many CPU processes (`pipeline.distributed`).
        """
        self._check_params()
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        if processes > 1 and self.device != "cpu":
            raise ValueError(
                f"training over {processes} processes uses torch.distributed's gloo backend on CPU; set device='cpu'"
            )
        aux_targets = list(aux_targets)
        missing = [t for t in [target, *aux_targets] if t not in frame.targets.columns]
        if missing:
            raise ValueError(f"target(s) {missing} are not in the frame; it has {list(frame.targets.columns)}")
        if target in aux_targets:
            raise ValueError(f"aux_targets must not repeat the main target {target!r}")
        eras = list(frame.era_order if eras is None else eras)
        if not eras:
            raise ValueError("eras is empty; pass at least one era of the frame")
        if valid_eras is None:
            embargo = default_embargo([target, *aux_targets]) if self.embargo is None else self.embargo
            fit_eras, valid_eras = self.split_eras(frame, eras, embargo)
        else:
            fit_eras, valid_eras = [e for e in eras if e not in set(valid_eras)], list(valid_eras)
        device = torch.device(self.device)
        train_data = EraBatches.from_frame(frame, fit_eras, target, aux_targets)
        valid_data = EraBatches.from_frame(frame, valid_eras, target, aux_targets)
        if not train_data.eras or not valid_data.eras:
            raise ValueError("no rows to fit or to early-stop on: the given eras are not in the frame")
        with torch_settings(self.threads, True, self.device):
            torch.manual_seed(self.seed)
            network = self._build_network(frame, fit_eras, 5 if self.head == "ce" else 1, len(aux_targets)).to(device)
            self.network_ = network
            self.feature_names_ = list(frame.feature_names)
            self.target_ = target
            self.aux_targets_ = aux_targets
            self.fit_eras_, self.valid_eras_ = fit_eras, list(valid_data.eras)
            if processes > 1:
                result = train_data_parallel(
                    network, self.train_settings(), self.threads, train_data, valid_data, processes
                )
            else:
                result = train(network, self.train_settings(), train_data, valid_data, device)
        self._keep(result)
        return self

    def train_settings(self) -> TrainSettings:
        """The parameters the training loop, its loss and prediction read."""
        return TrainSettings(
            name=type(self).__name__,
            head=self.head,
            lr=self.lr,
            weight_decay=self.weight_decay,
            ema_decay=self.ema_decay,
            max_epochs=self.max_epochs,
            patience=self.patience,
            eras_per_batch=self.eras_per_batch,
            aux_loss_weight=self.aux_loss_weight,
            corr_weight=self.corr_weight,
            aux_weight=self.aux_weight,
            seed=self.seed,
            progress=self.progress,
        )

    def _keep(self, result: TrainResult) -> None:
        """Record what a training run found, as sklearn-style fitted attributes."""
        self.best_epoch_ = result.best_epoch
        self.best_valid_corr_ = result.best_valid_corr
        self.history_ = result.history

    def _check_fitted(self) -> None:
        if not hasattr(self, "network_"):
            raise ValueError(f"this {type(self).__name__} is not fitted yet; call fit first")

    def predict(self, features: np.ndarray, eras: np.ndarray | None = None) -> np.ndarray:
        """Predictions for int8 (or 0..4 float) feature rows; `eras` groups rows for the era
        context (None: all rows are one era, as in a live file)."""
        self._check_fitted()
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != len(self.feature_names_):
            raise ValueError(f"features must be [rows, {len(self.feature_names_)}], got shape {features.shape}")
        eras = np.zeros(len(features), dtype=np.int64) if eras is None else np.asarray(eras)
        if len(eras) != len(features):
            raise ValueError(f"eras has {len(eras)} entries for {len(features)} feature rows")
        uniques, inverse = np.unique(eras, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(uniques) + 1))
        data = EraBatches(
            features=features[order],
            slices=[slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=False)],
            eras=[str(u) for u in uniques],
            main=np.zeros(len(features), dtype=np.float32),
            aux=np.zeros((len(features), 0), dtype=np.float32),
        )
        with torch_settings(self.threads, True, self.device):
            pred = predict_batches(self.network_, data, next(self.network_.parameters()).device, self.train_settings())
        out = np.empty(len(features), dtype=np.float32)
        out[order] = pred
        return out

    def export(self, name: str | None = None, weight: float = 1.0) -> dict[str, Any]:
        """A plain member dict for `pipeline.runtime`: float32 arrays and a config of plain Python."""
        self._check_fitted()
        arrays = {
            key: value.detach().cpu().numpy().astype(np.float32)
            for key, value in self.network_.state_dict().items()
            if key != "index"
        }
        config = {
            "head": self.head,
            "classes": list(CLASS_VALUES),
            "aux_weight": float(self.aux_weight),
            "n_aux": len(self.aux_targets_),
            "target": self.target_,
            "aux_targets": list(self.aux_targets_),
            "feature_names": list(self.feature_names_),
            "norm_eps": NORM_EPS,
            "context_eps": CONTEXT_EPS,
        } | self._export_config()
        return {
            "name": name or self.kind,
            "kind": self.kind,
            "weight": float(weight),
            "arrays": arrays,
            "config": config,
        }

    def checkpoint(self) -> dict[str, Any]:
        """Everything needed to rebuild the fitted network in torch and train it further (`torch.save`
        it; `from_checkpoint` reads it back): parameters, fitted inputs and the state_dict."""
        self._check_fitted()
        return {
            "kind": self.kind,
            "params": self.get_params(),
            "feature_names": list(self.feature_names_),
            "target": self.target_,
            "aux_targets": list(self.aux_targets_),
            "inputs": {name: getattr(self, name) for name in self.fitted_inputs},
            "state_dict": {key: value.detach().cpu() for key, value in self.network_.state_dict().items()},
        }

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping[str, Any]) -> "EraNetEstimator":
        """The fitted estimator a `checkpoint()` was taken of, ready to predict or to `fine_tune`."""
        if checkpoint["kind"] != cls.kind:
            raise ValueError(f"a {checkpoint['kind']!r} checkpoint cannot restore a {cls.kind!r} estimator")
        estimator = cls(**checkpoint["params"])
        estimator.feature_names_ = list(checkpoint["feature_names"])
        estimator.target_ = checkpoint["target"]
        estimator.aux_targets_ = list(checkpoint["aux_targets"])
        for name, value in checkpoint["inputs"].items():
            setattr(estimator, name, value)
        n_main = 5 if estimator.head == "ce" else 1
        network = estimator._make_network(len(estimator.feature_names_), n_main, len(estimator.aux_targets_))
        network.load_state_dict(checkpoint["state_dict"])
        estimator.network_ = network.to(torch.device(estimator.device)).eval()
        return estimator

    def fine_tune(self, frame: EraFrame, eras: Sequence[str], epochs: int, lr: float) -> "EraNetEstimator":
        """Train the fitted network further on whole `eras` of `frame`, from its current weights, for
        `epochs` epochs at learning rate `lr` (warmup and cosine decay as in `fit`), keeping the last
        epoch: a refresh's few new eras leave none to early-stop on."""
        self._check_fitted()
        if epochs < 1 or lr <= 0:
            raise ValueError(f"fine-tuning needs epochs >= 1 and lr > 0, got {epochs} and {lr}")
        train_data = EraBatches.from_frame(frame, eras, self.target_, self.aux_targets_)
        if not train_data.eras:
            raise ValueError("no rows to fine-tune on: the given eras are not in the frame")
        with torch_settings(self.threads, True, self.device):
            torch.manual_seed(self.seed)
            settings = replace(self.train_settings(), lr=lr, max_epochs=epochs)
            self._keep(train(self.network_, settings, train_data, None, next(self.network_.parameters()).device))
        return self


class TSMixerExt(EraNetEstimator):
    """TSMixer-Ext on feature-group tokens with an era context (the current era's token statistics).

    Tokens: with `cluster_tokens`, each named group's features clustered by their correlation on
    the fit eras into tokens of about `token_size` features (at most twice that); otherwise
    contiguous chunks of at most `token_size` features of each group. `bin_embedding` adds a learned
    vector per (feature, bin) to each token, on top of the linear projection of the scaled features.
    """

    kind = "tsmixer"
    fitted_inputs = ("tokens_",)

    def __init__(
        self,
        d: int = 32,
        n_block: int = 2,
        ff: int = 64,
        context_dim: int = 8,
        era_context: bool = True,
        bin_embedding: bool = False,
        token_size: int = 10,
        cluster_tokens: bool = True,
        feature_sets: Mapping[str, Sequence[str]] | None = None,
        dropout: float = 0.0,
        head: str = "ce",
        aux_loss_weight: float = 1.0,
        corr_weight: float = 0.0,
        aux_weight: float = 0.0,
        lr: float = 2e-2,
        weight_decay: float = 1e-4,
        ema_decay: float = 0.0,
        max_epochs: int = 30,
        patience: int = 5,
        eras_per_batch: int = 1,
        n_valid_eras: int | None = None,
        embargo: int | None = None,
        seed: int = 0,
        threads: int = 1,
        device: str = "cpu",
        progress: bool = True,
    ):
        self.d = d
        self.n_block = n_block
        self.ff = ff
        self.context_dim = context_dim
        self.era_context = era_context
        self.bin_embedding = bin_embedding
        self.token_size = token_size
        self.cluster_tokens = cluster_tokens
        self.feature_sets = feature_sets
        self.dropout = dropout
        self.head = head
        self.aux_loss_weight = aux_loss_weight
        self.corr_weight = corr_weight
        self.aux_weight = aux_weight
        self.lr = lr
        self.weight_decay = weight_decay
        self.ema_decay = ema_decay
        self.max_epochs = max_epochs
        self.patience = patience
        self.eras_per_batch = eras_per_batch
        self.n_valid_eras = n_valid_eras
        self.embargo = embargo
        self.seed = seed
        self.threads = threads
        self.device = device
        self.progress = progress

    def _build_network(self, frame: EraFrame, fit_eras: Sequence[str], n_main: int, n_aux: int) -> nn.Module:
        for name in ("d", "n_block", "ff", "context_dim", "token_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        self.tokens_ = fit_tokens(frame, fit_eras, self.feature_sets, self.token_size, self.cluster_tokens)
        return self._make_network(frame.features.shape[1], n_main, n_aux)

    def _make_network(self, n_features: int, n_main: int, n_aux: int) -> nn.Module:
        index = token_index(self.tokens_, n_features)
        return TSMixerNet(
            index,
            n_features,
            self.d,
            self.n_block,
            self.ff,
            self.context_dim,
            self.era_context,
            self.bin_embedding,
            self.dropout,
            n_main,
            n_aux,
        )

    def _export_config(self) -> dict[str, Any]:
        return {
            "architecture": "tsmixer",
            "tokens": [list(map(int, t)) for t in self.tokens_],
            "n_block": int(self.n_block),
            "era_context": bool(self.era_context),
            "bin_embedding": bool(self.bin_embedding),
        }


class MLPBaseline(EraNetEstimator):
    """A plain multi-target MLP on all features: the baseline TSMixer-Ext has to beat.

    `one_hot` feeds the 5-bin one-hot of each feature instead of its scaled value, so that the
    MLP gets the same per-bin input freedom as TSMixer-Ext's bin embeddings (a fairer ablation).
    """

    kind = "mlp"

    def __init__(
        self,
        hidden: Sequence[int] = (64, 64),
        one_hot: bool = False,
        dropout: float = 0.1,
        head: str = "ce",
        aux_loss_weight: float = 1.0,
        corr_weight: float = 0.0,
        aux_weight: float = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        ema_decay: float = 0.0,
        max_epochs: int = 30,
        patience: int = 5,
        eras_per_batch: int = 1,
        n_valid_eras: int | None = None,
        embargo: int | None = None,
        seed: int = 0,
        threads: int = 1,
        device: str = "cpu",
        progress: bool = True,
    ):
        self.hidden = hidden
        self.one_hot = one_hot
        self.dropout = dropout
        self.head = head
        self.aux_loss_weight = aux_loss_weight
        self.corr_weight = corr_weight
        self.aux_weight = aux_weight
        self.lr = lr
        self.weight_decay = weight_decay
        self.ema_decay = ema_decay
        self.max_epochs = max_epochs
        self.patience = patience
        self.eras_per_batch = eras_per_batch
        self.n_valid_eras = n_valid_eras
        self.embargo = embargo
        self.seed = seed
        self.threads = threads
        self.device = device
        self.progress = progress

    def _make_network(self, n_features: int, n_main: int, n_aux: int) -> nn.Module:
        hidden = [int(h) for h in self.hidden]
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden must list at least one positive layer width, got {self.hidden}")
        return MLPNet(n_features, hidden, self.dropout, self.one_hot, n_main, n_aux)

    def _export_config(self) -> dict[str, Any]:
        return {"architecture": "mlp", "n_layers": len(self.hidden), "one_hot": bool(self.one_hot)}


def n_parameters(estimator: EraNetEstimator) -> int:
    """Trainable parameters of a fitted estimator (for comparing model sizes); the padding slots of
    TSMixer's token embeddings are not counted, as they stay zero."""
    estimator._check_fitted()
    network = estimator.network_
    total = sum(p.numel() for p in network.parameters())
    if isinstance(network, TSMixerNet):
        padded = int((network.index >= network.n_features).sum())
        total -= padded * network.embed_w.shape[-1] * (1 + (N_BINS if network.bin_w is not None else 0))
    return int(total)


DEFAULT_SPACE: dict[str, list[Any]] = {
    "n_block": [1, 2, 3],
    "d": [16, 32, 48],
    "ff": [32, 64, 128],
    "dropout": [0.0, 0.1, 0.2],
    "lr": [3e-3, 1e-2, 2e-2],
    "era_context": [True, False],
    "head": ["ce", "regression"],
}


def search(
    frame: EraFrame,
    *,
    space: Mapping[str, Sequence[Any]] | None = None,
    base_params: Mapping[str, Any] | None = None,
    estimator: type[EraNetEstimator] = TSMixerExt,
    n_trials: int = 8,
    budget_s: float | None = None,
    n_splits: int = 2,
    fold_eras: int | None = None,
    eras: Sequence[str] | None = None,
    target: str = MAIN_TARGET,
    aux_targets: Sequence[str] = (),
    embargo: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Random search (`pipeline.tuning.random_search`) over `space` within `n_trials` and `budget_s`
    seconds, scored by walk-forward CV on `eras` (default: all of the frame's).

    Each trial trains one model per EraWalkForward fold of `fold_eras` scored eras (default:
    len(eras) // (2 * n_splits + 2)), early-stopping inside the fold's training eras, and scores the
    fold's eras; the table holds the CV CORR mean and Sharpe over all scored eras, best first.
    `DEFAULT_SPACE` is the issue's list: blocks, width, feed-forward width, dropout, learning rate,
    era context and head (the token layout was settled by bench.tsmixer's ablations).
    """
    space = dict(DEFAULT_SPACE if space is None else space)
    valid = estimator().get_params()
    unknown = [k for k in [*space, *(base_params or {})] if k not in valid]
    if unknown:
        raise ValueError(f"unknown {estimator.__name__} parameter(s) {unknown} in space or base_params")
    eras = sorted(frame.era_order if eras is None else eras)
    embargo = default_embargo([target, *aux_targets]) if embargo is None else embargo
    fold_eras = fold_eras or max(1, len(eras) // (2 * n_splits + 2))
    folds = EraWalkForward(n_splits, embargo, validation_eras=fold_eras, min_train_eras=1).era_folds(eras)
    y = frame.targets[target].to_numpy()

    def evaluate(settings: dict[str, Any]) -> tuple[pd.Series, dict[str, Any]]:
        scores, epochs = [], []
        for fit_eras, val_eras in folds:
            model = estimator(**dict(base_params or {}) | settings).fit(
                frame, list(fit_eras), target=target, aux_targets=aux_targets
            )
            rows = frame.select_eras(val_eras)
            scores.append(
                per_era_corr(model.predict(frame.features[rows], frame.eras[rows]), y[rows], frame.eras[rows])
            )
            epochs.append(model.best_epoch_)
        return pd.concat(scores), {"best_epochs": epochs}

    return random_search(evaluate, space, n_trials, budget_s, seed)
