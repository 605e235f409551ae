"""The speed-aware planner and its cost model (exporter/compress/planner.py, cost_model.py), on the CPU.

- The knapsack against brute force over every plan of small random instances (an independent
  reference: all 4^n option assignments enumerated in the test).
- The planner on a synthetic cost / impact table whose joint drop the test computes itself (with
  an interaction term the single drops do not show), and on the real digits model end to end,
  re-scored here with the public transforms and a plain accuracy count.
- Determinism for a fixed cache, cache hits (timer calls counted), rejected cache entries, and the
  fallback to the plain VMeanba selection when no cost model can be measured.
"""
from __future__ import annotations

import itertools
import json
import math
import random
import warnings

import pytest
import torch

from exporter.compress import apply_quartermap, apply_vmeanba, load_calibration, select_vmeanba_layers
from exporter.compress import cost_model as cm
from exporter.compress import planner
from exporter.compress.cost_model import COMPRESSED_OPTIONS, OPTIONS, CostModel, CostModelUnavailable
from exporter.compress.report import plan_summary
from exporter.models.ss2d import QuarterMapSpec, VMeanbaSpec
from exporter.samples_data import load_digits_model

CAL_LIMIT = 120  # calibration images for the end-to-end runs (keeps each calibration pass short)


pytestmark = pytest.mark.usefixtures("digits_cpu_settings")


@pytest.fixture(scope="module")
def digits():
    model = load_digits_model("vmamba")
    return model, load_calibration("digits:calibration", model.family, limit=CAL_LIMIT)


def fast_timer(**kwargs):
    settings = {"batch": 2, "precision": "fp32", "resolution": (32, 32), "iters": 1, "warmup": 0, **kwargs}
    return cm.make_timer("cpu-torch", **settings)


# --------------------------------------------------------------------------- knapsack vs brute force
def brute_force(gain, cost, budget_units, unit):
    """Best summed gain over all option assignments whose summed cost (in whole units, negatives as 0)
    stays within the budget; "none" has gain 0 and cost 0."""
    names = list(gain)
    best = 0.0
    for combo in itertools.product(OPTIONS, repeat=len(names)):
        total_cost = sum(max(0, round(cost[n][o] / unit)) for n, o in zip(names, combo) if o != "none")
        if total_cost <= budget_units:
            best = max(best, sum(gain[n][o] for n, o in zip(names, combo) if o != "none"))
    return best


def plan_value(plan, gain):
    return sum(gain[n][o] for n, o in plan.items() if o != "none")


def plan_units(plan, cost, unit):
    return sum(max(0, round(cost[n][o] / unit)) for n, o in plan.items() if o != "none")


def random_instance(rng, n, unit):
    names = [f"layers.{i // 2}.blocks.{i % 2}" for i in range(n)]
    gain = {m: {o: rng.choice([rng.uniform(-1, 3), rng.uniform(0, 0.2)]) for o in COMPRESSED_OPTIONS} for m in names}
    cost = {m: {o: unit * rng.randint(-1, 6) for o in COMPRESSED_OPTIONS} for m in names}
    return gain, cost


def test_knapsack_matches_brute_force_on_random_instances():
    rng = random.Random(0)
    unit = 1 / 359  # accuracy drops on the digits calibration split are whole samples
    for trial in range(60):
        n = rng.randint(1, 5)
        gain, cost = random_instance(rng, n, unit)
        budget_units = rng.randint(0, 12)
        plan = planner.solve_knapsack(gain, cost, budget_units * unit, unit)
        assert list(plan) == list(gain) and set(plan.values()) <= set(OPTIONS)
        assert plan_units(plan, cost, unit) <= budget_units, (trial, plan)
        assert plan_value(plan, gain) == pytest.approx(brute_force(gain, cost, budget_units, unit), abs=1e-9), trial


