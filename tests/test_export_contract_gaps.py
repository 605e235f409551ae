"""Parity verdicts at the documented tolerances, and the float32 scan inputs of float16 exports.

Independent references only:
- the tolerances are read from the table in docs/EXPORT.md ("### Tolerances"), never from the
  module that applies them; a small real slip (every Ds moved by 1e-3 for float32, by 1e-2 for
  float16) must fail parity at those values, and would pass at ten times them;
- the float32-always inputs come from the op contract (plugins/contract/*.yaml: inputs whose dtype
  is float32, not T); in the exported file every such input of every custom node must be a named
  float32 initializer, bit for bit the model's parameter (no fp16 round trip, no folded constant).
Model: the bundled digits VMamba (exporter/assets) with literal VMeanba on one block and QuarterMap
on stage 2, so SS2DScan, VMeanbaScan and the QuarterMap nodes all appear.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from exporter.compress import apply_quartermap, apply_vmeanba
from exporter.export import export_onnx
from exporter.samples_data import load_digits_model
from exporter.verify import parity
from plugins.contract import DOMAIN, OPS

REPO = Path(__file__).resolve().parents[1]
RESOLUTION = (32, 32)
SHAPE = (2, 3, 32, 32)


def documented_tolerances() -> dict[str, tuple[float, float]]:
    """precision -> (atol, rtol) from the table under '### Tolerances' in docs/EXPORT.md."""
    text = (REPO / "docs" / "EXPORT.md").read_text()
    section = text.split("### Tolerances", 1)
    assert len(section) == 2, "docs/EXPORT.md has no '### Tolerances' section: where did the documented values go?"
    rows = re.findall(r"^\|\s*(fp32|fp16)\s*\|\s*([0-9.eE+-]+)\s*\|\s*([0-9.eE+-]+)\s*\|", section[1], re.M)
    table = {p: (float(a), float(r)) for p, a, r in rows}
    assert set(table) == {"fp32", "fp16"}, f"tolerance table rows not found in docs/EXPORT.md: {rows}"
    return table


DOC = documented_tolerances()


@pytest.fixture(autouse=True, scope="module")
def fast_cpu():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)  # the digits scans underflow into denormals (10x slower otherwise)
    yield
    torch.set_flush_denormal(False)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    base = load_digits_model("vmamba")
    names = list(base.ssm_layers())
    return apply_quartermap(apply_vmeanba(base, [names[4]], folded=False), "stage:2")


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    """The float32 file through the CLI (with --verify: its parity report is checked too), the
    float16 file through the API; both from the same compression of the digits VMamba."""
    from exporter import cli

    out = tmp_path_factory.mktemp("gaps")
    report = out / "fp32.json"
    code = cli.main(["--vmeanba-layers", "4", "--vmeanba-form", "literal", "--quartermap", "stage:2",
                     "--resolution", "32x32", "--verify", "--latency-runs", "0", "--iterations", "1",
                     "--report", str(report), "-o", str(out / "digits_fp32.onnx"), "--quiet"])
    assert code == 0, f"vm-export exited with {code}"
    fp16 = export_onnx(model, out / "digits_fp16.onnx", precision="fp16", resolution=RESOLUTION).onnx_path
    return {"fp32": out / "digits_fp32.onnx", "fp16": fp16, "cli_report": json.loads(report.read_text())}


def _slipped(model, delta: float):
    """The same model with every Ds moved by ``delta``: a small real slip of the skip term."""
    slip = copy.deepcopy(model)
    with torch.no_grad():
        for ss2d in slip.ssm_layers().values():
            ss2d.Ds.add_(delta)
    return slip


def test_documented_tolerances_are_the_ones_in_the_table():
    assert DOC == {"fp32": (1e-4, 1e-4), "fp16": (3e-2, 3e-2)}


# (precision, Ds slip, a looser tolerance factor at which that slip passes: measured errors on
# logits 7.9e-4 for a 1e-4 slip, 7.9e-3 for 1e-3, in float32)
SLIPS = [("fp32", 1e-4, 10), ("fp32", 1e-3, 100), ("fp16", 1e-2, 10)]


@pytest.mark.parametrize("precision,slip,factor", SLIPS)
def test_parity_verdict_uses_the_documented_tolerance(model, exported, precision, slip, factor):
    atol, rtol = DOC[precision]
    onnx_path = exported[precision]
    good = parity.check_parity(model, onnx_path, precision=precision, input_shape=SHAPE)
    assert good.passed, f"the export itself fails parity ({good.max_abs_error:.3g})"
    assert (good.atol, good.rtol) == (atol, rtol), "check_parity's default tolerance is not the documented one"
    bad = parity.check_parity(_slipped(model, slip), onnx_path, precision=precision, input_shape=SHAPE)
    assert not bad.passed, f"Ds moved by {slip} passed parity (max abs error {bad.max_abs_error:.3g})"
    # the slip is small: a tolerance loosened by `factor` would let it through
    loose = parity.check_parity(_slipped(model, slip), onnx_path, precision=precision, input_shape=SHAPE,
                                tolerance=parity.Tolerance(atol=factor * atol, rtol=factor * rtol))
    assert loose.passed and bad.max_abs_error < factor * atol


def test_cli_verify_reports_the_documented_tolerance(exported):
    result = exported["cli_report"]["parity"]
    assert result["passed"] and (result["atol"], result["rtol"]) == DOC["fp32"]


def _parameter_names(model) -> dict[int, str]:
    return {id(p): name for name, p in model.named_parameters()}


@pytest.mark.parametrize("precision", ["fp16", "fp32"])
def test_float32_contract_inputs_are_the_models_parameters_bit_for_bit(model, exported, precision):
    proto = onnx.load(str(exported[precision]))
    inits = {i.name: i for i in proto.graph.initializer}
    params = dict(model.named_parameters())
    seen: set[str] = set()
    custom = [n for n in proto.graph.node if n.domain == DOMAIN]
    assert {n.op_type for n in custom} >= {"SS2DScan", "VMeanbaScan"}
    for node in custom:
        contract = OPS[node.op_type]
        for position, spec in enumerate(contract.inputs):
            name = node.input[position]
            if spec.dtype != "float32":
                if spec.dtype == "T" and name in inits:  # weights of type T follow the export precision
                    want = onnx.TensorProto.FLOAT16 if precision == "fp16" else onnx.TensorProto.FLOAT
                    assert inits[name].data_type == want, f"{node.name}: {spec.name} is not {precision}"
                continue
            assert name in inits, (f"{node.name}: float32 input {spec.name} is {name!r}, not a named initializer "
                                   "(a computed value or a folded constant)")
            assert name in params and name.rsplit(".", 1)[-1] == spec.name, \
                f"{node.name}: float32 input {spec.name} is the initializer {name!r}, not that model parameter"
            init = inits[name]
            assert init.data_type == onnx.TensorProto.FLOAT, f"{name} is not float32 in the {precision} file"
            got = numpy_helper.to_array(init)
            want = params[name].detach().numpy()
            assert got.shape == want.shape and np.array_equal(got.view(np.uint32), want.view(np.uint32)), \
                f"{name} differs from the model's parameter (rounded through float16?)"
            seen.add(name)
    # every block that runs a scan node hands over all of its float32 parameters
    ids = _parameter_names(model)
    scanning = [s for s in model.ssm_layers().values() if s.vmeanba is None or not s.vmeanba.folded]
    float32_inputs = [t.name for t in OPS["SS2DScan"].inputs if t.dtype == "float32"]
    assert set(float32_inputs) == {"dt_projs_bias", "A_logs", "Ds"}  # as docs/OPS.md and the contract say
    assert seen == {ids[id(getattr(s, t))] for s in scanning for t in float32_inputs}
