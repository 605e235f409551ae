"""QuarterMap's block choice ``every:k`` against the authors' rule as METHODS.md section 2 states it:
"counts blocks globally from 1 in forward order and prunes every k-th block outside stage 0".

The rule is re-implemented here from the depths the models are built with (not from the model's
layer list), and checked for k = 1..4 on depths where stage 0 does hold multiples of k, through the
public API (parse_layer_spec, apply_quartermap + describe_compression) on VMamba and MedMamba.
"""
from __future__ import annotations

import pytest

from exporter.compress import apply_quartermap, describe_compression, parse_layer_spec
from exporter.models import MedMamba, VMamba


def authors_rule(depths: list[int], k: int) -> list[str]:
    """METHODS.md section 2, literally: number every block from 1 in forward order (stage by
    stage, block by block), keep the numbers divisible by k, drop the blocks of stage 0."""
    chosen, number = [], 0
    for stage, depth in enumerate(depths):
        for block in range(depth):
            number += 1
            if number % k == 0 and stage != 0:
                chosen.append(f"layers.{stage}.blocks.{block}")
    return chosen


def _vmamba(depths):
    return VMamba(depths=depths, dims=4, num_classes=2, ssm_d_state=1, ssm_ratio=1.0, forward_type="v05_noz",
                  mlp_ratio=0.0, downsample_version="v3", patchembed_version="v2", norm_layer="ln2d")


def _medmamba(depths):
    return MedMamba(depths=depths, dims=[8 * 2 ** i for i in range(len(depths))], num_classes=2, d_state=1)


# VMamba-T, the s2l15 models, the digits models, a long stage 0, two stages only
DEPTHS = [[2, 2, 8, 2], [2, 2, 15, 2], [1, 2, 4, 1], [4, 1, 3], [3, 3]]


@pytest.fixture(scope="module", params=[("vmamba", d) for d in DEPTHS] + [("medmamba", [2, 2, 4, 2])],
                ids=lambda p: f"{p[0]}-{'-'.join(map(str, p[1]))}")
def model_and_depths(request):
    family, depths = request.param
    return (_vmamba if family == "vmamba" else _medmamba)(depths), depths


@pytest.mark.parametrize("k", [1, 2, 3, 4])
def test_every_k_follows_the_authors_rule(model_and_depths, k):
    model, depths = model_and_depths
    expected = authors_rule(depths, k)
    assert parse_layer_spec(f"every:{k}", model, method="quartermap") == expected
    assert parse_layer_spec(f"every:{k}", model, method="vmeanba") == expected
    compressed = apply_quartermap(model, f"every:{k}")
    assert sorted(describe_compression(compressed)["quartermap"]) == sorted(expected)


def test_every_1_and_every_2_on_vmamba_t_literally():
    """Worked by hand from the rule for [2, 2, 8, 2] (14 blocks; stage 0 = blocks 1 and 2)."""
    model = _vmamba([2, 2, 8, 2])
    assert parse_layer_spec("every:1", model, method="quartermap") == (
        ["layers.1.blocks.0", "layers.1.blocks.1"] + [f"layers.2.blocks.{j}" for j in range(8)]
        + ["layers.3.blocks.0", "layers.3.blocks.1"])
    # numbers 2, 4, ..., 14: number 2 is layers.0.blocks.1 (stage 0, excluded)
    assert parse_layer_spec("every:2", model, method="quartermap") == [
        "layers.1.blocks.1", "layers.2.blocks.1", "layers.2.blocks.3", "layers.2.blocks.5", "layers.2.blocks.7",
        "layers.3.blocks.1"]


def test_every_k_mixed_with_other_items_keeps_forward_order():
    model = _vmamba([4, 1, 3])
    # every:2 -> numbers 2, 4 (stage 0: excluded), 6 (layers.2.blocks.0), 8 (layers.2.blocks.2)
    assert parse_layer_spec("layers.0.blocks.1,every:2", model, method="quartermap") == [
        "layers.0.blocks.1", "layers.2.blocks.0", "layers.2.blocks.2"]