def test_knapsack_with_continuous_costs_stays_within_the_budget():
    """Costs that are not multiples of the unit are rounded up: the real summed cost never exceeds the
    budget, and the value is at least brute force's at the budget shrunk by one unit per layer."""
    rng = random.Random(1)
    for _ in range(30):
        n = rng.randint(1, 4)
        names = [f"layers.0.blocks.{i}" for i in range(n)]
        gain = {m: {o: rng.uniform(-0.5, 2) for o in COMPRESSED_OPTIONS} for m in names}
        cost = {m: {o: rng.uniform(-0.001, 0.01) for o in COMPRESSED_OPTIONS} for m in names}
        budget = rng.uniform(0, 0.02)
        unit = budget / 1000 if budget > 0 else 1e-9
        plan = planner.solve_knapsack(gain, cost, budget, unit)
        assert sum(max(0.0, cost[m][o]) for m, o in plan.items() if o != "none") <= budget + 1e-12
        shrunk = budget - n * unit
        best = 0.0
        for combo in itertools.product(OPTIONS, repeat=n):
            c = sum(max(0.0, cost[m][o]) for m, o in zip(names, combo) if o != "none")
            if c <= shrunk:
                best = max(best, sum(gain[m][o] for m, o in zip(names, combo) if o != "none"))
        assert plan_value(plan, gain) >= best - 1e-9


def test_knapsack_refuses_negative_budget():
    with pytest.raises(ValueError, match="budget must be >= 0"):
        planner.solve_knapsack({}, {}, -0.1, 0.01)


# --------------------------------------------------------------------------- synthetic table
class SyntheticCalibration:
    synthetic = False

    def __len__(self):
        return 1000

    def describe(self):
        return "synthetic table"


class SyntheticEvaluator:
    """Accuracy = 0.9 minus the single drops of the options, plus ``interaction`` for every pair of
    compressed blocks in the same stage: the joint drop the planner has to measure, never the sum."""

    metric = "accuracy"
    higher_is_better = True

    def __init__(self, drops, interaction):
        self.drops, self.interaction = drops, interaction
        self.baseline = 0.9
        self.cal = SyntheticCalibration()
        self.evaluations = 0

    def drop(self, value):
        return self.baseline - value

    def options(self, config):
        back = {(True, False): "vmeanba", (False, True): "quartermap", (True, True): "both", (False, False): "none"}
        return {n: back[(v is not None, q is not None)] for n, (v, q) in config.items()}

    def joint_drop(self, plan):
        chosen = [n for n, o in plan.items() if o != "none"]
        pairs = sum(1 for a, b in itertools.combinations(chosen, 2) if a.split(".")[1] == b.split(".")[1])
        return sum(self.drops[n][o] for n, o in plan.items() if o != "none") + self.interaction * pairs

    def evaluate(self, config):
        self.evaluations += 1
        return self.baseline - self.joint_drop(self.options(config))


def synthetic_table(seed, n=6):
    rng = random.Random(seed)
    names = [f"layers.{i // 3}.blocks.{i % 3}" for i in range(n)]
    drops = {m: {o: rng.randint(0, 6) / 1000 for o in COMPRESSED_OPTIONS} for m in names}
    option_ms = {m: {o: 10.0 - rng.uniform(0, 1.5) for o in COMPRESSED_OPTIONS} for m in names}
    cost = CostModel(key={"backend": "synthetic", "device": "table", "batch": 1, "precision": "fp32",
                          "resolution": [1, 1]}, baseline_ms=10.0, option_ms=option_ms,
                     measured_as={m: m for m in names}, iters=1, rounds=1, warmup=0, seconds=0.0, measured_at="")
    return names, drops, cost


