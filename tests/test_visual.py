"""Image and video models through build_model: contracts on stand-in tasks (random images/clips of the real
layout), RAM's REINFORCE sign by hand, and (slow) each visual mechanism learning its real task above chance."""

from __future__ import annotations

import pytest
import torch

from amlab.platform.sessions import LocalSession
from amlab.platform.spec import validate_run
from amlab.platform.train import train_loop
from amlab.platform.trial import TrialConfig
from amlab.workloads.mechanisms.ram import RAM, RAMParams
from amlab.workloads.model import IncompatibleCell, build_model, compute_loss
from amlab.workloads.registry import MECHANISMS, TASKS, Params, TaskEntry, knob
from amlab.workloads.tasks.base import Batch, Task

B, C, SIDE, FRAMES, CLASSES, D = 3, 2, 20, 4, 5, 8
SPATIAL = ["stn", "gather_excite", "non_local"]
VIDEO = ["temporal_attention", "lstm", "gru", "transformer", "stn", "gather_excite", "non_local"]


class StandInParams(Params):
    frames: int = knob(FRAMES, 1, 64)


class StandInImages(Task):
    """Random (B, C, H, W) images in [0, 1] with random labels: the image-task layout."""

    def __init__(self, params):
        super().__init__(params)
        self.input_size, self.output_size, self.image_size, self.chance = C, CLASSES, (SIDE, SIDE), 1 / CLASSES

    def sample(self, gen, batch_size, split, side: int = SIDE):
        x = torch.rand(batch_size, C, side, side, generator=gen)
        y = torch.randint(0, CLASSES, (batch_size, 1), generator=gen)
        return Batch(x, y, torch.ones(batch_size, 1, dtype=torch.bool))


class StandInVideo(StandInImages):
    """Random (B, F, C, H, W) clips: the video-task layout."""

    def __init__(self, params):
        super().__init__(params)
        self.frames = params.frames

    def sample(self, gen, batch_size, split, frames: int | None = None):
        x = torch.rand(batch_size, frames or self.frames, C, SIDE, SIDE, generator=gen)
        y = torch.randint(0, CLASSES, (batch_size, 1), generator=gen)
        return Batch(x, y, torch.ones(batch_size, 1, dtype=torch.bool))


@pytest.fixture(autouse=True)
def stand_in_tasks(monkeypatch):
    TASKS.names()  # load the real registry before adding the stand-ins for this test only
    for name, cls, modality in (("standin_image", StandInImages, "image"), ("standin_video", StandInVideo, "video")):
        entry = TaskEntry(name=name, params=StandInParams, build=cls, modality=modality, loss="ce", metric="accuracy",
                          higher_is_better=True)
        monkeypatch.setitem(TASKS._entries, name, entry)


def make(mechanism: str, task: str, seed: int = 0):
    entry = MECHANISMS.get(mechanism)
    params = entry.params(**({"d_model": D} if entry.kind != "glimpse" else {"d_model": 16, "patch": 4, "glimpses": 3}))
    task_obj = TASKS.get(task).build(StandInParams())
    torch.manual_seed(seed)
    return build_model(mechanism, params, task_obj, task), task_obj


def batch(task_obj, seed: int = 0, **kw) -> Batch:
    return task_obj.sample(torch.Generator().manual_seed(seed), B, "train", **kw)


def loss_of(model, b: Batch, seed: int = 1):
    torch.manual_seed(seed)  # RAM samples glimpse locations in training
    logits, _ = model(b.inputs)
    loss, per_example = compute_loss("ce", logits, b)
    aux = model.core.auxiliary_loss(per_example.detach())
    return logits, loss if aux is None else loss + aux


CELLS = [(m, "standin_image") for m in [*SPATIAL, "ram"]] + [(m, "standin_video") for m in VIDEO]


@pytest.mark.parametrize(("mechanism", "task"), CELLS)
def test_shapes_and_core(mechanism, task):
    model, task_obj = make(mechanism, task)
    logits, _ = model(batch(task_obj).inputs)
    assert logits.shape == (B, 1, CLASSES)
    assert torch.isfinite(logits).all()
    assert type(model.core) is MECHANISMS.get(mechanism).build, "model.core must be the mechanism"


@pytest.mark.parametrize(("mechanism", "task"), CELLS)
def test_gradients_reach_every_parameter(mechanism, task):
    """After one step: zero-initialised layers (STN's theta head, non-local's W_z) block gradients upstream at init."""
    model, task_obj = make(mechanism, task)
    b = batch(task_obj)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        opt.zero_grad()
        loss_of(model, b)[1].backward()
        opt.step()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"{mechanism}: no gradient reaches {missing}"


