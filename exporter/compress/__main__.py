"""Command line of the compression package (the main CLI, vm-export, calls the same functions).

    # VMeanba layer selection with a report (JSON, table, PNGs)
    python -m exporter.compress select --digits vmamba --calibration digits:calibration --max-drop 0.01 --out runs/sel

    # the speed-aware plan (cost model on this machine) with its report (plan.json, plan.md, plan_pareto.png)
    python -m exporter.compress plan --digits vmamba --max-drop 0.005 --cost auto --batch 16 --out runs/plan

The accuracy-vs-K study of docs/COMPRESSION.md is a benchmark: benchmarks/digits_compression_study.py;
the planner study is benchmarks/planner_study.py.
"""
from __future__ import annotations

import argparse
import time


def _select(args) -> None:
    from exporter.compress import load_calibration, select_vmeanba_layers, write_selection_report
    from exporter.samples_data import load_digits_model

    model = load_digits_model(args.digits)
    cal = load_calibration(args.calibration, model.family, resolution=args.resolution, limit=args.limit)
    wall, cpu = time.perf_counter(), time.process_time()
    result = select_vmeanba_layers(model, cal, k=args.k, max_drop=args.max_drop, metric=args.metric,
                                   variant=args.variant, batch_size=args.batch_size, threads=args.threads)
    print(f"selection took {time.perf_counter() - wall:.1f}s wall, {time.process_time() - cpu:.1f}s CPU")
    write_selection_report(result, args.out)


def _plan(args) -> None:
    from exporter.compress import load_calibration, plan_compression, write_plan_report
    from exporter.samples_data import load_digits_model

    model = load_digits_model(args.digits)
    cal = load_calibration(args.calibration, model.family, limit=args.limit)
    plan = plan_compression(model, cal, args.max_drop, backend=args.cost, batch=args.batch, precision=args.precision,
                            iters=args.iters, cache_dir=args.cache, threads=args.threads,
                            search_evaluations=args.search_evaluations)
    print(f"planning took {plan.seconds:.1f}s ({plan.evaluations} calibration passes)")
    write_plan_report(plan, args.out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m exporter.compress", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sel = sub.add_parser("select", help="VMeanba layer selection on a bundled digits model")
    sel.add_argument("--digits", choices=["vmamba", "medmamba"], default="vmamba")
    sel.add_argument("--calibration", default="digits:calibration")
    sel.add_argument("--resolution", type=int)
    sel.add_argument("--limit", type=int)
    sel.add_argument("--k", type=int)
    sel.add_argument("--max-drop", type=float)
    sel.add_argument("--metric", default="auto")
    sel.add_argument("--variant", default="all-rows")
    sel.add_argument("--batch-size", type=int, default=64)
    sel.add_argument("--out", default="runs/selection")
    sel.add_argument("--threads", type=int, default=None, help="torch CPU threads during the selection")
    pl = sub.add_parser("plan", help="speed-aware plan (VMeanba / QuarterMap / both per block) on a digits model")
    pl.add_argument("--digits", choices=["vmamba", "medmamba"], default="vmamba")
    pl.add_argument("--calibration", default="digits:calibration")
    pl.add_argument("--limit", type=int)
    pl.add_argument("--max-drop", type=float, default=0.01)
    pl.add_argument("--cost", default="auto", choices=["auto", "gpu", "cpu", "cuda", "cpu-torch", "cpu-ort"])
    pl.add_argument("--batch", type=int, default=16)
    pl.add_argument("--precision", default="fp32", choices=["fp32", "fp16"])
    pl.add_argument("--iters", type=int, default=10)
    pl.add_argument("--cache", default=None, help="cost-model cache folder")
    pl.add_argument("--threads", type=int, default=None)
    pl.add_argument("--search-evaluations", type=int, default=256,
                    help="most plans the search measures after the first choice (default 256; 0: no search)")
    pl.add_argument("--out", default="runs/plan")
    args = parser.parse_args(argv)
    {"select": _select, "plan": _plan}[args.command](args)


if __name__ == "__main__":
    main()
