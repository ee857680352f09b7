"""Published numbers (CATALOGUE.md, "Published numbers") as data, with the setting each one holds for.

A paper row names the mechanism the paper ranks first (`winner`), the ones it
ranks below (`losers`), and one or more `Setting`s: the task, metric and
conditions a published number was measured under, each condition a `Need`
(a predicate over one task or mechanism parameter).  For a sweep's cells the
report picks the setting they meet (`match`); if none, the row says
"different setting", shows the paper's setting beside ours, and judges no
size.  Only the direction and rough size of a gap (small / moderate / large,
relative to the chance-to-perfect distance, see stats.gap_size) are ever
compared, never absolute numbers.  `approximate` marks numbers CATALOGUE.md
flags (m) or rows whose mechanisms only stand in for the paper's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from amlab.platform.stats import INSUFFICIENT, Comparison

COMPARED = "compared"  # a Need on every mechanism of the comparison (e.g. equal widths)
TASK = "task"


@dataclass(frozen=True)
class Need:
    """One condition of a paper's setting: `what` the paper did, checked by `holds` on parameter `key` of `on`.

    `on` is "task", "compared" (each compared mechanism), or a mechanism name
    (checked only when that mechanism is compared).  A missing key fails.
    """

    what: str
    on: str
    key: str
    holds: Callable[[Any], bool]

    def unmet(self, params: Mapping[str, Mapping[str, Any]], compared: tuple[str, ...]) -> list[str]:
        """'paper: <what>; ours: <who> <key>=<value>' for each party this need fails on (empty if it holds)."""
        parties = [TASK] if self.on == TASK else list(compared) if self.on == COMPARED else \
            [self.on] if self.on in compared else []
        out = []
        for who in parties:
            value = params.get(who, {}).get(self.key)
            if value is None or not self.holds(value):
                shown = "not set" if value is None else _value(value)
                out.append(f"paper: {self.what}; ours: {who} {self.key}={shown}")
        return out


@dataclass(frozen=True)
class Setting:
    """Where a published number holds: our task and metric that mirror it, its conditions, its numbers."""

    label: str
    task: str
    metric: str
    needs: tuple[Need, ...]
    published: dict[str, str]
    size: str | None  # the published gap: "none" (no difference), small / moderate / large, or None (direction only)

    def describe(self) -> str:
        return (f"{self.label}: " + "; ".join(n.what for n in self.needs)) if self.needs else self.label


@dataclass(frozen=True)
class Paper:
    source: str
    winner: str
    losers: tuple[str, ...]
    settings: tuple[Setting, ...]
    approximate: bool = False
    note: str = ""
    params: dict[str, str] = field(default_factory=dict)  # the paper's parameter counts, where it gives them
    shown_on: tuple[str, ...] = ()  # further tasks of ours the row is shown against, as a proxy (never a match)

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys([s.task for s in self.settings] + list(self.shown_on)))


def _value(v: Any) -> str:
    return ", ".join(map(str, v)) if isinstance(v, list | tuple) else str(v)


def _lengths_to(n: int) -> Callable[[Any], bool]:
    return lambda lens: max(lens) >= n


def _equals(x: Any) -> Callable[[Any], bool]:
    return lambda v: v == x


def _names(word: str) -> Callable[[Any], bool]:
    return lambda path: word in str(path).lower()


def _mqar(length: int, pairs: int) -> Setting:
    return Setting(
        f"len {length}, {pairs} pairs", "mqar", "accuracy",
        (Need(f"sequence length {length}", TASK, "seq_len", _equals(length)),
         Need(f"{pairs} key-value pairs", TASK, "num_kv_pairs", _equals(pairs)),
         Need("model width d=64 for every mechanism", COMPARED, "d_model", _equals(64))),
        {"transformer": "solves it (≈ 100 % accuracy) at d=64", "lstm": "needs a width growing with length and pairs",
         "gru": "needs a width growing with length and pairs"},
        "large")


def _babi(family: int, memn2n: str, lstm: str, size: str) -> Setting:
    return Setting(
        f"task {family}", "babi", "error",
        (Need(f"bAbI task {family} ({family} supporting fact{'s' if family > 1 else ''})", TASK, "family", _equals(family)),
         Need("memories are sentences (position + temporal encoding)", "memn2n", "memory", _equals("sentence"))),
        {"memn2n": memn2n, "lstm": lstm}, size)


def _ba(r: int, fast: str, lstm: str, size: str) -> Setting:
    return Setting(
        f"R={r}", "assoc_retrieval", "error",
        (Need("26 letters as keys", TASK, "vocab", _equals(26)),
         Need(f"R={r} hidden units for every mechanism", COMPARED, "d_model", _equals(r))),
        {"fast_weights": fast, "lstm": lstm}, size)


PAPERS: dict[str, Paper] = {
    "graves2014-copy": Paper(
        "Graves et al. 2014, Neural Turing Machines", "ntm", ("lstm",),
        (Setting("copy to length 120", "copy", "bit_errors",
                 (Need("8-bit vectors", TASK, "width", _equals(8)),
                  Need("trained on lengths from 1", TASK, "min_len", _equals(1)),
                  Need("trained on lengths up to 20", TASK, "max_len", _equals(20)),
                  Need("tested up to length 120", TASK, "test_lens", _lengths_to(120)),
                  Need("memory of 128 rows (128 × 20)", "ntm", "slots", lambda n: n >= 128)),
                 {"ntm": "≈ 0 bit errors up to length 120", "lstm": "fails beyond length ~20"}, "large"),),
        params={"ntm": "67,561 (LSTM controller; 17,162 feed-forward)", "lstm": "1,352,969 (3 × 256)"},
    ),
    "graves2014-recall": Paper(
        "Graves et al. 2014, Neural Turing Machines", "ntm", ("lstm",),
        (Setting("associative recall, tested on 12 items", "associative_recall", "bit_errors",
                 (Need("items of 3 vectors", TASK, "item_len", _equals(3)),
                  Need("6-bit vectors", TASK, "width", _equals(6)),
                  Need("trained on at least 2 items", TASK, "min_items", _equals(2)),
                  Need("trained on up to 6 items", TASK, "max_items", _equals(6)),
                  Need("tested on 12 items", TASK, "test_items", lambda items: 12 in items)),
                 {"ntm": "≈ 0 bit errors by ~30k episodes; generalises to 12 items",
                  "lstm": "not at 0 bit errors after 1M episodes"}, None),),
    ),
    "ba2016-retrieval": Paper(
        "Ba et al. 2016, Using Fast Weights to Attend to the Recent Past", "fast_weights", ("lstm",),
        (_ba(20, "1.81 %", "60.81 %", "large"), _ba(50, "0 %", "1.85 %", "small")),
        approximate=True,
    ),
    "arora2023-mqar": Paper(
        "Arora et al. 2023, Zoology", "transformer", ("lstm", "gru"),
        (_mqar(64, 4), _mqar(128, 8), _mqar(256, 16)),
        approximate=True,
        note="Zoology's recurrences are H3, Hyena, RWKV and Mamba; our LSTM and GRU stand in for them",
    ),
    "sukhbaatar2015-babi": Paper(
        "Sukhbaatar et al. 2015, End-To-End Memory Networks", "memn2n", ("lstm",),
        (_babi(1, "0.0 %", "0.0 %", "none"), _babi(2, "0.3 %", "81.9 %", "large"), _babi(3, "9.3 %", "83.1 %", "large")),
        note="published on the bAbI 10k files; our generated stories (no data_dir) are bAbI-style",
    ),
    "merity2019-sha-rnn": Paper(
        "Merity 2019, Single Headed Attention RNN", "sha_rnn", ("lstm",),
        (Setting("enwik8", "char_lm", "bpc", (Need("enwik8 (a path naming enwik8)", TASK, "path", _names("enwik8")),),
                 {"sha_rnn": "1.076 bpc (one head)", "lstm": "1.33 bpc (the SHA-RNN without attention)"}, "small"),),
        approximate=True,
        note="the paper's no-attention baseline is the SHA-RNN without its head; our LSTM stands in for it",
    ),
    "landi2021-wm-lstm": Paper(
        "Landi et al. 2021, Working Memory Connections for LSTM", "wm_lstm", ("lstm",),
        (Setting("PTB characters", "char_lm", "bpc", (Need("Penn Treebank characters (a path naming ptb)", TASK, "path",
                                                            _names("ptb")),),
                 {"wm_lstm": "1.299 bpc", "lstm": "1.334 bpc"}, "small"),),
        approximate=True, shown_on=("adding",),
        note="shown against the adding problem only as a proxy: another task and metric, so never a verdict there",
    ),
}

# A perfect score per metric: the far end of the chance-to-perfect distance that gap sizes are measured on.
PERFECT = {"accuracy": 1.0, "error": 0.0, "bit_errors": 0.0, "mse": 0.0, "bpc": 0.0}


def applicable(mechanisms_by_task: Mapping[str, set[str]]) -> list[tuple[str, Paper, str, list[str]]]:
    """(key, paper, our task, losers present) for every paper and task of its with its winner and some loser."""
    out = []
    for key, paper in PAPERS.items():
        for task in paper.tasks:
            have = mechanisms_by_task.get(task, set())
            losers = [m for m in paper.losers if m in have]
            if paper.winner in have and losers:
                out.append((key, paper, task, losers))
    return out


def match(paper: Paper, task: str, metric: str, params: Mapping[str, Mapping[str, Any]],
          compared: tuple[str, ...]) -> tuple[Setting, list[str]]:
    """The paper's setting our cells are in (and no differences), or the closest one and every difference.

    params: {"task": our task params, <mechanism>: its params} for the
    compared mechanisms.  A task or metric the paper did not use is always a
    difference, so a proxy row can never match.
    """
    best: tuple[Setting, list[str]] | None = None
    for s in paper.settings:
        unmet = [] if s.task == task else [f"paper: task {s.task}; ours: task {task}"]
        unmet += [] if s.metric == metric else [f"paper: metric {s.metric}; ours: metric {metric}"]
        if s.task == task:
            unmet += [u for n in s.needs for u in n.unmet(params, compared)]
        if not unmet:
            return s, []
        if best is None or len(unmet) < len(best[1]):
            best = (s, unmet)
    assert best is not None, "a paper row has at least one setting"
    return best


def verdict(setting: Setting, unmet: list[str], comparison: Comparison, ours_size: str | None) -> dict[str, Any]:
    """Does the paper's direction (winner better than loser) and rough gap size reproduce in our cells?

    comparison: our winner cell against our loser cell, paired by seed
    (stats.compare_paired; "ahead" = the paper's winner is ahead).
    ours_size: stats.gap_size of its mean difference (None when not run).
    Order: not run, different setting, insufficient seeds, then direction and size.
    """
    if ours_size is None:
        return {"verdict": "not run", "ours_size": None, "detail": "one of the two cells has no result"}
    if unmet:
        return {"verdict": "different setting", "ours_size": None,
                "detail": "no size verdict; at our setting the paper's winner against its loser is " + comparison.label}
    if comparison.interval is None:
        return {"verdict": INSUFFICIENT, "ours_size": None, "detail": comparison.label}
    if setting.size == "none" and comparison.outcome == "tie" and ours_size == "small":
        return {"verdict": "reproduces", "ours_size": ours_size,
                "detail": "no difference resolved and a small gap, as in the paper, which found none"}
    if setting.size == "none" and comparison.outcome != "tie":
        who = "winner" if comparison.outcome == "ahead" else "loser"
        return {"verdict": "differs", "ours_size": ours_size,
                "detail": f"the paper found no difference; here the paper's {who} is ahead by a {ours_size} gap"}
    if comparison.outcome == "tie":
        return {"verdict": "tie", "ours_size": ours_size,
                "detail": f"the paired interval includes 0: no direction at our scale (paper: {setting.size or 'a'} gap)"}
    if comparison.outcome == "behind":
        return {"verdict": "reversed", "ours_size": ours_size, "detail": f"the paper's loser wins here by a {ours_size} gap"}
    if setting.size is None:
        return {"verdict": "reproduces", "ours_size": ours_size,
                "detail": f"same direction (the paper states no gap size; ours is {ours_size})"}
    if ours_size == setting.size:
        return {"verdict": "reproduces", "ours_size": ours_size, "detail": f"same direction, {ours_size} gap as in the paper"}
    return {"verdict": "direction only", "ours_size": ours_size,
            "detail": f"same direction; our gap is {ours_size}, the paper's {setting.size}"}


def our_setting(task: str, params: Mapping[str, Mapping[str, Any]], compared: tuple[str, ...], setting: Setting) -> str:
    """Our task with all its parameters, and each compared mechanism's parameters the paper's setting names."""
    task_part = ": ".join([task, ", ".join(f"{k}={_value(v)}" for k, v in params.get(TASK, {}).items() if v is not None)]
                          ).removesuffix(": ")
    keys = {m: ["d_model", *[n.key for n in setting.needs if n.on in (COMPARED, m)]] for m in compared}
    mech_parts = [f"{m}: " + ", ".join(f"{k}={_value(params.get(m, {}).get(k))}" for k in dict.fromkeys(keys[m]))
                  for m in compared]
    return "; ".join([task_part, *mech_parts])
