"""Each cell's Optuna study holds the real search, in the metric's own terms (no Ray: the searcher is driven by hand,
calling its hooks as Tune does)."""

from __future__ import annotations

from datetime import datetime, timedelta

import optuna
import pytest

from amlab.platform import report, search, studies
from amlab.platform.api import plan
from amlab.platform.records import SweepContext
from amlab.platform.settings import Settings
from amlab.platform.status import EVALS, OBJECTIVE, STEP, Kind, study_name
from amlab.platform.trial import Placement

State = optuna.trial.TrialState
T0 = datetime(2025, 1, 1, 12, 0, 0)
SPEC = {
    "name": "st",
    "mechanisms": {"lstm": {"d_model": 16}},
    "tasks": {"mqar": {"vocab_size": 64, "seq_len": 16, "num_kv_pairs": 2}, "copy": {"max_len": 4}},  # accuracy, bit_errors
    "seeds": [0, 1],
    "train": {"steps": 30, "batch_size": 8, "eval_every": 10, "log_every": 5, "eval_batches": 1},
    "search": {"trials": 3, "scheduler": "asha", "grace_evals": 1, "reduction_factor": 2},
}


@pytest.fixture
def cells():
    return {c.task: c for c in plan(Kind.SWEEP, SPEC).cells}


@pytest.fixture
def ctx(tmp_path):
    cfg = Settings(home=tmp_path, db_url=f"sqlite:///{tmp_path / 'amctl.db'}", mlflow_uri=f"sqlite:///{tmp_path / 'mlflow.db'}",
                   artifacts=(tmp_path / "artifacts").as_uri(), optuna_url=f"sqlite:///{tmp_path / 'optuna.db'}",
                   ray_storage=str(tmp_path / "ray"))
    return SweepContext("st", Kind.SWEEP, cfg, "0", "sweep-run", {}, {})


def load(ctx, cell) -> optuna.Study:
    return optuna.load_study(study_name=study_name(ctx.sweep, cell.key), storage=ctx.settings.optuna_url)


def params(lr: float = 1e-3, layers: int = 1) -> dict:
    return {"mechanism": {"layers": layers, "forget_bias": 0.5}, "train": {"lr": lr}}


def mirror(ctx, cell, trial_id, objective, *, full=True, error=False, curve=None, p=None):
    done = {"objective": objective, "params": p or params(), "full": full, "error": error}
    studies.mirror(ctx.settings.optuna_url, ctx.sweep, cell, trial_id, 1 << 30, done, curve=curve or {},
                   started=T0, completed=T0 + timedelta(seconds=42))


def test_the_study_direction_is_the_metrics(ctx, cells):
    for task, direction in (("mqar", optuna.study.StudyDirection.MAXIMIZE), ("copy", optuna.study.StudyDirection.MINIMIZE)):
        studies.create(ctx.sweep, cells[task], ctx.settings.optuna_url)
        assert load(ctx, cells[task]).direction == direction
    studies.create(ctx.sweep, cells["mqar"], ctx.settings.optuna_url)  # a relaunch keeps the study
    assert len(optuna.get_all_study_summaries(ctx.settings.optuna_url)) == 2


def test_a_mirrored_trial_is_the_metric_with_its_curve_state_and_times(ctx, cells):
    acc, err = cells["mqar"], cells["copy"]
    for c in (acc, err):
        studies.create(ctx.sweep, c, ctx.settings.optuna_url)
    mirror(ctx, acc, "full", -0.8, curve={10: -0.5, 20: -0.7, 30: -0.8}, p=params(lr=2e-3, layers=2))
    mirror(ctx, acc, "stopped", -0.3, full=False, curve={10: -0.3})
    mirror(ctx, acc, "crashed", None, full=False, error=True, curve={10: -0.2})
    mirror(ctx, acc, "full", -0.8, curve={10: -0.5, 20: -0.7, 30: -0.8})  # a resumed sweep reports it again
    full, stopped, crashed = load(ctx, acc).trials
    assert [t.state for t in (full, stopped, crashed)] == [State.COMPLETE, State.PRUNED, State.FAIL]
    assert full.value == pytest.approx(0.8) and full.intermediate_values == pytest.approx({10: 0.5, 20: 0.7, 30: 0.8})
    assert full.params == {"mechanism.layers": 2, "mechanism.forget_bias": 0.5, "train.lr": 2e-3}
    assert isinstance(full.distributions["mechanism.layers"], optuna.distributions.IntDistribution)
    assert full.datetime_start == T0 and full.datetime_complete == T0 + timedelta(seconds=42)
    assert full.user_attrs == {"tune_trial_id": "full", "seed": 1 << 30}
    assert stopped.value == pytest.approx(0.3) and stopped.intermediate_values == {10: pytest.approx(0.3)}  # as Optuna's tell
    assert crashed.value is None and crashed.intermediate_values == {10: pytest.approx(0.2)}
    assert load(ctx, acc).best_trial.number == full.number

    mirror(ctx, err, "e", 0.25, curve={10: 0.5, 30: 0.25})  # bit errors: the objective is the metric
    (e,) = load(ctx, err).trials
    assert e.value == 0.25 and e.intermediate_values == {10: 0.5, 30: 0.25}