def synthetic_plan(names, drops, cost, budget, interaction):
    evaluator = SyntheticEvaluator(drops, interaction)
    vm_of = {n: VMeanbaSpec() for n in names}
    return evaluator, planner.choose_plan(evaluator, cost, names, budget, vm_of, QuarterMapSpec())


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("budget", [0.0, 0.004, 0.01, 0.03])
def test_planner_respects_the_budget_on_a_synthetic_table(seed, budget):
    names, drops, cost = synthetic_table(seed)
    evaluator, result = synthetic_plan(names, drops, cost, budget, interaction=0.003)
    assert evaluator.joint_drop(result.plan) <= budget + 1e-12
    assert result.joint_drop == pytest.approx(evaluator.joint_drop(result.plan))
    # never predicted slower than the paper's budgeted VMeanba walk (written out here) at the same budget
    walk = []
    for n in sorted(names, key=lambda m: (drops[m]["vmeanba"], names.index(m))):
        if evaluator.joint_drop({m: "vmeanba" for m in walk + [n]}) <= budget + 1e-12:
            walk.append(n)
    assert result.predicted_ms <= 10.0 - sum(10.0 - cost.option_ms[n]["vmeanba"] for n in walk) + 1e-9
    expected_ms = 10.0 - sum(10.0 - cost.option_ms[n][o] for n, o in result.plan.items() if o != "none")
    assert result.predicted_ms == pytest.approx(expected_ms)
    assert result.predicted_speedup == pytest.approx(10.0 / expected_ms)


@pytest.mark.parametrize("seed", range(6))
def test_planner_is_optimal_without_interactions(seed):
    """With additive drops the knapsack's plan is feasible as measured, so it is the brute-force optimum."""
    names, drops, cost = synthetic_table(seed)
    budget = 0.008
    evaluator, result = synthetic_plan(names, drops, cost, budget, interaction=0.0)
    gain = {n: {o: cost.saved_ms(n, o) for o in COMPRESSED_OPTIONS} for n in names}
    best = max(sum(gain[n][o] for n, o in zip(names, combo) if o != "none")
               for combo in itertools.product(OPTIONS, repeat=len(names))
               if evaluator.joint_drop(dict(zip(names, combo))) <= budget + 1e-12)
    assert sum(gain[n][o] for n, o in result.plan.items() if o != "none") == pytest.approx(best)


def test_interactions_are_backed_off():
    """Every block alone is free, but every pair of compressed blocks in one stage costs 0.004: at a
    budget of 0.005 only one such pair may remain (three blocks at most, two stages of three), although
    the knapsack on single drops takes all six; the upgrades then refill up to that limit."""
    names, _, cost = synthetic_table(0)
    drops = {n: {o: 0.0 for o in COMPRESSED_OPTIONS} for n in names}
    evaluator, result = synthetic_plan(names, drops, cost, 0.005, interaction=0.004)
    assert evaluator.joint_drop(result.plan) <= 0.005
    per_stage = [sum(1 for n, o in result.plan.items() if o != "none" and n.split(".")[1] == s) for s in "01"]
    assert sorted(per_stage) == [1, 2]
    assert any(p["kind"] == "back-off" for p in result.considered)
    first = [p for p in result.considered if p["kind"] == "knapsack"][0]
    assert len(first["plan"]) == 6 and first["drop"] > 0.005


def brute_force_plan_saving(names, cost, evaluator, budget):
    """The largest predicted saving over all 4^n plans whose joint drop (the evaluator's, interactions
    included) stays within the budget: the independent reference of the exact search."""
    gain = {n: {o: cost.saved_ms(n, o) for o in COMPRESSED_OPTIONS} for n in names}
    return max(sum(gain[n][o] for n, o in zip(names, combo) if o != "none")
               for combo in itertools.product(OPTIONS, repeat=len(names))
               if evaluator.joint_drop(dict(zip(names, combo))) <= budget + 1e-12)


