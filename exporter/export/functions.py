"""ONNX FunctionProtos (standard-op bodies) for the four custom ops of the contract.

Every exported custom node ``vmamba.trt::<Op>`` gets a local function of the same domain and
name, so a stock ONNX Runtime (no plugin library) runs the model: ORT builds a schema from the
function and inlines it (TENSORRT.md 2.6). TensorRT >= 10.15 still picks the plugin because the
nodes carry ``plugin_namespace`` (TENSORRT.md 2.1).

The bodies follow ``plugins/reference.py`` exactly:
- the selective scan is the exact two-level chunked scan of ``reference.scan_readout`` made of
  three ONNX ``Scan`` loops of about sqrt(L) steps each (chunk ends from zero, carries across
  chunks, re-run with readout). Only products and sums of the sequential recurrence, no
  cumsum/exp/log trick, so no underflow or NaN for long sequences;
- all arithmetic is float32 whatever T is (inputs cast up, output ``CastLike`` back to T);
- every size (batch, D, H, W, L, N, R, chunk length) is read from the inputs at run time, so the
  bodies work for any batch and resolution;
- QuarterMapDown gathers rows/columns ``(j // keep) * stride + j % keep``; QuarterMapUp gathers
  ``(i * Hs) // H`` with int64 arithmetic, both exact.
"""
from __future__ import annotations

import itertools

import onnx
from onnx import AttributeProto, FunctionProto, GraphProto, TensorProto, helper

from plugins.contract import DOMAIN, OPS, OpContract

DEFAULT_OPSET = 18
INT64_MIN = -(2**63)
FLOAT = TensorProto.FLOAT
INT64 = TensorProto.INT64


class _Builder:
    """Appends standard-op nodes with unique output names to one node list."""

    def __init__(self, prefix: str):
        self.nodes: list[onnx.NodeProto] = []
        self._prefix = prefix
        self._count = itertools.count()

    def name(self, hint: str) -> str:
        return f"{self._prefix}_{hint}_{next(self._count)}"

    def op(self, op_type: str, *inputs: str, hint: str | None = None, n_out: int = 1, **attrs):
        outs = [self.name(hint or op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, **attrs))
        return outs[0] if n_out == 1 else outs

    def const(self, values, dtype=INT64, hint: str = "c") -> str:
        """A 1-D constant (a list) or a scalar (a plain number)."""
        scalar = not isinstance(values, (list, tuple))
        vals = [values] if scalar else list(values)
        t = helper.make_tensor(self.name(hint) + "_v", dtype, [] if scalar else [len(vals)], vals)
        return self.op("Constant", hint=hint, value=t)

    def attr_int(self, attr_name: str) -> str:
        """A scalar int64 tensor holding the calling node's attribute ``attr_name``."""
        out = self.name(attr_name)
        node = helper.make_node("Constant", [], [out])
        node.attribute.append(helper.make_attribute_ref("value_int", AttributeProto.INT, ref_attr_name=attr_name))
        self.nodes.append(node)
        return out

    # small helpers used throughout
    def dim(self, shape: str, index: int) -> str:
        """shape[index] as a 1-D int64 tensor of one element."""
        return self.op("Gather", shape, self.const([index]), axis=0, hint="dim")

    def flip(self, x: str, axis: int) -> str:
        return self.op("Slice", x, self.const([-1]), self.const([INT64_MIN]), self.const([axis]), self.const([-1]), hint="flip")

    def index(self, x: str, i: int, axis: int) -> str:
        """x.select(axis, i) (drops the axis)."""
        return self.op("Gather", x, self.const(i), axis=axis, hint="sel")

    def unsq(self, x: str, axes: list[int]) -> str:
        return self.op("Unsqueeze", x, self.const(axes), hint="unsq")

    def mean(self, x: str, axes: list[int], keepdims: int = 0) -> str:
        return self.op("ReduceMean", x, self.const(axes), keepdims=keepdims, hint="mean")

    def reshape(self, x: str, shape: str, hint: str = "reshape") -> str:
        """Reshape to explicit sizes: ``allowzero=1`` so a 0 is a real (empty) size, never
        "copy this input dim" (TensorRT then need not guess, and warns about nothing)."""
        return self.op("Reshape", x, shape, allowzero=1, hint=hint)

    def swap01(self, x: str, rank: int) -> str:
        """Transpose the first two axes (Scan loops over axis 0 only, for every consumer)."""
        return self.op("Transpose", x, perm=[1, 0, *range(2, rank)], hint="swap01")


