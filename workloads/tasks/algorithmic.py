"""The NTM bit-vector tasks beyond copy (Graves et al. 2014): repeat copy, associative recall, priority sort.

All three read random bit vectors, see a delimiter, and must then write bit
vectors on a blank input; they are scored in bit errors per sequence, the
NTM paper's measure, with the test split holding the larger conditions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import model_validator

from amlab.workloads.registry import Params, knob, task
from amlab.workloads.tasks.base import Batch, Task

NTM_PAPER = "Graves et al. 2014, Neural Turing Machines"


def bit_scores(logits: torch.Tensor, batch: Batch) -> dict[str, float]:
    """Bit errors per sequence (thresholding logits at 0), whole-sequence and per-bit accuracy."""
    wrong = ((logits > 0).float() != batch.targets).float().sum(-1)  # (B, T)
    per_seq = (wrong * batch.mask).sum(1)
    bits = batch.mask.sum(1) * batch.targets.shape[-1]
    return {
        "bit_errors": per_seq.mean().item(),
        "seq_accuracy": (per_seq == 0).float().mean().item(),
        "bit_accuracy": (1 - per_seq / bits).mean().item(),
    }


def random_bits(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=gen).float()


def lengths_between(gen: torch.Generator, batch_size: int, low: int, high: int, fixed: int | None) -> torch.Tensor:
    """Per-example sizes: uniform in [low, high] for training, `fixed` for an eval group."""
    if fixed is None:
        return torch.randint(low, high + 1, (batch_size,), generator=gen)
    return torch.full((batch_size,), fixed)


# -- repeat copy ----------------------------------------------------------------------------------

class RepeatCopyParams(Params):
    width: int = knob(8, 1, 64, search=False, doc="bits per vector")
    min_len: int = knob(1, 1, 1000, search=False, doc="shortest training sequence")
    max_len: int = knob(10, 1, 1000, search=False, doc="longest training sequence")
    min_repeats: int = knob(1, 1, 100, search=False, doc="fewest training repeats")
    max_repeats: int = knob(10, 1, 100, search=False, doc="most training repeats")
    test_lens: tuple[int, ...] = knob((10, 20), search=False, doc="sequence lengths of the test split")
    test_repeats: tuple[int, ...] = knob((10, 20), search=False, doc="repeat counts of the test split (crossed with test_lens)")

    @model_validator(mode="after")
    def _order(self):
        if self.min_len > self.max_len or self.min_repeats > self.max_repeats:
            raise ValueError("min_len/min_repeats must be <= max_len/max_repeats")
        if not self.test_lens or not self.test_repeats or min(self.test_lens + self.test_repeats) < 1:
            raise ValueError("test_lens and test_repeats must be non-empty lists of values >= 1")
        return self


@task(
    "repeat_copy", params=RepeatCopyParams, modality="bits", loss="bce", metric="bit_errors", higher_is_better=False,
    metrics=("bit_errors", "seq_accuracy", "bit_accuracy"), paper=NTM_PAPER,
)
class RepeatCopy(Task):
    """Bit vectors, then a repeat count: write the vectors that many times and then an end marker.

    Input channels: `width` bits, a delimiter, the repeat count.  For length
    L and count R: steps 0..L-1 carry the vectors, step L the delimiter,
    step L+1 the count normalised by the training counts' mean and standard
    deviation (as in the paper, so larger test counts lie outside the trained
    range).  Steps L+2 .. L+1+L·R must output the vectors R times over and step
    L+2+L·R the end marker (output channel `width`), which the model can only
    place by counting.
    """

    def __init__(self, params: RepeatCopyParams):
        super().__init__(params)
        p = params
        self.input_size = p.width + 2
        self.output_size = p.width + 1
        n = p.max_repeats - p.min_repeats + 1  # discrete uniform counts: mean and std
        self.count_mean, self.count_std = (p.min_repeats + p.max_repeats) / 2, ((n * n - 1) / 12) ** 0.5 or 1.0
        groups = [(L, R) for L in p.test_lens for R in p.test_repeats]
        # random guessing gets half of the written bits (vectors and end channel) wrong
        self.chance = sum((p.width + 1) / 2 * (L * R + 1) for L, R in groups) / len(groups)

    def eval_groups(self, split):
        if split == "test":
            p = self.params
            return {f"len_{L}_rep_{R}": {"length": L, "repeats": R} for L in p.test_lens for R in p.test_repeats}
        return {"all": {}}

    def sample(self, gen, batch_size, split, length: int | None = None, repeats: int | None = None):
        p, B = self.params, batch_size
        lengths = lengths_between(gen, B, p.min_len, p.max_len, length)
        reps = lengths_between(gen, B, p.min_repeats, p.max_repeats, repeats)
        Lmax, out_len = int(lengths.max()), lengths * reps
        T = Lmax + 3 + int(out_len.max())
        t = torch.arange(Lmax)
        bits = random_bits(gen, B, Lmax, p.width) * (t[None, :] < lengths[:, None])[..., None]
        rows = torch.arange(B)
        inputs = torch.zeros(B, T, p.width + 2)
        inputs[:, :Lmax, : p.width] = bits
        inputs[rows, lengths, p.width] = 1.0
        inputs[rows, lengths + 1, p.width + 1] = (reps.float() - self.count_mean) / self.count_std
        # output j (0 <= j < L·R) of example b sits at step L_b + 2 + j and repeats vector j mod L_b
        j = torch.arange(int(out_len.max()))
        valid = j[None, :] < out_len[:, None]
        r, jj = rows[:, None].expand_as(valid)[valid], j[None, :].expand_as(valid)[valid]
        steps = lengths[r] + 2 + jj
        targets = torch.zeros(B, T, p.width + 1)
        targets[r, steps, : p.width] = bits[r, jj % lengths[r]]
        end = lengths + 2 + out_len
        targets[rows, end, p.width] = 1.0
        mask = torch.zeros(B, T, dtype=torch.bool)
        mask[r, steps] = True
        mask[rows, end] = True
        return Batch(inputs, targets, mask, {"lengths": lengths, "repeats": reps})

    def score(self, logits, batch):
        return bit_scores(logits, batch)


# -- associative recall ---------------------------------------------------------------------------

class AssociativeRecallParams(Params):
    width: int = knob(6, 1, 64, search=False, doc="bits per vector")
    item_len: int = knob(3, 1, 16, search=False, doc="vectors per item")
    min_items: int = knob(2, 2, 100, search=False, doc="fewest items in a training episode")
    max_items: int = knob(6, 2, 100, search=False, doc="most items in a training episode")
    test_items: tuple[int, ...] = knob((6, 12), search=False, doc="item counts of the test split")

    @model_validator(mode="after")
    def _fits(self):
        if self.min_items > self.max_items:
            raise ValueError(f"min_items ({self.min_items}) must be <= max_items ({self.max_items})")
        if not self.test_items or min(self.test_items) < 2:
            raise ValueError("test_items must be a non-empty list of counts >= 2")
        most = max(self.max_items, *self.test_items)
        if 2 ** min(24, self.width * self.item_len) < 4 * most:
            raise ValueError(f"items of {self.width}x{self.item_len} bits are too few to draw {most} distinct ones")
        return self


@task(
    "associative_recall", params=AssociativeRecallParams, modality="bits", loss="bce", metric="bit_errors",
    higher_is_better=False, metrics=("bit_errors", "seq_accuracy", "bit_accuracy"), paper=NTM_PAPER,
)
class AssociativeRecall(Task):
    """A list of items, then one of them again: write the item that followed it.

    An item is `item_len` bit vectors.  Input channels: `width` bits, an item
    delimiter, a query delimiter.  Each of the n items is its delimiter step
    followed by its vectors; then come a query delimiter, the query item
    (one of the first n-1, so it has a successor), a second query delimiter,
    and `item_len` blank steps whose outputs must be the next item.  Items in
    an episode are distinct, so the answer is unique.
    """

    # rows of the per-batch source table every step is gathered from
    ZERO, DELIM, QDELIM, ITEMS = 0, 1, 2, 3

    def __init__(self, params: AssociativeRecallParams):
        super().__init__(params)
        w = params.width
        self.input_size = w + 2
        self.output_size = w
        self.chance = params.width * params.item_len / 2  # random guessing: half the answer's bits wrong
        self._code_bits = min(24, w * params.item_len)  # item codes exact in float32
        self._code_weights = 2.0 ** torch.arange(self._code_bits)
        self._specials = torch.zeros(1, 3, w + 2)
        self._specials[0, self.DELIM, w] = self._specials[0, self.QDELIM, w + 1] = 1.0
        self._layouts: dict[int, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def eval_groups(self, split):
        if split == "test":
            return {f"items_{n}": {"items": n} for n in self.params.test_items}
        return {"all": {}}

    def _layout(self, nmax: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """For episodes of n <= nmax items: (source row per step, whether it is a query row, scored steps).

        rows (nmax+1, 2, T): [n, 0] the input row of each step, [n, 1] the
        target row; the query's rows are given for item 0 and shifted by
        `query * item_len` where `is_query` (nmax+1, 2, T) is 1.  Built once per nmax.
        """
        if nmax not in self._layouts:
            k = self.params.item_len
            T = nmax * (k + 1) + 2 * k + 2
            rows = torch.zeros(nmax + 1, 2, T, dtype=torch.long)
            is_query = torch.zeros(nmax + 1, 2, T, dtype=torch.long)
            scored = torch.zeros(nmax + 1, T, dtype=torch.bool)
            for n in range(2, nmax + 1):
                for i in range(n):
                    rows[n, 0, i * (k + 1)] = self.DELIM
                    rows[n, 0, i * (k + 1) + 1 : (i + 1) * (k + 1)] = self.ITEMS + i * k + torch.arange(k)
                q = n * (k + 1)  # first query delimiter
                rows[n, 0, q] = rows[n, 0, q + k + 1] = self.QDELIM
                rows[n, 0, q + 1 : q + k + 1] = self.ITEMS + torch.arange(k)  # the query item (item 0, shifted)
                rows[n, 1, q + k + 2 : q + 2 * k + 2] = self.ITEMS + k + torch.arange(k)  # the item after it
                is_query[n, 0, q + 1 : q + k + 1] = is_query[n, 1, q + k + 2 : q + 2 * k + 2] = 1
                scored[n, q + k + 2 : q + 2 * k + 2] = True
            self._layouts[nmax] = (rows, is_query, scored)
        return self._layouts[nmax]

    def _distinct_items(self, gen, B: int, n: int) -> torch.Tensor:
        """(B, n, item_len, width) bits, the n items of each row distinct.

        Items are compared by a code of their first 24 bits (exact in float32);
        rows with a repeat are redrawn (longer items agreeing in those bits count
        as a repeat, which only costs a redraw).
        """
        p = self.params
        items = random_bits(gen, B, n, p.item_len, p.width)
        for _ in range(1000):
            codes = (items.flatten(2)[..., : self._code_bits] @ self._code_weights).sort(1).values
            bad = (codes[:, 1:] == codes[:, :-1]).any(1)
            if not bad.any():
                return items
            items[bad] = random_bits(gen, int(bad.sum()), n, p.item_len, p.width)
        raise RuntimeError("could not draw distinct items")

    def sample(self, gen, batch_size, split, items: int | None = None):
        p, B, k, w = self.params, batch_size, self.params.item_len, self.params.width
        counts = lengths_between(gen, B, p.min_items, p.max_items, items)
        nmax = int(counts.max())
        rows, is_query, scored = self._layout(nmax)
        vecs = self._distinct_items(gen, B, nmax)
        query = torch.randint(0, 2**30, (B,), generator=gen) % (counts - 1)  # uniform in [0, n-2], bias < 1e-7
        # source rows: zero, item delimiter, query delimiter, then every item's vectors
        source = torch.cat([self._specials.expand(B, -1, -1), F.pad(vecs.flatten(1, 2), (0, 2))], 1)
        steps = rows[counts] + is_query[counts] * (query * k)[:, None, None]  # (B, 2, T)
        inputs = source.gather(1, steps[:, 0, :, None].expand(-1, -1, w + 2))
        targets = source[..., :w].gather(1, steps[:, 1, :, None].expand(-1, -1, w))
        return Batch(inputs, targets, scored[counts], {"items": counts, "query": query})

    def score(self, logits, batch):
        return bit_scores(logits, batch)


# -- priority sort --------------------------------------------------------------------------------

class PrioritySortParams(Params):
    width: int = knob(8, 1, 64, search=False, doc="bits per vector")
    n_in: int = knob(20, 2, 1000, search=False, doc="vectors read, each with a priority in [-1, 1]")
    n_out: int = knob(16, 1, 1000, search=False, doc="highest-priority vectors to write, highest first")
    test_n_in: tuple[int, ...] = knob((20, 40), search=False, doc="input counts of the test split (n_out scales in proportion)")

    @model_validator(mode="after")
    def _fits(self):
        if self.n_out > self.n_in:
            raise ValueError(f"n_out ({self.n_out}) must be <= n_in ({self.n_in})")
        if not self.test_n_in or min(self.test_n_in) < 2:
            raise ValueError("test_n_in must be a non-empty list of counts >= 2")
        return self


@task(
    "priority_sort", params=PrioritySortParams, modality="bits", loss="bce", metric="bit_errors", higher_is_better=False,
    metrics=("bit_errors", "seq_accuracy", "bit_accuracy"), paper=NTM_PAPER,
)
class PrioritySort(Task):
    """Vectors with scalar priorities: write the n_out highest-priority ones, sorted by priority, highest first.

    Input channels: `width` bits, the priority (uniform in [-1, 1]), a
    delimiter.  Steps 0..n_in-1 carry vectors and priorities, step n_in the
    delimiter, steps n_in+1 .. n_in+n_out are blank and scored.  The test
    split also reads more vectors (n_out keeps the ratio n_out / n_in).
    """

    def __init__(self, params: PrioritySortParams):
        super().__init__(params)
        self.input_size = params.width + 2
        self.output_size = params.width
        outs = [self._n_out(n) for n in params.test_n_in]
        self.chance = params.width / 2 * sum(outs) / len(outs)

    def _n_out(self, n_in: int) -> int:
        return max(1, round(n_in * self.params.n_out / self.params.n_in))

    def eval_groups(self, split):
        if split == "test":
            return {f"in_{n}_out_{self._n_out(n)}": {"n_in": n, "n_out": self._n_out(n)} for n in self.params.test_n_in}
        return {"all": {}}

    def sample(self, gen, batch_size, split, n_in: int | None = None, n_out: int | None = None):
        p, B = self.params, batch_size
        n, k, w = n_in or p.n_in, n_out or p.n_out, p.width
        bits = random_bits(gen, B, n, w)
        priority = torch.rand(B, n, generator=gen) * 2 - 1
        top = priority.topk(k, dim=1).indices  # sorted, highest first
        inputs = torch.zeros(B, n + 1 + k, w + 2)
        inputs[:, :n, :w] = bits
        inputs[:, :n, w] = priority
        inputs[:, n, w + 1] = 1.0
        targets = torch.zeros(B, n + 1 + k, w)
        targets[:, n + 1 :] = bits.gather(1, top[..., None].expand(B, k, w))
        mask = torch.zeros(B, n + 1 + k, dtype=torch.bool)
        mask[:, n + 1 :] = True
        return Batch(inputs, targets, mask, {"order": top})

    def score(self, logits, batch):
        return bit_scores(logits, batch)
