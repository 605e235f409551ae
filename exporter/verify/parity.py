"""Parity of an exported ONNX file with the PyTorch model, through Polygraphy.

- :class:`TorchRunner` is a Polygraphy ``BaseRunner`` for the float32 PyTorch model on the CPU
  (Polygraphy's own ``PytRunner`` moves inputs to CUDA). ``Comparator.run`` runs it and
  ``OnnxrtRunner(SessionFromOnnx(...))`` (ONNX Runtime CPU, no custom-op library: the function
  bodies make the file self-contained) on the same feeds; pass more runners (Polygraphy's
  ``TrtRunner``) through ``extra_runners`` where TensorRT is present.
- ``Comparator.compare_accuracy`` with the simple compare function (``elemwise``: an element fails
  only when it exceeds both atol and rtol) gives the verdict and the error statistics.
- The inputs (a JSON list of feed dicts) and the PyTorch outputs (``RunResults``, runner "pytorch")
  are saved for ``polygraphy run model.trt.onnx --trt --plugins ... --load-inputs inputs.json
  --load-outputs golden.json``, so the TensorRT side runs against exactly the same reference.

Tolerances per precision are in the op contract (``plugins/contract/tolerances.yaml``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import statistics
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from plugins.contract import MODEL_TOLERANCES as TOLERANCES  # noqa: F401  (re-exported: exporter.verify)
from plugins.contract import Tolerance

INPUT_NAME = "x"
OUTPUT_NAME = "logits"
GOLDEN_RUNNER = "pytorch"


@dataclasses.dataclass
class ParityReport:
    passed: bool
    precision: str
    atol: float
    rtol: float
    max_abs_error: float
    max_rel_error: float  # Polygraphy's max reldiff: |ort - ref| / |ref|
    mean_abs_error: float
    input_shapes: list
    iterations: int
    inputs_json: str | None = None
    golden_json: str | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def merge_reports(reports: list[ParityReport]) -> ParityReport:
    """One verdict over several checks (e.g. two input shapes): all must pass; errors are the worst."""
    first = reports[0]
    n = sum(r.iterations for r in reports)
    return dataclasses.replace(
        first, passed=all(r.passed for r in reports), max_abs_error=max(r.max_abs_error for r in reports),
        max_rel_error=max(r.max_rel_error for r in reports),
        mean_abs_error=sum(r.mean_abs_error * r.iterations for r in reports) / n,
        input_shapes=[s for r in reports for s in r.input_shapes], iterations=n)


@contextlib.contextmanager
def quiet_polygraphy():
    """Polygraphy logs every step at INFO; keep the CLI's output to its own summary."""
    from polygraphy.logger import G_LOGGER

    old = G_LOGGER.module_severity
    G_LOGGER.module_severity = G_LOGGER.ERROR
    try:
        yield
    finally:
        G_LOGGER.module_severity = old


def make_feeds(shape: tuple, iterations: int = 1, seed: int = 0, dtype=np.float32, input_name: str = INPUT_NAME):
    """Polygraphy-style inputs: a list of feed dicts of normalised-image-like values."""
    rng = np.random.default_rng(seed)
    return [{input_name: rng.standard_normal(shape).astype(dtype)} for _ in range(iterations)]


def _torch_runner_class():
    from polygraphy.backend.base import BaseRunner
    from polygraphy.common import TensorMetadata

    class TorchRunner(BaseRunner):
        """A Polygraphy runner for a PyTorch model on the CPU, run in float32 (fp16 feeds are upcast)."""

        def __init__(self, model: torch.nn.Module, input_shape: tuple, input_name: str = INPUT_NAME,
                     output_name: str | list[str] = OUTPUT_NAME, name: str = GOLDEN_RUNNER):
            super().__init__(name=name, prefix="torch-cpu-runner")
            self._model, self._shape = model, tuple(input_shape)
            # a feature backbone returns a list of maps: one name per map (feat0..feat3)
            self._input_name = input_name
            self._output_names = [output_name] if isinstance(output_name, str) else list(output_name)

        def activate_impl(self):
            self._model.eval()

        def get_input_metadata_impl(self):
            return TensorMetadata().add(self._input_name, np.float32, self._shape)

        def infer_impl(self, feed_dict):
            x = torch.from_numpy(np.asarray(feed_dict[self._input_name], dtype=np.float32))
            start = time.perf_counter()
            with torch.no_grad():
                out = self._model(x)
            self.inference_time = time.perf_counter() - start
            outs = list(out) if isinstance(out, (list, tuple)) else [out]
            if len(outs) != len(self._output_names):
                raise ValueError(f"the model returned {len(outs)} outputs for the names {self._output_names}")
            return OrderedDict((n, o.float().numpy()) for n, o in zip(self._output_names, outs))

        def deactivate_impl(self):
            pass

    return TorchRunner


