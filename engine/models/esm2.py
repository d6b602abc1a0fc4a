"""ESM^2: Elaborated Entire Space Supervised Multi-task Model.

Wen et al., "Entire Space Multi-Task Modeling via Post-Click Behavior Decomposition for
Conversion Rate Prediction", SIGIR 2020. The funnel impression -> click -> D-action (cart,
wish list) -> purchase is decomposed into conditional probabilities, one tower each over a
shared embedding, and every task's entire-space probability is their product:

    p(click)    = y1                                       y1 = P(click | x)
    p(cart)     = y1 * y2                                  y2 = P(cart | click, x)
    p(purchase) = y1 * (y2 * y3 + (1 - y2) * y4)           y3 = P(buy | cart, x)
                                                           y4 = P(buy | click, no cart, x)

y4 is the paper's "O-action" path (a purchase that skipped the cart); `o_action=False` drops it,
leaving the plain chain y1 * y2 * y3. Every loss is a BCE of an entire-space probability against
the task's own label, averaged over all impressions (no clicked-only subspace anywhere).

Seesaw's form takes any chain of T >= 2 binary tasks in funnel order: task t's probability is
the product of the first t conditional towers, and the O-action branch (for T >= 3) applies to the
last task, which may then skip the task before it. With T = 2 the model is ESMM; with click, cart,
purchase it is the paper's model. Outputs are logits computed in log space, `predict` gives the
exact products (see `engine/models/esmm.py`).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field

from engine.models.base import ModelParams
from engine.models.esmm import CascadeModel, CascadeParams, LogProb


class ESM2Params(CascadeParams):
    o_action: bool = Field(
        True,
        description="let the last action also happen without the one before it (purchase without cart)",
    )


class ESM2(CascadeModel):
    """ESM^2 (Wen et al., SIGIR 2020): click -> cart -> purchase as products of conditionals."""

    name: ClassVar[str] = "esm2"
    description: ClassVar[str] = (
        "A funnel (click -> cart -> purchase) as a product of conditional probabilities, every "
        "loss over all impressions."
    )
    Params: ClassVar[type[ModelParams]] = ESM2Params
    params: ESM2Params
    chain_meaning: ClassVar[str] = "each action implies the one before it, e.g. click, cart, purchase"

    @property
    def _has_o_path(self) -> bool:
        return self.params.o_action and len(self.tasks) >= 3

    def tower_names(self) -> list[str]:
        names = [f"stage_{t}" for t in self.task_names]
        if self._has_o_path:
            names.append(f"skip_{self.task_names[-1]}")
        return names

    def tower_tasks(self) -> dict[str, list[str]]:
        names = self.task_names
        out = {f"stage_{t}": names[i:] for i, t in enumerate(names)}
        if self._has_o_path:
            out[f"skip_{names[-1]}"] = [names[-1]]
        return out

    def tower_label(self, name: str) -> str:
        names = self.task_names
        if name.startswith("skip_"):
            return f"P({names[-1]} | {names[-3]}, no {names[-2]})"
        t = name[len("stage_") :]
        i = names.index(t)
        return f"P({t})" if i == 0 else f"P({t} | {names[i - 1]})"

    def _combine(
        self, logps: dict[str, LogProb], probs: dict[str, torch.Tensor]
    ) -> tuple[dict[str, LogProb], dict[str, torch.Tensor]]:
        names = self.task_names
        out_l: dict[str, LogProb] = {}
        out_p: dict[str, torch.Tensor] = {}
        for i, t in enumerate(names):
            stage_l, stage_p = logps[f"stage_{t}"], probs[f"stage_{t}"]
            if i == 0:
                out_l[t], out_p[t] = stage_l, stage_p
            elif i == len(names) - 1 and self._has_o_path:
                before = names[i - 2]
                via = logps[f"stage_{names[i - 1]}"]
                skip_l, skip_p = logps[f"skip_{t}"], probs[f"skip_{t}"]
                via_p = probs[f"stage_{names[i - 1]}"]
                out_l[t] = out_l[before] * via.mix(stage_l, skip_l)
                out_p[t] = out_p[before] * (via_p * stage_p + (1 - via_p) * skip_p)
            else:
                prev = names[i - 1]
                out_l[t] = out_l[prev] * stage_l
                out_p[t] = out_p[prev] * stage_p
        return out_l, out_p