def test_plans_by_saving_lists_every_saving_plan_fastest_first():
    rng = random.Random(3)
    for _ in range(40):
        n = rng.randint(1, 5)
        names = [f"layers.0.blocks.{i}" for i in range(n)]
        saved = {m: {o: rng.choice([rng.uniform(-1, 2), 0.5, 0.0]) for o in COMPRESSED_OPTIONS} for m in names}
        listed = list(planner.plans_by_saving(saved, names))
        expected = list(itertools.product(*[["none"] + [o for o in COMPRESSED_OPTIONS if saved[m][o] > 0]
                                            for m in names]))
        assert sorted(tuple(p.values()) for _, p in listed) == sorted(expected)
        savings = [s for s, _ in listed]
        assert savings == sorted(savings, reverse=True)
        assert all(s == pytest.approx(sum(saved[m][o] for m, o in p.items() if o != "none")) for s, p in listed)


@pytest.mark.parametrize("interaction", [0.003, -0.002])
@pytest.mark.parametrize("seed", range(5))
def test_exact_search_finds_the_brute_force_optimum_with_interactions(seed, interaction):
    """Joint drops that are not the sum of the single drops (pairs in one stage cost, or save, accuracy):
    with evaluations enough for every plan, the search is exact and its plan is the brute-force optimum."""
    names, drops, cost = synthetic_table(seed)
    vm_of = {n: VMeanbaSpec() for n in names}
    for budget in (0.004, 0.01, 0.02):
        evaluator = SyntheticEvaluator(drops, interaction)
        result = planner.choose_plan(evaluator, cost, names, budget, vm_of, QuarterMapSpec(), search_evaluations=4 ** 6)
        assert result.search_exact is True and "search exact" in plan_summary(result)
        assert evaluator.joint_drop(result.plan) <= budget + 1e-12
        assert cost.baseline_ms - result.predicted_ms == pytest.approx(
            brute_force_plan_saving(names, cost, evaluator, budget))
        without = planner.choose_plan(SyntheticEvaluator(drops, interaction), cost, names, budget, vm_of,
                                      QuarterMapSpec(), search_evaluations=0)
        assert without.predicted_ms >= result.predicted_ms - 1e-9


def test_default_search_finds_what_the_heuristics_miss():
    """Pairs in one stage cost accuracy: the knapsack, back-off, reference points and upgrades alone stop
    well short of the brute-force optimum here; the search with the default evaluation budget reaches it."""
    names, drops, cost = synthetic_table(1)
    vm_of = {n: VMeanbaSpec() for n in names}
    evaluator = SyntheticEvaluator(drops, 0.003)
    best = brute_force_plan_saving(names, cost, evaluator, 0.01)
    without = planner.choose_plan(evaluator, cost, names, 0.01, vm_of, QuarterMapSpec(), search_evaluations=0)
    result = planner.choose_plan(evaluator, cost, names, 0.01, vm_of, QuarterMapSpec())
    assert cost.baseline_ms - without.predicted_ms < best - 0.1
    assert cost.baseline_ms - result.predicted_ms == pytest.approx(best)
    assert evaluator.joint_drop(result.plan) <= 0.01 + 1e-12
    assert result.search_evaluations == planner.SEARCH_EVALUATIONS
    assert any(c["kind"] in ("swap", "exact") for c in result.considered)


@pytest.mark.parametrize("limit", [0, 5, 40])
def test_search_with_few_evaluations_keeps_the_budget_and_is_deterministic(limit):
    names, drops, cost = synthetic_table(2)
    vm_of = {n: VMeanbaSpec() for n in names}
    runs = []
    for _ in range(2):
        evaluator = SyntheticEvaluator(drops, 0.003)
        before = planner.choose_plan(SyntheticEvaluator(drops, 0.003), cost, names, 0.01, vm_of, QuarterMapSpec(),
                                     search_evaluations=0)
        runs.append(planner.choose_plan(evaluator, cost, names, 0.01, vm_of, QuarterMapSpec(),
                                        search_evaluations=limit))
        assert evaluator.joint_drop(runs[-1].plan) <= 0.01 + 1e-12
        assert runs[-1].predicted_ms <= before.predicted_ms + 1e-9  # the search never loses saving
        searched = [c for c in runs[-1].considered if c["kind"] in ("swap", "exact")]
        assert len({tuple(sorted(c["plan"].items())) for c in searched}) <= limit
    assert runs[0].plan == runs[1].plan and runs[0].considered == runs[1].considered
    assert runs[0].steps == runs[1].steps