def TorchRunner(model: torch.nn.Module, input_shape: tuple, **kwargs):  # noqa: N802  (a runner factory)
    """A Polygraphy ``BaseRunner`` for the float32 PyTorch model on the CPU (class built lazily:
    Polygraphy is imported only when parity runs)."""
    return _torch_runner_class()(model, input_shape, **kwargs)


def _simple_compare(tolerance: Tolerance):
    from polygraphy import comparator as pgc

    # CompareFunc.simple was renamed SimpleCompareFunc (same arguments) in Polygraphy 0.50+
    simple = getattr(pgc, "SimpleCompareFunc", None) or pgc.CompareFunc.simple
    return simple(atol=tolerance.atol, rtol=tolerance.rtol, check_error_stat="elemwise")


def check_parity(
    reference_model: torch.nn.Module,
    onnx_path: str | Path,
    *,
    precision: str = "fp32",
    input_shape: tuple | None = None,
    iterations: int = 2,
    seed: int = 0,
    tolerance: Tolerance | None = None,
    save_dir: str | Path | None = None,
    inputs_json: str | Path | None = None,
    golden_json: str | Path | None = None,
    extra_runners: tuple = (),
) -> ParityReport:
    """Run PyTorch (float32) and ONNX Runtime on the same random inputs through Polygraphy and compare.

    For an fp16 export the fp16-rounded inputs are fed to both, so only the arithmetic differs. A
    feature backbone's maps are compared output by output (``feat0``..``feat3``); the verdict needs all.
    ``save_dir`` (or ``inputs_json`` / ``golden_json``) saves the feeds and the PyTorch outputs."""
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.comparator import Comparator, RunResults
    from polygraphy.json import save_json

    input_shape = input_shape or (1, *type(reference_model).default_cfg.input_size)  # the pretrained size
    tol = tolerance or TOLERANCES[precision]
    dtype = np.float16 if precision == "fp16" else np.float32
    feeds = make_feeds(tuple(input_shape), iterations, seed, dtype)
    torch_runner = TorchRunner(reference_model.float(), tuple(input_shape),
                               output_name=list(getattr(reference_model, "output_names", [OUTPUT_NAME])))
    ort_runner = OnnxrtRunner(SessionFromOnnx(str(onnx_path), providers=["cpu"]), name="onnxrt")
    with quiet_polygraphy():
        results = Comparator.run([torch_runner, ort_runner, *extra_runners], data_loader=feeds)
        accuracy = Comparator.compare_accuracy(results, compare_func=_simple_compare(tol))
    # AccuracyResults (Polygraphy >= 0.53: one AccuracyResult per compare function) or one AccuracyResult
    results_list = list(accuracy) if hasattr(accuracy, "output_names") else [accuracy]
    per_output = [out for acc in results_list for pair in acc.values() for iteration in pair
                  for out in iteration.values()]
    report = ParityReport(
        passed=bool(accuracy), precision=precision, atol=tol.atol, rtol=tol.rtol,
        max_abs_error=max(_finite_or_inf(r.max_absdiff) for r in per_output),
        max_rel_error=max(_finite_or_inf(r.max_reldiff) for r in per_output),
        mean_abs_error=float(np.mean([_finite_or_inf(r.mean_absdiff) for r in per_output])),
        input_shapes=[list(input_shape)] * iterations, iterations=iterations,
    )
    if save_dir is not None:
        inputs_json = inputs_json or Path(save_dir) / "inputs.json"
        golden_json = golden_json or Path(save_dir) / "golden.json"
    if inputs_json is not None or golden_json is not None:
        golden = RunResults()
        golden.append(results[0])  # the PyTorch runner's iterations
        with quiet_polygraphy():
            if inputs_json is not None:
                save_json(feeds, str(inputs_json), description="inputs")
            if golden_json is not None:
                golden.save(str(golden_json))
        report.inputs_json = str(inputs_json) if inputs_json is not None else None
        report.golden_json = str(golden_json) if golden_json is not None else None
    return report


def _finite_or_inf(value) -> float:
    value = float(value)
    return value if np.isfinite(value) else float("inf")


# --------------------------------------------------------------------------- latency
@dataclasses.dataclass
class LatencyReport:
    runtime: str
    input_shape: list
    warmup: int
    runs: int
    median_ms: float
    min_ms: float
    max_ms: float
    threads: int
    cpu_share: float | None = None  # process CPU time / (wall time x threads) while timing; low = machine loaded

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def _summary(runtime: str, shape, warmup: int, times: list[float], threads: int, cpu_share=None) -> LatencyReport:
    return LatencyReport(runtime, list(shape), warmup, len(times), statistics.median(times), min(times), max(times),
                         threads, cpu_share)