def _value(name: str, elem_type=FLOAT) -> onnx.ValueInfoProto:
    """A subgraph input/output with element type only (shapes are dynamic)."""
    return helper.make_tensor_value_info(name, elem_type, None)


# --------------------------------------------------------------------------- scan (chunked, exact)
def _scan_body(prefix: str, with_readout: bool) -> GraphProto:
    """Scan body: h <- a * h + b; with readout also emit y = sum_n c * h (last axis)."""
    h_in, a, b = f"{prefix}_h_in", f"{prefix}_a", f"{prefix}_b"
    g = _Builder(prefix)
    h_out = f"{prefix}_h_out"
    ah = g.op("Mul", a, h_in)
    g.nodes.append(helper.make_node("Add", [ah, b], [h_out]))
    inputs, outputs = [_value(h_in), _value(a), _value(b)], [_value(h_out)]
    if with_readout:
        c, y = f"{prefix}_c", f"{prefix}_y"
        inputs.append(_value(c))
        hc = g.op("Mul", h_out, c)
        g.nodes.append(helper.make_node("ReduceSum", [hc, g.const([-1])], [y], keepdims=0))
        outputs.append(_value(y))
    return helper.make_graph(g.nodes, prefix, inputs, outputs)


def _carry_body(prefix: str) -> GraphProto:
    """Scan over chunks: emit the incoming carry, then carry <- h_end + decay * carry."""
    carry, h_end, decay = f"{prefix}_carry", f"{prefix}_h_end", f"{prefix}_decay"
    g = _Builder(prefix)
    new_carry, emitted = f"{prefix}_carry_out", f"{prefix}_incoming"
    g.nodes.append(helper.make_node("Identity", [carry], [emitted]))
    dc = g.op("Mul", decay, carry)
    g.nodes.append(helper.make_node("Add", [h_end, dc], [new_carry]))
    return helper.make_graph(
        g.nodes, prefix, [_value(carry), _value(h_end), _value(decay)], [_value(new_carry), _value(emitted)]
    )


