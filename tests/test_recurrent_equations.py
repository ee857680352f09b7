"""Recurrent cores against one hand-computed step: Elman RNN, peephole LSTM, Working-Memory LSTM."""

from __future__ import annotations

import math

import pytest
import torch

from amlab.workloads.mechanisms.lstm_variants import PeepholeLSTM, WorkingMemoryLSTM, peephole_step, wm_step
from amlab.workloads.mechanisms.recurrent import ElmanRNN, LSTMParams, RNNParams


def sig(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_elman_one_step_by_hand():
    d = 8
    core = ElmanRNN(RNNParams(d_model=d))
    with torch.no_grad():
        core.rnn.weight_ih_l0.copy_(0.5 * torch.eye(d))
        core.rnn.weight_hh_l0.copy_(-0.25 * torch.eye(d))
        core.rnn.bias_ih_l0.fill_(0.1)
        core.rnn.bias_hh_l0.fill_(0.2)
    x = torch.zeros(1, 1, d)
    x[0, 0, :2] = torch.tensor([1.0, -2.0])
    h0 = torch.zeros(1, 1, d)
    h0[0, 0, :2] = torch.tensor([0.4, 0.8])
    y, h = core(x, h0)
    # h = tanh(0.5 x + 0.1 - 0.25 h0 + 0.2), unit by unit
    expected = [math.tanh(0.5 - 0.1 + 0.3), math.tanh(-1.0 - 0.2 + 0.3)] + [math.tanh(0.3)] * (d - 2)
    torch.testing.assert_close(y[0, 0], torch.tensor(expected))
    torch.testing.assert_close(h[0, 0], y[0, 0])


def test_peephole_step_by_hand():
    pre = torch.tensor([[0.5, -0.5, 1.0, 0.2]])  # (i, f, g, o) pre-activations, d = 1
    c0 = torch.tensor([[2.0]])
    peep = torch.tensor([[0.1], [0.2], [0.3]])
    h, c, (i, f, o) = peephole_step(pre, c0, peep)
    i_ = sig(0.5 + 0.1 * 2)  # input and forget gates peep at the old cell
    f_ = sig(-0.5 + 0.2 * 2)
    c_ = f_ * 2 + i_ * math.tanh(1.0)
    o_ = sig(0.2 + 0.3 * c_)  # the output gate peeps at the new cell
    for got, want in ((i, i_), (f, f_), (o, o_), (c, c_), (h, o_ * math.tanh(c_))):
        torch.testing.assert_close(got, torch.tensor([[want]]))


def test_wm_step_by_hand():
    pre = torch.tensor([[0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0]])  # (i, f, g, o) pre-activations, d = 2
    c0 = torch.tensor([[1.0, -1.0]])
    w_c = torch.tensor([
        [[0.5, 1.0], [0.0, 0.0]],  # W_ci c0 = (-0.5, 0)
        [[0.0, 0.0], [1.0, 1.0]],  # W_cf c0 = (0, 0)
        [[0.0, 1.0], [0.0, 0.0]],  # W_co c1 = (c1[1], 0)
    ])
    h, c, (i, f, o) = wm_step(pre, c0, w_c)
    i_ = [sig(math.tanh(-0.5)), sig(0.0)]
    f_ = [0.5, 0.5]
    c_ = [f_[k] * c0[0, k].item() + i_[k] * math.tanh(1.0) for k in range(2)]
    o_ = [sig(math.tanh(c_[1])), 0.5]
    h_ = [o_[k] * math.tanh(c_[k]) for k in range(2)]
    for got, want in ((i, i_), (f, f_), (c, c_), (o, o_), (h, h_)):
        torch.testing.assert_close(got, torch.tensor([want]))


@pytest.mark.parametrize(("cls", "step"), [(PeepholeLSTM, peephole_step), (WorkingMemoryLSTM, wm_step)])
def test_module_wires_input_hidden_and_cell_into_the_step(cls, step):
    """One step of the module = W x + b + U h fed to the gate equations with the layer's cell weights."""
    d = 8
    core = cls(LSTMParams(d_model=d, forget_bias=1.5))
    assert torch.all(core.ih[0].bias[d : 2 * d] == 1.5)
    x, h0, c0 = torch.randn(2, 1, d), torch.randn(1, 2, d), torch.randn(1, 2, d)
    y, (h, c) = core(x, (h0, c0))
    pre = x[:, 0] @ core.ih[0].weight.T + core.ih[0].bias + h0[0] @ core.hh[0].weight.T
    h_, c_, _ = step(pre, c0[0], core.cell_weights[0])
    torch.testing.assert_close(y[:, 0], h_)
    torch.testing.assert_close(h[0], h_)
    torch.testing.assert_close(c[0], c_)


@pytest.mark.parametrize("cls", [PeepholeLSTM, WorkingMemoryLSTM])
def test_recorded_gates_are_in_unit_interval_for_the_top_layer(cls):
    core = cls(LSTMParams(d_model=8, layers=2))
    core.record = True
    y, _ = core(torch.randn(3, 5, 8))
    tr = core.introspect()
    for name in ("input_gate", "forget_gate", "output_gate"):
        assert tr[name].shape == (3, 5, 8)
        assert ((tr[name] > 0) & (tr[name] < 1)).all()
    # h = o * tanh(c): the top layer's output is consistent with its recorded gates and cells
    torch.testing.assert_close(y, tr["output_gate"] * tr["cell"].tanh())


def test_peephole_with_zero_peepholes_is_a_plain_lstm():
    d = 8
    core = PeepholeLSTM(LSTMParams(d_model=d))
    ref = torch.nn.LSTM(d, d, batch_first=True)
    with torch.no_grad():
        core.cell_weights.zero_()
        ref.weight_ih_l0.copy_(core.ih[0].weight)
        ref.bias_ih_l0.copy_(core.ih[0].bias)
        ref.weight_hh_l0.copy_(core.hh[0].weight)
        ref.bias_hh_l0.zero_()
    x = torch.randn(2, 6, d)
    torch.testing.assert_close(core(x)[0], ref(x)[0])