def _time(fn, warmup: int, runs: int) -> list[float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def latency_pytorch(model: torch.nn.Module, input_shape: tuple, warmup: int = 2, runs: int = 10, dtype=torch.float32) -> LatencyReport:
    model = model.eval()
    x = torch.randn(*input_shape, dtype=dtype)
    with torch.no_grad():
        times = _time(lambda: model(x), warmup, runs)
    return _summary("pytorch-eager", input_shape, warmup, times, torch.get_num_threads())


def _ort_session(onnx_path, threads: int | None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    # ORT's idle pool threads spin-wait after each run and would steal the cores from the PyTorch
    # run that follows (measured: 7 ms -> 800 ms for the digits model); no spinning, fair alternation
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        opts.intra_op_num_threads = int(threads)
    return ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])


def latency_onnxrt(onnx_path: str | Path, input_shape: tuple, warmup: int = 2, runs: int = 10, dtype=np.float32,
                   threads: int | None = None) -> LatencyReport:
    sess = _ort_session(onnx_path, threads)
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal(input_shape).astype(dtype)
    times = _time(lambda: sess.run(None, {name: x}), warmup, runs)
    return _summary("onnxruntime-cpu", input_shape, warmup, times, threads or torch.get_num_threads())


def latency_side_by_side(model: torch.nn.Module, onnx_path: str | Path, input_shape: tuple, warmup: int = 2,
                         runs: int = 10, onnx_dtype=np.float32, threads: int | None = None,
                         precision: str | None = None) -> tuple[LatencyReport, LatencyReport]:
    """PyTorch eager (the float32 model) and ONNX Runtime CPU timed in alternation, run by run, so a
    busy machine slows both alike instead of whichever happened to run second. Each report's
    ``cpu_share`` says how much of the wall time this process actually got the CPU for."""
    if precision is not None:
        onnx_dtype = np.float16 if precision == "fp16" else np.float32
    model = model.eval()
    sess = _ort_session(onnx_path, threads)
    name = sess.get_inputs()[0].name
    x_np = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
    x_pt = torch.from_numpy(x_np)
    x_ort = x_np.astype(onnx_dtype)
    pt_times, ort_times = [], []
    pt_cpu = ort_cpu = 0.0
    with torch.no_grad():
        for i in range(warmup + runs):
            c0, t0 = time.process_time(), time.perf_counter()
            model(x_pt)
            c1, t1 = time.process_time(), time.perf_counter()
            sess.run(None, {name: x_ort})
            c2, t2 = time.process_time(), time.perf_counter()
            if i >= warmup:
                pt_times.append((t1 - t0) * 1e3)
                ort_times.append((t2 - t1) * 1e3)
                pt_cpu += c1 - c0
                ort_cpu += c2 - c1
    n_threads = threads or torch.get_num_threads()

    def share(cpu_s: float, times: list[float]) -> float:
        return round(cpu_s / max(1e-9, sum(times) / 1e3), 3)

    return (_summary("pytorch-eager", input_shape, warmup, pt_times, n_threads, share(pt_cpu, pt_times)),
            _summary("onnxruntime-cpu", input_shape, warmup, ort_times, n_threads, share(ort_cpu, ort_times)))


def machine_load_warning(*reports: LatencyReport, load_average: float | None = None,
                         cpus: int | None = None) -> str | None:
    """A warning when the timings were taken on a loaded machine (and so say little), else None.

    Signs: the 1-minute load average above the number of cores, a runtime that got the CPU for
    less than half of its wall time (single-threaded work waiting for a core), or runs spread by
    more than 3x (max / min)."""
    cpus = cpus or os.cpu_count() or 1
    if load_average is None:
        with contextlib.suppress(OSError, AttributeError):
            load_average = os.getloadavg()[0]
    reasons = []
    if load_average is not None and load_average > cpus:
        reasons.append(f"load average {load_average:.1f} on {cpus} cores")
    for r in reports:
        if r.cpu_share is not None and r.cpu_share < 0.5:
            reasons.append(f"{r.runtime} had the CPU for {100 * r.cpu_share:.0f}% of its wall time")
        if r.min_ms > 0 and r.max_ms / r.min_ms > 3:
            reasons.append(f"{r.runtime} runs spread {r.min_ms:.1f}-{r.max_ms:.1f} ms")
    if not reasons:
        return None
    return ("latency measured on a loaded machine (" + "; ".join(reasons) + "): the numbers say little; rerun on a "
            "quiet machine, or with --threads 1")