def scan_readout(g: _Builder, a: str, b: str, c: str, rank: int) -> str:
    """ONNX form of ``reference.scan_readout``: a, b (L, *S, N) of rank ``rank``, c
    broadcastable to them, time-major; returns y (L, *S) with h_t = a_t h_{t-1} + b_t,
    y_t = <c_t, h_t>. Every Scan loops over axis 0 (the chunks are transposed to (T, n, ...)),
    the only form some consumers (onnx.reference) implement.

    Chunk length T = floor(sqrt(L - 1)) + 1 (as the reference), n = ceil(L / T) chunks; the
    padded steps have a = 1, b = 0, c = 0 and are cut off at the end."""
    one, zero_f, one_f = g.const([1]), g.const(0.0, FLOAT), g.const(1.0, FLOAT)
    shape_a = g.op("Shape", a, hint="shape_a")
    L = g.dim(shape_a, 0)
    rest = g.op("Slice", shape_a, one, g.const([2**62]), g.const([0]), hint="rest")  # (*S, N)
    lm1 = g.op("Max", g.op("Sub", L, one), g.const([0]))
    T = g.op("Add", g.op("Cast", g.op("Floor", g.op("Sqrt", g.op("Cast", lm1, to=FLOAT))), to=INT64), one, hint="T")
    n_chunks = g.op("Div", g.op("Sub", g.op("Add", L, T), one), T, hint="n_chunks")
    pad = g.op("Sub", g.op("Mul", n_chunks, T), L, hint="pad")

    def padded(x: str, fill: str) -> str:
        # pad along time with `fill`; c may be broadcast in the middle axes, so use its own shape
        tail = g.op("Slice", g.op("Shape", x), one, g.const([2**62]), g.const([0]))
        filler = g.op("Expand", fill, g.op("Concat", pad, tail, axis=0))
        full = g.op("Concat", x, filler, axis=0)
        return g.reshape(full, g.op("Concat", n_chunks, T, tail, axis=0), hint="chunked")

    a_c, b_c, c_c = padded(a, one_f), padded(b, zero_f), padded(c, zero_f)  # (n, T, *S, N)
    a_t, b_t, c_t = (g.swap01(t, rank + 1) for t in (a_c, b_c, c_c))  # (T, n, *S, N)
    zeros_nS = g.op("Expand", zero_f, g.op("Concat", n_chunks, rest, axis=0), hint="zeros")
    # pass 1: each chunk's end state from a zero start
    h_end = g.op(
        "Scan", zeros_nS, a_t, b_t, hint="chunk_end", num_scan_inputs=2,
        body=_scan_body(g.name("pass1"), with_readout=False),
    )
    decay = g.op("ReduceProd", a_c, g.const([1]), keepdims=0, hint="decay")  # (n, *S, N)
    # pass 2: the true incoming state of every chunk
    zeros_S = g.op("Expand", zero_f, rest)
    _, incoming = g.op(
        "Scan", zeros_S, h_end, decay, n_out=2, hint="carry", num_scan_inputs=2,
        body=_carry_body(g.name("carry")),
    )
    # pass 3: re-run every chunk from its incoming state and read out y
    _, y = g.op(
        "Scan", incoming, a_t, b_t, c_t, n_out=2, hint="readout", num_scan_inputs=3,
        body=_scan_body(g.name("pass3"), with_readout=True),
    )  # (T, n, *S)
    y = g.swap01(y, rank)  # (n, T, *S)
    rest_y = g.op("Slice", rest, g.const([0]), g.const([-1]), g.const([0]))  # *S
    y = g.reshape(y, g.op("Concat", g.op("Mul", n_chunks, T), rest_y, axis=0))
    return g.op("Slice", y, g.const([0]), L, g.const([0]), hint="y")


