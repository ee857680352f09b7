"""Tune callbacks on the driver: bookkeeping (store + MLflow through `records`), cancel, and progress.

All three are pickled with the experiment state when Tune checkpoints it;
the progress display is a live object of this process, so it is dropped
from the pickle and re-attached to a restored Tuner with `attach_display`.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.fs
from ray import tune
from ray.train._internal.checkpoint_manager import _CheckpointManager
from ray.train._internal.session import _TrainingResult

from amlab.platform import records, storage, tracking
from amlab.platform.records import SweepContext
from amlab.platform.sessions import CHECKPOINT
from amlab.platform.status import STEP, Status
from amlab.platform.trial import of

Display = Callable[[str, dict[str, Any]], None]  # (event: start|result|finished|failed, info) -> None


class Bookkeeper(tune.Callback):
    """Keeps the store and MLflow in step with Tune: progress, and a terminal state for every trial."""

    def __init__(self, ctx: SweepContext):
        self.ctx, self._checked, self._deliveries = ctx, False, None

    def __getstate__(self):  # a restored experiment's trials are checked again by the driver restoring it
        return {"ctx": self.ctx, "_checked": False, "_deliveries": None}

    def on_step_begin(self, iteration, trials, **info):
        if not self._checked:  # before any trial (re)starts
            self._checked = True
            for trial in trials:
                repoint(trial)

    def on_trial_start(self, iteration, trials, trial, **info):
        records.trial_progress(self.ctx, trial.trial_id, None)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        """Also writes what the trial has for MLflow (platform/outbox.py), taken out of the result before Tune
        keeps it (Tune lets callbacks change a result in place)."""
        if run_id := of(trial.config).run_id:
            if self._deliveries is None:
                self._deliveries = tracking.Deliveries(self.ctx.client, self.ctx.settings.mlflow_uri)
            self._deliveries.take(run_id, result)
        if STEP in result:
            records.trial_progress(self.ctx, trial.trial_id, int(result[STEP]))

    def on_trial_complete(self, iteration, trials, trial, **info):
        result, steps = trial.last_result or {}, of(trial.config).steps
        records.close_trial(self.ctx, trial.trial_id, Status.FINISHED, result, early=result.get(STEP, steps) < steps)

    def on_trial_recover(self, iteration, trials, trial, **info):
        records.note_retry(self.ctx, trial.trial_id, trial.num_failures, _error(trial))

    def on_trial_error(self, iteration, trials, trial, **info):
        records.close_trial(self.ctx, trial.trial_id, Status.FAILED, trial.last_result or {}, early=False, error=_error(trial))

    def on_experiment_end(self, trials, **info):
        """Close what Tune knows ended but the store missed: a driver killed between Tune's state checkpoint
        and this callback's write leaves a finished trial RUNNING, and the restored run never reports it again."""
        for trial in trials:
            result, steps = trial.last_result or {}, of(trial.config).steps
            if trial.status == trial.TERMINATED and result.get("done"):  # an interrupt also stops trials, never `done`
                records.close_trial(self.ctx, trial.trial_id, Status.FINISHED, result,
                                    early=result.get(STEP, steps) < steps, if_open=True)
            elif trial.status == trial.ERROR:
                records.close_trial(self.ctx, trial.trial_id, Status.FAILED, result, early=False, if_open=True)


def repoint(trial) -> None:
    """Point a restored trial whose latest checkpoint is gone at its newest whole one on storage (or at none).

    Tune saves its experiment state periodically (storage.sync_period), but deletes a checkpoint past
    `num_to_keep` the moment a newer one registers and forces a save only after that: a driver killed in
    between leaves a state naming a deleted checkpoint, and every restore of that trial would fail.  The
    newest whole checkpoint on storage is at least as recent; broken ones (a copy cut short by the kill) are
    removed so that the trial's next checkpoint takes the index after the one it resumes from.
    """
    latest = trial.checkpoint
    if latest is None or latest.filesystem.get_file_info(latest.path).type != pyarrow.fs.FileType.NotFound:
        return
    fs = trial.storage.storage_filesystem
    whole, broken = storage.whole_checkpoints(fs, trial.storage.trial_fs_path, "checkpoint_", CHECKPOINT)
    for path in broken:
        fs.delete_dir(path)
    manager = _CheckpointManager(trial.run_metadata.checkpoint_manager.checkpoint_config)
    for path in whole:  # oldest first: the manager keeps `num_to_keep` and deletes the rest, as it would have
        manager.register_checkpoint(_TrainingResult(checkpoint=tune.Checkpoint(path, fs), metrics={}))
    trial.run_metadata.checkpoint_manager = manager
    trial.storage.current_checkpoint_index = int(whole[-1].rsplit("_", 1)[1]) + 1 if whole else 0
    trial.run_metadata.invalidate_cache()
    trial.invalidate_json_state()


def _error(trial) -> str:
    """The traceback Tune kept for a trial's last failure ('' when none)."""
    path = trial.error_file
    return Path(path).read_text(errors="replace") if path and Path(path).exists() else ""


class Progress(tune.Callback):
    """Forwards trial events to a display (the live table or a progress bar)."""

    def __init__(self, display: Display | None = None):
        self.display = display

    def __getstate__(self):
        return {"display": None}

    def _show(self, event: str, trial, result: dict) -> None:
        if self.display is not None:
            t = of(trial.config)
            self.display(event, {"trial_id": trial.trial_id, "cell": t.cell, "phase": t.phase, "steps": t.steps, **result})

    def on_trial_start(self, iteration, trials, trial, **info):
        self._show("start", trial, {})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self._show("result", trial, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._show("finished", trial, trial.last_result or {})

    def on_trial_error(self, iteration, trials, trial, **info):
        self._show("failed", trial, {**(trial.last_result or {}), "error": _error(trial)})


def attach_display(tuner: tune.Tuner, display: Display | None) -> None:
    """Give a (restored) Tuner's Progress callback this process's display."""
    for cb in tuner._local_tuner.get_run_config().callbacks or []:
        if isinstance(cb, Progress):
            cb.display = display


class CancelStopper(tune.Stopper):
    """Interrupts the Tune run when `amctl cancel` has flagged the sweep in the store (polled every 2 s).

    It interrupts exactly as Ctrl-C (and a cancelled Ray job) does, by SIGINT to this driver: Tune then
    saves its state with the running trials unfinished, so `amctl resume` continues them from their
    checkpoints.  Stopping through `stop_all` would instead mark them terminated: finished, never resumed.
    """

    def __init__(self, ctx: SweepContext):
        self.ctx, self._last, self._stop = ctx, 0.0, False

    def __getstate__(self):  # a restored stopper must poll again, not remember an earlier cancel
        return {"ctx": self.ctx, "_last": 0.0, "_stop": False}

    def __call__(self, trial_id, result) -> bool:
        return False

    def stop_all(self) -> bool:
        if not self._stop and time.time() - self._last > 2:
            self._last = time.time()
            with self.ctx.store.session() as s:
                sweep = self.ctx.store.sweep(s, self.ctx.sweep)
                self._stop = sweep is not None and sweep.cancel_requested
            if self._stop:
                signal.raise_signal(signal.SIGINT)
        return False