@pytest.mark.parametrize(("mechanism", "task"), CELLS)
def test_seeded_determinism(mechanism, task):
    a, task_obj = make(mechanism, task, seed=5)
    b_, _ = make(mechanism, task, seed=5)
    c, _ = make(mechanism, task, seed=6)
    b = batch(task_obj)
    la, lb, lc = (loss_of(m, b)[0] for m in (a, b_, c))
    assert torch.equal(la, lb)
    assert not torch.equal(la, lc)


def test_models_accept_other_sizes_at_test_time():
    """Test splits change the canvas or the clip length: the encoders are fully convolutional and pool."""
    model, task_obj = make("non_local", "standin_image")
    assert model(batch(task_obj, side=2 * SIDE).inputs)[0].shape == (B, 1, CLASSES)
    model, task_obj = make("temporal_attention", "standin_video")
    assert model(batch(task_obj, frames=2 * FRAMES).inputs)[0].shape == (B, 1, CLASSES)


def test_non_local_is_identity_at_init():
    core = MECHANISMS.get("non_local").build(MECHANISMS.get("non_local").params(d_model=D))
    x = torch.randn(2, D, 6, 5)
    assert torch.equal(core(x), x)


def test_non_local_attention_rows_sum_to_one():
    core = MECHANISMS.get("non_local").build(MECHANISMS.get("non_local").params(d_model=D))
    core.record = True
    core(torch.randn(2, D, 6, 5))
    attn = core.introspect()["attention"]
    assert attn.shape == (2, 30, 30)
    assert (attn >= 0).all()
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, 30))


def test_stn_identity_theta_reproduces_input():
    core = MECHANISMS.get("stn").build(MECHANISMS.get("stn").params(d_model=D))
    core.record = True
    x = torch.randn(2, D, 7, 9)
    torch.testing.assert_close(core(x), x, atol=1e-5, rtol=0)
    tr = core.introspect()
    torch.testing.assert_close(tr["theta"], torch.tensor([[1.0, 0, 0], [0, 1, 0]]).expand(2, 2, 3))
    assert tr["sampling_grid"].shape == (2, 7, 9, 2)


def test_stn_follows_theta():
    """A pure translation theta shifts the map: x-offset 2/W (normalised) moves it by one pixel."""
    core = MECHANISMS.get("stn").build(MECHANISMS.get("stn").params(d_model=D))
    with torch.no_grad():
        core.loc[-1].bias.copy_(torch.tensor([1.0, 0, 2 / 9, 0, 1, 0]))
    x = torch.randn(1, D, 7, 9)
    torch.testing.assert_close(core(x)[..., :-1], x[..., 1:], atol=1e-5, rtol=0)


def test_gather_excite_rescales_by_a_gate_in_0_1():
    for extent in (0, 2):
        core = MECHANISMS.get("gather_excite").build(MECHANISMS.get("gather_excite").params(d_model=D, extent=extent))
        core.record = True
        x = torch.rand(2, D, 6, 6) + 0.1
        ratio = core(x) / x
        assert ((ratio > 0) & (ratio < 1)).all()
        assert core.introspect()["excite_gate"].shape == (2, 6, 6)


def test_ram_glimpses_in_bounds_and_reinforce_loss():
    model, task_obj = make("ram", "standin_image")
    core = model.core
    core.record = True
    b = batch(task_obj)
    for _ in range(5):
        logits, _ = model(b.inputs)
        locs = core.introspect()["glimpse_locations"]
        assert locs.shape == (B, 3, 2)
        assert (locs.abs() <= 1).all()
        assert len(set(locs[:, 1:].flatten().tolist())) > 1, "training samples glimpse locations"
        _, per_example = compute_loss("ce", logits, b)
        aux = core.auxiliary_loss(per_example.detach())
        assert aux is not None and aux.ndim == 0 and torch.isfinite(aux)
        aux.backward()
        assert core.policy.weight.grad.abs().sum() > 0 and core.baseline.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        first = model(b.inputs)[0]
        assert torch.equal(first, model(b.inputs)[0]), "evaluation glimpses at the policy mean"
    assert core.auxiliary_loss(per_example) is None, "no REINFORCE term without a sampled training forward"


def _first_choice(core: RAM, images: torch.Tensor) -> torch.Tensor:
    """The policy mean of the first chosen location: evaluation glimpses at the mean, recorded as location 1."""
    core.eval()
    with torch.no_grad():
        core(images)
    core.train()
    return core.introspect()["glimpse_locations"][:, 1]


