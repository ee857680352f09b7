"""Golden fingerprints: a hash of each task's first batches for fixed seeds.

Any change to a generator changes its hash and fails here, so a change to
the data cannot pass unnoticed.  After an intended change, regenerate the
entry with `AMCTL_UPDATE_GOLDEN=1 pytest tests/test_task_fingerprints.py -k NAME`
and say why in the commit.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from amlab.workloads.registry import TASKS
from amlab.workloads.tasks.base import generator

GOLDEN = Path(__file__).parent / "golden" / "task_fingerprints.json"


def fingerprint(name: str) -> str:
    task = TASKS.get(name).build(TASKS.get(name).params())
    h = hashlib.sha256()
    for split in ("train", "val", "test"):
        group = next(iter(task.eval_groups(split).values())) if split != "train" else {}
        b = task.sample(generator(0, split, 0, 0), 4, split, **group)
        for t in (b.inputs, b.targets, b.mask):
            h.update(str(tuple(t.shape)).encode())
            h.update(t.detach().to(torch.float64).contiguous().numpy().tobytes())
    return h.hexdigest()[:20]


@pytest.mark.parametrize("name", TASKS.names())
def test_first_batches_match_golden(name):
    golden = json.loads(GOLDEN.read_text()) if GOLDEN.exists() else {}
    got = fingerprint(name)
    if os.environ.get("AMCTL_UPDATE_GOLDEN"):
        golden[name] = got
        GOLDEN.write_text(json.dumps(dict(sorted(golden.items())), indent=1) + "\n")
    assert name in golden, f"no golden fingerprint for {name}: run with AMCTL_UPDATE_GOLDEN=1 to record it"
    assert got == golden[name], f"{name}: first batches changed (fingerprint {got} != {golden[name]})"


def test_fingerprint_depends_on_seed():
    task = TASKS.get("copy").build(TASKS.get("copy").params())
    a = task.sample(generator(0, "train", 0, 0), 4, "train")
    b = task.sample(generator(1, "train", 0, 0), 4, "train")
    c = task.sample(generator(0, "train", 0, 0), 4, "train")
    assert a.inputs.shape != b.inputs.shape or not torch.equal(a.inputs, b.inputs)
    assert torch.equal(a.inputs, c.inputs) and torch.equal(a.targets, c.targets)