def test_search_evaluations_must_not_be_negative():
    names, drops, cost = synthetic_table(0)
    with pytest.raises(ValueError, match="search_evaluations must be >= 0"):
        planner.choose_plan(SyntheticEvaluator(drops, 0.0), cost, names, 0.01, {n: VMeanbaSpec() for n in names},
                            QuarterMapSpec(), search_evaluations=-1)


# --------------------------------------------------------------------------- real digits model
NOISY_COST_MODEL = "ignore:the cost model's single-block savings"  # quick timers: speed is not what these check


@pytest.mark.filterwarnings(NOISY_COST_MODEL)
def test_digits_plan_end_to_end_respects_the_budget(digits, tmp_path):
    model, cal = digits
    budget = 0.01
    result = planner.plan_compression(model, cal, budget, timer=fast_timer(iters=3), cache_dir=tmp_path, rounds=2,
                                      device="cpu")
    # re-score the plan with the public transforms and a plain accuracy count
    compressed = apply_quartermap(apply_vmeanba(model, result.vmeanba_layers), result.quartermap_layers) \
        if result.quartermap_layers else apply_vmeanba(model, result.vmeanba_layers)
    with torch.no_grad():
        base = (model(cal.images).argmax(1) == cal.labels).double().mean().item()
        acc = (compressed(cal.images).argmax(1) == cal.labels).double().mean().item()
    assert base - acc <= budget + 1e-12
    assert result.joint_drop == pytest.approx(base - acc, abs=1e-12)
    assert result.baseline == pytest.approx(base, abs=1e-12)
    saved = json.loads(json.dumps(result.cost))
    expected = saved["baseline_ms"] - sum(saved["baseline_ms"] - saved["option_ms"][n][o]
                                          for n, o in result.plan.items() if o != "none")
    assert result.predicted_ms == pytest.approx(expected)
    assert result.measured_ms is not None and result.measured_ms > 0
    assert result.backend == "cpu-torch" and any(o != "none" for o in result.plan.values())
    assert planner.PlanResult.from_json(result.to_json()) == result


@pytest.mark.filterwarnings(NOISY_COST_MODEL)
def test_digits_plan_is_deterministic_for_a_fixed_cache(digits, tmp_path):
    model, cal = digits
    runs = [planner.plan_compression(model, cal, 0.005, timer=fast_timer(), cache_dir=tmp_path,
                                     measure=False, device="cpu") for _ in range(2)]
    assert runs[1].cost_from_cache and not runs[0].cost_from_cache
    assert runs[0].plan == runs[1].plan
    assert runs[0].considered == runs[1].considered and runs[0].impacts == runs[1].impacts
    assert runs[0].cost == runs[1].cost


# --------------------------------------------------------------------------- cache
def test_cache_hit_avoids_measurement(digits, tmp_path):
    model, _ = digits
    first = fast_timer()
    cost = cm.measure_cost_model(model, first, cache_dir=tmp_path, rounds=1)
    signatures = len(set(cost.measured_as.values()))
    assert first.calls == 4 * signatures and not cost.from_cache  # per block: uncompressed + 3 options
    assert signatures == 4  # digits VMamba [1, 2, 4, 1]: one block measured per stage
    second = fast_timer()
    again = cm.measure_cost_model(model, second, cache_dir=tmp_path)
    assert second.calls == 0 and again.from_cache
    assert again.option_ms == cost.option_ms and again.baseline_ms == cost.baseline_ms
    per_block = fast_timer()
    cm.measure_cost_model(model, per_block, cache_dir=tmp_path, per_block=True, rounds=1)
    assert per_block.calls == 4 * len(model.ssm_layers())  # another key: measured, every block


