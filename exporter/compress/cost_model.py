"""Per-layer cost model: how much time VMeanba, QuarterMap or both save on each SS2D block, measured
on the target.

For every block and every option (``vmeanba``, ``quartermap``, ``both``) the whole model is timed
with that option on that block alone, right after a run of the uncompressed model; the saving is
the difference of the two (the median over rounds). The planner (exporter.compress.planner) adds
the savings of the blocks it compresses to predict a plan's time, then measures the chosen plan.

Backends (the label stays on the cost model, its cache entry and every report):

- ``cuda``: the project's GPU runtime (``exporter.runtime.prepare_runtime``, mode ``graph``) at
  the deployment batch and precision; each configuration is captured in a CUDA graph and timed
  with ``exporter.runtime.time_replays`` (CUDA events around each replay, median), as the
  benchmarks do. Needs the project's CUDA kernels (``kernel_status``).
- ``cpu-torch``: plain PyTorch eager on the CPU (``exporter.verify.parity.latency_pytorch``,
  denormals flushed). CPU backends take the fastest of their runs (on a shared machine the
  minimum is the least disturbed estimate) and time float32 whatever the precision asked.
- ``cpu-ort``: ONNX Runtime on the CPU: each configuration is exported (static shape) and timed
  with ``exporter.verify.parity.latency_onnxrt``.

Blocks of one stage have the same shapes, and the time of a configuration does not depend on
weight values, so by default one block per distinct block signature (stage, parameter shapes,
norm) is measured and its savings stand for its siblings (``measured_as`` names the block
measured); ``per_block=True`` measures every block.

Cache: one JSON file per (model fingerprint, backend, device name, batch, precision, resolution,
kernel-library fingerprint, method settings) under ``cache_dir`` (default
``$VM_DEPLOY_CACHE`` or ``~/.cache/vm-deploy``, sub-folder ``cost_models``), written atomically.
An entry that cannot be read, whose key does not match, or that does not cover the model's layers
is ignored with a warning and measured again (never trusted). The model fingerprint covers the
architecture (module types, parameter and buffer names, shapes and dtypes), not the weight values.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import hashlib
import json
import math
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import torch

from exporter.models.ss2d import QuarterMapSpec, VMeanbaSpec

OPTIONS = ("none", "vmeanba", "quartermap", "both")
COMPRESSED_OPTIONS = OPTIONS[1:]
BACKENDS = ("cuda", "cpu-torch", "cpu-ort")
BACKEND_CHOICES = ("auto", "gpu", "cpu", "cuda", "cpu-torch", "cpu-ort")  # gpu = cuda, cpu = cpu-torch
SCHEMA = 1
PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16}


class CostModelUnavailable(RuntimeError):
    """No cost model can be measured here (e.g. CUDA asked for and not present); the message says why."""


def option_specs(option: str, vmeanba: VMeanbaSpec, quartermap: QuarterMapSpec):
    """The (VMeanbaSpec | None, QuarterMapSpec | None) a block gets for ``option``."""
    if option not in OPTIONS:
        raise ValueError(f"unknown option {option!r}; choose one of {OPTIONS}")
    return (vmeanba if option in ("vmeanba", "both") else None,
            quartermap if option in ("quartermap", "both") else None)


def default_cache_dir() -> Path:
    root = os.environ.get("VM_DEPLOY_CACHE") or Path.home() / ".cache" / "vm-deploy"
    return Path(root) / "cost_models"


def model_fingerprint(model) -> str:
    """sha256 (16 hex digits) of the architecture: module types and every parameter / buffer name,
    shape and dtype. Weight values are left out: speed does not depend on them."""
    digest = hashlib.sha256(type(model).__name__.encode())
    for name, module in model.named_modules():
        digest.update(f"{name}:{type(module).__name__};".encode())
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
    return digest.hexdigest()[:16]


def block_signature(name: str, ss2d) -> str:
    """Blocks with equal signatures cost the same: the stage (input resolution), parameter shapes, out_norm."""
    shapes = ",".join(f"{n}{tuple(p.shape)}" for n, p in ss2d.named_parameters())
    return f"{name.split('.blocks.')[0]}|{type(ss2d.out_norm).__name__}|{shapes}"


# --------------------------------------------------------------------------- timers
class Timer:
    """Times the whole model as currently configured; ``calls`` counts measurements."""

    backend = ""

    def __init__(self, batch: int, precision: str, resolution: tuple[int, int], iters: int, warmup: int):
        self.batch, self.precision, self.resolution = batch, precision, tuple(resolution)
        self.iters, self.warmup = iters, warmup
        self.calls = 0

    def time_ms(self, model) -> float:
        self.calls += 1
        return self._time_ms(model)

    def _time_ms(self, model) -> float:
        raise NotImplementedError

    @property
    def input_shape(self) -> tuple:
        return (self.batch, 3, *self.resolution)

    def device_name(self) -> str:
        cpu = platform.processor() or platform.machine()
        with contextlib.suppress(OSError):
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        return f"{cpu} ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"

    def kernels_fingerprint(self) -> str:
        return f"torch {torch.__version__}"

    @property
    def timed_precision(self) -> str:
        return "fp32"


class CudaTimer(Timer):
    backend = "cuda"

    def __init__(self, *args, **kwargs):
        from exporter.runtime import kernel_status

        ok, reason = kernel_status()
        if not ok:
            raise CostModelUnavailable(f"the cuda cost model needs the project's GPU runtime: {reason}")
        super().__init__(*args, **kwargs)

    def _time_ms(self, model) -> float:
        from exporter.runtime import prepare_runtime, time_replays

        rt = prepare_runtime(model, dtype=PRECISIONS[self.precision], batch_size=self.batch,
                             image_size=self.resolution, mode="graph", clone_output=False, warmup=self.warmup)
        try:
            return statistics.median(time_replays(rt, self.iters))
        finally:
            rt.release()
            del rt
            torch.cuda.empty_cache()

    def device_name(self) -> str:
        return torch.cuda.get_device_name()

    def kernels_fingerprint(self) -> str:
        import plugins.kernels

        library = plugins.kernels.library_path()
        lib = hashlib.sha256(Path(library).read_bytes()).hexdigest()[:16] if library else "none"
        return f"kernels {lib}, torch {torch.__version__}, cuda {torch.version.cuda}"

    @property
    def timed_precision(self) -> str:
        return self.precision


class CpuTorchTimer(Timer):
    backend = "cpu-torch"

    def _time_ms(self, model) -> float:
        from exporter.verify.parity import latency_pytorch

        torch.set_flush_denormal(True)  # the scans' decay products underflow; denormals are ~10x slower on CPU
        try:
            return latency_pytorch(model.float().eval(), self.input_shape, warmup=self.warmup, runs=self.iters).min_ms
        finally:
            torch.set_flush_denormal(False)


class CpuOrtTimer(Timer):
    backend = "cpu-ort"

    def _time_ms(self, model) -> float:
        from exporter.export.onnx_export import export_onnx
        from exporter.verify.parity import latency_onnxrt

        with tempfile.TemporaryDirectory(prefix="vm-cost-") as tmp:
            path = Path(tmp) / "model.onnx"
            export_onnx(model.float().eval(), path, precision="fp32", batch=self.batch, resolution=self.resolution,
                        dynamic=False)
            return latency_onnxrt(path, self.input_shape, warmup=self.warmup, runs=self.iters,
                                  threads=torch.get_num_threads()).min_ms

    def kernels_fingerprint(self) -> str:
        import onnxruntime

        return f"onnxruntime {onnxruntime.__version__}, torch {torch.__version__}"


TIMERS = {"cuda": CudaTimer, "cpu-torch": CpuTorchTimer, "cpu-ort": CpuOrtTimer}


def resolve_backend(backend: str) -> str:
    """``auto``: cuda where the project's GPU runtime works, else cpu-torch; ``gpu`` = cuda, ``cpu`` = cpu-torch."""
    if backend not in BACKEND_CHOICES:
        raise ValueError(f"unknown cost backend {backend!r}; choose one of {BACKEND_CHOICES}")
    if backend == "auto":
        from exporter.runtime import kernel_status

        return "cuda" if kernel_status()[0] else "cpu-torch"
    return {"gpu": "cuda", "cpu": "cpu-torch"}.get(backend, backend)


