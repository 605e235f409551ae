"""The ONNX function bodies of the four custom ops, run by a plain ONNX Runtime session (no
custom-op library), against plugins/reference.py and against a loop-level scan written here.

Tolerances (float32): the bodies compute the same float32 arithmetic as the reference in a
different order (MatMul vs einsum, chunk boundaries), so 1e-5 relative to the output scale
bounds rounding over a few thousand steps. QuarterMap bodies are pure gathers: exact.
float16 I/O: the arithmetic is float32 inside, only the final cast to float16 rounds, so the
outputs agree with the reference run on the same float16 inputs to one float16 ulp (2^-10 rel).
"""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from exporter.export import functions as F
from plugins import reference as ref
from plugins.contract import DOMAIN, OPS, VMEANBA_VARIANTS

torch.manual_seed(0)


def _session(model: onnx.ModelProto) -> ort.InferenceSession:
    onnx.checker.check_model(model, full_check=True)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _run(model, **feeds):
    sess = _session(model)
    return sess.run(None, {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in feeds.items()})[0]


def _params(D, N, R, dt_shift=-1.0):
    return dict(
        x_proj_weight=torch.randn(4, R + 2 * N, D) * 0.3,
        dt_projs_weight=torch.randn(4, D, R) * 0.5,
        dt_projs_bias=torch.randn(4, D) * 0.5 + dt_shift,
        A_logs=torch.log(torch.rand(4 * D, N) * 4 + 0.5),
        Ds=torch.randn(4 * D),
    )


def _close(actual, expected, rel=1e-5):
    expected = expected.numpy() if isinstance(expected, torch.Tensor) else expected
    assert actual.shape == expected.shape
    assert np.isfinite(actual).all()
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rel * scale)


# (B, D, H, W, N, R): odd, non-square, single pixel, one row, a chunk-padding length (L = 47)
SS2D_SHAPES = [(2, 5, 7, 9, 3, 2), (1, 8, 1, 1, 4, 1), (2, 6, 13, 11, 1, 3), (1, 4, 1, 47, 2, 2), (1, 3, 6, 5, 16, 1)]


