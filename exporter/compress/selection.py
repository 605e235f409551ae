"""Choosing VMeanba layers on calibration data (the paper's Algorithm 1, plus an accuracy budget).

impact(layer) = metric(original model) - metric(model with VMeanba on that layer alone), measured
on the calibration set. Two ways to choose:

- ``k``: the k layers with the smallest impact (the paper);
- ``max_drop``: walk the layers in impact order and keep each one whose addition leaves the
  MEASURED joint drop (all kept layers together, not the sum of single impacts) within the
  budget; layers that would break the budget are skipped. With both, at most k layers.

Metrics (higher is better except ``kl``; every "drop" is oriented so that positive = worse):

- ``accuracy``: top-1 against the labels (needs a labelled source),
- ``agreement``: top-1 agreement with the uncompressed model (label-free),
- ``kl``: mean KL(p_original || p_compressed) of the softmax outputs in nats (label-free),
- ``auto``: accuracy where labels exist, agreement otherwise; ``feature-cosine`` for a feature backbone.

Feature backbones (``features_only`` models, whose output is the list of per-stage maps) have no
classes, so only the label-free feature metrics apply:

- ``feature-cosine``: cosine similarity of each sample's feature map with the uncompressed
  backbone's, averaged over samples and then over the stages (1 = unchanged; higher is better),
- ``feature-relerr``: relative L2 error ||f - f_ref|| / ||f_ref|| per sample and stage, averaged the
  same way (0 = unchanged; lower is better).

The uncompressed outputs (logits or feature maps) are computed once and cached; every configuration is evaluated in
batches under ``torch.no_grad`` in eval mode, so results are deterministic for a given input.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import time

import torch
import torch.nn.functional as F

from exporter.compress.calibration import CalibrationSet, load_calibration
from exporter.compress.layer_specs import parse_layer_spec
from exporter.models.ss2d import VMeanbaSpec

METRICS = ("auto", "accuracy", "agreement", "kl", "feature-cosine", "feature-relerr")
FEATURE_METRICS = ("feature-cosine", "feature-relerr")
LOWER_IS_BETTER = ("kl", "feature-relerr")
# With neither k nor max_drop, keep layers while the joint drop stays within 1 point (0.01).
DEFAULT_MAX_DROP = 0.01


@dataclasses.dataclass
class SelectionResult:
    """Outcome of :func:`select_vmeanba_layers` (``to_json`` / ``from_json`` round-trip)."""

    layers: list[str]                 # chosen layers, forward order
    metric: str                       # accuracy | agreement | kl | feature-cosine | feature-relerr
    higher_is_better: bool
    baseline: float                   # metric of the uncompressed model
    layer_scores: dict[str, float]    # metric with VMeanba on that layer alone
    impacts: dict[str, float]         # drop caused by that layer alone (positive = worse)
    order: list[str]                  # candidate layers sorted by impact (smallest first)
    joint: float                      # metric with VMeanba on all chosen layers together
    joint_drop: float
    curve: list[dict]                 # [{"k", "layers", "metric", "drop"}]: first k layers of `order` together
    k: int | None
    max_drop: float | None
    variant: str
    calibration: str
    num_samples: int
    synthetic: bool
    seconds: float
    model: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self, indent: int = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    @classmethod
    def from_json(cls, text: str) -> "SelectionResult":
        return cls(**json.loads(text))

    @property
    def chosen_order(self) -> list[str]:
        """Chosen layers in impact order."""
        return [n for n in self.order if n in self.layers]


# --------------------------------------------------------------------------- metrics
def _as_maps(outputs) -> list[torch.Tensor]:
    return list(outputs) if isinstance(outputs, (list, tuple)) else [outputs]


def feature_agreement(metric: str, outputs, reference) -> float:
    """``feature-cosine`` / ``feature-relerr`` of per-stage maps against the reference maps: per sample
    and stage, then the mean over samples, then over stages (a tensor counts as one stage)."""
    per_stage = []
    for out, ref in zip(_as_maps(outputs), _as_maps(reference), strict=True):
        out, ref = out.flatten(1).double(), ref.flatten(1).double()
        if metric == "feature-cosine":
            per_stage.append(F.cosine_similarity(out, ref, dim=1, eps=1e-30).mean())
        else:
            per_stage.append(((out - ref).norm(dim=1) / ref.norm(dim=1).clamp_min(1e-30)).mean())
    return torch.stack(per_stage).mean().item()


def metric_value(metric: str, logits, reference_logits, labels: torch.Tensor | None) -> float:
    """The metric of ``logits`` (a tensor, or a feature backbone's list of maps; see the module docstring)."""
    if metric in FEATURE_METRICS:
        return feature_agreement(metric, logits, reference_logits)
    if isinstance(logits, (list, tuple)):
        raise ValueError(f"metric {metric!r} needs class scores, but the model returns feature maps (a feature "
                         f"backbone): use one of {FEATURE_METRICS}")
    if metric == "accuracy":
        if labels is None:
            raise ValueError("metric 'accuracy' needs labels; use 'agreement' or 'kl' for unlabelled calibration data")
        return (logits.argmax(1) == labels).double().mean().item()
    if metric == "agreement":
        return (logits.argmax(1) == reference_logits.argmax(1)).double().mean().item()
    if metric == "kl":
        ref_log = F.log_softmax(reference_logits.double(), 1)
        log = F.log_softmax(logits.double(), 1)
        return (ref_log.exp() * (ref_log - log)).sum(1).mean().item()
    raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")


def _drop(metric: str, baseline: float, value: float) -> float:
    return value - baseline if metric in LOWER_IS_BETTER else baseline - value


def _resolve_metric(metric: str, cal: CalibrationSet, features: bool = False) -> str:
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; choose one of {METRICS}")
    if features:
        if metric == "auto":
            return "feature-cosine"
        if metric not in FEATURE_METRICS:
            raise ValueError(f"metric {metric!r} needs class scores, but the model is a feature backbone (its "
                             f"output is the per-stage maps): use one of {FEATURE_METRICS} (or auto)")
        return metric
    if metric == "auto":
        return "accuracy" if cal.has_labels else "agreement"
    if metric == "accuracy" and not cal.has_labels:
        raise ValueError(f"metric 'accuracy' needs labels, but {cal.source} has none (use an ImageFolder or an "
                         ".npz with 'labels'), or choose metric='agreement' or 'kl'")
    return metric


def _progress(iterable, progress: bool, **kwargs):
    if not progress:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, **kwargs)


