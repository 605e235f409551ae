"""VMeanba and QuarterMap model transforms against loop-level implementations of METHODS.md.

The references below are written here from METHODS.md alone: explicit pixel orders for the four
scan directions, a sequential recurrence over the sequence index l for every row (rows and batch
are vectorised, l is not), per-pixel merges, and explicit kept-row lists for QuarterMap. Nothing
from plugins.reference is reused. They run in float64; the modules run in float32.

Tolerances: float32 vs float64 over sequences of at most a few hundred steps and sums over at
most a few hundred terms: relative error (Frobenius) below 2e-5 (measured around 1e-7..1e-6).
Folded vs literal VMeanba differ only by float32 rounding of the channel-constant term that
LayerNorm cancels: 1e-4 relative on the logits.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from exporter.compress import apply_quartermap, apply_vmeanba, describe_compression, parse_layer_spec
from exporter.compress.layer_specs import AutoLayers
from exporter.models import MedMamba, VMamba
from exporter.models.vmamba import checkpoint_filter_fn

REL_TOL = 2e-5
LOGIT_REL_TOL = 1e-4
VARIANTS = ("all-rows", "per-direction", "pre-discretisation")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- loop-level METHODS.md
def scan_orders(H: int, W: int):
    """Pixel (i, j) visited at step l for k = 0 row-major, 1 column-major, 2 and 3 reversed."""
    row = [(l // W, l % W) for l in range(H * W)]
    col = [(l % H, l // H) for l in range(H * W)]
    return [row, col, row[::-1], col[::-1]]


def loop_discretise(x, ss2d):
    """Per direction k: u (B, D, L), delta (B, D, L), Bm and Cm (B, N, L), A (D, N); float64."""
    x = x.double()
    Bsz, D, H, W = x.shape
    R, N = ss2d.dt_rank, ss2d.d_state
    wx = ss2d.x_proj_weight.detach().double()
    wdt = ss2d.dt_projs_weight.detach().double()
    bias = ss2d.dt_projs_bias.detach().double()
    A = -torch.exp(ss2d.A_logs.detach().double()).view(4, D, N)
    per_dir = []
    for k, order in enumerate(scan_orders(H, W)):
        L = len(order)
        u = torch.zeros(Bsz, D, L, dtype=torch.float64)
        delta = torch.zeros_like(u)
        Bm = torch.zeros(Bsz, N, L, dtype=torch.float64)
        Cm = torch.zeros_like(Bm)
        for l, (i, j) in enumerate(order):
            u[:, :, l] = x[:, :, i, j]
            proj = u[:, :, l] @ wx[k].T  # (B, R + 2N)
            dt = proj[:, :R] @ wdt[k].T + bias[k]
            delta[:, :, l] = torch.where(dt > 20, dt, torch.log1p(torch.exp(dt)))
            Bm[:, :, l] = proj[:, R:R + N]
            Cm[:, :, l] = proj[:, R + N:]
        per_dir.append((u, delta, Bm, Cm, A[k]))
    return per_dir


def loop_merge(ys, H, W):
    """ys[k]: (B, D, L) in direction k's order -> (B, D, H, W), summing the directions per pixel."""
    Bsz, D, _ = ys[0].shape
    out = torch.zeros(Bsz, D, H, W, dtype=torch.float64)
    for k, order in enumerate(scan_orders(H, W)):
        for l, (i, j) in enumerate(order):
            out[:, :, i, j] += ys[k][:, :, l]
    return out


def loop_ss2d_core(x, ss2d):
    """METHODS.md section 0: the plain SS2D core."""
    H, W = x.shape[-2:]
    Ds = ss2d.Ds.detach().double().view(4, -1)
    ys = []
    for k, (u, delta, Bm, Cm, A) in enumerate(loop_discretise(x, ss2d)):
        h = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=torch.float64)
        y = torch.zeros_like(u)
        for l in range(u.shape[-1]):
            d = delta[:, :, l, None]
            h = torch.exp(d * A) * h + d * Bm[:, None, :, l] * u[:, :, l, None]
            y[:, :, l] = (h * Cm[:, None, :, l]).sum(-1) + Ds[k] * u[:, :, l]
        ys.append(y)
    return loop_merge(ys, H, W)


