"""Golden data for the GPU plugin harness (trt_plugins_cpp/tests/enqueue_harness.cpp).

Every output comes from plugins/reference.py, the float32 PyTorch definition of the ops. One
*group* = one plugin instance (fixed attributes and weights) run on several input shapes, the way
one TensorRT engine runs a dynamic-shape profile; `max` dims are larger than any case so that the
workspace is sized from the profile maximum and then used for smaller problems.

Writes, into --out: raw little-endian .bin tensors, cases.json (for people and Python) and
cases.txt (the same content as whitespace tokens, for the C++ harness).

    python tests/make_plugin_golden.py --out build/plugin_golden
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from plugins import reference as ref
from plugins.contract import OP_TOLERANCES, OPS

# Tolerances per (kind, dtype), |out - golden| <= atol + rtol * |golden| elementwise: the op contract's
# (plugins/contract/tolerances.yaml, where each is justified).
TOLERANCES = {key: (t.atol, t.rtol) for key, t in OP_TOLERANCES.items()}
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def _scan_weights(gen: torch.Generator, D: int, N: int, R: int, dtype: torch.dtype):
    """VMamba-like initialisation so that the scan stays well conditioned."""
    x_proj_weight = (torch.randn(4, R + 2 * N, D, generator=gen) * D**-0.5).to(dtype)
    dt_projs_weight = (torch.randn(4, D, R, generator=gen) * R**-0.5).to(dtype)
    dt = torch.exp(torch.rand(4, D, generator=gen) * (math.log(0.1) - math.log(1e-3)) + math.log(1e-3))
    dt_projs_bias = dt + torch.log(-torch.expm1(-dt))  # inverse softplus, float32 by contract
    A_logs = torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(4 * D, 1)
    Ds = 1.0 + 0.1 * torch.randn(4 * D, generator=gen)
    return [x_proj_weight, dt_projs_weight, dt_projs_bias, A_logs, Ds]


def build_groups(seed: int = 0) -> list[dict]:
    gen = torch.Generator().manual_seed(seed)
    groups = []

    def scan_group(name, op, dtype, D, N, R, shapes, max_bhw, attrs=None):
        tdt = TORCH_DTYPES[dtype]
        weights = _scan_weights(gen, D, N, R, tdt)
        fn = ref.ss2d_scan if op == "SS2DScan" else ref.vmeanba_scan
        cases = []
        for B, H, W in shapes:
            x = (0.5 * torch.randn(B, D, H, W, generator=gen)).to(tdt)
            extra = [attrs["variant"]] if op == "VMeanbaScan" else []
            y = fn(x, *weights, *extra)
            cases.append({"inputs": [x, *weights], "output": y})
        Bm, Hm, Wm = max_bhw
        max_dims = [[Bm, D, Hm, Wm]] + [list(w.shape) for w in weights]
        groups.append(dict(name=name, op=op, dtype=dtype, attrs=attrs or {}, kind="scan", cases=cases, max_dims=max_dims))

    def down_group(name, dtype, stride, keep, shapes, max_dims):
        cases = []
        for shape in shapes:
            x = torch.randn(*shape, generator=gen).to(TORCH_DTYPES[dtype])
            cases.append({"inputs": [x], "output": ref.quartermap_down(x, stride, keep).contiguous()})
        groups.append(dict(name=name, op="QuarterMapDown", dtype=dtype, attrs={"stride": stride, "keep": keep},
                           kind="gather", cases=cases, max_dims=[max_dims]))

    def up_group(name, dtype, pairs, max_dims):
        cases = []
        for y_shape, like_shape in pairs:
            y = torch.randn(*y_shape, generator=gen).to(TORCH_DTYPES[dtype])
            like = torch.randn(*like_shape, generator=gen).to(TORCH_DTYPES[dtype])
            cases.append({"inputs": [y, like], "output": ref.quartermap_up(y, like).contiguous()})
        groups.append(dict(name=name, op="QuarterMapUp", dtype=dtype, attrs={}, kind="gather", cases=cases,
                           max_dims=max_dims))

    scan_group("ss2d_f32", "SS2DScan", "float32", D=8, N=4, R=2, shapes=[(2, 5, 7), (1, 6, 6), (1, 1, 3)],
               max_bhw=(2, 7, 9))
    scan_group("ss2d_f16_dstate1", "SS2DScan", "float16", D=16, N=1, R=1, shapes=[(1, 8, 8), (2, 3, 5)],
               max_bhw=(2, 8, 8))
    for variant in (0, 1, 2):
        scan_group(f"vmeanba_v{variant}_f32", "VMeanbaScan", "float32", D=8, N=4, R=2,
                   shapes=[(2, 5, 7), (1, 4, 4)], max_bhw=(2, 6, 8), attrs={"variant": variant})
    scan_group("vmeanba_v0_f16", "VMeanbaScan", "float16", D=8, N=4, R=2, shapes=[(1, 6, 5)], max_bhw=(1, 6, 5),
               attrs={"variant": 0})
    # Model-sized problems (a VMamba-T stage-1 block at 112x112 input: D = 96, 28x28 map; v0 d_state 16,
    # dt_rank 6): multi-block launches and the kernels' largest d_state path.
    scan_group("ss2d_vmamba_t_f32", "SS2DScan", "float32", D=96, N=16, R=6, shapes=[(1, 28, 28)],
               max_bhw=(2, 28, 28))
    scan_group("vmeanba_vmamba_t_f16", "VMeanbaScan", "float16", D=96, N=16, R=6, shapes=[(1, 28, 28)],
               max_bhw=(1, 28, 28), attrs={"variant": 0})
    down_group("qdown_s2k1_f32", "float32", 2, 1, [(2, 3, 8, 8), (1, 3, 7, 5)], [2, 3, 9, 9])
    down_group("qdown_model_f16", "float16", 2, 1, [(2, 96, 56, 56)], [2, 96, 56, 56])
    down_group("qdown_s3k2_f16", "float16", 3, 2, [(1, 4, 10, 11), (2, 4, 3, 3)], [2, 4, 12, 12])
    down_group("qdown_s4k1_f32", "float32", 4, 1, [(1, 3, 9, 6)], [1, 3, 9, 6])
    up_group("qup_f32", "float32", [((2, 3, 4, 4), (2, 5, 8, 8)), ((1, 3, 4, 3), (1, 1, 7, 5))],
             [[2, 3, 4, 4], [2, 5, 8, 8]])
    up_group("qup_f16", "float16", [((1, 4, 3, 3), (1, 4, 5, 6))], [[1, 4, 3, 3], [1, 4, 5, 6]])
    return groups


def _dtype_name(t: torch.Tensor) -> str:
    return {torch.float32: "float32", torch.float16: "float16"}[t.dtype]


def write(groups: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines, meta = [], []
    for g in groups:
        atol, rtol = TOLERANCES[(g["kind"], g["dtype"])]
        n_in = len(OPS[g["op"]].inputs)
        attrs = " ".join(f"{k} {v}" for k, v in g["attrs"].items())
        lines.append(f"group {g['name']} {g['op']} {g['dtype']} {len(g['attrs'])} {attrs} {n_in} "
                     f"{len(g['cases'])} {atol!r} {rtol!r}".replace("  ", " "))
        lines.append("maxdims " + " ".join(f"{len(d)} " + " ".join(map(str, d)) for d in g["max_dims"]))
        gmeta = {k: g[k] for k in ("name", "op", "dtype", "attrs", "max_dims")}
        gmeta.update(atol=atol, rtol=rtol, cases=[])
        for i, case in enumerate(g["cases"]):
            toks, cmeta = [f"case {g['name']}_{i}"], {"inputs": [], "output": None}
            for j, t in enumerate(case["inputs"] + [case["output"]]):
                fname = f"{g['name']}_{i}_{'out' if j == n_in else f'in{j}'}.bin"
                t = t.contiguous()
                (out / fname).write_bytes(t.numpy().tobytes())
                toks.append(f"{fname} {_dtype_name(t)} {t.dim()} " + " ".join(map(str, t.shape)))
                entry = {"file": fname, "dtype": _dtype_name(t), "shape": list(t.shape)}
                if j == n_in:
                    cmeta["output"] = entry
                else:
                    cmeta["inputs"].append(entry)
            lines.append(" ".join(toks))
            gmeta["cases"].append(cmeta)
        meta.append(gmeta)
    (out / "cases.txt").write_text("\n".join(lines) + "\n")
    (out / "cases.json").write_text(json.dumps(meta, indent=1))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    groups = build_groups(args.seed)
    write(groups, args.out)
    total = sum(f.stat().st_size for f in args.out.glob("*.bin"))
    print(f"wrote {sum(len(g['cases']) for g in groups)} cases in {len(groups)} groups, {total} bytes, to {args.out}")


if __name__ == "__main__":
    main()
