"""VMeanba layer selection on the bundled digits models against what docs/COMPRESSION.md documents
("Accuracy vs K on the digits models") and against a re-implementation of the budgeted greedy
walk written here (its own accuracy count through apply_vmeanba, its own impact order).

docs/COMPRESSION.md, VMamba (v2 line), budget 1 point (`python -m exporter.compress select --digits
vmamba --max-drop 0.01 --threads 1`): impact order layers.0.blocks.0, layers.1.blocks.0,
layers.2.blocks.3, layers.3.blocks.0, layers.2.blocks.0, layers.2.blocks.2, layers.2.blocks.1,
layers.1.blocks.1 with calibration top-1 99.16/99.16/99.16/98.89/98.05/96.94/90.53/91.36% for the
first K = 1..8 together (99.16% uncompressed); chosen: the five layers below: "the greedy walk
skipped layers.2.blocks.0, whose joint drop broke the budget, and then accepted layers.2.blocks.2".
"""
from __future__ import annotations

import pytest
import torch

from exporter.compress import apply_vmeanba, select_vmeanba_layers
from exporter.samples_data import ASSETS_DIR, digits_dataset, load_digits_model

DOC_VMAMBA_ORDER = ["layers.0.blocks.0", "layers.1.blocks.0", "layers.2.blocks.3", "layers.3.blocks.0",
                    "layers.2.blocks.0", "layers.2.blocks.2", "layers.2.blocks.1", "layers.1.blocks.1"]
DOC_VMAMBA_CURVE_PERCENT = [99.16, 99.16, 99.16, 98.89, 98.05, 96.94, 90.53, 91.36]
DOC_VMAMBA_BASELINE_PERCENT = 99.16
DOC_VMAMBA_CHOSEN = ["layers.0.blocks.0", "layers.1.blocks.0", "layers.2.blocks.2", "layers.2.blocks.3",
                     "layers.3.blocks.0"]
BUDGET = 0.01  # "budget 1 point"


@pytest.fixture(autouse=True, scope="module")
def fast_cpu():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    yield
    torch.set_flush_denormal(False)
    torch.set_num_threads(threads)


def _model(family):
    if not (ASSETS_DIR / f"digits_{family}.safetensors").exists():
        pytest.skip(f"digits {family} weights missing: run python samples/train_digits.py")
    return load_digits_model(family)


class Counter:
    """Correct predictions on the calibration split, counted here (integers: no rounding)."""

    def __init__(self, model, family):
        self.model = model
        self.images, self.labels = digits_dataset("calibration", family)
        self.n = len(self.labels)
        self.cache: dict[frozenset, int] = {}

    def correct(self, layers) -> int:
        key = frozenset(layers)
        if key not in self.cache:
            m = apply_vmeanba(self.model, sorted(key)) if key else self.model
            with torch.no_grad():
                self.cache[key] = int((m(self.images).argmax(1) == self.labels).sum())
        return self.cache[key]


def reference_walk(counter: Counter, names: list[str], budget: float, k: int | None = None):
    """The walk as docs/COMPRESSION.md states it: layers in impact order (ties: forward order),
    keep each layer whose addition keeps the MEASURED joint drop within the budget, skip the others;
    with k, stop at k layers."""
    base = counter.correct([])
    impact = {n: base - counter.correct([n]) for n in names}
    order = sorted(names, key=lambda n: (impact[n], names.index(n)))
    chosen: list[str] = []
    for name in order:
        if k is not None and len(chosen) == k:
            break
        if (base - counter.correct(chosen + [name])) / counter.n <= budget:
            chosen.append(name)
    return order, chosen


@pytest.fixture(scope="module")
def vmamba():
    model = _model("vmamba")
    return model, Counter(model, "vmamba")


def test_vmamba_budget_selection_is_the_documented_one(vmamba):
    model, counter = vmamba
    result = select_vmeanba_layers(model, "digits:calibration", max_drop=BUDGET, progress=False, threads=1)
    assert result.metric == "accuracy"
    assert result.order == DOC_VMAMBA_ORDER
    assert round(100 * result.baseline, 2) == DOC_VMAMBA_BASELINE_PERCENT
    assert [round(100 * p["metric"], 2) for p in result.curve] == DOC_VMAMBA_CURVE_PERCENT
    assert result.layers == DOC_VMAMBA_CHOSEN  # 5 layers: layers.2.blocks.0 skipped, layers.2.blocks.2 kept
    # the documented numbers also hold for this test's own count (independent of the selection code)
    base = counter.correct([])
    assert round(100 * base / counter.n, 2) == DOC_VMAMBA_BASELINE_PERCENT
    assert round(100 * counter.correct(DOC_VMAMBA_CHOSEN) / counter.n, 2) == 98.61  # "calibration 98.61%"
    assert (base - counter.correct(DOC_VMAMBA_CHOSEN)) / counter.n <= BUDGET
    assert (base - counter.correct(DOC_VMAMBA_ORDER[:5])) / counter.n > BUDGET  # why layers.2.blocks.0 is skipped


# budget 0: only layers that cost nothing (tells <= from <); k = 3 with the documented budget: the
# walk stops at k; 5 points with at most 4 layers
@pytest.mark.parametrize("budget,k", [(0.0, None), (BUDGET, 3), (0.05, 4)])
def test_vmamba_walk_matches_a_reimplementation(vmamba, budget, k):
    model, counter = vmamba
    names = list(model.ssm_layers())
    order, chosen = reference_walk(counter, names, budget, k)
    result = select_vmeanba_layers(model, "digits:calibration", k=k, max_drop=budget, progress=False, curve=False,
                                   threads=1)
    assert result.order == order
    assert result.layers == [n for n in names if n in chosen]
    assert result.joint_drop == pytest.approx((counter.correct([]) - counter.correct(chosen)) / counter.n, abs=1e-12)