@torch.no_grad()
def model_logits(model, images: torch.Tensor, batch_size: int = 64, progress: bool = False,
                 desc: str = "batches"):
    """Logits of ``model`` on ``images`` in batches (float32, returned on the CPU); each batch is
    moved to the model's device and dtype. A feature backbone gives its list of per-stage maps."""
    model.eval()
    param = next(model.parameters())
    starts = range(0, images.shape[0], batch_size)
    outs = [model(images[i:i + batch_size].to(param.device, param.dtype))
            for i in _progress(starts, progress, desc=desc, leave=False, total=len(starts))]
    if isinstance(outs[0], (list, tuple)):
        return [torch.cat([o[s].float().cpu() for o in outs]) for s in range(len(outs[0]))]
    return torch.cat([o.float().cpu() for o in outs])


# --------------------------------------------------------------------------- selection
def select_vmeanba_layers(model, calibration, k: int | None = None, max_drop: float | None = None,
                          metric: str = "auto", *, variant: str = "all-rows", folded: bool | None = None,
                          candidates="all", family: str | None = None, batch_size: int = 64,
                          curve: bool = True, progress: bool = True, flush_denormal: bool = True,
                          threads: int | None = None, device: str = "cpu") -> SelectionResult:
    """Choose VMeanba layers of ``model`` on ``calibration``.

    calibration: a CalibrationSet, or any source ``load_calibration`` accepts (loaded with the
    model family's preprocessing). k / max_drop: see the module docstring; with neither, the
    budget is DEFAULT_MAX_DROP. max_drop is in the metric's own units (a fraction for accuracy and
    agreement: 0.01 = 1 point; nats for kl; for feature-cosine 0.01 allows the mean cosine to fall to
    0.99, for feature-relerr the mean relative error to rise by 0.01). A feature backbone
    (``model.features_only``) takes feature-cosine for ``auto`` and refuses the class metrics. candidates: a layer spec limiting the layers
    considered. curve: also measure the joint metric of the first K layers in impact order for
    every K (for the metric-vs-K plot). flush_denormal: run with denormal floats flushed to zero
    (the scan's long decay products underflow into denormals, which made CPU evaluation ~10x
    slower on the digits models; the process-wide setting is switched back off afterwards).
    threads: torch CPU threads for the duration of the call (restored afterwards); on a loaded
    2-core machine 1 thread ran the digits selection in 2.7 s where 2 threads took 87 s.
    device: where the calibration passes run (a private float32 copy of the model; "cuda" with the
    project's kernels is the fast path on a GPU). The model is not modified.
    """
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(int(threads))
    if flush_denormal:
        torch.set_flush_denormal(True)
    try:
        return _select(model, calibration, k, max_drop, metric, variant, folded, candidates, family, batch_size,
                       curve, progress, device)
    finally:
        if flush_denormal:
            torch.set_flush_denormal(False)
        torch.set_num_threads(previous_threads)


