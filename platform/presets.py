"""Built-in studies: the quick study (`amctl launch sweep` with no spec) and canonical paper mirrors.

Each preset states what the paper predicts, so the report can say whether
the direction and rough size of the gap reproduce at our small scale.
"""

from __future__ import annotations

from typing import Any

PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "predicts": "Attention solves MQAR where recurrences struggle at equal width; external memory "
                    "(NTM) and fast weights beat the LSTM on retrieval; the NTM extends copy to longer "
                    "sequences than it was trained on, the LSTM does not (Graves 2014, Ba 2016, Arora 2023).",
        "spec": {
            "name": "quick",
            "mechanisms": {"lstm": {"d_model": 64}, "transformer": {"d_model": 64, "heads": 4},
                           "ntm": {"d_model": 64}, "fast_weights": {"d_model": 64}},
            "tasks": {"copy": {"max_len": 8, "test_lens": [8, 16, 24]},
                      "mqar": {"vocab_size": 64, "seq_len": 16, "num_kv_pairs": 4},
                      "assoc_retrieval": {"pairs": 4}},
            "seeds": [0, 1, 2],  # 3: the fewest the report ranks on (paired t over seeds)
            # under 4 minutes on 2 cores: at lr 2e-3 the NTM solves copy by step 250 and attention solves MQAR
            # (length 16) by step 420 on every seed, while the recurrences stay near chance on it
            "train": {"steps": 420, "batch_size": 32, "lr": 2e-3, "eval_every": 105, "eval_batches": 2},
            "search": {"trials": 2, "scheduler": "asha", "grace_evals": 2},
        },
    },
    # Each paper preset runs CPU-sized by default (<= 20 minutes on 2 cores, docs/results/NAME.md); "full" is the
    # paper's own scale (NAME:full).  CPU-sized runs are named "NAME", full ones "NAME-full".
    "copy-generalisation": {
        "predicts": "Graves et al. 2014: trained on lengths up to 20, the NTM copies sequences of length 120 "
                    "almost perfectly while the LSTM's errors grow quickly beyond the training length.",
        "paper": "graves2014-copy",
        "spec": {  # CPU: trained on lengths up to 8, tested to 6x that, the paper's memory and LSTM
            "name": "copy-generalisation",
            # Graves: a 3 x 256 LSTM baseline; the NTM with 128 x 20 memory, a 100-unit LSTM controller, one head each
            "mechanisms": {"lstm": {"d_model": 256, "layers": 3},
                           "ntm": {"d_model": 100, "slots": 128, "width": 20, "controller": "lstm", "read_heads": 1,
                                   "write_heads": 1}},
            "tasks": {"copy": {"max_len": 8, "test_lens": [8, 16, 32, 48]}},
            "seeds": [0, 1, 2],
            "train": {"steps": 3000, "batch_size": 16, "lr": 1e-3, "eval_every": 500, "eval_batches": 2},
            "search": {"trials": 1, "scheduler": "fifo"},
        },
        "full": {
            "tasks": {"copy": {"max_len": 20, "test_lens": [20, 40, 80, 120]}},
            "train": {"steps": 20000, "batch_size": 16, "eval_every": 1000, "optimizer": "rmsprop", "lr": 1e-4},
            "search": {"trials": 4},
        },
    },
    "fast-weights-retrieval": {
        "predicts": "Ba et al. 2016: on associative retrieval fast weights reach a few % error (R=20) where "
                    "an LSTM of the same size stays far higher.",
        "paper": "ba2016-retrieval",
        "spec": {  # CPU: the paper's setting (R=20, 26 keys), fewer steps
            "name": "fast-weights-retrieval",
            "mechanisms": {"lstm": {"d_model": 20}, "fast_weights": {"d_model": 20, "lam": 0.95, "eta": 0.5, "inner_steps": 1}},
            "tasks": ["assoc_retrieval"],
            "seeds": [0, 1, 2],
            "train": {"steps": 15000, "batch_size": 128, "eval_every": 1500, "eval_batches": 2},
            "search": {"trials": 1, "scheduler": "fifo"},
        },
        "full": {
            "train": {"steps": 100000, "batch_size": 128, "eval_every": 5000},
            "search": {"trials": 4},
        },
    },
    "mqar-gap": {
        "predicts": "Arora et al. 2023 (Zoology): attention solves MQAR at d=64 for all sizes; recurrences "
                    "need a width that grows with sequence length and number of pairs.",
        "paper": "arora2023-mqar",
        "spec": {  # CPU: Zoology's (64, 4) and (128, 8) settings at d=64, a 256-token vocabulary
            "name": "mqar-gap",
            "mechanisms": {"lstm": {"d_model": 64}, "gru": {"d_model": 64}, "transformer": {"d_model": 64, "heads": 4}},
            "tasks": {"mqar": [{"vocab_size": 256, "seq_len": 64, "num_kv_pairs": 4},
                               {"vocab_size": 256, "seq_len": 128, "num_kv_pairs": 8}]},
            "seeds": [0, 1, 2],
            "train": {"steps": 1500, "batch_size": 32, "lr": 3e-3, "eval_every": 250, "eval_batches": 2},
            "search": {"trials": 1, "scheduler": "fifo"},
        },
        "full": {
            "tasks": {"mqar": [{"vocab_size": 8192, "seq_len": n, "num_kv_pairs": k} for n, k in ((64, 4), (128, 8), (256, 16))]},
            "train": {"steps": 10000, "batch_size": 64, "eval_every": 500},
            "search": {"trials": 6},
        },
    },
    "memnets-babi": {
        "predicts": "Sukhbaatar et al. 2015: MemN2N solves bAbI tasks 1-2 (0-0.3 % error) and most of 3, "
                    "while an LSTM fails tasks 2 and 3 (about 80 % error).",
        "paper": "sukhbaatar2015-babi",
        "spec": {  # CPU: the paper's models and task families, fewer steps
            "name": "memnets-babi",
            "mechanisms": {"lstm": {"d_model": 64}, "memn2n": {"d_model": 64, "memory": "sentence", "hops": 3}},
            "tasks": {"babi": {"family": [1, 2, 3], "test_facts": [10]}},
            "seeds": [0, 1, 2],
            "train": {"steps": 3000, "batch_size": 32, "eval_every": 500, "eval_batches": 2},
            "search": {"trials": 1, "scheduler": "fifo"},
        },
        "full": {
            "train": {"steps": 10000, "batch_size": 32, "eval_every": 500},
            "search": {"trials": 4},
        },
    },
    "lstm-variants-adding": {
        "predicts": "Gated memories solve the adding problem (MSE far below the 0.167 of predicting the mean); "
                    "peephole and working-memory connections match or beat the plain LSTM; a tanh RNN fails "
                    "at T=100.",
        "paper": "landi2021-wm-lstm",
        "spec": {  # CPU: T=30 instead of 100 (the cell-level LSTM variants step in Python: ~6 steps/s at T=100)
            "name": "lstm-variants-adding",
            "mechanisms": {"rnn": {"d_model": 64}, "lstm": {"d_model": 64}, "peephole_lstm": {"d_model": 64},
                           "wm_lstm": {"d_model": 64}},
            "tasks": {"adding": {"seq_len": 30, "test_lens": [30, 60]}},
            "seeds": [0, 1, 2],
            "train": {"steps": 2000, "batch_size": 64, "lr": 3e-3, "eval_every": 250, "eval_batches": 2},
            "search": {"trials": 1, "scheduler": "fifo"},
        },
        "full": {
            "tasks": {"adding": {}},
            "train": {"steps": 5000, "batch_size": 64, "eval_every": 500},
            "search": {"trials": 4},
        },
    },
}


