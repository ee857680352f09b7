"""The training loop.  One function, read top to bottom, run three ways:

* in a Tune trial for one worker (`TuneSession`),
* by every Ray Train worker for DDP (`TrainSession`; gloo on CPU, NCCL on GPU),
* directly, for tests and benchmarks (`LocalSession`).

Data is a pure function of (seed, split, rank, step), and checkpoints hold
model, optimizer, schedule, step and RNG state, so a resumed run continues
the exact curve it was on.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path
from typing import Any

import psutil
import torch
from torch import nn

from amlab.platform import dumps, outbox
from amlab.platform.outbox import FINAL_CHECKPOINT, FINAL_DUMPS, FINAL_MODEL, Outbox, SystemSampler
from amlab.platform.sessions import CHECKPOINT, LocalSession, RayMetrics, TrainSession, TuneSession
from amlab.platform.spec import RunSpec, TrainSpec
from amlab.platform.status import EVALS, OBJECTIVE, PARAMS_COUNT, STATE_SIZE, STEP, TRAIN_LOSS
from amlab.platform.trial import KEY, TrialConfig, of
from amlab.workloads.model import build_model, compute_loss, count_params
from amlab.workloads.registry import TASKS
from amlab.workloads.tasks.base import Task, generator

# -- pieces of the loop ---------------------------------------------------------------------------

def make_optimizer(model: nn.Module, t: TrainSpec) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    kinds = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop, "sgd": torch.optim.SGD}
    extra = {"momentum": 0.9} if t.optimizer in ("sgd", "rmsprop") else {}
    opt = kinds[t.optimizer](model.parameters(), lr=t.lr, weight_decay=t.weight_decay, **extra)

    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / t.warmup_steps) if t.warmup_steps else 1.0
        if t.schedule == "cosine":
            return warm * 0.5 * (1 + math.cos(math.pi * min(step, t.steps) / t.steps))
        return warm

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


@torch.no_grad()
def evaluate(model: nn.Module, task: Task, spec: RunSpec, split: str, device: torch.device) -> dict[str, float]:
    """`split/metric` averaged over the split's groups, plus `split/metric/group` per group (e.g. per length).

    Eval data is seeded by (split, group, index) alone: every seed and every
    mechanism is scored on the same examples, so comparisons are paired.
    """
    model.eval()
    groups = task.eval_groups(split)
    per_group: dict[str, dict[str, float]] = {}
    for label, kwargs in groups.items():
        sums: dict[str, float] = {}
        for i in range(spec.train.eval_batches):
            batch = task.sample(generator("eval", split, label, i), spec.train.batch_size, split, **kwargs).to(device)
            with autocast(device):
                logits, _ = model(batch.inputs)
            for k, v in task.score(logits.float(), batch).items():
                sums[k] = sums.get(k, 0.0) + v / spec.train.eval_batches
        per_group[label] = sums
    model.train()
    out = {}
    for metric in next(iter(per_group.values())):
        out[f"{split}/{metric}"] = sum(g[metric] for g in per_group.values()) / len(per_group)
        if len(per_group) > 1:
            out.update({f"{split}/{metric}/{label}": g[metric] for label, g in per_group.items()})
    return out


def autocast(device: torch.device):
    """bf16 autocast on CUDA; full precision on CPU (bf16 matmuls there are slower, not faster)."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def save_checkpoint(folder: Path, model: nn.Module, opt, sched, step: int) -> Path:
    torch.save(
        {"model": model.state_dict(), "optimizer": opt.state_dict(), "schedule": sched.state_dict(),
         "step": step, "rng": torch.get_rng_state()},
        folder / CHECKPOINT,
    )
    return folder


def fresh_folder(path: str | None) -> str | None:
    """This attempt's own scratch folder in the trial's folder, emptied of what earlier, killed attempts left.

    Per attempt (by pid), not shared: an attempt whose driver was killed may still be writing while its
    successor starts, and must not lose the folder under it.
    """
    if path is None:
        return None
    root, mine = Path(path), Path(path) / str(os.getpid())
    for old in root.glob("*") if root.is_dir() else []:
        if old.name.isdigit() and not psutil.pid_exists(int(old.name)):
            shutil.rmtree(old, ignore_errors=True)
    mine.mkdir(parents=True, exist_ok=True)
    return str(mine)


def dump_introspection(model: nn.Module, task: Task, spec: RunSpec, device: torch.device, out: Path,
                       heatmaps: bool) -> list[Path]:
    """Run one small validation batch with recording on; save (and with `heatmaps` draw) what the core attended to."""
    core = model.core
    core.record, core.trace = True, {}
    model.eval()
    with torch.no_grad():
        batch = task.sample(generator("dump", spec.train.seed), 4, "val").to(device)
        model(batch.inputs)
    traces = core.introspect()
    core.record, core.trace = False, {}
    model.train()
    if not traces:
        return []
    return dumps.write(traces, out, f"{spec.mechanism.name} on {spec.task.name}", heatmaps)


