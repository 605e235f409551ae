"""CPU forward time of the pure-PyTorch models (batch 1, float32) against the official code's
own pure-PyTorch path, measured on the same 2-core machines (../shared/docs/ANCHORS.md).

    python benchmarks/bench_cpu_forward.py [--resolution 224] [--repeats 5]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from rich.console import Console
from rich.table import Table

from exporter.models import create_model

# ANCHORS.md, "CPU (this project's 2-core machines), batch 1, 224x224, float32, median of 5"
OFFICIAL_SECONDS = {"vmamba_tiny_s1l8": 0.41, "vanilla_vmamba_tiny": 5.5, "medmamba_t": 2.2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--models", nargs="+", default=list(OFFICIAL_SECONDS))
    args = ap.parse_args()
    torch.manual_seed(0)
    table = Table(title=f"CPU forward, batch 1, {args.resolution}x{args.resolution}, float32, "
                        f"{torch.get_num_threads()} threads, torch {torch.__version__}, {platform.processor() or platform.machine()}")
    for col in ("model", "median s", "official s", "speed-up"):
        table.add_column(col, justify="right" if col != "model" else "left")
    with torch.inference_mode():
        for name in args.models:
            model = create_model(name).eval()
            x = torch.randn(1, 3, args.resolution, args.resolution)
            model(x)  # warm-up
            times = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            off = OFFICIAL_SECONDS.get(name)
            table.add_row(name, f"{med:.3f}", f"{off:.2f}" if off else "-", f"{off / med:.1f}x" if off else "-")
    Console().print(table)


if __name__ == "__main__":
    main()