# attention, an LSTM, and the modern recurrences Zoology and MAD measure against it; the CPU-sized grids leave out
# GLA and Mamba, whose pure-PyTorch chunked scans cost 5-20x an LSTM step on CPU (bench/mechanisms.py): with them the
# CPU grid takes ~40 minutes on 2 cores instead of ~20
SCALING_MECHANISMS = ("transformer", "lstm", "linear_attention", "deltanet", "hyena", "gla", "mamba")
CPU_MECHANISMS = SCALING_MECHANISMS[:5]
MULTI_HEAD = {"transformer", "linear_attention", "gla", "deltanet"}


def _grid(widths: list[int] | int, heads: int, mechanisms: tuple[str, ...] = CPU_MECHANISMS) -> dict[str, dict[str, Any]]:
    return {m: {"d_model": widths, **({"heads": heads} if m in MULTI_HEAD else {})} for m in mechanisms}


PRESETS["mqar-scaling"] = {
    "predicts": "Arora et al. 2023 (Zoology), accuracy against model width per sequence length: attention solves "
                "MQAR at the smallest width at every length; input-dependent recurrences (DeltaNet; GLA and Mamba at full "
                "scale) come close as width grows; the LSTM, linear attention without decay and long convolutions "
                "(Hyena) need a width that grows with the sequence length and number of pairs.",
    "paper": "arora2023-mqar",
    "spec": {
        "name": "mqar-scaling",
        "mechanisms": _grid([16, 32, 64], 2),
        "tasks": {"mqar": {"vocab_size": 64, "seq_len": [32, 64], "num_kv_pairs": 4}},
        "seeds": [0, 1, 2],
        "train": {"steps": 600, "batch_size": 32, "lr": 3e-3, "eval_every": 150, "eval_batches": 2},
        "search": {"trials": 1, "scheduler": "fifo"},
    },
    "full": {  # Zoology's grid: widths 64-512, lengths 64-512 with pairs growing with length, a large vocabulary
        "mechanisms": _grid([64, 128, 256, 512], 4, SCALING_MECHANISMS),
        "tasks": {"mqar": {"vocab_size": 8192, "seq_len": [64, 128, 256, 512], "num_kv_pairs": [4, 8, 16]}},
        "train": {"steps": 20000, "batch_size": 64, "lr": 1e-3, "eval_every": 1000, "eval_batches": 4},
        "search": {"trials": 4, "scheduler": "asha"},
    },
}