def check_budget(metric: str, max_drop: float) -> None:
    """A budget in the metric's own units: a fraction in [0, 1] for accuracy/agreement/feature-cosine."""
    if max_drop < 0 or (metric not in LOWER_IS_BETTER and max_drop > 1):
        raise ValueError(f"max_drop={max_drop} is out of range: it is a fraction in [0, 1] for {metric} "
                         "(0.01 = 1 point), or >= 0 for kl (nats) and feature-relerr")


def vmeanba_specs(model, names, variant: str = "all-rows", folded: bool | None = None) -> dict:
    """{layer: VMeanbaSpec} for ``names``: folded where exact unless ``folded`` says otherwise. Each
    spec is checked by its block's ``configure`` now (and the block restored), so a fold refusal
    fails before any measurement."""
    blocks = model.ssm_layers()
    specs = {}
    for name in names:
        ss2d = blocks[name]
        fold = ss2d.out_norm_is_channel_layernorm if folded is None else folded
        specs[name] = VMeanbaSpec(variant=variant, folded=fold)
        previous = ss2d.vmeanba
        ss2d.configure(vmeanba=specs[name])  # raises (leaving the block unchanged) where it cannot fold
        ss2d.configure(vmeanba=previous)
    return specs


class CalibratedEvaluator:
    """The calibration metric of ``model`` under compression configurations, cached.

    A configuration maps layer names to ``(VMeanbaSpec | None, QuarterMapSpec | None)``; layers it
    does not name keep the model's own settings. The outputs of the model as given are computed
    once (the reference for the label-free metrics, and the baseline); each configuration is
    evaluated once, in batches under ``no_grad``, on a private copy of the model on ``device``
    (float32). Used by the VMeanba selection below and by the speed-aware planner
    (exporter.compress.planner)."""

    def __init__(self, model, cal: CalibrationSet, metric: str = "auto", batch_size: int = 64,
                 progress: bool = False, device: str = "cpu"):
        self.cal = cal
        self.metric = _resolve_metric(metric, cal, features=bool(getattr(model, "features_only", False)))
        self.batch_size = batch_size
        self.progress = progress
        self.work = copy.deepcopy(model).eval().to(device)
        self.blocks = self.work.ssm_layers()
        self.base = {name: (ss2d.vmeanba, ss2d.quartermap) for name, ss2d in self.blocks.items()}
        self.reference = model_logits(self.work, cal.images, batch_size, progress, desc="uncompressed")
        self.baseline = metric_value(self.metric, self.reference, self.reference, cal.labels)
        self._cache: dict[tuple, float] = {self._state({}): self.baseline}
        self.evaluations = 0  # configurations actually run (cache misses)

    @property
    def higher_is_better(self) -> bool:
        return self.metric not in LOWER_IS_BETTER

    def drop(self, value: float) -> float:
        """``value``'s drop from the baseline, oriented so that positive = worse."""
        return _drop(self.metric, self.baseline, value)

    def _state(self, config) -> tuple:
        return tuple(tuple(config.get(name, self.base[name])) for name in self.blocks)

    def evaluate(self, config) -> float:
        """The metric with ``config`` ({layer: (vmeanba spec, quartermap spec)}) applied."""
        state = self._state(config)
        if state not in self._cache:
            for ss2d, (vmeanba, quartermap) in zip(self.blocks.values(), state):
                ss2d.configure(vmeanba=vmeanba, quartermap=quartermap)
            logits = model_logits(self.work, self.cal.images, self.batch_size, self.progress,
                                  desc=f"{sum(s != (None, None) for s in state)} layer(s)")
            self._cache[state] = metric_value(self.metric, logits, self.reference, self.cal.labels)
            self.evaluations += 1
        return self._cache[state]


