"""Gather everything a report states, once, as plain data: the store, MLflow histories and Optuna studies.

`leaderboard` needs the store only (and is what `compare` uses); `collect`
adds cost, curves and importances, then the summarising steps.  Renderers
never touch a store.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from amlab.platform import stats, studies
from amlab.platform.records import seed_trials
from amlab.platform.report.summarise import paper_rows, rank, reached, seed_statistics, summary, target_of
from amlab.platform.results import cell_results
from amlab.platform.settings import Settings
from amlab.platform.spec import RunSpec
from amlab.platform.status import Phase, Status, study_name, test_key, val_key
from amlab.platform.store import Store, Sweep
from amlab.workloads.registry import TASKS

MIN_IMPORTANCE_TRIALS = 4  # fANOVA on fewer completed trials says nothing


def _task_info(spec: dict[str, Any], cache: dict[str, tuple[float, list[str]]]) -> tuple[float, list[str]]:
    """(chance level, test group labels) of the task as the cell configured it."""
    key = json.dumps(spec["task"], sort_keys=True)
    if key not in cache:
        run = RunSpec.model_validate(spec)
        built = TASKS.get(run.task.name).build(run.task_params())
        cache[key] = (float(built.chance), list(built.eval_groups("test")))
    return cache[key]


def _effective_params(spec: dict[str, Any], best_params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(task params, mechanism params) the cell's reported runs used: its spec with the chosen search values."""
    task = {k: v for k, v in spec["task"].items() if k != "name"}
    mechanism = {k: v for k, v in spec["mechanism"].items() if k != "name"}
    sections = {"task": task, "mechanism": mechanism}  # search keys are "mechanism.<knob>" or "train.<field>"
    for dotted, value in best_params.items():
        section, _, key = dotted.partition(".")
        if section in sections:
            sections[section][key] = value
    return task, mechanism


def leaderboard(store: Store, name: str) -> list[dict[str, Any]]:
    """`cell_results` plus the parameters, the mean and interval over seeds, ranks, chance and target (store only)."""
    cells = cell_results(store, name)
    with store.session() as s:
        specs = {c.config_hash: c.spec for c in store.sweep(s, name).cells}
    cache: dict[str, tuple[float, list[str]]] = {}
    for c in cells:
        spec = specs[c["config_hash"]]
        seed_statistics(c)
        chance, groups = _task_info(spec, cache)
        c["task_params"], c["mechanism_params"] = _effective_params(spec, c["best_params"])
        c.update(chance=chance, test_groups=groups, target=target_of(c["metric"], chance))
        c["reached_target"] = reached(c["mean"], c["target"], c["higher_is_better"])
    rank(cells)
    return cells


def compare(store: Store, a: str, b: str) -> list[dict[str, Any]]:
    """Cells of either sweep side by side (matched by mechanism and task): means, intervals, the difference B - A.

    `overlap` is True when the paired interval of the difference includes 0
    (no difference resolved), False when it excludes 0, None with fewer than
    stats.MIN_SEEDS seeds the two cells share.
    """
    left = {(c["mechanism"], c["task"]): c for c in leaderboard(store, a)}
    right = {(c["mechanism"], c["task"]): c for c in leaderboard(store, b)}
    rows = []
    for key in sorted(set(left) | set(right)):
        x, y = left.get(key), right.get(key)
        ref = x or y
        both = x is not None and y is not None and x["mean"] is not None and y["mean"] is not None
        cmp = stats.compare_paired(y["per_seed"], x["per_seed"], ref["higher_is_better"]) if both else None
        rows.append({
            "mechanism": key[0], "task": key[1], "metric": ref["metric"], "higher_is_better": ref["higher_is_better"],
            "a": x and x["mean"], "a_ci": x and x["ci"], "a_n": x and x["n_seeds"],
            "b": y and y["mean"], "b_ci": y and y["ci"], "b_n": y and y["n_seeds"],
            "difference": y["mean"] - x["mean"] if both else None,
            "overlap": None if cmp is None or cmp.interval is None else cmp.outcome == "tie",
            "comparison": cmp and f"B vs A: {cmp.label}",
        })
    return rows


def failed_trials(sweep: Sweep) -> list[dict[str, Any]]:
    """Trials that ended FAILED, or KILLED with an error, with the reason the store kept: why a cell may lack a value."""
    return [{"mechanism": c.mechanism_label, "task": c.task_label, "seed": t.seed, "phase": str(t.phase),
             "status": str(t.status), "error": t.error}
            for c in sweep.cells for t in c.trials
            if t.status == Status.FAILED or (t.status == Status.KILLED and t.error)]


