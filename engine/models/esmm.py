"""ESMM: Entire Space Multi-task Model, and the cascade machinery ESM^2 reuses.

Ma et al., "Entire Space Multi-Task Model: An Effective Approach for Estimating Post-Click
Conversion Rate", SIGIR 2018. Two towers over one shared embedding: pCTR = P(click | x) and
pCVR = P(conversion | click, x). Neither pCVR nor its label is ever looked at on the clicked
subspace: the model predicts pCTCVR = pCTR * pCVR = P(click and conversion | x), and both losses,
BCE(pCTR, click) and BCE(pCTCVR, conversion), are averaged over the entire impression space. The
CVR tower learns only through pCTCVR, which removes the sample-selection bias of training CVR on
clicked rows and lets the dense click signal carry the sparse conversion tower.

Seesaw's form: the first task is the entry action (click); every later task k is a post-click
action with its own CVR tower, output pCTR * pCVR_k (with tasks click and purchase this is the
paper's model; with click, cart, purchase it is two ESMMs sharing the CTR tower - ESM^2 in
`esm2.py` chains them instead). All tasks must be binary (`check_tasks`).

Outputs are logits, as for every Seesaw model: logit(p) = log p - log(1 - p), with both terms
computed in log space from the towers' logits (`LogProb`), so BCE-with-logits on them is exactly
the entire-space BCE on the product, stable when p is tiny. `predict` returns the products
themselves (pCTR * pCVR, bit-exact) for the outputs of the latest forward pass. The conditional
probabilities are kept for inspection (`last_stage_probs`, `last_cvr`) and `post_click_metrics`
scores them on clicked rows only: the CVR metric of the ESMM paper (evaluation, never training).
"""

from __future__ import annotations

import itertools
import weakref
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from engine import metrics as M
from engine.datasets.base import FeatureSpec, Split, TaskSpec
from engine.models.base import MLP, FeatureEncoder, ModelParams, MTLModel
from engine.models.shared_bottom import HiddenSizes, encoder_params, hidden_label, input_label

# ------------------------------------------------------------------- probabilities in log space


@dataclass(frozen=True)
class LogProb:
    """A probability p held as (log p, log(1 - p)), so products and mixtures of tiny or
    near-one probabilities lose nothing to cancellation."""

    log_p: torch.Tensor
    log_q: torch.Tensor  # log(1 - p)

    @staticmethod
    def from_logit(z: torch.Tensor) -> LogProb:
        return LogProb(F.logsigmoid(z), F.logsigmoid(-z))

    def __mul__(self, other: LogProb) -> LogProb:
        """p * p'; 1 - p p' = (1 - p) + p (1 - p')."""
        return LogProb(self.log_p + other.log_p, torch.logaddexp(self.log_q, self.log_p + other.log_q))

    def mix(self, a: LogProb, b: LogProb) -> LogProb:
        """self * a + (1 - self) * b (a two-way mixture with weight self)."""
        return LogProb(
            torch.logaddexp(self.log_p + a.log_p, self.log_q + b.log_p),
            torch.logaddexp(self.log_p + a.log_q, self.log_q + b.log_q),
        )

    @property
    def logit(self) -> torch.Tensor:
        return self.log_p - self.log_q


def check_binary_chain(model_name: str, tasks: list[TaskSpec], what: str) -> None:
    """ValueError unless there are >= 2 tasks and all are binary (the funnel's actions)."""
    if len(tasks) < 2:
        raise ValueError(
            f"{model_name} needs two or more binary tasks in funnel order ({what}), "
            f"got {[t.name for t in tasks]}"
        )
    bad = [f"{t.name} ({t.kind})" for t in tasks if t.kind != "binary"]
    if bad:
        raise ValueError(f"{model_name} models a funnel of binary actions; not binary: {', '.join(bad)}")
    for prev, cur in itertools.pairwise(tasks):
        if prev.name not in cur.implies:
            raise ValueError(
                f"{model_name} needs each task to imply the one before it ({what}); the dataset does not "
                f"declare that {cur.name!r} implies {prev.name!r} - use a funnel such as recsys-sim's "
                "click, cart, purchase"
            )


class CascadeParams(ModelParams):
    tower_hidden: HiddenSizes = Field(
        default_factory=lambda: [64, 32], description="hidden sizes of each probability tower"
    )