def make_timer(backend: str, batch: int, precision: str, resolution, iters: int = 10, warmup: int = 2) -> Timer:
    """The timer of ``backend`` (see resolve_backend); CostModelUnavailable when it cannot run here."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")
    if batch < 1 or iters < 1 or warmup < 0:
        raise ValueError(f"batch and iters must be >= 1 and warmup >= 0, got {batch}, {iters}, {warmup}")
    return TIMERS[resolve_backend(backend)](batch, precision, tuple(resolution), iters, warmup)


# --------------------------------------------------------------------------- the cost model
@dataclasses.dataclass
class CostModel:
    """Measured times; ``to_dict`` / ``from_dict`` round-trip (the cache stores ``to_dict``)."""

    key: dict                          # what the measurement depends on (the cache key)
    baseline_ms: float                 # the uncompressed model (median of its runs)
    option_ms: dict[str, dict[str, float]]  # layer -> option -> model time with that option on that layer alone
    #                                   (baseline_ms minus the median paired saving)
    measured_as: dict[str, str]        # layer -> the block whose measurement it carries (itself if per_block)
    iters: int
    rounds: int
    warmup: int
    seconds: float                     # time the measurement took
    measured_at: str                   # UTC date and time
    from_cache: bool = False

    @property
    def backend(self) -> str:
        return self.key["backend"]

    @property
    def label(self) -> str:
        k = self.key
        return (f"{k['backend']} on {k['device']}, batch {k['batch']}, {k['precision']}, "
                f"{k['resolution'][0]}x{k['resolution'][1]}")

    @property
    def layers(self) -> list[str]:
        return list(self.option_ms)

    def saved_ms(self, layer: str, option: str) -> float:
        """Time saved by ``option`` on ``layer`` alone (positive = faster)."""
        return 0.0 if option == "none" else self.baseline_ms - self.option_ms[layer][option]

    def predicted_ms(self, plan: dict[str, str]) -> float:
        """Baseline minus the sum of the single-block savings of ``plan`` ({layer: option})."""
        return self.baseline_ms - sum(self.saved_ms(n, o) for n, o in plan.items())

    def predicted_speedup(self, plan: dict[str, str]) -> float | None:
        """baseline / predicted time; None where the savings add up to the whole model (a noisy cost model)."""
        predicted = self.predicted_ms(plan)
        return self.baseline_ms / predicted if predicted > 0 else None

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("from_cache")
        return out

    @classmethod
    def from_dict(cls, data: dict) -> "CostModel":
        return cls(**data)


def cost_key(model, timer: Timer, vmeanba: dict[str, VMeanbaSpec], quartermap: QuarterMapSpec,
             per_block: bool) -> dict:
    """What a measurement depends on; ``vmeanba`` lists the distinct VMeanba forms of the blocks."""
    forms = sorted({(s.variant, s.folded) for s in vmeanba.values()})
    return {"schema": SCHEMA, "model": model_fingerprint(model), "backend": timer.backend,
            "device": timer.device_name(), "batch": timer.batch, "precision": timer.timed_precision,
            "resolution": list(timer.resolution), "kernels": timer.kernels_fingerprint(),
            "vmeanba": [{"variant": v, "folded": f} for v, f in forms], "quartermap": dataclasses.asdict(quartermap),
            "per_block": bool(per_block)}


def cache_path(cache_dir, key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]
    return Path(cache_dir) / f"{key['backend']}-{digest}.json"


def load_cached(path: Path, key: dict, layers: list[str]) -> CostModel | None:
    """The cached cost model at ``path`` when it is intact and was measured for ``key`` and these
    layers; otherwise None (with a warning naming the reason, unless there is no file)."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("key") != key:
            raise ValueError("it was measured for another model, device, batch, precision or kernel library")
        cost = CostModel.from_dict(data)
        if cost.layers != layers or any(set(v) != set(COMPRESSED_OPTIONS) for v in cost.option_ms.values()):
            raise ValueError("it does not cover this model's SS2D layers and options")
        if not all(isinstance(v, (int, float)) for row in cost.option_ms.values() for v in row.values()):
            raise ValueError("it holds non-numeric times")
    except (OSError, ValueError, TypeError, KeyError) as exc:
        warnings.warn(f"ignoring the cost-model cache entry {path}: {exc}; measuring again", stacklevel=3)
        return None
    cost.from_cache = True
    return cost


