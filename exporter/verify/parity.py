"""Parity of an exported ONNX file with the PyTorch model, through Polygraphy.

- PyTorch (float32 eval model) outputs become Polygraphy golden data (``RunResults``, runner
  "pytorch"); inputs are saved as a JSON list of feed dicts (``polygraphy.json.save_json``), so the
  TensorRT side runs ``polygraphy run model.trt.onnx --trt --plugins ... --load-inputs inputs.json
  --load-outputs golden.json`` against exactly the same reference.
- The ONNX file runs in ONNX Runtime (CPU, no custom-op library: the function bodies make it
  self-contained) through ``OnnxrtRunner(SessionFromOnnx(...))``.
- ``Comparator.compare_accuracy`` with ``CompareFunc.simple(atol, rtol)`` decides pass/fail; an
  element fails only when it exceeds both atol and rtol (Polygraphy's elementwise rule).

Tolerances per precision (justified in docs/EXPORT.md) are in ``TOLERANCES``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np
import torch

INPUT_NAME = "x"
OUTPUT_NAME = "logits"


@dataclasses.dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float


# float32: the bodies compute the same float32 arithmetic in another order (chunked scan, MatMul
# vs einsum); measured logits error is ~1e-6, so 1e-4 leaves 100x margin yet catches any
# semantic slip (a wrong direction or skip term moves logits by >1e-2).
# float16: the whole network (except the scan's A, D, dt_bias and its float32 state) runs in
# half precision against the float32 PyTorch model: ~11-bit mantissa over ~50 layers; measured
# ~1e-3 on logits of size ~1; 3e-2 absolute / 3e-2 relative.
TOLERANCES = {"fp32": Tolerance(atol=1e-4, rtol=1e-4), "fp16": Tolerance(atol=3e-2, rtol=3e-2)}


@dataclasses.dataclass
class ParityReport:
    passed: bool
    precision: str
    atol: float
    rtol: float
    max_abs_error: float
    max_rel_error: float  # max over elements of |ort - ref| / (|ref| + 1e-6)
    mean_abs_error: float
    input_shapes: list
    iterations: int
    inputs_json: str | None = None
    golden_json: str | None = None
    onnxrt_json: str | None = None

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


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


def pytorch_results(model: torch.nn.Module, feeds: list, output_name: str = OUTPUT_NAME, runner_name: str = "pytorch"):
    """Golden RunResults from the float32 PyTorch model (inputs upcast when they are fp16)."""
    from polygraphy.comparator import RunResults

    model = model.eval()
    ref_dtype = next(model.parameters()).dtype
    iterations = []
    with torch.no_grad():
        for feed in feeds:
            (x,) = feed.values()
            t0 = time.perf_counter()
            out = model(torch.from_numpy(np.asarray(x)).to(ref_dtype))
            iterations.append(({output_name: out.float().numpy()}, time.perf_counter() - t0))
    rr = RunResults()
    rr.add([o for o, _ in iterations], runtime=float(np.mean([rt for _, rt in iterations])), runner_name=runner_name)
    return rr


def onnxrt_results(onnx_path: str | Path, feeds: list, providers=("cpu",)):
    """Run the ONNX file in ONNX Runtime through Polygraphy's runner (no plugin library)."""
    from polygraphy.backend.onnxrt import OnnxrtRunner, SessionFromOnnx
    from polygraphy.comparator import Comparator

    runner = OnnxrtRunner(SessionFromOnnx(str(onnx_path), providers=list(providers)), name="onnxrt")
    with quiet_polygraphy():
        return Comparator.run([runner], data_loader=feeds)


def compare(onnxrt: "RunResults", golden: "RunResults", tolerance: Tolerance) -> bool:  # noqa: F821
    """Polygraphy's verdict: ORT output (first) against the golden reference (second)."""
    from polygraphy import comparator as pgc

    # CompareFunc.simple was renamed SimpleCompareFunc (same arguments) in Polygraphy 0.50+
    simple = getattr(pgc, "SimpleCompareFunc", None) or pgc.CompareFunc.simple
    Comparator, RunResults = pgc.Comparator, pgc.RunResults
    both = RunResults()
    for name, iters in list(onnxrt.items()) + list(golden.items()):
        both.append((name, iters))
    with quiet_polygraphy():
        acc = Comparator.compare_accuracy(
            both, compare_func=simple(atol=tolerance.atol, rtol=tolerance.rtol, check_error_stat="elemwise"),
        )
    return bool(acc)


def _error_stats(onnxrt, golden) -> tuple[float, float, float]:
    (_, ort_iters), = onnxrt.items()
    (_, ref_iters), = golden.items()
    max_abs = max_rel = 0.0
    means = []
    for it_o, it_r in zip(ort_iters, ref_iters):
        for name in it_r.keys():
            a = np.asarray(it_o[name], dtype=np.float64)
            r = np.asarray(it_r[name], dtype=np.float64)
            diff = np.abs(a - r)
            max_abs = max(max_abs, float(np.nanmax(diff)) if np.isfinite(diff).all() else float("inf"))
            max_rel = max(max_rel, float(np.max(diff / (np.abs(r) + 1e-6))))
            means.append(float(diff.mean()))
    return max_abs, max_rel, float(np.mean(means))


