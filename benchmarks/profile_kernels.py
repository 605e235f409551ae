"""One call of each kernel on VMamba stage shapes, for Nsight Compute:

    ncu --section SpeedOfLight --section Occupancy --section WarpStateStats \\
        python3 benchmarks/profile_kernels.py [--stages 0 3] [--batch 128] [--dtype float16] \\
            [--family vmamba-t|vmamba-b|medmamba-t|vmamba-t-v0] [--ops ss2d vmeanba quartermap]

Families: vmamba-t (D = 96 << stage, R = D / 16, d_state 1), vmamba-b (D = 128 << stage,
R = D / 16, d_state 1), vmamba-t-v0 (D = 192 << stage, R = D / 32, d_state 16) and medmamba-t
(D = 96 << stage, R = D / 32, d_state 16).
"""
import argparse
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plugins import kernels  # noqa: E402

FAMILIES = {  # name: (D at stage 0, dt_rank divisor, d_state)
    "vmamba-t": (96, 16, 1),
    "vmamba-b": (128, 16, 1),
    "vmamba-t-v0": (192, 32, 16),
    "medmamba-t": (96, 32, 16),
}

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--stages", type=int, nargs="+", default=[0, 3], help="stages (0-3); H = W = 56 >> stage")
ap.add_argument("--batch", type=int, default=128)
ap.add_argument("--dtype", default="float16", choices=["float16", "float32"])
ap.add_argument("--family", default="vmamba-t", choices=sorted(FAMILIES))
ap.add_argument("--ops", nargs="+", default=["ss2d", "vmeanba", "quartermap"],
                choices=["ss2d", "vmeanba", "quartermap"])
args = ap.parse_args()
dtype = getattr(torch, args.dtype)
d0, rank_div, N = FAMILIES[args.family]
for stage in args.stages:
    B, D, H = args.batch, d0 << stage, 56 >> stage
    R = math.ceil(D / rank_div)
    x = torch.randn(B, D, H, H, device="cuda").to(dtype)
    params = ((torch.randn(4, R + 2 * N, D, device="cuda") / math.sqrt(D)).to(dtype),
              (torch.randn(4, D, R, device="cuda") / math.sqrt(R)).to(dtype),
              torch.randn(4, D, device="cuda") * 0.5 - 2.0, torch.log(torch.rand(4 * D, N, device="cuda") * 4 + 0.5),
              torch.randn(4 * D, device="cuda"))
    if "ss2d" in args.ops:
        kernels.ss2d_scan(x, *params)
    if "vmeanba" in args.ops:
        kernels.vmeanba_scan(x, *params, variant=0)
    if "quartermap" in args.ops:
        small = kernels.quartermap_down(x)
        kernels.quartermap_up(small, x)
torch.cuda.synchronize()
print("profile_kernels: done")