def budgeted_walk(order: list[str], joint_drop, max_drop: float, k: int | None = None,
                  progress: bool = False) -> list[str]:
    """The budgeted greedy of the module docstring: walk ``order`` and keep each layer whose addition
    leaves ``joint_drop(layers)`` (measured on all kept layers together) within ``max_drop``; at most
    ``k`` layers. Returns the kept layers in walk order."""
    chosen: list[str] = []
    for name in _progress(order, progress, desc="budgeted greedy"):
        if k is not None and len(chosen) >= k:
            break
        trial = chosen + [name]
        if joint_drop(trial) <= max_drop + 1e-12:
            chosen = trial
    return chosen


def _select(model, calibration, k, max_drop, metric, variant, folded, candidates, family, batch_size, curve,
            progress, device) -> SelectionResult:
    start = time.time()
    cal = calibration if isinstance(calibration, CalibrationSet) else load_calibration(
        calibration, family or getattr(model, "family", "vmamba"))
    metric = _resolve_metric(metric, cal, features=bool(getattr(model, "features_only", False)))
    names = parse_layer_spec(candidates, model, method="vmeanba")
    if not isinstance(names, list) or not names:
        raise ValueError(f"candidates must name at least one layer explicitly, got {candidates!r}")
    if k is not None and not 1 <= int(k) <= len(names):
        raise ValueError(f"k={k} but there are {len(names)} candidate layers; k must be in 1..{len(names)}")
    if max_drop is not None:
        check_budget(metric, max_drop)
    elif k is None:
        max_drop = DEFAULT_MAX_DROP
    spec_of = vmeanba_specs(model, names, variant, folded)  # validates now (a fold refusal fails before any work)
    evaluator = CalibratedEvaluator(model, cal, metric, batch_size, progress, device=device)
    baseline = evaluator.baseline

    def evaluate(layer_set) -> float:  # VMeanba on layer_set only among the candidates; QuarterMap as given
        return evaluator.evaluate({name: (spec_of[name] if name in layer_set else None, evaluator.base[name][1])
                                   for name in names})

    layer_scores = {name: evaluate([name]) for name in _progress(names, progress, desc="impact per layer")}
    impacts = {name: _drop(metric, baseline, s) for name, s in layer_scores.items()}
    position = {name: i for i, name in enumerate(names)}
    order = sorted(names, key=lambda n: (impacts[n], position[n]))

    if max_drop is None:
        chosen = order[:k]
    else:
        chosen = budgeted_walk(order, lambda layers: _drop(metric, baseline, evaluate(layers)), max_drop, k,
                               progress)
    joint = evaluate(chosen)
    curve_points = []
    if curve:
        for K in _progress(range(1, len(order) + 1), progress, desc="metric vs K"):
            value = evaluate(order[:K])
            curve_points.append({"k": K, "layers": order[:K], "metric": value,
                                 "drop": _drop(metric, baseline, value)})
    return SelectionResult(
        layers=[n for n in names if n in chosen], metric=metric, higher_is_better=metric not in LOWER_IS_BETTER,
        baseline=baseline, layer_scores=layer_scores, impacts=impacts, order=order, joint=joint,
        joint_drop=_drop(metric, baseline, joint), curve=curve_points, k=k, max_drop=max_drop, variant=variant,
        calibration=cal.describe(), num_samples=len(cal), synthetic=cal.synthetic, seconds=time.time() - start,
        model=type(model).__name__,
    )