# --------------------------------------------------------------------------- SS2D pieces
class _Core:
    """Shared first half of SS2DScan / VMeanbaScan: cross-scan, projections, delta, A."""

    def __init__(self, g: _Builder):
        self.g = g
        x = g.op("Cast", "x", to=FLOAT, hint="x32")
        xpw = g.op("Cast", "x_proj_weight", to=FLOAT, hint="xpw32")
        dtw = g.op("Cast", "dt_projs_weight", to=FLOAT, hint="dtw32")
        bias = g.op("Cast", "dt_projs_bias", to=FLOAT)
        a_logs = g.op("Cast", "A_logs", to=FLOAT)
        self.ds = g.op("Cast", "Ds", to=FLOAT)
        shape_x = g.op("Shape", x, hint="shape_x")
        self.B, self.D, self.H, self.W = (g.dim(shape_x, i) for i in range(4))
        self.R = g.dim(g.op("Shape", dtw), 2)
        self.N = g.dim(g.op("Shape", a_logs), 1)
        # cross-scan: (B, 4, D, L)
        flat = g.op("Concat", self.B, self.D, g.op("Mul", self.H, self.W), axis=0, hint="flat")  # (B, D, L)
        row = g.reshape(x, flat, hint="row")
        col = g.reshape(g.op("Transpose", x, perm=[0, 1, 3, 2]), flat, hint="col")
        parts = [g.unsq(t, [1]) for t in (row, col, g.flip(row, 2), g.flip(col, 2))]
        self.xs = g.op("Concat", *parts, axis=1, hint="xs")
        # projections per direction: MatMul broadcasts (4, C, D) @ (B, 4, D, L) -> (B, 4, C, L)
        x_dbl = g.op("MatMul", xpw, self.xs, hint="x_dbl")
        dt_low, self.Bs, self.Cs = g.op(
            "Split", x_dbl, g.op("Concat", self.R, self.N, self.N, axis=0), axis=2, n_out=3, hint="split"
        )  # (B, 4, R|N|N, L)
        dts = g.op("MatMul", dtw, dt_low, hint="dts")  # (B, 4, D, L)
        pre = g.op("Add", dts, g.unsq(bias, [0, 3]))
        # torch's softplus passes values above 20 through; ONNX Softplus is log(1 + exp(x))
        self.delta = g.op("Where", g.op("Greater", pre, g.const(20.0, FLOAT)), pre, g.op("Softplus", pre), hint="delta")
        four = g.const([4])
        self.A = g.op("Neg", g.op("Exp", g.reshape(a_logs, g.op("Concat", four, self.D, self.N, axis=0))), hint="A")

    def merge(self, ys: str) -> str:
        """Cross-merge (B, 4, D, L) -> (B, D, H, W), then cast back to x's type."""
        g = self.g
        y0, y1, y2, y3 = (g.index(ys, k, 1) for k in range(4))  # (B, D, L)
        row = g.op("Add", y0, g.flip(y2, 2))
        col = g.op("Add", y1, g.flip(y3, 2))
        row = g.reshape(row, g.op("Concat", self.B, self.D, self.H, self.W, axis=0))
        col = g.op("Transpose", g.reshape(col, g.op("Concat", self.B, self.D, self.W, self.H, axis=0)), perm=[0, 1, 3, 2])
        merged = g.op("Add", row, col)
        g.nodes.append(helper.make_node("CastLike", [merged, "x"], ["y"]))
        return "y"

    def skip(self) -> str:
        """Ds[r] * u_r as (B, 4, D, L)."""
        g = self.g
        ds = g.reshape(self.ds, g.op("Concat", g.const([1, 4]), self.D, g.const([1]), axis=0))
        return g.op("Mul", ds, self.xs, hint="skip")


def _ss2d_scan_nodes(g: _Builder) -> None:
    core = _Core(g)
    # time-major (L, B, 4, D, 1) and (L, B, 4, 1, N)
    delta_t = g.unsq(g.op("Transpose", core.delta, perm=[3, 0, 1, 2]), [4])
    du_t = g.unsq(g.op("Transpose", g.op("Mul", core.delta, core.xs), perm=[3, 0, 1, 2]), [4])
    B_t = g.unsq(g.op("Transpose", core.Bs, perm=[3, 0, 1, 2]), [3])
    C_t = g.unsq(g.op("Transpose", core.Cs, perm=[3, 0, 1, 2]), [3])
    a = g.op("Exp", g.op("Mul", delta_t, core.A), hint="abar")  # (L, B, 4, D, N)
    b = g.op("Mul", du_t, B_t, hint="bu")
    y = scan_readout(g, a, b, C_t, rank=5)  # (L, B, 4, D)
    ys = g.op("Add", g.op("Transpose", y, perm=[1, 2, 3, 0]), core.skip())
    core.merge(ys)


def _branch(prefix: str, build, outputs: tuple[str, ...]) -> GraphProto:
    """An If branch whose nodes come from ``build(g)`` returning tensors named by ``outputs``."""
    g = _Builder(prefix)
    produced = build(g)
    for src, dst in zip(produced, outputs):
        g.nodes.append(helper.make_node("Identity", [src], [dst]))
    return helper.make_graph(g.nodes, prefix, [], [_value(o) for o in outputs])