def measure_cost_model(model, timer: Timer, *, vmeanba: VMeanbaSpec | dict[str, VMeanbaSpec] | None = None,
                       quartermap: QuarterMapSpec | None = None, per_block: bool = False, cache_dir=None,
                       use_cache: bool = True, rounds: int | None = None, progress: bool = False) -> CostModel:
    """The cost model of ``model`` with ``timer``: from the cache when a valid entry exists, else measured
    (and cached). ``vmeanba``: one spec for every block or {layer: spec} (default: folded where exact);
    ``quartermap``: default stride 2, keep 1. rounds: sweeps over the measured blocks (default 1 on
    cuda, 3 on the CPU backends); in each, a block's three options are timed right after an
    uncompressed run and its savings are the paired differences, the median over rounds kept. The
    model is not modified."""
    from exporter.compress.selection import _progress, vmeanba_specs

    names = list(model.ssm_layers())
    vm_of = (vmeanba if isinstance(vmeanba, dict) else
             {n: vmeanba for n in names} if vmeanba is not None else vmeanba_specs(model, names))
    quartermap = quartermap or QuarterMapSpec()
    key = cost_key(model, timer, vm_of, quartermap, per_block)
    path = cache_path(cache_dir or default_cache_dir(), key)
    if use_cache:
        cached = load_cached(path, key, names)
        if cached is not None:
            return cached
    start = time.time()
    work = copy.deepcopy(model).eval()
    if timer.backend == "cuda":
        work = work.cuda()
    blocks = work.ssm_layers()
    for ss2d in blocks.values():
        ss2d.configure(vmeanba=None, quartermap=None)
    representative: dict[str, str] = {}
    measured_as = {}
    for name in names:
        sig = name if per_block else block_signature(name, blocks[name])
        measured_as[name] = representative.setdefault(sig, name)
    measured = [n for n in names if measured_as[n] == n]
    rounds = rounds or (1 if timer.backend == "cuda" else 3)
    baselines: list[float] = []
    savings: dict[tuple, list[float]] = {}
    # paired differences: each block's three options are timed right after an uncompressed run, so slow
    # drift of a shared machine cancels; the median over rounds drops a round hit by a burst of load
    for _ in _progress(range(rounds), progress and rounds > 1, desc="cost model rounds"):
        for name in _progress(measured, progress, desc="cost model", leave=False):
            base = timer.time_ms(work)
            baselines.append(base)
            for option in COMPRESSED_OPTIONS:
                blocks[name].configure(*option_specs(option, vm_of[name], quartermap))
                savings.setdefault((name, option), []).append(base - timer.time_ms(work))
            blocks[name].configure(vmeanba=None, quartermap=None)
    baseline = statistics.median(baselines)
    option_ms = {n: {o: baseline - statistics.median(savings[(measured_as[n], o)]) for o in COMPRESSED_OPTIONS}
                 for n in names}
    cost = CostModel(key=key, baseline_ms=baseline, option_ms=option_ms, measured_as=measured_as, iters=timer.iters,
                     rounds=rounds,                      warmup=timer.warmup, seconds=time.time() - start,
                     measured_at=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
    if use_cache:
        from exporter.files import atomic_write_bytes

        try:
            atomic_write_bytes(path, (json.dumps(cost.to_dict(), indent=1) + "\n").encode())
        except OSError as exc:
            warnings.warn(f"could not write the cost-model cache {path} ({exc}); the next plan measures again",
                          stacklevel=2)
    return cost


def time_plans_ms(model, timer: Timer, plans: list[dict[str, str]], vmeanba: dict[str, VMeanbaSpec],
                  quartermap: QuarterMapSpec, rounds: int | None = None) -> list[float]:
    """The measured time of ``model`` with each plan ({layer: option}; {} = uncompressed), interleaved over
    ``rounds`` sweeps, the fastest round of each kept (default as measure_cost_model). The model is not
    modified."""
    work = copy.deepcopy(model).eval()
    if timer.backend == "cuda":
        work = work.cuda()
    blocks = work.ssm_layers()
    # equal plans are one configuration: timed once, so they cannot differ by noise
    unique = list(dict.fromkeys(tuple(plan.get(n, "none") for n in blocks) for plan in plans))
    best = dict.fromkeys(unique, math.inf)
    for _ in range(rounds or (1 if timer.backend == "cuda" else 3)):
        for options in unique:
            for (name, ss2d), option in zip(blocks.items(), options):
                ss2d.configure(*option_specs(option, vmeanba.get(name, VMeanbaSpec()), quartermap))
            best[options] = min(best[options], timer.time_ms(work))
    return [best[tuple(plan.get(n, "none") for n in blocks)] for plan in plans]
