"""The op contract is the one definition: the torch ops, the generated C++ header and the exported
node attributes must all agree with the YAML."""
import pytest
import torch

import plugins.ops  # noqa: F401  (registers torch.ops.vmamba.*)
from plugins import contract


def test_generated_cpp_header_is_up_to_date():
    assert contract.CPP_HEADER_PATH.read_text() == contract.emit_cpp_header(), (
        "trt_plugins_cpp/common/op_contract.h is stale: run `python -m plugins.contract`"
    )


@pytest.mark.parametrize("name", sorted(contract.OPS))
def test_torch_op_schema_matches_contract(name):
    op = contract.OPS[name]
    ns, opname = op.torch_op.split("::")
    schema = getattr(getattr(torch.ops, ns), opname).default._schema
    tensor_args = [a.name for a in schema.arguments if str(a.type) == "Tensor"]
    other_args = [a.name for a in schema.arguments if str(a.type) != "Tensor"]
    assert tensor_args == [t.name for t in op.inputs]
    assert other_args == list(op.attribute_names)
    assert len(schema.returns) == len(op.outputs)


def test_contract_lists_the_four_ops_in_one_domain():
    assert set(contract.OPS) == {"SS2DScan", "VMeanbaScan", "QuarterMapDown", "QuarterMapUp"}
    assert {op.domain for op in contract.OPS.values()} == {contract.DOMAIN}


def test_node_attributes_carry_parser_hints_and_defaults():
    attrs = contract.QUARTERMAP_DOWN.node_attributes()
    assert attrs == {"stride": 2, "keep": 1, "plugin_version": "1", "plugin_namespace": ""}


@pytest.mark.parametrize("bad", [{"variant": 3}, {"variant": -1}, {"variant": 1.5}, {"variant": True}, {"nope": 1}])
def test_node_attributes_reject_values_outside_the_contract(bad):
    with pytest.raises(ValueError):
        contract.VMEANBA_SCAN.node_attributes(**bad)


def test_parameter_inputs_are_float32_only():
    for name in ("SS2DScan", "VMeanbaScan"):
        fp32 = [t.name for t in contract.OPS[name].inputs if t.dtype == "float32"]
        assert fp32 == ["dt_projs_bias", "A_logs", "Ds"]
