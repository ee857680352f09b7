"""Published numbers (CATALOGUE.md, "Published numbers") as data, for the report's "paper vs ours".

Keyed like the presets' `paper` field.  A row applies to any sweep that has
the paper's task with its winner and at least one of its losers, so the quick
study gets the rows its cells mirror too.  `size` is the rough size of the
published gap (small / moderate / large, relative to the distance from chance
to a perfect score, see stats.gap_size); only direction and size are ever
compared, never the absolute numbers.  `approximate` marks numbers CATALOGUE.md
flags (m): read off a figure or not exactly the same setting.
"""

from __future__ import annotations

from typing import Any

PAPERS: dict[str, dict[str, Any]] = {
    "graves2014-copy": {
        "source": "Graves et al. 2014, Neural Turing Machines",
        "setting": "copy, trained on lengths ≤ 20, tested to 120 (bit errors per sequence)",
        "task": "copy", "winner": "ntm", "losers": ["lstm"],
        "published": {"ntm": "≈ 0 bit errors up to length 120", "lstm": "fails beyond length ~20"},
        "size": "large", "approximate": False,
    },
    "ba2016-retrieval": {
        "source": "Ba et al. 2016, Using Fast Weights to Attend to the Recent Past",
        "setting": "associative retrieval test error, R=20",
        "task": "assoc_retrieval", "winner": "fast_weights", "losers": ["lstm"],
        "published": {"fast_weights": "1.81 %", "lstm": "60.81 %"},
        "size": "large", "approximate": True,
    },
    "arora2023-mqar": {
        "source": "Arora et al. 2023, Zoology",
        "setting": "MQAR, (len, kv) ∈ (64,4), (128,8), (256,16), model width 64",
        "task": "mqar", "winner": "transformer", "losers": ["lstm", "gru"],
        "published": {"transformer": "solves all (≈ 100 % accuracy)", "lstm": "needs width growing with length",
                      "gru": "needs width growing with length"},
        "size": "large", "approximate": False,
    },
    "sukhbaatar2015-babi": {
        "source": "Sukhbaatar et al. 2015, End-To-End Memory Networks",
        "setting": "bAbI 10k, task 2 error (tasks 1/2/3: MemN2N 0.0/0.3/9.3 %, LSTM 0.0/81.9/83.1 %)",
        "task": "babi", "winner": "memn2n", "losers": ["lstm"],
        "published": {"memn2n": "0.3 %", "lstm": "81.9 %"},
        "size": "large", "approximate": False,
    },
    "landi2021-wm-lstm": {
        "source": "Landi et al. 2021, Working Memory Connections for LSTM",
        "setting": "PTB character-level bpc (ours: the adding problem, so only the direction carries over)",
        "task": "adding", "winner": "wm_lstm", "losers": ["lstm"],
        "published": {"wm_lstm": "1.299 bpc", "lstm": "1.334 bpc"},
        "size": "small", "approximate": True,
    },
}

# A perfect score per metric: the far end of the chance-to-perfect distance that gap sizes are measured on.
PERFECT = {"accuracy": 1.0, "error": 0.0, "bit_errors": 0.0, "mse": 0.0, "bpc": 0.0}


def applicable(mechanisms_by_task: dict[str, set[str]]) -> list[tuple[str, dict[str, Any], list[str]]]:
    """(key, row, losers present) for every paper whose task, winner and some loser the sweep has."""
    out = []
    for key, row in PAPERS.items():
        have = mechanisms_by_task.get(row["task"], set())
        losers = [m for m in row["losers"] if m in have]
        if row["winner"] in have and losers:
            out.append((key, row, losers))
    return out