def _epoch_ms(t: datetime) -> float:
    return (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp() * 1000


def importances(study: str, optuna_url: str) -> tuple[dict[str, float], str]:
    """Optuna's parameter importances for a cell's mirrored study, or an empty dict and why not."""
    import optuna

    try:
        loaded = optuna.load_study(study_name=study, storage=studies.storage(optuna_url))
    except KeyError:
        return {}, "no Optuna study"
    return importances_of(loaded)


def importances_of(study) -> tuple[dict[str, float], str]:
    """fANOVA over the COMPLETE (full-length) trials, the ones Optuna's evaluators read: an ASHA-stopped trial is
    PRUNED, its value measured after fewer steps than the others'."""
    import optuna

    done = [t for t in study.get_trials(deepcopy=False) if t.state == optuna.trial.TrialState.COMPLETE]
    if len(done) < MIN_IMPORTANCE_TRIALS:
        return {}, f"needs ≥ {MIN_IMPORTANCE_TRIALS} completed search trials (has {len(done)})"
    try:
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=0)
        return dict(optuna.importance.get_param_importances(study, evaluator=evaluator)), ""
    except (RuntimeError, ValueError) as e:
        return {}, f"not computable: {e}"


def collect(settings: Settings, name: str) -> dict[str, Any]:
    """Everything the report states, as plain data (the JSON format is its `cells`)."""
    from mlflow.tracking import MlflowClient

    store = Store(settings.db_url)
    cells = leaderboard(store, name)
    client = MlflowClient(settings.mlflow_uri)
    with store.session() as s:
        sweep = store.sweep(s, name)
        rows = {c.config_hash: c for c in sweep.cells}
        header = {"name": sweep.name, "status": sweep.status, "mlflow_run_id": sweep.mlflow_run_id,
                  "created_at": sweep.created_at.isoformat()[:19], "spec": sweep.spec}
        failures = failed_trials(sweep)
        for c in cells:
            row = rows[c["config_hash"]]
            _cost_and_curves(c, row, client)
            key = val_key(c["metric"])
            values = sorted(t.metrics[key] for t in row.trials if t.phase == Phase.SEARCH and t.metrics and key in t.metrics)
            c["trial_values"] = values
            c["trial_spread"] = values[-1] - values[0] if len(values) > 1 else None
            c["importances"], c["importance_note"] = importances(study_name(name, row.key), settings.optuna_url)
    spec = header["spec"]
    scale = {"steps": spec.get("train", {}).get("steps"), "seeds": len(spec.get("seeds", [])),
             "trials": spec.get("search", {}).get("trials")}
    return {**header, "scale": scale, "cells": cells, "tasks": _tasks(cells), "papers": paper_rows(cells, scale),
            "failures": failures, "summary": summary(cells, failures),
            "generated_at": datetime.now(timezone.utc).isoformat()[:19]}


def _cost_and_curves(c: dict[str, Any], row, client) -> None:
    """Wall time, throughput, time to target, learning curve and generalisation points of one cell."""
    metric = c["metric"]
    runs = seed_trials(row)
    timed = [t for t in row.trials if t.started_at and t.ended_at]
    c["wall_s"] = sum((t.ended_at - t.started_at).total_seconds() for t in timed) if timed else None
    c["seed_wall_s"] = stats.median([(t.ended_at - t.started_at).total_seconds() for t in runs if t.started_at and t.ended_at])
    c["steps_per_s"] = stats.median([t.metrics.get("train/steps_per_s") for t in runs])
    curves, hit_s, hit_step = [], [], []
    for t in runs:
        history = sorted(client.get_metric_history(t.mlflow_run_id, val_key(metric)), key=lambda m: m.step)
        curves.append({m.step: m.value for m in history})
        hit = next((m for m in history if reached(m.value, c["target"], c["higher_is_better"])), None)
        if hit is not None and t.started_at:
            hit_s.append(max(0.0, (hit.timestamp - _epoch_ms(t.started_at)) / 1000))
            hit_step.append(hit.step)
    steps = sorted({s for curve in curves for s in curve})
    c["learning_curve"] = [[s, stats.median([curve.get(s) for curve in curves])] for s in steps]
    # the target counts as reached when every seed reached it, and by the evaluation at which the slowest one did
    # (a real evaluation step, where a median of two seeds' steps could name a step that was never evaluated)
    all_hit = runs and len(hit_s) == len(runs)
    c["time_to_target_s"] = max(hit_s) if all_hit else None
    c["step_to_target"] = max(hit_step) if all_hit else None
    groups = c["test_groups"] if len(c["test_groups"]) > 1 else []
    c["generalisation"] = {g: stats.median([t.metrics.get(test_key(metric, g)) for t in runs]) for g in groups}
    c["dump_run_ids"] = [t.mlflow_run_id for t in runs]


def _tasks(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for task in sorted({c["task"] for c in cells}):
        group = [c for c in cells if c["task"] == task]
        first = group[0]
        out.append({"task": task, "metric": first["metric"], "higher_is_better": first["higher_is_better"],
                    "chance": first["chance"], "target": first["target"]})
    return out
