"""Sample-selection bias on recsys-sim, measured against the simulator's ground truth.

A conversion-rate (CVR) model is used on every impression (to rank what to show) but the
conventional one is trained on clicked impressions only, the only rows with a conversion label:
a sample that the click itself selects. ESMM (engine.models.esmm) instead learns pCVR through
pCTCVR = pCTR * pCVR over every impression. recsys-sim knows each impression's true
P(purchase | click) (`p_cart_given_click * p_purchase_given_cart`) whether or not it was clicked,
so the bias can be measured where the model is used, not only where it was trained.

`truth` re-simulates a dataset's world and cuts the split's rows exactly as the dataset does
(`split_indices`, rows in ascending order); `predictions` loads a finished run's checkpoint
(inference only) and returns its pCTR and pCVR per impression of the split; `bias_report`
condenses both into numbers: rank correlation with the true pCVR on all impressions and on
clicked ones, CVR AUC on clicked rows, CTCVR AUC on all rows, and the mean pCVR against the truth.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from engine import metrics as M
from engine.config import load_config, resolve
from engine.datasets import load_dataset
from engine.datasets.base import split_indices
from engine.datasets.recsys_sim import RecsysSimParams, simulate
from engine.models import build_model
from engine.store import Lake
from engine.train import load_checkpoint

SPLITS = ("train", "val", "test")


def truth(dataset_params: dict[str, Any], seed: int, split: str = "test") -> dict[str, np.ndarray]:
    """The simulator's latent probabilities and labels for the rows of one split of recsys-sim."""
    p = RecsysSimParams(**dataset_params)
    sim = simulate(p)
    idx = np.sort(split_indices(p.n_impressions, seed)[SPLITS.index(split)])
    return {
        "p_click": sim["p_click"][idx],
        "p_cvr": (sim["p_cart_given_click"] * sim["p_purchase_given_cart"])[idx],
        "click": sim["click"][idx].astype(bool),
        "purchase": sim["purchase"][idx].astype(bool),
    }


@torch.no_grad()
def predictions(run_id: str, lake: Lake | None = None, split: str = "test") -> dict[str, np.ndarray]:
    """pCTR and pCVR of a finished click -> purchase run on every row of `split`.

    A cascade model (ESMM) gives pCVR from its CVR tower (post_click_probabilities); a plain
    model gives pCTR from its click head and, for a purchase head trained on clicked rows
    (label_space "clicked"), pCVR directly; for one trained on the entire space, pCTCVR / pCTR.
    """
    lake = lake or Lake()
    cfg = load_config(lake.config(run_id))
    resolved = resolve(cfg)
    tasks = list(resolved["tasks"])
    if tasks[:1] != ["click"] or "purchase" not in tasks:
        raise ValueError(f"run {run_id} does not predict click and purchase (tasks {tasks})")
    data = load_dataset(cfg.dataset, resolved["dataset"], cfg.seed).select_tasks(tasks)
    model = build_model(cfg.arch, data.features, data.tasks, resolved["arch"])
    ckpt = load_checkpoint(lake.run_dir(run_id) / "checkpoint.pt")
    model.load_state_dict(ckpt["state_dict"])
    model.eval()
    feats = getattr(data, split).features
    outputs = model(feats)
    probs = model.predict(outputs)
    pctr = probs["click"].double().numpy()
    post = getattr(model, "post_click_probabilities", None)
    if callable(post):
        pcvr = post(feats)["purchase"].double().numpy()
    elif getattr(resolved["dataset"], "label_space", "entire") == "clicked":
        pcvr = probs["purchase"].double().numpy()
    else:
        pcvr = np.clip(probs["purchase"].double().numpy() / np.maximum(pctr, 1e-12), 0.0, 1.0)
    return {"pctr": pctr, "pcvr": pcvr}


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3:
        return float("nan")
    ra = np.argsort(np.argsort(a, kind="stable"), kind="stable").astype(float)
    rb = np.argsort(np.argsort(b, kind="stable"), kind="stable").astype(float)
    c = np.corrcoef(ra, rb)[0, 1]
    return float(c) if np.isfinite(c) else float("nan")


def bias_report(pred: dict[str, np.ndarray], true: dict[str, np.ndarray]) -> dict[str, float]:
    """What a model's pCVR gets right where it is trained (clicked rows) and where it is used
    (every impression), against the simulator's truth."""
    clicked = true["click"]
    pcvr, p_true = pred["pcvr"], true["p_cvr"]
    y = true["purchase"].astype(float)
    return {
        "rank_corr_all": _spearman(pcvr, p_true),
        "rank_corr_clicked": _spearman(pcvr[clicked], p_true[clicked]),
        "cvr_auc_clicked": M.compute("auc", y[clicked], pcvr[clicked]) if clicked.any() else float("nan"),
        "ctcvr_auc_all": M.compute("auc", y, pred["pctr"] * pcvr),
        "mean_pcvr_all": float(pcvr.mean()),
        "true_mean_pcvr_all": float(p_true.mean()),
        "mean_pcvr_unclicked": float(pcvr[~clicked].mean()) if (~clicked).any() else float("nan"),
        "true_mean_pcvr_unclicked": float(p_true[~clicked].mean()) if (~clicked).any() else float("nan"),
    }


def calibration_bins(pcvr: np.ndarray, p_true: np.ndarray, n_bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(mean true pCVR, mean predicted pCVR) per quantile bin of the true pCVR."""
    order = np.argsort(p_true, kind="stable")
    bins = np.array_split(order, n_bins)
    t = np.array([p_true[b].mean() for b in bins if len(b)])
    p = np.array([pcvr[b].mean() for b in bins if len(b)])
    return t, p
