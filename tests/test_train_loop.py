"""The training loop without Ray: determinism and exact resumption from a checkpoint."""

from __future__ import annotations

import pytest

from amlab.platform.sessions import LocalSession
from amlab.platform.spec import validate_run
from amlab.platform.train import train_loop
from amlab.platform.trial import TrialConfig


def spec(**train):
    return validate_run({
        "mechanism": {"name": "lstm", "d_model": 16},
        "task": {"name": "copy", "max_len": 4, "test_lens": [4, 8]},
        "train": {"steps": 60, "batch_size": 8, "eval_every": 20, "log_every": 10, "eval_batches": 1, **train},
    })


def curve(session: LocalSession) -> list[tuple[int, float]]:
    return [(r["step"], r["train/loss"]) for r in session.reports]


def test_seeded_run_gives_the_same_curve_twice():
    a, b, c = LocalSession(), LocalSession(), LocalSession()
    train_loop(TrialConfig.local(spec()), a)
    train_loop(TrialConfig.local(spec()), b)
    train_loop(TrialConfig.local(spec(seed=1)), c)
    assert len(curve(a)) == 6
    assert curve(a) == curve(b)
    assert a.reports[-1]["val/bit_errors"] == b.reports[-1]["val/bit_errors"]
    assert curve(a) != curve(c)


class Crash(RuntimeError):
    pass


class CrashingSession(LocalSession):
    """Dies right after persisting the checkpoint at `at`, like a killed worker."""

    def __init__(self, folder, at):
        super().__init__(folder)
        self.at = at

    def report(self, metrics, checkpoint):
        super().report(metrics, checkpoint)
        if metrics["step"] == self.at:
            raise Crash


def test_resume_from_checkpoint_continues_the_exact_curve(tmp_path):
    whole = LocalSession()
    train_loop(TrialConfig.local(spec(schedule="cosine", warmup_steps=5)), whole)
    first = CrashingSession(tmp_path, at=40)
    with pytest.raises(Crash):
        train_loop(TrialConfig.local(spec(schedule="cosine", warmup_steps=5)), first)
    assert (tmp_path / "state.pt").exists()
    second = LocalSession(tmp_path)
    train_loop(TrialConfig.local(spec(schedule="cosine", warmup_steps=5)), second)
    assert [r["step"] for r in second.reports] == [50, 60]
    assert curve(first) + curve(second) == curve(whole)
    assert second.reports[-1]["test/bit_errors"] == whole.reports[-1]["test/bit_errors"]


def test_eval_reports_metrics_per_generalisation_group():
    s = LocalSession()
    train_loop(TrialConfig.local(spec(steps=20)), s)
    last = s.reports[-1]
    assert {"test/bit_errors/len_4", "test/bit_errors/len_8", "val/bit_errors"} <= set(last)
    assert last["test/bit_errors"] == pytest.approx((last["test/bit_errors/len_4"] + last["test/bit_errors/len_8"]) / 2)


def test_the_test_split_is_measured_at_the_final_evaluation_unless_test_every_asks_for_more():
    default, every = LocalSession(), LocalSession()
    train_loop(TrialConfig.local(spec()), default)
    train_loop(TrialConfig.local(spec(test_every=40)), every)
    evaluated = lambda s: {r["step"]: "test/bit_errors" in r for r in s.reports if "val/bit_errors" in r}  # noqa: E731
    assert evaluated(default) == {20: False, 40: False, 60: True}
    assert evaluated(every) == {20: False, 40: True, 60: True}
    # measuring the test split along the way changes nothing else: same curve, same final scores
    assert curve(default) == curve(every)
    assert default.reports[-1] == {**every.reports[-1], "train/steps_per_s": default.reports[-1]["train/steps_per_s"]}
    # a run's identity is unchanged by the new field at its default, and changed by it when set
    assert "test_every" not in spec().normalised()["train"] and spec(test_every=40).normalised()["train"]["test_every"] == 40


def test_divergence_is_a_clear_error():
    s = LocalSession()
    with pytest.raises(FloatingPointError, match="lower train.lr"):
        train_loop(TrialConfig.local(spec(lr=10, grad_clip=0, optimizer="sgd")), s)


def test_compiled_training_follows_the_eager_curve():
    """train.compile runs the same steps through torch.compile (inductor): the curve matches eager's closely.

    A transformer (fixed shapes), so one compilation serves every step; it is also the mechanism compile is for.
    """
    from torch._dynamo.utils import counters

    def run(compiled: bool) -> tuple[LocalSession, dict]:
        session = LocalSession()
        spec = validate_run({"mechanism": {"name": "transformer", "d_model": 16, "heads": 2, "layers": 1},
                             "task": {"name": "mqar", "vocab_size": 16, "seq_len": 16, "num_kv_pairs": 2},
                             "train": {"steps": 6, "batch_size": 4, "log_every": 2, "eval_every": 6, "eval_batches": 1,
                                       "compile": compiled}})
        counters.clear()
        train_loop(TrialConfig.local(spec), session)
        return session, spec.normalised()["train"]

    (eager, eager_identity), (compiled, compiled_identity) = run(False), run(True)
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo really captured the model
    assert [s for s, _ in curve(compiled)] == [2, 4, 6]
    assert [loss for _, loss in curve(compiled)] == pytest.approx([loss for _, loss in curve(eager)], rel=1e-4)
    assert compiled.reports[-1]["val/accuracy"] == pytest.approx(eager.reports[-1]["val/accuracy"], abs=1e-6)
    # a field added after runs were stored: absent from the identity unless set, so earlier runs keep their hashes
    assert "compile" not in eager_identity and compiled_identity["compile"] is True
