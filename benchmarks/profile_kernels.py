"""One call of each kernel on VMamba-T s1l8 stage shapes, for Nsight Compute:

    ncu --section SpeedOfLight --section Occupancy --section WarpStateStats \\
        python3 benchmarks/profile_kernels.py [--stages 0 3] [--batch 128] [--dtype float16]
"""
import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plugins import kernels  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--stages", type=int, nargs="+", default=[0, 3], help="VMamba-T stages (0-3)")
ap.add_argument("--batch", type=int, default=128)
ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
args = ap.parse_args()
dtype = getattr(torch, args.dtype)
for stage in args.stages:
    B, D, H, N = args.batch, 96 << stage, 56 >> stage, 1
    R = math.ceil(D / 16)
    x = torch.randn(B, D, H, H, device="cuda").to(dtype)
    params = ((torch.randn(4, R + 2 * N, D, device="cuda") / math.sqrt(D)).to(dtype),
              (torch.randn(4, D, R, device="cuda") / math.sqrt(R)).to(dtype),
              torch.randn(4, D, device="cuda") * 0.5 - 2.0, torch.log(torch.rand(4 * D, N, device="cuda") * 4 + 0.5),
              torch.randn(4 * D, device="cuda"))
    kernels.ss2d_scan(x, *params)
    kernels.vmeanba_scan(x, *params, variant=0)
    small = kernels.quartermap_down(x)
    kernels.quartermap_up(small, x)
torch.cuda.synchronize()
print("profile_kernels: done")
