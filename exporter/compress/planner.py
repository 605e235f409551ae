"""The speed-aware compression planner: the fastest model within an accuracy budget, with VMeanba
and QuarterMap chosen together, block by block.

For every SS2D block the planner knows two things per option (``none``, ``vmeanba``,
``quartermap``, ``both``):

- the time it saves, from the cost model measured on the target (exporter.compress.cost_model);
- the accuracy it costs alone, measured on the calibration data with the metric machinery of the
  VMeanba selection (exporter.compress.selection.CalibratedEvaluator: top-1 with labels,
  agreement / KL without, feature metrics for backbones).

1. Choice: a multiple-choice knapsack (:func:`solve_knapsack`, exact dynamic programming) picks one
   option per block to maximise the summed saving while the summed single-block drops stay within
   the budget. Drops are counted in units of ``1/N`` for the sample-fraction metrics (accuracy,
   agreement: exact, a drop is a whole number of samples) and of ``budget/1000`` otherwise (each
   drop rounded up, so the sum never exceeds the budget).
2. Interactions: the joint drop of the chosen plan is measured. While it exceeds the budget, the
   planner demotes the block option that gives up the least saving per unit of single drop removed
   (``both`` -> the better single method, a single method -> ``none``) and measures again.
3. Other candidates, each measured: knapsack plans at a sweep of budgets (the sum of single drops
   is often pessimistic), the paper's choices (the budgeted VMeanba walk of the plain selection and
   VMeanba on the K smallest impacts, K = 1..n) and QuarterMap ``every:3``. The planner continues
   from the fastest (predicted) of all measured plans whose drop holds, so it is never predicted
   slower than the paper's choice at the same budget. Then it tries, largest extra saving first, to
   upgrade blocks (``none`` -> a method, a method -> ``both``), keeping each upgrade whose measured
   joint drop stays within the budget.
4. Search (at most ``search_evaluations`` more measured plans, default SEARCH_EVALUATIONS = 256):
   the plans predicted faster than the current one are listed fastest first (:func:`plans_by_saving`,
   over the options that save time). When all of them that are not yet measured fit in the evaluations
   left, they are measured in that order and the first whose measured joint drop holds is the result:
   the exact optimum of the predicted saving within the budget (``search_exact``; none holds: the
   current plan is it). Otherwise one round of measured swaps: two blocks changed, each to ``none``
   or to an option that saves time, with the predicted saving growing (e.g. a chosen block dropped and
   a costlier one taken); largest gain first, the first whose joint drop holds is kept; then the
   upgrades again and a new look. When no swap holds, the search stops unproven
   (``search_exact=False``). Each plan the search newly measures counts against its budget; none is
   measured twice. vm-export: ``--plan-evaluations N``.
5. Finalists (when a timer is given): the plan, the plain selection's walk and the next fastest
   predicted plan whose drop holds are timed side by side with the uncompressed model; the fastest
   measured one is the result, so a cost model blurred by noise cannot leave the planner slower
   than the plain selection. It replaces the plan only when measured more than FINALIST_MARGIN (1%)
   faster; closer than that, the timing is noise and the plan stays.
6. Report: the chosen option per block, the predicted speed-up (cost model, additive) and the
   measured one, the measured drop, and every plan measured on the way for the Pareto plot.

No cost model (CostModelUnavailable: e.g. ``cuda`` asked for without a GPU) -> :func:`plan_or_select`
falls back to the plain VMeanba selection and says why.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
import warnings

import torch

from exporter.compress.calibration import CalibrationSet, load_calibration
from exporter.compress.cost_model import (COMPRESSED_OPTIONS, OPTIONS, CostModel, CostModelUnavailable, Timer,
                                          make_timer, measure_cost_model, option_specs, time_plans_ms)
from exporter.compress.layer_specs import every_kth_layers, parse_layer_spec
from exporter.compress.selection import (DEFAULT_MAX_DROP, CalibratedEvaluator, _progress, budgeted_walk,
                                         check_budget, select_vmeanba_layers, vmeanba_specs)
from exporter.models.ss2d import QuarterMapSpec

PLAN_GOALS = ("fastest",)
FRACTION_METRICS = ("accuracy", "agreement")
BUDGET_SWEEP = (0.0, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)  # knapsack plans measured for the Pareto plot (x budget)
CONTINUOUS_STEPS = 1000  # budget units for metrics whose drops are not sample counts
NOISE_FLOOR = 0.1  # a plan predicted below this fraction of the baseline time: the cost model is noise
FINALISTS = 3  # plans timed side by side at the end (the plan, the plain selection's walk, the next fastest)
# A finalist replaces the plan only when measured faster by more than this fraction: below it the
# difference is timing noise, and the cost model's order stands (H200 study, digits VMamba at 0.6 ms
# per batch: two plans 0.6% apart in the planner's timing were 1.4% apart the other way in the study's).
FINALIST_MARGIN = 0.01
SEARCH_EVALUATIONS = 256  # default: the most plans the swaps and the exact search measure (step 4)


# --------------------------------------------------------------------------- the knapsack
def solve_knapsack(gain: dict[str, dict[str, float]], cost: dict[str, dict[str, float]], budget: float,
                   unit: float) -> dict[str, str]:
    """One option per layer maximising the summed ``gain`` with the summed ``cost`` within ``budget``.

    gain / cost: {layer: {option: value}} for the compressed options ("none" has gain 0 and cost 0).
    Costs are counted in whole ``unit``s, rounded up (negative costs count 0); options with gain <= 0
    are never taken. Exact dynamic programming over the integer budget; ties keep the cheaper plan
    and, between equal ones, the first option in OPTIONS order. Returns {layer: option} for every layer.
    """
    if budget < 0 or unit <= 0:
        raise ValueError(f"budget must be >= 0 and unit > 0, got {budget}, {unit}")
    capacity = int(math.floor(budget / unit + 1e-6))

    def units(value: float) -> int:
        return max(0, int(math.ceil(value / unit - 1e-6)))

    names = list(gain)
    best = [0.0] * (capacity + 1)  # best[w]: the largest gain of the layers so far with cost <= w
    picks: list[list[str]] = []
    for name in names:
        items = [(o, gain[name][o], units(cost[name][o])) for o in COMPRESSED_OPTIONS
                 if gain[name][o] > 0 and units(cost[name][o]) <= capacity]
        new, choice = list(best), ["none"] * (capacity + 1)
        for w in range(capacity + 1):
            for option, g, c in items:
                if c <= w and best[w - c] + g > new[w] + 1e-12:
                    new[w], choice[w] = best[w - c] + g, option
        best = new
        picks.append(choice)
    plan, w = {}, capacity
    for name, choice in zip(reversed(names), reversed(picks)):
        plan[name] = choice[w]
        if choice[w] != "none":
            w -= units(cost[name][choice[w]])
    return {name: plan[name] for name in names}


def plans_by_saving(saved: dict[str, dict[str, float]], names: list[str]):
    """Every plan of the blocks ``names`` that takes only options saving time (``saved[n][o] > 0``), in
    order of decreasing predicted saving (ties: a fixed order), as (saving, {layer: option}) pairs.

    Best-first over the per-block option lists sorted by saving: a plan is an index per block (0 = the
    block's largest saving, the last = ``none``); its children raise one index at or after its last
    non-zero one, so every plan has exactly one parent and never saves more than its parent. Lazy:
    listing the k fastest plans costs O(k n log k) however many plans there are."""
    import heapq

    options = [sorted(((saved[n][o], i, o) for i, o in enumerate(COMPRESSED_OPTIONS) if saved[n][o] > 0),
                      key=lambda t: (-t[0], t[1])) + [(0.0, len(COMPRESSED_OPTIONS), "none")] for n in names]

    def total(index: tuple) -> float:
        return round(sum(options[j][i][0] for j, i in enumerate(index)), 9)

    root = (0,) * len(names)
    heap = [(-total(root), root, 0)]
    while heap:
        minus, index, last = heapq.heappop(heap)
        yield -minus, {n: options[j][i][2] for j, (n, i) in enumerate(zip(names, index))}
        for j in range(last, len(names)):
            if (j == last or index[j] == 0) and index[j] + 1 < len(options[j]):
                child = index[:j] + (index[j] + 1,) + index[j + 1:]
                heapq.heappush(heap, (-total(child), child, j))


def budget_unit(metric: str, num_samples: int, budget: float) -> float:
    """Sample-fraction metrics move in steps of 1/N; others are split into CONTINUOUS_STEPS of the budget."""
    if metric in FRACTION_METRICS:
        return 1.0 / num_samples
    return budget / CONTINUOUS_STEPS if budget > 0 else 1e-9


# --------------------------------------------------------------------------- the result
@dataclasses.dataclass
class PlanResult:
    """Outcome of :func:`plan_compression` (``to_json`` / ``from_json`` round-trip)."""

    plan: dict[str, str]              # layer -> none | vmeanba | quartermap | both (forward order)
    goal: str
    metric: str
    higher_is_better: bool
    baseline: float                   # metric of the uncompressed model
    joint: float                      # metric of the chosen plan, measured
    joint_drop: float
    max_drop: float
    impacts: dict[str, dict[str, float]]   # layer -> option -> drop with that option alone
    saved_ms: dict[str, dict[str, float]]  # layer -> option -> time saved alone (cost model)
    cost: dict                        # CostModel.to_dict(): backend, device, batch, precision, times
    cost_from_cache: bool
    predicted_ms: float
    predicted_speedup: float | None   # None: the savings add up to the whole model (noisy cost model)
    measured_baseline_ms: float | None  # the uncompressed model and the chosen plan timed side by side on the
    measured_ms: float | None           # cost model's backend after planning (None: not measured)
    measured_speedup: float | None
    considered: list[dict]            # [{"kind", "label", "plan", "drop", "predicted_speedup"}]
    steps: list[str]                  # what the back-off and the upgrades did
    variant: str
    quartermap: dict                  # {"stride", "keep"}
    calibration: str
    num_samples: int
    synthetic: bool
    seconds: float
    evaluations: int                  # calibration passes run
    model: str = ""
    search_exact: bool | None = None  # True: no plan of options that save time predicted faster than the result
    #                                   holds the budget (each one measured); False: not proven (None: old report)
    search_evaluations: int = 0       # the evaluation budget of the swaps and the exact search

    @property
    def vmeanba_layers(self) -> list[str]:
        return [n for n, o in self.plan.items() if o in ("vmeanba", "both")]

    @property
    def quartermap_layers(self) -> list[str]:
        return [n for n, o in self.plan.items() if o in ("quartermap", "both")]

    @property
    def backend(self) -> str:
        return self.cost["key"]["backend"]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "PlanResult":
        return cls(**json.loads(text))


# --------------------------------------------------------------------------- planning
def plan_compression(model, calibration, max_drop: float | None = None, *, goal: str = "fastest",
                     cost: CostModel | None = None, timer: Timer | None = None, backend: str = "auto",
                     batch: int = 1, precision: str = "fp32", resolution=None, iters: int = 10, warmup: int = 2,
                     per_block: bool = False, rounds: int | None = None, cache_dir=None, use_cache: bool = True,
                     metric: str = "auto", variant: str = "all-rows", folded: bool | None = None,
                     stride: int | None = None, keep: int | None = None, candidates="all", family: str | None = None,
                     batch_size: int = 64,
                     device: str | None = None, measure: bool = True, progress: bool = False,
                     threads: int | None = None, search_evaluations: int = SEARCH_EVALUATIONS) -> PlanResult:
    """The fastest per-block plan of ``model`` whose measured calibration drop is within ``max_drop``.

    cost: a CostModel, else one is measured (or read from the cache) with ``timer``, or with
    make_timer(backend, batch, precision, resolution, iters, warmup); CostModelUnavailable when none
    can be measured here. max_drop: in the metric's units (default DEFAULT_MAX_DROP). candidates: a
    layer spec limiting the blocks the plan may compress. device: where the calibration passes run
    (default: cuda when the project's GPU runtime works, else cpu). measure: time the chosen plan and the
    uncompressed model side by side (``rounds`` as the cost model). search_evaluations: the most plans
    the swaps and the exact search measure (step 4 of the module docstring). The model is not modified.
    """
    if goal not in PLAN_GOALS:
        raise ValueError(f"unknown plan goal {goal!r}; choose one of {PLAN_GOALS}")
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    torch.set_flush_denormal(True)  # as select_vmeanba_layers: denormals made CPU evaluation ~10x slower
    try:
        start = time.time()
        cal = calibration if isinstance(calibration, CalibrationSet) else load_calibration(
            calibration, family or getattr(model, "family", "vmamba"))
        max_drop = DEFAULT_MAX_DROP if max_drop is None else float(max_drop)
        names = parse_layer_spec(candidates, model, method="vmeanba")
        if not isinstance(names, list) or not names:
            raise ValueError(f"candidates must name at least one layer explicitly, got {candidates!r}")
        all_names = list(model.ssm_layers())
        vm_of = vmeanba_specs(model, all_names, variant, folded)
        qm = QuarterMapSpec(**{k: v for k, v in (("stride", stride), ("keep", keep)) if v is not None})
        resolution = resolution or tuple(cal.images.shape[-2:])
        if device is None:
            from exporter.runtime import kernel_status

            device = "cuda" if kernel_status()[0] else "cpu"
        evaluator = CalibratedEvaluator(model, cal, metric, batch_size, progress, device=device)
        check_budget(evaluator.metric, max_drop)  # before any timing
        if cost is None:
            timer = timer or make_timer(backend, batch, precision, resolution, iters, warmup)
            cost = measure_cost_model(model, timer, vmeanba=vm_of, quartermap=qm, per_block=per_block,
                                      cache_dir=cache_dir, use_cache=use_cache, rounds=rounds,
                                      progress=progress)
        if cost.layers != all_names:
            raise ValueError(f"the cost model covers {cost.layers}, not this model's layers {all_names}")
        return choose_plan(evaluator, cost, names, max_drop, vm_of, qm, goal=goal, variant=variant,
                           model=model if measure else None, timer=timer, rounds=rounds, progress=progress,
                           start=start, search_evaluations=search_evaluations)
    finally:
        torch.set_flush_denormal(False)
        torch.set_num_threads(previous_threads)


def choose_plan(evaluator, cost: CostModel, names: list[str], max_drop: float, vm_of: dict, qm: QuarterMapSpec, *,
                goal: str = "fastest", variant: str = "all-rows", model=None,
                timer: Timer | None = None, rounds: int | None = None, progress: bool = False,
                start: float | None = None, search_evaluations: int = SEARCH_EVALUATIONS) -> PlanResult:
    """Steps 1-5 of the module docstring for the candidate blocks ``names``. evaluator: a
    CalibratedEvaluator (or anything with its ``evaluate`` / ``drop`` / ``metric`` / ``baseline`` /
    ``cal`` interface); vm_of: {layer: VMeanbaSpec} for every block; model and timer: given, the
    chosen plan and the uncompressed model are timed side by side. search_evaluations: the most plans
    the swaps and the exact search may measure (step 4 of the module docstring; 0 turns them off)."""
    if search_evaluations < 0:
        raise ValueError(f"search_evaluations must be >= 0, got {search_evaluations}")
    start = time.time() if start is None else start
    def config(plan: dict[str, str]) -> dict:
        return {n: option_specs(plan.get(n, "none"), vm_of[n], qm) for n in vm_of}

    def drop_of(plan: dict[str, str]) -> float:
        return evaluator.drop(evaluator.evaluate(config(plan)))

    impacts = {n: {o: drop_of({n: o}) for o in COMPRESSED_OPTIONS}
               for n in _progress(names, progress, desc="impact per layer and option")}
    saved = {n: {o: cost.saved_ms(n, o) for o in COMPRESSED_OPTIONS} for n in names}
    unit = budget_unit(evaluator.metric, len(evaluator.cal), max_drop)
    considered: list[dict] = []

    def consider(kind: str, label: str, plan: dict[str, str]) -> float:
        drop = drop_of(plan)
        considered.append({"kind": kind, "label": label, "plan": {n: o for n, o in plan.items() if o != "none"},
                           "drop": drop, "predicted_speedup": cost.predicted_speedup(plan)})
        return drop

    plan = solve_knapsack(saved, impacts, max_drop, unit)
    drop = consider("knapsack", f"knapsack at the budget {max_drop:g}", plan)
    steps = [f"knapsack on single-block drops: {_describe(plan)}; measured joint drop {drop:+.5f}"]
    while drop > max_drop + 1e-12:  # back off: demote the option giving up least saving per unit of drop removed
        moves = [(n, lower) for n, o in plan.items() if o != "none" for lower in _lower(o)]
        lower_gain = lambda n, o: saved[n][o] if o != "none" else 0.0  # noqa: E731

        def score(move):
            n, lower = move
            lost = saved[n][plan[n]] - lower_gain(n, lower)
            removed = impacts[n][plan[n]] - (impacts[n][lower] if lower != "none" else 0.0)
            return (0, lost / removed) if removed > 0 else (1, lost)

        n, lower = min(moves, key=score)
        plan = {**plan, n: lower}
        drop = consider("back-off", f"back-off: {n} -> {lower}", plan)
        steps.append(f"joint drop over budget: {n} demoted to {lower}; measured joint drop {drop:+.5f}")
    # the other measured candidates: knapsack plans at other budgets (the sum of single drops is often
    # pessimistic), the paper's choices (the budgeted VMeanba walk, the K smallest impacts) and QuarterMap
    # every:3; the planner goes on from the fastest one (predicted) whose measured drop holds
    _reference_points(evaluator, names, impacts, saved, max_drop, vm_of, consider)
    feasible = [c for c in considered if c["drop"] <= max_drop + 1e-12]
    best = max(feasible, key=lambda c: (round(_saving(c["plan"], saved), 9), -len(c["plan"])), default=None)
    if best is not None and _saving(best["plan"], saved) > _saving(plan, saved) + 1e-9:
        plan = {n: best["plan"].get(n, "none") for n in names}
        drop = best["drop"]
        steps.append(f"start from {best['label']} (faster, measured joint drop {drop:+.5f})")
    # upgrades, largest extra saving first, each kept when the measured joint drop stays within the budget
    def upgrade(plan: dict[str, str], drop: float, measure=consider) -> tuple[dict[str, str], float]:
        def extra(n: str, o: str) -> float:
            return saved[n][o] - (saved[n][plan[n]] if plan[n] != "none" else 0.0)

        upgrades = sorted(((n, o) for n in names for o in COMPRESSED_OPTIONS if _is_upgrade(plan[n], o)),
                          key=lambda t: (-extra(*t), names.index(t[0]), OPTIONS.index(t[1])))
        for n, o in upgrades:
            gain = extra(n, o)
            if gain <= 0 or not _is_upgrade(plan[n], o):
                continue
            trial = {**plan, n: o}
            trial_drop = measure("upgrade", f"upgrade: {n} -> {o}", trial)
            if trial_drop <= max_drop + 1e-12:
                plan, drop = trial, trial_drop
                steps.append(f"upgrade {n} -> {o} kept (saves {gain:.3f} ms more); measured joint drop {drop:+.5f}")
        return plan, drop

    plan, drop = upgrade(plan, drop)
    plan, drop, exact = _search(plan, drop, names, saved, max_drop, search_evaluations, considered, consider, upgrade,
                                steps)
    full_plan = {n: plan.get(n, "none") for n in vm_of}
    if cost.predicted_ms(full_plan) < NOISE_FLOOR * cost.baseline_ms:
        warnings.warn(f"the cost model's single-block savings of this plan add up to more than "
                      f"{100 * (1 - NOISE_FLOOR):.0f}% of the model's {cost.baseline_ms:.3f} ms, so its predicted "
                      f"speed-up is not meaningful: the measurement ({cost.label}) is dominated by noise; measure "
                      "with more iterations or rounds, or at a larger batch", stacklevel=2)
    measured = [None, None]
    if model is not None and timer is not None:
        # finalists timed side by side with the uncompressed model: the plan, the plain selection's walk
        # and the next fastest predicted plans whose drop holds; the fastest measured one is the result
        # (a cost model blurred by noise cannot make the planner slower than the plain selection)
        walk = [c for c in considered if c["kind"] == "paper-walk"]
        others = sorted((c for c in considered if c["drop"] <= max_drop + 1e-12 and c["kind"] != "paper-walk"),
                        key=lambda c: -_saving(c["plan"], saved))
        finalists = [full_plan]
        for c in walk + others:
            candidate = {n: c["plan"].get(n, "none") for n in vm_of}
            if len(finalists) < FINALISTS and candidate not in finalists:
                finalists.append(candidate)
        times = time_plans_ms(model, timer, [{}] + finalists, vm_of, qm, rounds)
        fastest = min(range(len(finalists)), key=lambda i: (times[i + 1], i))
        steps.append("finalists timed (speed-up measured): " + "; ".join(
            f"{_describe(f)}: {times[0] / t:.3f}x" for f, t in zip(finalists, times[1:])))
        if fastest and times[fastest + 1] > times[1] * (1.0 - FINALIST_MARGIN):
            steps.append(f"the fastest finalist is within {100 * FINALIST_MARGIN:g}% of the plan (timing noise): "
                         "the plan stays")
            fastest = 0
        if fastest:
            full_plan = finalists[fastest]
            steps.append(f"the fastest measured finalist replaces the plan: {_describe(full_plan)}")
        measured = [times[0], times[fastest + 1]]
    joint = evaluator.evaluate(config(full_plan))
    cal = evaluator.cal
    return PlanResult(
        plan=full_plan, goal=goal, metric=evaluator.metric, higher_is_better=evaluator.higher_is_better,
        baseline=evaluator.baseline, joint=joint, joint_drop=evaluator.drop(joint), max_drop=max_drop,
        impacts=impacts, saved_ms=saved, cost=cost.to_dict(), cost_from_cache=cost.from_cache,
        predicted_ms=cost.predicted_ms(full_plan), predicted_speedup=cost.predicted_speedup(full_plan),
        measured_baseline_ms=measured[0], measured_ms=measured[1],
        measured_speedup=None if measured[1] is None else measured[0] / measured[1],
        considered=considered, steps=steps, variant=variant, quartermap=dataclasses.asdict(qm),
        calibration=cal.describe(), num_samples=len(cal), synthetic=cal.synthetic, seconds=time.time() - start,
        evaluations=evaluator.evaluations, model=type(model).__name__ if model is not None else "",
        search_exact=exact, search_evaluations=search_evaluations)


def _search(plan, drop, names, saved, max_drop, limit, considered, consider, upgrade, steps):
    """Step 4 of the module docstring: the exact search when every plan predicted faster than ``plan``
    fits in the evaluations left, else one round of measured two-block changes ("swaps"), the upgrades
    again and a new look. ``limit`` counts newly measured plans. Returns (plan, drop, exact): exact is
    True when no plan predicted faster holds the budget."""
    known = {_key(c["plan"]): c["drop"] for c in considered}
    left = limit

    def measure(kind: str, label: str, trial: dict[str, str]) -> float:
        """The measured drop of ``trial`` (cached); infinite, unmeasured, once the evaluations are spent."""
        nonlocal left
        key = _key(trial)
        if key not in known:
            if left <= 0:
                return math.inf
            left -= 1
            known[key] = consider(kind, label, trial)
        return known[key]

    while True:
        current = _saving(plan, saved)
        faster, unmeasured = [], 0  # the plans predicted faster than ``plan``, fastest first (until more
        for saving, trial in plans_by_saving(saved, names):  # unmeasured ones than evaluations left)
            if saving <= current + 1e-9 or unmeasured > left:
                break
            faster.append(trial)
            unmeasured += _key(trial) not in known
        if unmeasured <= left:
            for trial in faster:
                trial_drop = measure("exact", "exact search", trial)
                if trial_drop <= max_drop + 1e-12:
                    steps.append(f"exact search: {_describe(trial)} is the fastest predicted plan within the budget "
                                 f"(measured joint drop {trial_drop:+.5f}; {len(faster)} plans predicted faster than "
                                 f"the previous one, {unmeasured} newly measured)")
                    return trial, trial_drop, True
            steps.append("exact search: no plan is predicted faster, so the plan is the fastest predicted" if not faster
                         else f"exact search: none of the {len(faster)} plans predicted faster holds the budget "
                              f"({unmeasured} newly measured), so the plan is the fastest predicted within it")
            return plan, drop, True

        def gain(changes) -> float:
            return sum(_saving({n: o}, saved) - _saving({n: plan[n]}, saved) for n, o in changes)

        # two blocks changed, each to none or to an option that saves time, the predicted saving growing;
        # largest gain first
        moves = sorted((c for c in _two_block_changes(plan, names)
                        if gain(c) > 1e-9 and all(o == "none" or saved[n][o] > 0 for n, o in c)),
                       key=lambda c: (-round(gain(c), 9), [(names.index(n), OPTIONS.index(o)) for n, o in c]))
        swapped = False
        for changes in moves:
            trial = {**plan, **dict(changes)}
            label = ", ".join(f"{n} -> {o}" for n, o in changes)
            trial_drop = measure("swap", f"swap: {label}", trial)
            if trial_drop <= max_drop + 1e-12:
                steps.append(f"swap {label} kept (saves {gain(changes):.3f} ms more); measured joint drop "
                             f"{trial_drop:+.5f}")
                plan, drop, swapped = trial, trial_drop, True
                break
        if not swapped:
            steps.append(f"search stopped: more plans are predicted faster than the evaluations left ({left} of "
                         f"{limit}) and no swap holds the budget; the plan is not proven the fastest")
            return plan, drop, False
        plan, drop = upgrade(plan, drop, measure)


def _two_block_changes(plan: dict[str, str], names: list[str]):
    """Every change of the options of two blocks (each to any other option, ``none`` included)."""
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            for oa in OPTIONS:
                for ob in OPTIONS:
                    if oa != plan[a] and ob != plan[b]:
                        yield ((a, oa), (b, ob))


def _key(plan: dict[str, str]) -> tuple:
    return tuple(sorted((n, o) for n, o in plan.items() if o != "none"))


def _reference_points(evaluator, names, impacts, saved, max_drop, vm_of, consider) -> None:
    """Measure the knapsack plans at a sweep of budgets, the paper's choices (the budgeted VMeanba walk
    in impact order, as select_vmeanba_layers does, and VMeanba on the K smallest impacts, K = 1..n) and
    QuarterMap every:3."""
    seen = set()
    for factor in BUDGET_SWEEP:
        budget = factor * max_drop
        plan = solve_knapsack(saved, impacts, budget, budget_unit(evaluator.metric, len(evaluator.cal), budget))
        key = tuple(sorted(plan.items()))
        if key not in seen:
            seen.add(key)
            consider("knapsack", f"knapsack at the budget {budget:g}", plan)
    position = {n: i for i, n in enumerate(names)}
    order = sorted(names, key=lambda n: (impacts[n]["vmeanba"], position[n]))
    walk = budgeted_walk(order, lambda layers: evaluator.drop(evaluator.evaluate(
        {n: option_specs("vmeanba" if n in layers else "none", vm_of[n], QuarterMapSpec()) for n in vm_of})), max_drop)
    consider("paper-walk", f"VMeanba budgeted walk ({len(walk)} layers, the plain selection)",
             {n: "vmeanba" for n in walk})
    for k in range(1, len(order) + 1):
        consider("paper-k", f"VMeanba K={k} (smallest impact)", {n: "vmeanba" for n in order[:k]})
    every3 = [n for n in every_kth_layers(list(vm_of), 3) if n in names]
    if every3:
        consider("quartermap-every3", "QuarterMap every:3", {n: "quartermap" for n in every3})


def _saving(plan: dict[str, str], saved) -> float:
    return sum(saved[n][o] for n, o in plan.items() if o != "none")


def _lower(option: str) -> tuple[str, ...]:
    return ("vmeanba", "quartermap") if option == "both" else ("none",)


def _is_upgrade(current: str, option: str) -> bool:
    """From none to anything; from one method to both (never swapping one method for the other)."""
    return option != current and (current == "none" or option == "both")


def _describe(plan: dict[str, str]) -> str:
    chosen = [f"{n}={o}" for n, o in plan.items() if o != "none"]
    return ", ".join(chosen) or "(nothing)"


def pareto_front(points: list[dict]) -> list[dict]:
    """The points not dominated by another (lower or equal drop and higher or equal predicted speed-up,
    one of them strictly), by increasing drop."""
    front = []
    points = [p for p in points if p["predicted_speedup"] is not None]
    for p in sorted(points, key=lambda q: (q["drop"], -q["predicted_speedup"])):
        if not front or p["predicted_speedup"] > front[-1]["predicted_speedup"] + 1e-12:
            front.append(p)
    return front


# --------------------------------------------------------------------------- with the fallback
def plan_or_select(model, calibration, max_drop: float | None = None, **kwargs):
    """:func:`plan_compression`, or, when no cost model can be measured here, the plain VMeanba selection
    (select_vmeanba_layers with the same budget). Returns (PlanResult | None, SelectionResult | None,
    reason): reason says why the planner fell back (None when it did not); a warning says it too."""
    try:
        return plan_compression(model, calibration, max_drop, **kwargs), None, None
    except CostModelUnavailable as exc:
        reason = (f"no cost model: {exc}; fell back to the plain VMeanba selection (--vmeanba-layers auto) with "
                  f"the same budget")
        warnings.warn(f"planner: {reason}", stacklevel=2)
    selection_keys = ("metric", "variant", "folded", "candidates", "family", "batch_size", "progress", "threads",
                      "device")
    selection = select_vmeanba_layers(model, calibration, max_drop=max_drop,
                                      **{k: v for k, v in kwargs.items() if k in selection_keys and v is not None})
    return None, selection, reason