@pytest.mark.parametrize("shape", SS2D_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_ss2d_scan_body_matches_reference(shape):
    B, D, H, W, N, R = shape
    x, p = torch.randn(B, D, H, W), _params(D, N, R)
    out = _run(F.standalone_model("SS2DScan"), x=x, **p)
    _close(out, ref.ss2d_scan(x, **p))


@pytest.mark.parametrize("variant", list(VMEANBA_VARIANTS))
@pytest.mark.parametrize("shape", SS2D_SHAPES[:3] + [SS2D_SHAPES[4]], ids=lambda s: "x".join(map(str, s)))
def test_vmeanba_scan_body_matches_reference(shape, variant):
    B, D, H, W, N, R = shape
    x, p = torch.randn(B, D, H, W), _params(D, N, R)
    vid = VMEANBA_VARIANTS[variant]
    out = _run(F.standalone_model("VMeanbaScan", variant=vid), x=x, **p)
    expected = ref.vmeanba_scan(x, **p, variant=vid)
    _close(out, expected)
    if H * W > 1:  # the variants really differ, so the variant attribute must have selected this one
        others = [ref.vmeanba_scan(x, **p, variant=v) for v in VMEANBA_VARIANTS.values() if v != vid]
        assert all(np.abs(out - o.numpy()).max() > 1e-4 for o in others)


def test_ss2d_scan_body_long_sequence_strong_decay_is_finite_and_exact():
    """56x56 (L = 3136, VMamba's stage 0 at 224) with large delta*A: exp(delta*A) underflows to 0
    over a few steps. A cumulative-sum/exp formulation divides by those products and gives NaN;
    the Scan-based body must stay finite and equal to the reference."""
    B, D, H, W, N, R = 1, 6, 56, 56, 4, 2
    x = torch.randn(B, D, H, W) * 3
    p = _params(D, N, R, dt_shift=3.0)
    p["A_logs"] = torch.log(torch.rand(4 * D, N) * 30 + 10)
    out = _run(F.standalone_model("SS2DScan"), x=x, **p)
    _close(out, ref.ss2d_scan(x, **p))


def _loop_scan(a, b, c):
    """h_t = a_t h_{t-1} + b_t, y_t = sum_n c_t h_t, float64, one step at a time."""
    h = np.zeros(a.shape[1:], dtype=np.float64)
    ys = []
    for t in range(a.shape[0]):
        h = a[t] * h + b[t]
        ys.append((h * c[t]).sum(-1))
    return np.stack(ys)


@pytest.mark.parametrize("L", [1, 2, 5, 16, 17, 50])
def test_chunked_scan_matches_sequential_loop(L):
    """functions.scan_readout alone (three Scan loops over ~sqrt(L) chunks) vs the plain loop."""
    g = F._Builder("t")
    y = F.scan_readout(g, "a", "b", "c", rank=3)
    g.nodes.append(helper.make_node("Identity", [y], ["y"]))
    graph = helper.make_graph(
        g.nodes, "scan", [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, None, None]) for n in "abc"],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, None])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", F.DEFAULT_OPSET)])
    rng = np.random.default_rng(L)
    a = rng.uniform(0.2, 1.0, (L, 3, 4)).astype(np.float32)
    b = rng.standard_normal((L, 3, 4)).astype(np.float32)
    c = rng.standard_normal((L, 3, 4)).astype(np.float32)
    out = _run(model, a=a, b=b, c=c)
    np.testing.assert_allclose(out, _loop_scan(a.astype(np.float64), b.astype(np.float64), c.astype(np.float64)),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("hw,stride,keep", [((7, 9), 2, 1), ((8, 8), 2, 1), ((13, 10), 3, 2), ((5, 5), 4, 4),
                                            ((1, 1), 2, 1), ((11, 4), 5, 3)])
def test_quartermap_bodies_exact(hw, stride, keep):
    H, W = hw
    x = torch.randn(2, 3, H, W)
    down = _run(F.standalone_model("QuarterMapDown", stride=stride, keep=keep), x=x)
    expected = ref.quartermap_down(x, stride, keep)
    assert down.shape == tuple(expected.shape) == (2, 3, ref.kept_size(H, stride, keep), ref.kept_size(W, stride, keep))
    np.testing.assert_array_equal(down, expected.numpy())
    like = torch.randn(2, 1, H, W)
    up = _run(F.standalone_model("QuarterMapUp"), y=expected, like=like)
    np.testing.assert_array_equal(up, ref.quartermap_up(expected, like).numpy())


@pytest.mark.parametrize("src,dst", [((4, 4), (7, 7)), ((3, 5), (13, 6)), ((5, 2), (5, 2)), ((1, 3), (4, 8))])
def test_quartermap_up_arbitrary_sizes_against_index_formula(src, dst):
    """out[i, j] = y[(i * Hs) // H, (j * Ws) // W], checked pixel by pixel."""
    y = np.random.default_rng(0).standard_normal((1, 2) + src).astype(np.float32)
    like = np.zeros((1, 1) + dst, dtype=np.float32)
    out = _run(F.standalone_model("QuarterMapUp"), y=y, like=like)
    (Hs, Ws), (H, W) = src, dst
    for i in range(H):
        for j in range(W):
            np.testing.assert_array_equal(out[:, :, i, j], y[:, :, (i * Hs) // H, (j * Ws) // W])


@pytest.mark.parametrize("op_name", ["SS2DScan", "VMeanbaScan"])
def test_float16_io_keeps_float32_arithmetic(op_name):
    B, D, H, W, N, R = 1, 6, 9, 7, 4, 2
    x, p = torch.randn(B, D, H, W), _params(D, N, R)
    half = {"x", "x_proj_weight", "dt_projs_weight"}  # T; the contract keeps the other three float32
    types = {k: TensorProto.FLOAT16 for k in half}
    feeds = {k: (v.half() if k in half else v) for k, v in dict(x=x, **p).items()}
    out = _run(F.standalone_model(op_name, input_types=types), **feeds)
    assert out.dtype == np.float16
    args = [feeds[t.name] for t in OPS[op_name].inputs]
    expected = (ref.ss2d_scan(*args) if op_name == "SS2DScan" else ref.vmeanba_scan(*args, 0)).float()
    # one float16 rounding of the output (ulp 2^-10 relative), nothing else
    np.testing.assert_allclose(out.astype(np.float32), expected.numpy(), rtol=2 ** -10, atol=1e-3)


def test_function_protos_follow_the_contract():
    for name, op in OPS.items():
        fn = F.function_proto(op)
        assert (fn.domain, fn.name) == (DOMAIN, name)
        assert list(fn.input) == [t.name for t in op.inputs]
        assert list(fn.output) == [t.name for t in op.outputs]
        assert sorted(a.name for a in fn.attribute_proto) == sorted(op.attribute_names)
    scan_bodies = [F.function_proto(OPS[n]) for n in ("SS2DScan", "VMeanbaScan")]
    for fn in scan_bodies:  # the recurrence is an ONNX loop, not unrolled over L
        assert sum(n.op_type == "Scan" for n in fn.node) == 3
        assert len(fn.node) < 200


def test_missing_function_body_is_rejected_by_stock_ort():
    """Why the bodies matter: without them ORT refuses the custom node (TENSORRT.md 2.6)."""
    model = F.standalone_model("QuarterMapUp")
    F.strip_functions(model)
    with pytest.raises(Exception, match="QuarterMapUp"):
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_omitted_attributes_take_the_contract_defaults():
    """A node without stride/keep (or variant) uses the FunctionProto defaults = contract defaults."""
    model = F.standalone_model("QuarterMapDown", stride=3, keep=2)
    node = model.graph.node[0]
    kept = [a for a in node.attribute if a.name not in OPS["QuarterMapDown"].attribute_names]
    del node.attribute[:]
    node.attribute.extend(kept)
    x = torch.randn(1, 2, 7, 9)
    defaults = {a.name: a.default for a in OPS["QuarterMapDown"].attributes}
    np.testing.assert_array_equal(_run(model, x=x), ref.quartermap_down(x, defaults["stride"], defaults["keep"]).numpy())