def loop_vmeanba_core(x, ss2d, variant):
    """METHODS.md section 1: reduced scan (one sequence per image, or one per direction), broadcast to
    every row, per-channel skip term with the full-width input, cross-merge."""
    H, W = x.shape[-2:]
    D = x.shape[1]
    Ds = ss2d.Ds.detach().double().view(4, D)
    dirs = loop_discretise(x, ss2d)
    Bsz, L, N = x.shape[0], H * W, ss2d.d_state
    groups = [[0, 1, 2, 3]] if variant in ("all-rows", "pre-discretisation") else [[0], [1], [2], [3]]
    ys = [None] * 4
    for ks in groups:
        h = torch.zeros(Bsz, N, dtype=torch.float64)
        y_m = torch.zeros(Bsz, L, dtype=torch.float64)
        for l in range(L):
            c = sum(dirs[k][3][:, :, l] for k in ks) / len(ks)
            if variant == "pre-discretisation":
                delta_m = sum(dirs[k][1][:, :, l].sum(1) for k in ks) / (len(ks) * D)  # (B,)
                u_m = sum(dirs[k][0][:, :, l].sum(1) for k in ks) / (len(ks) * D)
                A_m = sum(dirs[k][4].sum(0) for k in ks) / (len(ks) * D)  # (N,)
                a = torch.exp(delta_m[:, None] * A_m)
                bu = (delta_m * u_m)[:, None] * (sum(dirs[k][2][:, :, l] for k in ks) / len(ks))
            else:
                a = torch.zeros(Bsz, N, dtype=torch.float64)
                bu = torch.zeros(Bsz, N, dtype=torch.float64)
                for k in ks:
                    u, delta, Bm, _, A = dirs[k]
                    for d in range(D):  # every row r = (k, d) of the group, one at a time
                        a += torch.exp(delta[:, d, l, None] * A[d])
                        bu += delta[:, d, l, None] * Bm[:, :, l] * u[:, d, l, None]
                a, bu = a / (len(ks) * D), bu / (len(ks) * D)
            h = a * h + bu
            y_m[:, l] = (c * h).sum(-1)
        for k in ks:
            ys[k] = y_m[:, None, :] + Ds[k][None, :, None] * dirs[k][0]
    return loop_merge(ys, H, W)


def loop_kept(size, stride, keep):
    return [i for i in range(size) if i % stride < keep]


def loop_core(x, ss2d, vmeanba=None, quartermap=None):
    """Section 3: QuarterMap (keep rows/cols i % m < n, nearest restore) around either core."""
    Bsz, D, H, W = x.shape
    if quartermap is not None:
        rows, cols = loop_kept(H, *quartermap), loop_kept(W, *quartermap)
        small = torch.zeros(Bsz, D, len(rows), len(cols), dtype=x.dtype)
        for a, i in enumerate(rows):
            for b, j in enumerate(cols):
                small[:, :, a, b] = x[:, :, i, j]
        y_small = loop_core(small, ss2d, vmeanba, None)
        Hs, Ws = len(rows), len(cols)
        out = torch.zeros(Bsz, D, H, W, dtype=torch.float64)
        for i in range(H):
            for j in range(W):
                out[:, :, i, j] = y_small[:, :, math.floor(i * Hs / H), math.floor(j * Ws / W)]
        return out
    return loop_ss2d_core(x, ss2d) if vmeanba is None else loop_vmeanba_core(x, ss2d, vmeanba)


def channel_layernorm(y, ss2d):
    """out_norm as METHODS.md defines it: LayerNorm over D at every pixel ((B, D, H, W) in and out)."""
    ln = ss2d.out_norm
    return F.layer_norm(y.permute(0, 2, 3, 1).double(), (y.shape[1],), ln.weight.detach().double(),
                        ln.bias.detach().double(), ln.eps).permute(0, 3, 1, 2)


def rel(a, b) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