PRESETS["mad-suite"] = {
    "predicts": "Poli et al. 2024 (MAD): attention and input-dependent recurrences solve in-context and noisy recall; "
                "fuzzy recall (multi-token keys) is hard for every fixed-state mechanism; compression favours "
                "recurrences over attention at equal width; memorization depends on parameters, not mechanism.",
    "spec": {
        "name": "mad-suite",
        "mechanisms": _grid(32, 2),
        "tasks": {"noisy_recall": {"seq_len": 64, "frac_noise": [0.0, 0.2, 0.4]},
                  "fuzzy_recall": {"seq_len": [64, 128]},
                  "compression": {"seq_len": [16, 32]},
                  "memorization": {"vocab_size": [64, 256]},
                  "selective_copy": {"seq_len": 64, "tokens": [4, 8], "test_lens": [64]}},
        "seeds": [0, 1, 2],
        "train": {"steps": 1000, "batch_size": 32, "lr": 3e-3, "eval_every": 250, "eval_batches": 2},
        "search": {"trials": 1, "scheduler": "fifo"},
    },
    "full": {
        "mechanisms": _grid(128, 4, SCALING_MECHANISMS),
        "train": {"steps": 20000, "batch_size": 128, "lr": 1e-3, "eval_every": 1000, "eval_batches": 4},
        "search": {"trials": 4, "scheduler": "asha"},
    },
}


def preset(name: str) -> dict[str, Any]:
    """A preset by name; `NAME:full` is its paper-scale version where one is defined (the default is CPU-sized)."""
    base, _, scale = name.partition(":")
    if base not in PRESETS:
        raise KeyError(f"unknown preset {base!r}; valid: {', '.join(PRESETS)}")
    entry = PRESETS[base]
    if not scale:
        return entry
    if scale != "full" or "full" not in entry:
        scales = "full" if "full" in entry else "none"
        raise KeyError(f"preset {base!r} has no scale {scale!r}; scales beside the default: {scales}")
    return {**entry, "spec": {**entry["spec"], **entry["full"], "name": f"{base}-full"}}