def save_polygraphy_data(feeds: list, golden, out_dir: str | Path, prefix: str = "") -> tuple[Path, Path]:
    """Write ``inputs.json`` (list of feed dicts) and ``golden.json`` (RunResults) for Polygraphy."""
    from polygraphy.json import save_json

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs_path, golden_path = out_dir / f"{prefix}inputs.json", out_dir / f"{prefix}golden.json"
    with quiet_polygraphy():
        save_json(feeds, str(inputs_path), description="inputs")
        golden.save(str(golden_path))
    return inputs_path, golden_path


def check_parity(
    reference_model: torch.nn.Module,
    onnx_path: str | Path,
    *,
    precision: str = "fp32",
    input_shape: tuple = (1, 3, 224, 224),
    iterations: int = 2,
    seed: int = 0,
    tolerance: Tolerance | None = None,
    save_dir: str | Path | None = None,
) -> ParityReport:
    """Run PyTorch (float32) and ONNX Runtime on the same random inputs and compare.

    ``reference_model`` is the float32 model (for an fp16 export the fp16-rounded inputs are fed
    to both, so only the model's arithmetic differs)."""
    tol = tolerance or TOLERANCES[precision]
    dtype = np.float16 if precision == "fp16" else np.float32
    feeds = make_feeds(tuple(input_shape), iterations, seed, dtype)
    golden = pytorch_results(reference_model.float(), feeds)
    ort = onnxrt_results(onnx_path, feeds)
    passed = compare(ort, golden, tol)
    max_abs, max_rel, mean_abs = _error_stats(ort, golden)
    report = ParityReport(
        passed=passed, precision=precision, atol=tol.atol, rtol=tol.rtol, max_abs_error=max_abs,
        max_rel_error=max_rel, mean_abs_error=mean_abs, input_shapes=[list(input_shape)] * iterations,
        iterations=iterations,
    )
    if save_dir is not None:
        inputs_path, golden_path = save_polygraphy_data(feeds, golden, save_dir)
        ort_path = Path(save_dir) / "onnxrt.json"
        with quiet_polygraphy():
            ort.save(str(ort_path))
        report.inputs_json, report.golden_json, report.onnxrt_json = str(inputs_path), str(golden_path), str(ort_path)
    return report


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

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


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
    return LatencyReport("pytorch-eager", list(input_shape), warmup, runs, statistics.median(times), min(times), max(times),
                         torch.get_num_threads())


def latency_onnxrt(onnx_path: str | Path, input_shape: tuple, warmup: int = 2, runs: int = 10, dtype=np.float32) -> LatencyReport:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x = np.random.default_rng(0).standard_normal(input_shape).astype(dtype)
    times = _time(lambda: sess.run(None, {name: x}), warmup, runs)
    threads = opts.intra_op_num_threads or (torch.get_num_threads())
    return LatencyReport("onnxruntime-cpu", list(input_shape), warmup, runs, statistics.median(times), min(times), max(times), threads)


def latency_side_by_side(model: torch.nn.Module, onnx_path: str | Path, input_shape: tuple, warmup: int = 2,
                         runs: int = 10, onnx_dtype=np.float32) -> tuple[LatencyReport, LatencyReport]:
    """PyTorch eager (the float32 model) and ONNX Runtime CPU timed in alternation, run by run, so a
    busy machine slows both alike instead of whichever happened to run second."""
    import onnxruntime as ort

    model = model.eval()
    opts = ort.SessionOptions()
    # ORT's idle pool threads spin-wait after each run and would steal the cores from the PyTorch
    # run that follows (measured: 7 ms -> 800 ms for the digits model); no spinning, fair alternation
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    x_np = np.random.default_rng(0).standard_normal(input_shape).astype(np.float32)
    x_pt = torch.from_numpy(x_np)
    x_ort = x_np.astype(onnx_dtype)
    pt_times, ort_times = [], []
    with torch.no_grad():
        for i in range(warmup + runs):
            t0 = time.perf_counter()
            model(x_pt)
            t1 = time.perf_counter()
            sess.run(None, {name: x_ort})
            t2 = time.perf_counter()
            if i >= warmup:
                pt_times.append((t1 - t0) * 1e3)
                ort_times.append((t2 - t1) * 1e3)
    threads = torch.get_num_threads()

    def report(runtime, times):
        return LatencyReport(runtime, list(input_shape), warmup, runs, statistics.median(times), min(times), max(times), threads)

    return report("pytorch-eager", pt_times), report("onnxruntime-cpu", ort_times)