class CascadeModel(MTLModel):
    """Base of the entire-space cascades: per-stage towers over one shared embedding, each
    giving the logit of a (conditional) probability; `_combine` turns those into each task's
    entire-space probability. Subclasses list their towers and which tasks each one reaches."""

    Params: ClassVar[type[ModelParams]] = CascadeParams
    params: CascadeParams
    #: what the task order must mean, for the error message of `check_tasks`
    chain_meaning: ClassVar[str] = ""

    @classmethod
    def check_tasks(cls, params: ModelParams, tasks: list[TaskSpec]) -> None:
        check_binary_chain(cls.name, list(tasks), cls.chain_meaning)

    def __init__(self, features: FeatureSpec, tasks: list[TaskSpec], params: CascadeParams) -> None:
        super().__init__(features, tasks, params)
        self.check_tasks(params, self.tasks)
        self.encoder = FeatureEncoder(features, params.embed_dim)
        names = self.tower_names()
        self.towers = nn.ModuleDict(
            {
                n: MLP(self.encoder.out_dim, params.tower_hidden, out_dim=1, dropout=params.dropout)
                for n in names
            }
        )
        #: stage tower name -> its probability (conditional on the previous stage) in the last
        #: forward pass, (B,), detached.
        self.last_stage_probs: dict[str, torch.Tensor] = {}
        #: task -> entire-space probability of the last forward pass (exact products), detached.
        self.last_probs: dict[str, torch.Tensor] = {}
        self._last_outputs: dict[str, weakref.ref[torch.Tensor]] = {}

    # --- what subclasses define -------------------------------------------------------------

    def tower_names(self) -> list[str]:
        raise NotImplementedError

    def tower_tasks(self) -> dict[str, list[str]]:
        """Tower name -> the tasks whose output depends on it."""
        raise NotImplementedError

    def _combine(
        self, logps: dict[str, LogProb], probs: dict[str, torch.Tensor]
    ) -> tuple[dict[str, LogProb], dict[str, torch.Tensor]]:
        """Stage (log-)probabilities -> each task's entire-space LogProb and exact product."""
        raise NotImplementedError

    def post_click_tasks(self) -> dict[str, str]:
        """Later task -> how its probability given the first action is named (for the docs)."""
        return {}

    # --- the model --------------------------------------------------------------------------

    def stage_logits(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Tower name -> logit of that tower's probability, (B,)."""
        x = self.encoder(batch)
        return {n: tower(x).squeeze(-1) for n, tower in self.towers.items()}

    def probabilities(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Task -> entire-space probability, and `stage:<tower>` -> the tower's probability."""
        z = self.stage_logits(batch)
        probs = {n: torch.sigmoid(v) for n, v in z.items()}
        _, task_probs = self._combine({n: LogProb.from_logit(v) for n, v in z.items()}, probs)
        return {**task_probs, **{f"stage:{n}": p for n, p in probs.items()}}

    def forward(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        z = self.stage_logits(batch)
        probs = {n: torch.sigmoid(v) for n, v in z.items()}
        logps, task_probs = self._combine({n: LogProb.from_logit(v) for n, v in z.items()}, probs)
        outputs = {t: logps[t].logit for t in self.task_names}
        self.last_stage_probs = {n: p.detach() for n, p in probs.items()}
        self.last_probs = {t: p.detach() for t, p in task_probs.items()}
        self._last_outputs = {t: weakref.ref(o) for t, o in outputs.items()}
        return outputs

    def predict(self, outputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The entire-space probabilities: the exact tower products for the outputs of the last
        forward pass, sigmoid(logit) (equal up to rounding) for any other outputs."""
        preds: dict[str, torch.Tensor] = {}
        for t in self.task_names:
            ref = self._last_outputs.get(t)
            if ref is not None and ref() is outputs[t]:
                preds[t] = self.last_probs[t]
            else:
                preds[t] = torch.sigmoid(outputs[t])
        return preds

    def task_losses(
        self,
        outputs: dict[str, torch.Tensor],
        targets: dict[str, torch.Tensor],
        masks: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """BCE of every task's entire-space probability against its own label, averaged over
        every impression. No loss term is restricted to the clicked rows: a later stage's tower
        is trained only through the product it sits in. (A dataset mask, marking rows whose
        label is unknown, is still honoured by the base implementation.)"""
        return super().task_losses(outputs, targets, masks)

    @torch.no_grad()
    def post_click_probabilities(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Later task -> P(task | first task happened, x): the CVR-style conditional. Equal to
        the task's entire-space probability divided by pCTR."""
        probs = self.probabilities(batch)
        first = self.task_names[0]
        return {t: probs[t] / probs[first] for t in self.task_names[1:]}

    def shared_blocks(self) -> dict[str, list[nn.Parameter]]:
        if len(self.tasks) < 2:
            return {}
        blocks: dict[str, list[nn.Parameter]] = {"embedding": encoder_params(self.encoder)}
        for name, tasks in self.tower_tasks().items():
            if len(tasks) > 1:
                blocks[f"tower_{name}"] = list(self.towers[name].parameters())
        return {k: v for k, v in blocks.items() if v}

    def diagram(self) -> dict[str, list]:
        p = self.params
        nodes: list[tuple[str, str, str]] = [
            ("in", input_label(self.features), "input"),
            ("embedding", f"embeddings (dim {p.embed_dim}), shared", "shared"),
        ]
        edges: list[tuple[str, str]] = [("in", "embedding")]
        for name, tasks in self.tower_tasks().items():
            kind = "shared" if len(tasks) > 1 else "task"
            nodes.append(
                (f"tower_{name}", f"{self.tower_label(name)} tower ({hidden_label(p.tower_hidden)})", kind)
            )
            edges.append(("embedding", f"tower_{name}"))
            edges += [(f"tower_{name}", f"out_{t}") for t in tasks]
        for t in self.task_names:
            nodes.append((f"out_{t}", t, "output"))
        return {"nodes": nodes, "edges": edges}

    def tower_label(self, name: str) -> str:
        return name


class ESMM(CascadeModel):
    """ESMM (Ma et al., SIGIR 2018): pCTCVR = pCTR * pCVR, both losses over the entire space."""

    name: ClassVar[str] = "esmm"
    description: ClassVar[str] = (
        "Click and conversion towers; conversion is learned only through P(click and buy) over all "
        "impressions (no selection bias)."
    )
    chain_meaning: ClassVar[str] = "first the click, then post-click actions such as purchase"

    def tower_names(self) -> list[str]:
        return ["ctr", *(f"cvr_{t}" for t in self.task_names[1:])]

    def tower_tasks(self) -> dict[str, list[str]]:
        return {"ctr": list(self.task_names), **{f"cvr_{t}": [t] for t in self.task_names[1:]}}

    def tower_label(self, name: str) -> str:
        return "pCTR" if name == "ctr" else f"pCVR ({name[4:]} | {self.task_names[0]})"

    def _combine(
        self, logps: dict[str, LogProb], probs: dict[str, torch.Tensor]
    ) -> tuple[dict[str, LogProb], dict[str, torch.Tensor]]:
        first, *later = self.task_names
        out_l = {first: logps["ctr"]}
        out_p = {first: probs["ctr"]}
        for t in later:
            out_l[t] = logps["ctr"] * logps[f"cvr_{t}"]
            out_p[t] = probs["ctr"] * probs[f"cvr_{t}"]
        return out_l, out_p

    @property
    def last_ctr(self) -> torch.Tensor | None:
        """pCTR of the last forward pass, (B,), detached."""
        return self.last_stage_probs.get("ctr")

    @property
    def last_cvr(self) -> dict[str, torch.Tensor]:
        """Later task -> its pCVR (probability given a click) of the last forward pass."""
        return {
            t: self.last_stage_probs[f"cvr_{t}"]
            for t in self.task_names[1:]
            if f"cvr_{t}" in self.last_stage_probs
        }


@torch.no_grad()
def post_click_metrics(
    model: CascadeModel, split: Split, batch_size: int = 8192
) -> dict[str, dict[str, float]]:
    """CVR-style metrics: for every later task, P(task | first task, x) scored against the task's
    label on the rows where the first task happened (the clicked rows) only. An evaluation view
    (the ESMM paper reports CVR AUC so); training never uses the clicked subspace."""
    was_training = model.training
    model.eval()
    first = model.task_names[0]
    parts: dict[str, list[torch.Tensor]] = {t: [] for t in model.task_names[1:]}
    n = len(split)
    for start in range(0, n, batch_size):
        idx = torch.arange(start, min(start + batch_size, n))
        feats = {k: v[idx] for k, v in split.features.items()}
        for t, p in model.post_click_probabilities(feats).items():
            parts[t].append(p.float().cpu())
    model.train(was_training)
    clicked = split.targets[first].cpu().numpy() > 0.5
    out: dict[str, dict[str, float]] = {}
    for t, ps in parts.items():
        y = split.targets[t].cpu().numpy()[clicked]
        p = torch.cat(ps).numpy()[clicked] if ps else np.zeros(0)
        out[t] = {m: (M.compute(m, y, p) if len(y) else float("nan")) for m in ("auc", "logloss")} | {
            "n_rows": float(len(y))
        }
    return out
