"""One call of each kernel at VMamba-T s1l8 stage 0, batch 128, float32, for Nsight Compute:

    ncu --section SpeedOfLight --section Occupancy --section WarpStateStats python3 benchmarks/profile_kernels.py
"""
import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from plugins import kernels  # noqa: E402

B, D, H, W, N, R = 128, 96, 56, 56, 1, 6
x = torch.randn(B, D, H, W, device="cuda")
params = (torch.randn(4, R + 2 * N, D, device="cuda") / math.sqrt(D), torch.randn(4, D, R, device="cuda") / math.sqrt(R),
          torch.randn(4, D, device="cuda") * 0.5 - 2.0, torch.log(torch.rand(4 * D, N, device="cuda") * 4 + 0.5),
          torch.randn(4 * D, device="cuda"))
kernels.ss2d_scan(x, *params)
kernels.vmeanba_scan(x, *params, variant=0)
small = kernels.quartermap_down(x)
kernels.quartermap_up(small, x)
torch.cuda.synchronize()
print("profile_kernels: done")
