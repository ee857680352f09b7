"""Search cannot remove what defines a mechanism (issue 11).

The default search space (the registry's knobs, as a sweep's cells receive
them) keeps fast weights' inner loop (S >= 1), Q-MANN's bounded Hamming-like
similarity, hard attention's sampling (the soft-context probability stays
<= 0.5) and MemN2N's published form (sentence memories, position and
temporal encodings, adjacent tying).  The breaking values stay valid as
explicit ablations a spec asks for by name.
"""

from __future__ import annotations

import pytest

from amlab.platform.sweep_spec import validate_sweep
from amlab.workloads.registry import MECHANISMS, knob_table

# mechanism -> knob -> (a predicate every searched value must meet, what it protects)
KEEP = {
    "fast_weights": {"inner_steps": (lambda lo, hi: lo >= 1, "at least one inner step: the fast weights are read")},
    "hard_attention": {"soft_prob": (lambda lo, hi: hi <= 0.5, "sampling one position is the rule")},
}
FIXED = {  # knobs the default search never varies: their default is the mechanism
    "qmann": {"similarity": "hamming"},
    "memn2n": {"memory": "sentence", "words": "position", "position": "temporal", "tying": "adjacent"},
}
ABLATIONS = {"fast_weights": {"inner_steps": 0}, "qmann": {"similarity": "cosine"}, "hard_attention": {"soft_prob": 1.0},
             "memn2n": {"memory": "token", "words": "bag", "position": "none", "tying": "none"}}


def cell_space(mechanism: str) -> dict:
    """The default search space a sweep gives this mechanism's cell (no search.space in the spec)."""
    _, cells, _ = validate_sweep({"name": "limits", "mechanisms": [mechanism], "tasks": ["copy"]})
    (cell,) = cells
    return {k.removeprefix("mechanism."): v for k, v in cell.space.items() if k.startswith("mechanism.")}


@pytest.mark.parametrize("mechanism", sorted(KEEP))
def test_searched_ranges_keep_the_defining_values(mechanism):
    table, space = knob_table(MECHANISMS.get(mechanism).params), cell_space(mechanism)
    for knob, (holds, why) in KEEP[mechanism].items():
        assert table[knob]["search"] and knob in space, f"{mechanism}.{knob} should still be searched"
        dim = space[knob]
        assert holds(dim.low, dim.high), f"{mechanism}.{knob} searched over [{dim.low}, {dim.high}]: {why}"
        assert dim.low <= table[knob]["default"] <= dim.high, "the default must be a point of the searched range"


@pytest.mark.parametrize("mechanism", sorted(FIXED))
def test_defining_choices_are_never_searched(mechanism):
    table, space = knob_table(MECHANISMS.get(mechanism).params), cell_space(mechanism)
    for knob, value in FIXED[mechanism].items():
        assert table[knob]["default"] == value, f"{mechanism}.{knob} defaults to {table[knob]['default']!r}"
        assert not table[knob]["search"] and knob not in space, f"{mechanism}.{knob} must not be searched"


@pytest.mark.parametrize("mechanism", sorted(ABLATIONS))
def test_ablations_stay_available_by_name(mechanism):
    params = MECHANISMS.get(mechanism).params(**ABLATIONS[mechanism])
    for knob, value in ABLATIONS[mechanism].items():
        assert getattr(params, knob) == value


def test_an_explicit_search_space_may_ask_for_an_ablation():
    _, cells, _ = validate_sweep({"name": "ablation", "mechanisms": ["qmann"], "tasks": ["copy"],
                                  "search": {"space": {"qmann.similarity": {"choices": ["hamming", "cosine"]}}}})
    assert cells[0].space["mechanism.similarity"].choices == ["hamming", "cosine"]


def test_a_train_value_the_spec_fixes_is_not_searched():
    from amlab.platform.sweep_spec import validate_sweep

    fixed = {"name": "x", "mechanisms": ["lstm"], "tasks": ["copy"], "train": {"lr": 1e-4, "optimizer": "rmsprop"}}
    _, cells, _ = validate_sweep(fixed)
    assert "train.lr" not in cells[0].space, "the default lr range would replace the preset's published 1e-4"
    _, cells, _ = validate_sweep({**fixed, "train": {}})
    assert "train.lr" in cells[0].space