def _only_entry(folder):
    files = list(folder.glob("*.json"))
    assert len(files) == 1
    return files[0]


@pytest.mark.parametrize("damage", ["other batch", "other kernels", "missing layer", "not json", "strings"])
def test_mismatched_or_corrupt_cache_entry_is_rejected(digits, tmp_path, damage):
    model, _ = digits
    cm.measure_cost_model(model, fast_timer(), cache_dir=tmp_path, rounds=1)
    path = _only_entry(tmp_path)
    data = json.loads(path.read_text())
    if damage == "other batch":
        data["key"]["batch"] = 128
    elif damage == "other kernels":
        data["key"]["kernels"] = "kernels 0123456789abcdef"
    elif damage == "missing layer":
        data["option_ms"].pop("layers.2.blocks.3")
    elif damage == "strings":
        data["option_ms"]["layers.0.blocks.0"]["vmeanba"] = "fast"
    path.write_text("{ not json" if damage == "not json" else json.dumps(data))
    timer = fast_timer()
    with pytest.warns(UserWarning, match="ignoring the cost-model cache entry"):
        cost = cm.measure_cost_model(model, timer, cache_dir=tmp_path, rounds=1)
    assert timer.calls > 0 and not cost.from_cache
    assert json.loads(path.read_text())["key"] == cost.key  # measured again and rewritten


def test_cache_key_separates_batch_and_precision(digits):
    model, _ = digits
    keys = [cm.cost_key(model, fast_timer(batch=b), {"x": VMeanbaSpec()}, QuarterMapSpec(), False) for b in (1, 2)]
    assert keys[0] != keys[1] and cm.cache_path("/c", keys[0]) != cm.cache_path("/c", keys[1])
    assert keys[0]["backend"] == "cpu-torch" and keys[0]["precision"] == "fp32"


def test_model_fingerprint_ignores_weights_but_not_architecture(digits):
    model, _ = digits
    other = load_digits_model("vmamba")
    with torch.no_grad():
        next(other.parameters()).add_(1.0)
    assert cm.model_fingerprint(model) == cm.model_fingerprint(other)
    assert cm.model_fingerprint(model) != cm.model_fingerprint(load_digits_model("medmamba"))


# --------------------------------------------------------------------------- fallback
def test_no_cost_model_falls_back_to_the_plain_selection(digits, monkeypatch):
    model, cal = digits

    def unavailable(*args, **kwargs):
        raise CostModelUnavailable("measurement impossible in this test")

    monkeypatch.setattr(planner, "make_timer", unavailable)
    with pytest.warns(UserWarning, match="planner: no cost model: measurement impossible in this test"):
        plan, selection, reason = planner.plan_or_select(model, cal, 0.01, threads=1)
    assert plan is None and "fell back to the plain VMeanba selection" in reason
    reference = select_vmeanba_layers(model, cal, max_drop=0.01, progress=False)
    assert selection.layers == reference.layers and selection.joint_drop == reference.joint_drop


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present here, so the cuda cost model is available")
def test_cuda_cost_model_is_unavailable_without_a_gpu():
    with pytest.raises(CostModelUnavailable, match="CUDA is not available"):
        cm.make_timer("gpu", 1, "fp16", (32, 32))
    assert cm.resolve_backend("auto") == "cpu-torch"


def test_option_specs_and_unknown_backend():
    vm, qm = VMeanbaSpec(), QuarterMapSpec()
    assert [cm.option_specs(o, vm, qm) for o in OPTIONS] == [(None, None), (vm, None), (None, qm), (vm, qm)]
    with pytest.raises(ValueError, match="unknown cost backend"):
        cm.resolve_backend("tpu")
    assert not math.isnan(planner.budget_unit("kl", 10, 0.01))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert planner.budget_unit("accuracy", 359, 0.01) == pytest.approx(1 / 359)