# --------------------------------------------------------------------------- small models
TINY = {
    "vmamba_v2": lambda: VMamba(depths=[1, 1, 2, 1], dims=8, num_classes=5, drop_path_rate=0.0, ssm_d_state=1,
                                ssm_ratio=1.0, ssm_conv_bias=False, forward_type="v05_noz", mlp_ratio=2.0,
                                downsample_version="v3", patchembed_version="v2", norm_layer="ln2d"),
    "vmamba_v0": lambda: VMamba(depths=[1, 1, 2, 1], dims=8, num_classes=5, drop_path_rate=0.0, ssm_d_state=4,
                                ssm_ratio=2.0, forward_type="v0", mlp_ratio=0.0, downsample_version="v1",
                                patchembed_version="v1", norm_layer="ln"),
    "medmamba": lambda: MedMamba(depths=[1, 1, 2, 1], dims=[8, 16, 32, 64], num_classes=5, d_state=4,
                                 drop_path_rate=0.0),
}


def randomise(model, seed=0):
    """Give every SS2D strong random parameters so that the scan term is as large as the skip term
    (with the default init it is ~1e-5 of it, and a wrong scan would go unnoticed)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for ss2d in model.ssm_layers().values():
            ss2d.x_proj_weight.copy_(torch.randn(ss2d.x_proj_weight.shape, generator=gen) * 0.6)
            ss2d.dt_projs_weight.copy_(torch.randn(ss2d.dt_projs_weight.shape, generator=gen) * 0.5)
            ss2d.dt_projs_bias.copy_(torch.randn(ss2d.dt_projs_bias.shape, generator=gen) * 0.5 - 1.0)
            ss2d.A_logs.copy_(torch.log(torch.rand(ss2d.A_logs.shape, generator=gen) * 3 + 0.3))
            ss2d.Ds.copy_(torch.randn(ss2d.Ds.shape, generator=gen))
            if isinstance(ss2d.out_norm, torch.nn.LayerNorm):
                ss2d.out_norm.weight.copy_(1 + 0.3 * torch.randn(ss2d.out_norm.weight.shape, generator=gen))
                ss2d.out_norm.bias.copy_(0.3 * torch.randn(ss2d.out_norm.bias.shape, generator=gen))
    return model.eval()


@pytest.fixture(scope="module", params=list(TINY))
def tiny(request):
    torch.manual_seed(0)
    return request.param, randomise(TINY[request.param]())


def block_input(ss2d, H, W, B=2, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(B, ss2d.d_inner, H, W, generator=gen)


def _fixtures_dir(request):
    try:
        return request.getfixturevalue("fixtures_dir")
    except pytest.FixtureLookupError:
        path = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "official"
        if not path.is_dir():
            pytest.skip(f"official fixtures not found at {path} (and no fixtures_dir fixture in conftest.py)")
        return path


def load_fixture_model(request, name):
    path = Path(_fixtures_dir(request)) / f"{name}.pt"
    if not path.exists():
        pytest.skip(f"fixture {path} is missing")
    data = torch.load(path, weights_only=True)
    model = (VMamba if data["family"] == "vmamba" else MedMamba)(**data["config"])
    state = checkpoint_filter_fn(data["state_dict"]) if data["family"] == "vmamba" else data["state_dict"]
    model.load_state_dict(state, strict=True)
    return model.eval(), data


# --------------------------------------------------------------------------- VMeanba
@pytest.mark.parametrize("variant", VARIANTS)
def test_literal_vmeanba_core_matches_loop_reference(tiny, variant):
    family, model = tiny
    name = list(model.ssm_layers())[1]
    new = apply_vmeanba(model, [name], variant=variant, folded=False)
    ss2d = new.ssm_layers()[name]
    assert ss2d.vmeanba.variant == variant and not ss2d.vmeanba.folded
    x = block_input(ss2d, 3, 5)
    expected = loop_core(x, ss2d, vmeanba=variant)
    with torch.no_grad():
        out = ss2d.core(x)
    assert rel(out, expected) < REL_TOL, family
    # the method changes the block (so this comparison can fail): VMeanba differs from the plain core
    assert rel(loop_core(x, ss2d), expected) > 1e-2


@pytest.mark.parametrize("variant", VARIANTS)
def test_folded_vmeanba_equals_loop_reference_after_out_norm(tiny, variant):
    """Default (folded where exact): out_norm(core) equals out_norm(the literal loop reduced scan)."""
    family, model = tiny
    name = list(model.ssm_layers())[-2]
    new = apply_vmeanba(model, [name], variant=variant)  # folded=None -> folded: every out_norm is a LayerNorm
    ss2d = new.ssm_layers()[name]
    assert ss2d.vmeanba.folded
    x = block_input(ss2d, 4, 3)
    with torch.no_grad():
        out = channel_layernorm(ss2d.core(x), ss2d)
    expected = channel_layernorm(loop_core(x, ss2d, vmeanba=variant), ss2d)
    assert rel(out, expected) < REL_TOL, family
    assert rel(channel_layernorm(loop_core(x, ss2d), ss2d), expected) > 1e-2


def test_folded_and_literal_agree_on_the_whole_model(tiny):
    family, model = tiny
    x = torch.randn(2, 3, 40, 36, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        base = model(x)
        for variant in VARIANTS:
            folded = apply_vmeanba(model, "all", variant=variant, folded=True)(x)
            literal = apply_vmeanba(model, "all", variant=variant, folded=False)(x)
            assert rel(folded, literal) < LOGIT_REL_TOL, (family, variant)
            assert rel(folded, base) > 1e-3  # VMeanba on every layer does change the logits


@pytest.mark.fixtures
@pytest.mark.parametrize("name", ["vmamba_v05noz_r1_ds1", "vmamba_v05noz_r2_ds1", "vmamba_v0_ds16", "medmamba_small_cfg"])
def test_folded_and_literal_agree_on_official_fixtures(request, name):
    model, data = load_fixture_model(request, name)
    with torch.no_grad():
        for case in data["cases"]:
            assert rel(model(case["input"]), case["output"]) < 1e-4  # the model itself reproduces the fixture
            folded = apply_vmeanba(model, "all", folded=True)(case["input"])
            literal = apply_vmeanba(model, "all", folded=False)(case["input"])
            # with these near-initial weights VMeanba moves the logits by ~1e-4 relative, so the agreement
            # must be much tighter than that to mean anything (measured: 4e-7..9e-7 vs 5e-5..3.5e-4)
            assert rel(folded, literal) < 0.05 * rel(folded, case["output"])


@pytest.mark.fixtures
@pytest.mark.parametrize("name", ["vmamba_v05noz_r1_ds1", "vmamba_v0_ds16", "medmamba_small_cfg"])
def test_fixture_blocks_match_loop_reference(request, name):
    """Official weights, the real activations entering a block: VMeanba + QuarterMap cores vs the loops."""
    model, data = load_fixture_model(request, name)
    layer = list(model.ssm_layers())[2]
    captured = {}
    ss2d = model.ssm_layers()[layer]
    original_core = ss2d.core

    def capturing_core(x):
        captured["x"] = x
        return original_core(x)

    ss2d.core = capturing_core  # instance attribute shadows the method for this one forward
    try:
        with torch.no_grad():
            model(data["cases"][1]["input"])  # the non-square case
    finally:
        del ss2d.core
    x = captured["x"]
    for vmeanba, folded, qm in [("all-rows", False, None), ("per-direction", False, (2, 1)), ("all-rows", True, (2, 1)),
                                (None, None, (2, 1)), ("pre-discretisation", False, None)]:
        new = model
        if qm is not None:
            new = apply_quartermap(new, [layer], stride=qm[0], keep=qm[1])
        if vmeanba is not None:
            new = apply_vmeanba(new, [layer], variant=vmeanba, folded=folded)
        block = new.ssm_layers()[layer]
        with torch.no_grad():
            out = block.core(x)
        expected = loop_core(x, block, vmeanba, qm)
        if folded:
            out, expected = channel_layernorm(out, block), channel_layernorm(expected, block)
        assert rel(out, expected) < REL_TOL, (name, vmeanba, folded, qm)


def test_fold_refused_where_out_norm_is_not_a_channel_layernorm():
    model = randomise(VMamba(depths=[1, 1, 1, 1], dims=8, num_classes=3, ssm_d_state=1, ssm_ratio=1.0,
                             forward_type="v05_noz_onnone", mlp_ratio=1.0, downsample_version="v3",
                             patchembed_version="v2", norm_layer="ln2d", drop_path_rate=0.0))
    with pytest.raises(ValueError, match=r"layers\.0\.blocks\.0.*not a channel LayerNorm"):
        apply_vmeanba(model, "all", folded=True)
    new = apply_vmeanba(model, "all")  # folded=None: literal where folding is not exact
    name = "layers.1.blocks.0"
    ss2d = new.ssm_layers()[name]
    assert ss2d.vmeanba.folded is False
    x = block_input(ss2d, 3, 3)
    with torch.no_grad():
        assert rel(ss2d.core(x), loop_core(x, ss2d, vmeanba="all-rows")) < REL_TOL


# --------------------------------------------------------------------------- QuarterMap
@pytest.mark.parametrize("H,W,stride,keep", [(4, 4, 2, 1), (5, 7, 2, 1), (6, 3, 2, 1), (7, 7, 2, 1), (7, 5, 3, 2),
                                             (1, 5, 2, 1)])
def test_quartermap_core_matches_loop_reference(tiny, H, W, stride, keep):
    family, model = tiny
    name = list(model.ssm_layers())[0]
    new = apply_quartermap(model, [name], stride=stride, keep=keep)
    ss2d = new.ssm_layers()[name]
    x = block_input(ss2d, H, W)
    with torch.no_grad():
        out = ss2d.core(x)
    assert out.shape == x.shape
    assert rel(out, loop_core(x, ss2d, quartermap=(stride, keep))) < REL_TOL, family


@pytest.mark.parametrize("variant,folded", [("all-rows", False), ("all-rows", True), ("per-direction", False),
                                            ("pre-discretisation", False)])
def test_vmeanba_and_quartermap_on_one_block(tiny, variant, folded):
    family, model = tiny
    name = list(model.ssm_layers())[1]
    # either order of application gives the same block
    a = apply_quartermap(apply_vmeanba(model, [name], variant=variant, folded=folded), [name])
    b = apply_vmeanba(apply_quartermap(model, [name]), [name], variant=variant, folded=folded)
    assert describe_compression(a) == describe_compression(b)
    ss2d = a.ssm_layers()[name]
    assert ss2d.vmeanba is not None and ss2d.quartermap is not None
    x = block_input(ss2d, 5, 6)
    with torch.no_grad():
        out = ss2d.core(x)
    expected = loop_core(x, ss2d, vmeanba=variant, quartermap=(2, 1))
    if folded:
        out, expected = channel_layernorm(out, ss2d), channel_layernorm(expected, ss2d)
    assert rel(out, expected) < REL_TOL, family


def test_medmamba_block_keeps_the_gate_at_full_resolution():
    """Whole SS2D forward of a MedMamba block (channel-last, z gate) with both methods, odd map size:
    out_proj(LN(restored core) * SiLU(z)) with z computed at every pixel."""
    torch.manual_seed(0)
    model = randomise(TINY["medmamba"]())
    name = "layers.0.blocks.0"
    new = apply_quartermap(apply_vmeanba(model, [name], folded=False), [name])
    ss2d = new.ssm_layers()[name]
    inp = torch.randn(2, 5, 7, ss2d.d_model)
    with torch.no_grad():
        out = ss2d(inp)
        xz = ss2d.in_proj(inp)
        x, z = xz.chunk(2, dim=-1)
        x = F.silu(ss2d.conv2d(x.permute(0, 3, 1, 2)))
        y = channel_layernorm(loop_core(x, ss2d, vmeanba="all-rows", quartermap=(2, 1)), ss2d)
        y = y.permute(0, 2, 3, 1) * F.silu(z.double())
        expected = y @ ss2d.out_proj.weight.detach().double().T
    assert rel(out, expected) < REL_TOL
    # z varies inside each 2x2 block, so the output is not constant over a kept pixel's block
    assert not torch.allclose(out[:, 0, 0], out[:, 0, 1])


# --------------------------------------------------------------------------- copies, specs
def test_transforms_return_new_models_and_leave_the_original_unchanged(tiny):
    family, model = tiny
    before = copy.deepcopy(model.state_dict())
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out_before = model(x)
    a = apply_vmeanba(model, "all")
    b = apply_quartermap(model, "all")
    c = apply_quartermap(a, "stage:1-2")
    assert a is not model and b is not model and c is not a
    assert describe_compression(model) == {"vmeanba": {}, "quartermap": {}}
    assert describe_compression(a)["quartermap"] == {}
    assert len(describe_compression(c)["quartermap"]) > 0
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    with torch.no_grad():
        assert torch.equal(model(x), out_before)
        assert not torch.allclose(a(x), out_before)


def _tiny_vmamba(depths):
    return VMamba(depths=depths, dims=4, num_classes=2, ssm_d_state=1, ssm_ratio=1.0, forward_type="v05_noz",
                  mlp_ratio=1.0, downsample_version="v3", patchembed_version="v2", norm_layer="ln2d")


def test_every_k_matches_the_quartermap_authors_choice():
    t = _tiny_vmamba([2, 2, 8, 2])
    assert parse_layer_spec("every:3", t, method="quartermap") == [
        "layers.1.blocks.0", "layers.2.blocks.1", "layers.2.blocks.4", "layers.2.blocks.7"]
    assert parse_layer_spec("auto", t, method="quartermap") == parse_layer_spec("every:3", t)
    s = _tiny_vmamba([2, 2, 15, 2])
    assert parse_layer_spec("every:3", s) == [
        "layers.1.blocks.0", "layers.2.blocks.1", "layers.2.blocks.4", "layers.2.blocks.7", "layers.2.blocks.10",
        "layers.2.blocks.13", "layers.3.blocks.1"]
    new = apply_quartermap(t, "every:3")
    assert sorted(describe_compression(new)["quartermap"]) == sorted(parse_layer_spec("every:3", t))


def test_parse_layer_spec_forms():
    m = _tiny_vmamba([2, 2, 4, 2])
    names = list(m.ssm_layers())
    assert parse_layer_spec("none", m) == []
    assert parse_layer_spec("all", m) == names
    assert parse_layer_spec("auto", m) == AutoLayers(None)
    assert parse_layer_spec("k=4", m) == AutoLayers(4)
    assert parse_layer_spec("layers.2.blocks.1,layers.2.blocks.0", m) == ["layers.2.blocks.0", "layers.2.blocks.1"]
    assert parse_layer_spec("0,3,5", m) == [names[0], names[3], names[5]]
    assert parse_layer_spec("stage:2", m) == [f"layers.2.blocks.{j}" for j in range(4)]
    assert parse_layer_spec("stage:1-2", m) == names[2:8]
    assert parse_layer_spec("stage:3, 0 ,layers.3.blocks.0", m) == [names[0], *names[8:]]
    assert parse_layer_spec(["layers.0.blocks.1", 9], m) == [names[1], names[9]]


@pytest.mark.parametrize("spec,message", [
    ("layers.9.blocks.0", r"unknown layer 'layers\.9\.blocks\.0'.*layers\.0\.blocks\.0"),
    ("k=11", r"k=11 .*10 SS2D layers"),
    ("k=0", r"k must be in 1\.\.10"),
    ("stage:4", r"stage 4 does not exist.*stages 0\.\.3"),
    ("stage:1-7", r"stage 7 does not exist"),
    ("", r"empty"),
    ("0,,3", r"empty item"),
    (None, r"empty layer spec"),
    ("12", r"index 12 is out of range.*0\.\.9"),
    ("every:0", r"k >= 1"),
    ("stage:x", r"must be an integer"),
    ("all,0", r"cannot be combined"),
])
def test_bad_specs_raise_clear_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_layer_spec(spec, _tiny_vmamba([2, 2, 4, 2]))


def test_bad_transform_arguments_raise_clear_errors():
    m = _tiny_vmamba([1, 1, 2, 1])
    with pytest.raises(ValueError, match="variant"):
        apply_vmeanba(m, "all", variant="per-channel")
    with pytest.raises(ValueError, match="keep <= stride"):
        apply_quartermap(m, "all", stride=2, keep=3)
    with pytest.raises(ValueError, match="QuarterMap has no calibrated selection"):
        apply_quartermap(m, "k=2")
    with pytest.raises(ValueError, match="calibration"):
        apply_vmeanba(m, "auto")