def test_importances_read_the_complete_trials_of_a_mirrored_study(ctx, cells):
    cell = cells["mqar"]
    studies.create(ctx.sweep, cell, ctx.settings.optuna_url)
    lrs = [3e-4, 6e-4, 1e-3, 2e-3, 4e-3, 8e-3]
    for i, lr in enumerate(lrs[:3]):
        mirror(ctx, cell, f"t{i}", -lr * 50, p=params(lr=lr, layers=1 + i % 2))
    for i, lr in enumerate(lrs[3:]):
        mirror(ctx, cell, f"p{i}", -0.1, full=False, curve={10: -0.1}, p=params(lr=lr))
    assert report.importances(study_name(ctx.sweep, cell.key), ctx.settings.optuna_url) == \
        ({}, "needs ≥ 4 completed search trials (has 3)")  # PRUNED trials do not count
    for i, lr in enumerate(lrs):
        mirror(ctx, cell, f"u{i}", -lr * 50, p=params(lr=lr, layers=1 + i % 2))
    values, note = report.importances(study_name(ctx.sweep, cell.key), ctx.settings.optuna_url)
    names = {"mechanism.layers", "mechanism.forget_bias", "train.lr"}
    assert note == "" and set(values) == names and values["train.lr"] > 0.5
    direct = optuna.importance.get_param_importances(load(ctx, cell))  # Optuna's default evaluator reads it as is
    assert set(direct) == names and max(direct, key=direct.get) == "train.lr"


def test_the_searcher_mirrors_what_tune_reports_and_a_resumed_searcher_adds_nothing(ctx, cells, tmp_path, monkeypatch):
    monkeypatch.setattr(search.records, "open_trial", lambda *a: "run")  # the store and MLflow rows are not under test
    cell = cells["mqar"]
    studies.create(ctx.sweep, cell, ctx.settings.optuna_url)
    searcher = search.CellSearcher([cell], ctx, Placement(), str(tmp_path))
    for t in ("a", "b", "c"):
        searcher.suggest(t)

    def report_eval(trial_id, step, accuracy):
        searcher.on_trial_result(trial_id, {STEP: step, EVALS: step // 10, "val/accuracy": accuracy, OBJECTIVE: -accuracy})

    for t in ("a", "b", "c"):
        searcher.on_trial_result(t, {STEP: 5, EVALS: 0})  # a log-only result: no evaluation
        report_eval(t, 10, 0.25)
    searcher.save(str(tmp_path / "searcher.pkl"))  # Tune checkpoints the searcher mid-trial
    report_eval("a", 20, 0.5)
    searcher.on_trial_complete("a", {STEP: 30, EVALS: 3, OBJECTIVE: -0.75})  # a full trial's last result arrives here too
    searcher.on_trial_complete("b", {STEP: 20, EVALS: 2, OBJECTIVE: -0.375})  # ASHA's STOP: only on_trial_complete sees it
    searcher.on_trial_complete("c", None, error=True)
    a, b, c = load(ctx, cell).trials
    assert (a.state, a.value, a.intermediate_values) == (State.COMPLETE, 0.75, {10: 0.25, 20: 0.5, 30: 0.75})
    assert (b.state, b.value, b.intermediate_values) == (State.PRUNED, 0.375, {10: 0.25, 20: 0.375})
    assert (c.state, c.value, c.intermediate_values) == (State.FAIL, None, {10: 0.25})
    assert all(t.datetime_start < t.datetime_complete <= datetime.now() for t in (a, b, c))
    assert [t.user_attrs["tune_trial_id"] for t in (a, b, c)] == ["a", "b", "c"]
    assert searcher.best[cell.key]["objective"] == -0.75 and not searcher.curves and not searcher.started

    resumed = search.CellSearcher([cell], ctx, Placement(), str(tmp_path))  # the driver died after its checkpoint
    resumed.restore(str(tmp_path / "searcher.pkl"))
    assert resumed.curves["a"] == {10: -0.25} and resumed.started["a"] == a.datetime_start
    resumed.on_trial_result("a", {STEP: 20, EVALS: 2, OBJECTIVE: -0.5})  # Tune replays it from its checkpoint
    resumed.on_trial_complete("a", {STEP: 30, EVALS: 3, OBJECTIVE: -0.75})
    assert len(load(ctx, cell).trials) == 3 and "a" in resumed.done[cell.key]


def test_one_storage_per_database_and_a_replaced_file_gets_its_own(ctx, cells, tmp_path):
    """Mirroring reuses one storage (building one executes Optuna's Alembic scripts); a file moved aside since keeps
    what it held, and the new file at the same path gets the next writes."""
    cell, url = cells["mqar"], ctx.settings.optuna_url
    studies.create(ctx.sweep, cell, url)
    mirror(ctx, cell, "a", -0.5)
    first = studies.storage(url)
    mirror(ctx, cell, "b", -0.6)
    assert studies.storage(url) is first
    for part in tmp_path.glob("optuna.db*"):  # with its -wal and -shm
        part.rename(tmp_path / part.name.replace("optuna", "aside"))
    studies.create(ctx.sweep, cell, url)
    mirror(ctx, cell, "c", -0.7)
    assert studies.storage(url) is not first
    assert [t.user_attrs[studies.TUNE_TRIAL_ID] for t in load(ctx, cell).trials] == ["c"]
    aside = optuna.load_study(study_name=study_name(ctx.sweep, cell.key), storage=f"sqlite:///{tmp_path / 'aside.db'}")
    assert [t.user_attrs[studies.TUNE_TRIAL_ID] for t in aside.trials] == ["a", "b"]