def _vmeanba_scan_nodes(g: _Builder) -> None:
    core = _Core(g)
    delta, xs, A, Bs, Cs = core.delta, core.xs, core.A, core.Bs, core.Cs

    def discretised_full(g: _Builder):
        # exp(delta * A) at full width: (B, 4, D, N, L); mean over channels of delta * u: (B, 4, L)
        abar = g.op("Exp", g.op("Mul", g.unsq(delta, [3]), g.unsq(A, [0, 4])), hint="abar")
        du = g.mean(g.op("Mul", delta, xs), [2])
        return abar, du

    def all_rows(g: _Builder):
        abar, du = discretised_full(g)
        a_m = g.mean(abar, [1, 2], keepdims=0)  # (B, N, L)
        a_m = g.unsq(a_m, [1])  # (B, 1, N, L)
        bu_m = g.mean(g.op("Mul", Bs, g.unsq(du, [2])), [1], keepdims=1)
        c_m = g.mean(Cs, [1], keepdims=1)
        return a_m, bu_m, c_m

    def per_direction(g: _Builder):
        abar, du = discretised_full(g)
        a_m = g.mean(abar, [2], keepdims=0)  # (B, 4, N, L)
        bu_m = g.op("Mul", Bs, g.unsq(du, [2]))
        c_m = g.op("Identity", Cs)
        return a_m, bu_m, c_m

    def pre_discretisation(g: _Builder):
        delta_m = g.mean(delta, [1, 2])  # (B, L)
        u_m = g.mean(xs, [1, 2])
        A_m = g.mean(A, [0, 1])  # (N,)
        a_m = g.op("Exp", g.op("Mul", g.unsq(delta_m, [1]), g.unsq(A_m, [1])))  # (B, N, L)
        a_m = g.unsq(a_m, [1])
        bu_m = g.op("Mul", g.unsq(g.op("Mul", delta_m, u_m), [1, 2]), g.mean(Bs, [1], keepdims=1))
        c_m = g.mean(Cs, [1], keepdims=1)
        return a_m, bu_m, c_m

    variant = g.attr_int("variant")
    names = ("vm_a", "vm_bu", "vm_c")
    outs = lambda tag: tuple(f"{tag}_{n}" for n in names)  # noqa: E731  (unique per branch)
    inner = g.op(
        "If", g.op("Equal", variant, g.const(1)), n_out=3, hint="variant_1",
        then_branch=_branch("vm_per_direction", per_direction, outs("pd")),
        else_branch=_branch("vm_all_rows", all_rows, outs("ar")),
    )
    a_m, bu_m, c_m = g.op(
        "If", g.op("Equal", variant, g.const(2)), n_out=3, hint="variant_2",
        then_branch=_branch("vm_pre_disc", pre_discretisation, outs("pre")),
        else_branch=helper.make_graph(
            [helper.make_node("Identity", [src], [dst]) for src, dst in zip(inner, outs("sel"))],
            "vm_select", [], [_value(o) for o in outs("sel")],
        ),
    )  # (B, G, N, L), G = 1 or 4
    to_time_major = [3, 0, 1, 2]
    y_m = scan_readout(
        g, g.op("Transpose", a_m, perm=to_time_major), g.op("Transpose", bu_m, perm=to_time_major),
        g.op("Transpose", c_m, perm=to_time_major), rank=4,
    )  # (L, B, G)
    y_m = g.unsq(g.op("Transpose", y_m, perm=[1, 2, 0]), [2])  # (B, G, 1, L)
    core.merge(g.op("Add", y_m, core.skip()))


def _quartermap_down_nodes(g: _Builder) -> None:
    stride, keep = g.attr_int("stride"), g.attr_int("keep")
    shape = g.op("Shape", "x")

    def kept_indices(size: str) -> str:
        # kept(S) = (S // stride) * keep + min(S % stride, keep); index j -> (j // keep) * stride + j % keep
        n = g.op("Add", g.op("Mul", g.op("Div", size, stride), keep), g.op("Min", g.op("Mod", size, stride), keep))
        j = g.op("Range", g.const(0), n, g.const(1))
        return g.op("Add", g.op("Mul", g.op("Div", j, keep), stride), g.op("Mod", j, keep), hint="kept")

    H = g.op("Squeeze", g.dim(shape, 2), g.const([0]))
    W = g.op("Squeeze", g.dim(shape, 3), g.const([0]))
    rows = g.op("Gather", "x", kept_indices(H), axis=2)
    g.nodes.append(helper.make_node("Gather", [rows, kept_indices(W)], ["y"], axis=3))


