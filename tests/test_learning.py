"""Every sequence mechanism that accepts bits learns something on short copy through the real training loop.

Not a benchmark: a few hundred steps at d_model 32 on copy of length <= 5,
enough to catch a mechanism whose gradients are wired wrong or whose
output ignores its memory (its loss would stay at chance, BCE ~0.69).
"""

from __future__ import annotations

import pytest

from amlab.platform.spec import validate_run
from amlab.platform.train import LocalSession, train_loop
from amlab.platform.trial import TrialConfig
from amlab.workloads.registry import MECHANISMS

STEPS = 300
LEARNERS = [e.name for e in MECHANISMS if e.kind == "sequence" and "bits" in e.modalities]


@pytest.mark.slow
@pytest.mark.parametrize("name", LEARNERS)
def test_loss_falls_on_short_copy(name):
    fields = MECHANISMS.get(name).params.model_fields
    mech = {"name": name}
    if "d_model" in fields:
        mech["d_model"] = 32
    if "slots" in fields:
        mech.update(slots=16, width=8)
    spec = validate_run({
        "mechanism": mech,
        "task": {"name": "copy", "min_len": 1, "max_len": 5, "test_lens": [5]},
        "train": {"steps": STEPS, "batch_size": 16, "lr": 3e-3, "log_every": 20, "eval_every": STEPS,
                  "eval_batches": 1, "device": "cpu", "seed": 0},
    })
    session = LocalSession()
    train_loop(TrialConfig.local(spec), session)
    losses = [r["train/loss"] for r in session.reports]
    assert len(losses) == STEPS // 20
    assert losses[-1] < 0.9 * losses[0], f"{name}: train loss {losses[0]:.3f} -> {losses[-1]:.3f}"