def measured(trial: TrialConfig, model: nn.Module, task: Task, device: torch.device, test: bool = True) -> dict[str, float]:
    """An evaluation's metrics (validation, with `test` the test split too, size) and the signed objective that
    search minimises."""
    spec = trial.spec
    found = {**evaluate(model, task, spec, "val", device), **(evaluate(model, task, spec, "test", device) if test else {}),
             PARAMS_COUNT: count_params(model), STATE_SIZE: model.core.state_size()}
    return found | {OBJECTIVE: trial.objective_sign * found[trial.objective_key]}


# -- the loop -------------------------------------------------------------------------------------

def train_loop(trial: TrialConfig, session: LocalSession | TrainSession) -> None:
    """Train one trial's spec, reporting through `session` (local, Tune or a Ray Train worker).

    A tracked trial's every rank samples its machine while it trains (one series per DDP rank); what it has
    for MLflow rides its reports to the driver (platform/outbox.py).
    """
    if not trial.tracked:
        _train(trial, session, None, None)
        return
    box = Outbox()
    with SystemSampler(box, f"rank_{session.rank}" if session.world_size > 1 else None) as sampler:
        _train(trial, session, box, sampler)


def _train(trial: TrialConfig, session: LocalSession | TrainSession, box: Outbox | None,
           sampler: SystemSampler | None) -> None:
    spec = trial.spec
    t = spec.train
    torch.set_num_threads(trial.placement.threads)
    rank, world = session.rank, session.world_size
    device = session.device(t.device)
    live = RayMetrics.if_in_ray(spec, rank, trial.run_id or "")

    # model, optimizer, data: identical init on every rank; each rank draws its own shard
    torch.manual_seed(t.seed)
    task: Task = TASKS.get(spec.task.name).build(spec.task_params())
    model = build_model(spec.mechanism.name, spec.mechanism_params(), task, spec.task.name).to(device)
    opt, sched = make_optimizer(model, t)
    loss_kind = TASKS.get(spec.task.name).loss
    start = 0
    restored = session.restore()
    if restored is not None:
        state = torch.load(restored / CHECKPOINT, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["schedule"])
        torch.set_rng_state(state["rng"])
        start = state["step"]
    log = box if rank == 0 else None  # metrics, tags and artifacts come from rank 0; samples from every rank
    if log and start == 0:
        log.tags(params_count=str(count_params(model)), state_size=str(model.core.state_size()))
    ddp = session.prepare(model)
    forward = torch.compile(ddp) if t.compile else ddp  # evaluation stays eager: its shapes vary (lengths, batches)
    scratch = fresh_folder(trial.scratch) if rank == 0 else None
    per_rank = t.batch_size // world

    # the loss is summed on the device: one host sync per logging period, none per step (a GPU runs ahead)
    evals, window_loss, window_n, tick = start // t.eval_every, torch.zeros((), device=device), 0, time.perf_counter()
    reported = tick
    latest: dict[str, float] = {}
    last: dict[str, Any] = {}  # the last report made
    for step in range(start, t.steps):
        batch = task.sample(generator(t.seed, "train", rank, step), per_rank, "train").to(device)
        with autocast(device):
            logits, _ = forward(batch.inputs)
            loss, per_example = compute_loss(loss_kind, logits, batch)
            aux = model.core.auxiliary_loss(per_example.detach())
        opt.zero_grad(set_to_none=True)
        (loss if aux is None else loss + aux).backward()
        if t.grad_clip:
            nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
        opt.step()
        sched.step()
        window_loss, window_n = window_loss + loss.detach().float(), window_n + 1

        done = step + 1
        is_eval = done % t.eval_every == 0 or done == t.steps
        if done % t.log_every == 0 or is_eval:
            mean_loss = window_loss.item() / window_n  # the period's one host sync
            if not math.isfinite(mean_loss):  # before any evaluation or checkpoint of the diverged weights
                raise FloatingPointError(f"loss became {mean_loss} by step {done}: lower train.lr or set train.grad_clip")
            now = time.perf_counter()
            metrics = {TRAIN_LOSS: mean_loss, "train/steps_per_s": window_n / (now - tick), "train/lr": sched.get_last_lr()[0]}
            window_loss, window_n, tick = torch.zeros((), device=device), 0, now
            if live:
                live.record(metrics, done, device)
            checkpoint = None
            if is_eval:
                evals += 1
                if rank == 0:
                    latest = measured(trial, model, task, device, test=t.measures_test(done))
                    checkpoint = save_checkpoint(Path(tempfile.mkdtemp(prefix="amctl-ckpt-", dir=scratch)), model, opt,
                                                 sched, done)
            if is_eval:  # val/test metrics only at the step they were measured: curves hold evaluations, not repeats
                metrics.update(latest)
            if sampler:
                sampler.step = done
            if log:  # the signed objective is search's internal currency: MLflow shows the metric itself
                log.metrics({k: v for k, v in metrics.items() if k != OBJECTIVE}, done, int(time.time() * 1000))
            if is_eval or now - reported >= session.report_every_s:
                last = {STEP: done, EVALS: evals, **metrics}
                session.report(box.attach(last) if box else last, checkpoint)
                reported = now
            if checkpoint is not None:
                shutil.rmtree(checkpoint, ignore_errors=True)  # the session has persisted it
            if is_eval:  # an evaluation and its bookkeeping (checkpoint, flush, report) are not training throughput
                tick = time.perf_counter()

    if box is None:
        return
    # the last evaluation's report again (what Tune keeps as the trial's result), with what is left for MLflow
    final = last if last.get(STEP) == t.steps else {STEP: t.steps, EVALS: evals}
    if log:  # rank 0: the final state, what it attended to and the model, staged on storage for the driver to log
        if OBJECTIVE not in final:  # restored after its last evaluation: measured again (evaluation is seeded)
            final = {**final, **measured(trial, model, task, device)}
        with tempfile.TemporaryDirectory(prefix="amctl-final-", dir=scratch) as tmp:
            tmp = Path(tmp)
            (tmp / FINAL_CHECKPOINT).mkdir()
            save_checkpoint(tmp / FINAL_CHECKPOINT, model, opt, sched, t.steps)  # what a resumed trial restores
            dump_introspection(model, task, spec, device, tmp / FINAL_DUMPS, heatmaps=trial.reported)
            # the unwrapped module (not DDP's wrapper), on CPU: it loads without a GPU
            torch.save(model.cpu(), tmp / FINAL_MODEL)
            final[outbox.FINAL] = outbox.stage(tmp, trial.storage_path, trial.run_id)
    sampler.record()
    session.report(box.attach(final), None)  # every rank: Ray Train's reports are collective