def _quartermap_up_nodes(g: _Builder) -> None:
    sy, sl = g.op("Shape", "y"), g.op("Shape", "like")
    scalar = lambda s, i: g.op("Squeeze", g.dim(s, i), g.const([0]))  # noqa: E731

    def source_indices(out_size: str, in_size: str) -> str:
        i = g.op("Range", g.const(0), out_size, g.const(1))
        return g.op("Div", g.op("Mul", i, in_size), out_size, hint="src")  # int64: floor for i >= 0

    rows = g.op("Gather", "y", source_indices(scalar(sl, 2), scalar(sy, 2)), axis=2)
    g.nodes.append(helper.make_node("Gather", [rows, source_indices(scalar(sl, 3), scalar(sy, 3))], ["out"], axis=3))


_BODIES = {
    "SS2DScan": _ss2d_scan_nodes,
    "VMeanbaScan": _vmeanba_scan_nodes,
    "QuarterMapDown": _quartermap_down_nodes,
    "QuarterMapUp": _quartermap_up_nodes,
}


def function_proto(op: OpContract, opset: int = DEFAULT_OPSET) -> FunctionProto:
    """The FunctionProto of one contract op: inputs/outputs/attributes named as in the contract."""
    g = _Builder(op.name)
    _BODIES[op.name](g)
    defaults = [helper.make_attribute(a.name, a.default) for a in op.attributes]
    return helper.make_function(
        DOMAIN, op.name,
        inputs=[t.name for t in op.inputs], outputs=[t.name for t in op.outputs], nodes=g.nodes,
        opset_imports=[helper.make_opsetid("", opset)], attribute_protos=defaults,
        doc_string=f"Standard-op body of {DOMAIN}::{op.name} v{op.version} (reference: plugins/reference.py).",
    )


def all_function_protos(opset: int = DEFAULT_OPSET) -> dict[str, FunctionProto]:
    return {name: function_proto(op, opset) for name, op in OPS.items()}


def model_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    raise ValueError("model has no default-domain opset import")


def used_custom_ops(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node if n.domain == DOMAIN}


def attach_functions(model: onnx.ModelProto, ops: set[str] | None = None) -> onnx.ModelProto:
    """Add the FunctionProto of every custom op the graph uses (or ``ops``) and list the custom
    domain in opset_import. Existing functions of the same name are replaced. In place; returned."""
    needed = used_custom_ops(model) if ops is None else set(ops)
    opset = model_opset(model)
    keep = [f for f in model.functions if not (f.domain == DOMAIN and f.name in needed)]
    del model.functions[:]
    model.functions.extend(keep)
    model.functions.extend(function_proto(OPS[name], opset) for name in sorted(needed))
    if needed and not any(i.domain == DOMAIN for i in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DOMAIN, 1))
    return model


def strip_functions(model: onnx.ModelProto) -> onnx.ModelProto:
    """Remove the custom ops' bodies (the TensorRT file: a missing plugin then fails loudly)."""
    keep = [f for f in model.functions if f.domain != DOMAIN]
    del model.functions[:]
    model.functions.extend(keep)
    return model


def standalone_model(op_name: str, input_types: dict[str, int] | None = None, opset: int = DEFAULT_OPSET,
                     **attrs) -> onnx.ModelProto:
    """A one-node model calling ``vmamba.trt::op_name`` with its function attached (for tests)."""
    op = OPS[op_name]
    types = {t.name: FLOAT for t in op.inputs}
    types.update(input_types or {})
    node = helper.make_node(
        op.name, [t.name for t in op.inputs], [t.name for t in op.outputs], domain=DOMAIN,
        **op.node_attributes(**attrs),
    )
    out_type = types[op.inputs[0].name]
    graph = helper.make_graph(
        [node], f"{op.name}_standalone",
        # ranks from the contract, every dimension left unknown
        [helper.make_tensor_value_info(t.name, types[t.name], [None] * len(t.shape)) for t in op.inputs],
        [helper.make_tensor_value_info(t.name, out_type, [None] * len(t.shape)) for t in op.outputs],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid(DOMAIN, 1)])
    return attach_functions(model, {op.name})