@pytest.mark.parametrize(("loss", "direction"), [(0.2, 1), (1.8, -1)])
def test_ram_reinforce_sign(loss, direction):
    """Reward -L against a baseline of -1: a glimpse that beat it becomes more likely, one that lost less likely.

    Two glimpses, so one sampled location l ~ N(mu(h_1), std^2), where h_1 follows the fixed start glimpse and
    does not depend on the policy; the REINFORCE term must be -(r - b) log pi(l), plus the baseline's squared error.
    """
    torch.manual_seed(0)
    core = RAM(RAMParams(d_model=16, patch=4, glimpses=2, scales=1))
    core.bind(1)
    core.record = True
    with torch.no_grad():
        core.baseline.weight.zero_()
        core.baseline.bias.fill_(-1.0)  # b = -1, the reward of a loss of 1
    images = torch.rand(1, 1, 12, 12, generator=torch.Generator().manual_seed(1))
    mu = _first_choice(core, images)
    torch.manual_seed(3)
    core(images)
    sampled = core.introspect()["glimpse_locations"][:, 1]
    assert not torch.equal(sampled, mu), "training samples around the mean"
    std = core.params.std

    def log_pi(mean):
        return torch.distributions.Normal(mean, std).log_prob(sampled).sum()

    before = log_pi(mu)
    aux = core.auxiliary_loss(torch.tensor([loss]))
    advantage = -loss + 1.0
    torch.testing.assert_close(aux, -advantage * before + (1.0 - loss) ** 2, atol=1e-5, rtol=1e-5)
    aux.backward()
    assert core.what.weight.grad is None and core.core_h.weight.grad is None, "REINFORCE trains the policy only"
    with torch.no_grad():
        for p in core.parameters():
            if p.grad is not None:
                p -= 1e-2 * p.grad
    after = log_pi(_first_choice(core, images))
    assert direction * (after - before) > 0
    assert core.auxiliary_loss(torch.tensor([loss])) is None, "one REINFORCE term per sampled forward"


# each visual mechanism on its real task, small: (mechanism params, task params, steps, batch size, learning rate)
SMALL_CLUTTER = {"name": "cluttered_digits", "canvas": 24, "scale": 1, "clutter": 3, "fragment": 3,
                 "test_canvas": 24, "test_clutter": 3}
REAL = {
    "stn": ({"d_model": 16}, SMALL_CLUTTER, 200, 32, 3e-3),
    "gather_excite": ({"d_model": 16}, SMALL_CLUTTER, 200, 32, 3e-3),
    "non_local": ({"d_model": 16}, SMALL_CLUTTER, 200, 32, 3e-3),
    # a glimpse net is an MLP on the retina, not a conv: it learns slower, so a smaller canvas and more steps
    "ram": ({"d_model": 64, "patch": 8, "scales": 2, "glimpses": 4},
            {**SMALL_CLUTTER, "canvas": 16, "clutter": 2, "test_canvas": 16, "test_clutter": 2}, 600, 64, 2e-3),
    "temporal_attention": ({"d_model": 16}, {"name": "moving_digits", "frames": 4, "key_frames": 1, "size": 12,
                                             "clutter": 2, "test_frames": 4}, 300, 32, 3e-3),
}


@pytest.mark.slow
@pytest.mark.parametrize("mechanism", sorted(REAL))
def test_learns_its_real_task_clearly_above_chance(mechanism):
    """Validation accuracy (held-out digit images) at least 3x chance (0.1), over 4 batches: >= 7 standard deviations."""
    mech, task, steps, batch_size, lr = REAL[mechanism]
    spec = validate_run({
        "mechanism": {"name": mechanism, **mech}, "task": task,
        "train": {"steps": steps, "batch_size": batch_size, "lr": lr, "log_every": 100, "eval_every": steps,
                  "eval_batches": 4, "device": "cpu", "seed": 0},
    })
    session = LocalSession()
    train_loop(TrialConfig.local(spec), session)
    chance = TASKS.get(task["name"]).build(spec.task_params()).chance
    accuracy = session.reports[-1]["val/accuracy"]
    assert accuracy >= 3 * chance, f"{mechanism} on {task['name']}: accuracy {accuracy:.3f} after {steps} steps"


@pytest.mark.parametrize(
    ("mechanism", "task"),
    [("lstm", "standin_image"), ("fast_weights", "standin_image"), ("stn", "copy"), ("ram", "standin_video"),
     ("hierarchical_attention", "standin_video"), ("non_local", "mqar")],
)
def test_incompatible_pairs_name_both(mechanism, task):
    entry = MECHANISMS.get(mechanism)
    task_obj = TASKS.get(task).build(TASKS.get(task).params())
    with pytest.raises(IncompatibleCell) as err:
        build_model(mechanism, entry.params(), task_obj, task)
    assert mechanism in str(err.value) and task in str(err.value)


@pytest.mark.parametrize(("mechanism", "task"), CELLS)
def test_bf16_autocast(mechanism, task):
    """Mixed dtypes (fp32 states, bf16 matmuls) survive autocast; CPU bf16 stands in where no GPU is visible."""
    model, task_obj = make(mechanism, task)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model.to(device)
    b = batch(task_obj).to(device)
    with torch.autocast(device, dtype=torch.bfloat16):
        logits, loss = loss_of(model, b)
    loss.backward()
    assert torch.isfinite(logits.float()).all() and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