def run_trial(config: dict[str, Any]) -> None:
    """Tune function trainable: the loop in-process for one worker, a Ray Train TorchTrainer (DDP) for more.

    Train V2 cannot be handed to a Tuner directly; a function trainable that
    calls `TorchTrainer.fit()` and forwards reports with TuneReportCallback is
    the supported shape.  The Train run name is derived from the trial id so
    that a restored trial resumes its own Train run.
    """
    import ray.tune

    # checkpoint temporaries in a folder of the trial's own (a trial killed mid-save leaves nothing in the system temp
    # dir), beside its Tune folder, not in it: Tune copies its parent to storage at every experiment save, where a
    # temporary deleted mid-copy failed the save and every copy stayed behind
    here = Path(ray.tune.get_context().get_trial_dir())
    trial = replace(of(config), scratch=str(here.parent.parent / "amctl-scratch" / here.name))
    if trial.spec.train.workers == 1:
        train_loop(trial, TuneSession())
        return
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    use_gpu = trial.spec.train.device != "cpu" and trial.placement.gpus_per_worker > 0
    trainer = TorchTrainer(
        _train_worker,
        train_loop_config={KEY: trial},
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=trial.spec.train.workers, use_gpu=use_gpu,
            # the GPU share is the spec's (use_gpu alone would take one whole GPU per worker)
            resources_per_worker={"CPU": trial.placement.cpus_per_worker,
                                  **({"GPU": trial.placement.gpus_per_worker} if use_gpu else {})},
        ),
        run_config=RunConfig(
            name=f"ddp-{ray.tune.get_context().get_trial_id()}",
            storage_path=trial.storage_path,
            callbacks=[_every_ranks_outbox(TuneReportCallback)()],
            failure_config=FailureConfig(max_failures=trial.placement.max_failures, controller_failure_limit=1),
        ),
    )
    trainer.fit()


def _every_ranks_outbox(base: type) -> type:
    """TuneReportCallback forwards rank 0's report alone: this one adds every other rank's outbox items to it
    (their machine samples), so that each rank's series reaches MLflow as it did when ranks wrote it themselves."""

    class EveryRanksOutbox(base):
        def after_report(self, run_context, metrics, checkpoint):
            items = [item for report in metrics for item in report.get(outbox.KEY, [])]
            first = {**metrics[0], outbox.KEY: items} if items else metrics[0]
            super().after_report(run_context, [first, *metrics[1:]], checkpoint)

    return EveryRanksOutbox


def _train_worker(config: dict[str, Any]) -> None:
    """What every Ray Train worker runs: the same loop, reporting through Ray Train."""
    train_loop(of(config), TrainSession())