class ConfigClock(cm.Timer):
    """A timer that reads the model's configuration: VMeanba really saves 0.5 ms per block, while
    QuarterMap really COSTS 0.5 ms per block (whatever a cost model claims)."""

    backend = "synthetic-clock"
    quartermap_ms = 0.5  # what QuarterMap really costs per block

    def _time_ms(self, model) -> float:
        blocks = model.ssm_layers().values()
        return (10.0 - 0.5 * sum(b.vmeanba is not None for b in blocks)
                + self.quartermap_ms * sum(b.quartermap is not None for b in blocks))


def plan_against_clock(model, claimed: dict[str, float], clock: type[ConfigClock]):
    """choose_plan on every block of ``model`` with zero drops, a cost model that claims ``claimed``
    ms saved per block and option, and ``clock`` timing the finalists."""
    names = list(model.ssm_layers())
    drops = {n: {o: 0.0 for o in COMPRESSED_OPTIONS} for n in names}
    cost = CostModel(key={"backend": "synthetic", "device": "table", "batch": 1, "precision": "fp32",
                          "resolution": [1, 1]}, baseline_ms=10.0,
                     option_ms={n: {o: 10.0 - claimed[o] for o in COMPRESSED_OPTIONS} for n in names},
                     measured_as={n: n for n in names}, iters=1, rounds=1, warmup=0, seconds=0.0, measured_at="")
    return planner.choose_plan(SyntheticEvaluator(drops, 0.0), cost, names, 0.01, {n: VMeanbaSpec() for n in names},
                               QuarterMapSpec(), model=model, timer=clock(1, "fp32", (32, 32), 1, 0), rounds=1)


def test_finalists_are_timed_and_a_misleading_cost_model_loses(digits):
    """The cost model claims QuarterMap and both save more than VMeanba; timed, QuarterMap is slower.
    The finalists (plan, plain selection's walk, next) are measured side by side and the fastest wins."""
    model, _ = digits
    names = list(model.ssm_layers())
    result = plan_against_clock(model, {"vmeanba": 0.5, "quartermap": 0.8, "both": 1.0}, ConfigClock)
    assert result.plan == {n: "vmeanba" for n in names}  # the walk: VMeanba everywhere (every drop is 0)
    assert result.measured_speedup == pytest.approx(10.0 / (10.0 - 0.5 * len(names)))
    assert result.predicted_speedup == pytest.approx(10.0 / (10.0 - 0.5 * len(names)))
    assert any("finalists timed" in s for s in result.steps) and any("replaces the plan" in s for s in result.steps)
    assert all(b.vmeanba is None and b.quartermap is None for b in model.ssm_layers().values())  # model untouched


class SubtleClock(ConfigClock):
    """VMeanba really saves 0.5 ms per block; QuarterMap costs only 0.005 ms per block: plans that
    differ by QuarterMap alone are within a fraction of a percent of each other, i.e. timing noise."""

    quartermap_ms = 0.005


def test_a_finalist_within_the_noise_margin_does_not_replace_the_plan(digits):
    """The cost model ranks `both` first; timed, the walk (VMeanba alone) is faster by less than
    FINALIST_MARGIN, so the plan stays; the measured figures are the plan's own."""
    model, _ = digits
    names = list(model.ssm_layers())
    walk_ms = 10.0 - 0.5 * len(names)
    plan_ms = walk_ms + SubtleClock.quartermap_ms * len(names)
    assert 0 < plan_ms / walk_ms - 1 < planner.FINALIST_MARGIN  # the setting of this test
    result = plan_against_clock(model, {"vmeanba": 0.5, "quartermap": 0.1, "both": 0.6}, SubtleClock)
    assert result.plan == {n: "both" for n in names}
    assert result.measured_speedup == pytest.approx(10.0 / plan_ms)
    assert any("the plan stays" in s for s in result.steps)
    assert not any("replaces the plan" in s for s in result.steps)
