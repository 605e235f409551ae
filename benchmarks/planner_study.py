"""The planner study of docs/COMPRESSION.md: the speed-aware plan against the paper's K-smallest-impact
VMeanba choice at the same budgets, on the two digits models, plus per-block cost tables of
full-size VMamba-T/S/B (random weights: the speed side only).

    python benchmarks/planner_study.py --device cuda --out OUT        # the GPU study: batch 128, fp16
    python benchmarks/planner_study.py --device cpu --out OUT         # the same code path on the CPU

For each digits model (exporter/samples_data.py) the cost model is measured once on the device
(exporter.compress.cost_model: ``cuda`` = the project's GPU runtime with CUDA graphs, ``cpu`` =
``cpu-torch``); then, at every budget, the planner's plan (exporter.compress.planner) and the paper's
choice (select_vmeanba_layers with the same budget: the K smallest-impact layers that keep the
measured drop within it) are both measured: calibration drop (the budgeted quantity), test-split
drop (held out), the predicted speed-up (cost model) and the measured one (each plan timed side by
side with the uncompressed model and QuarterMap every:3 on the same timer). The Pareto plot shows,
per digits model at --plot-budget, every plan the planner measured, the paper's K = 1..n curve and
QuarterMap every:3.

Full-size models: the cost model per block (deduplicated per block signature: one block per stage
is timed) and, as a check of the additive prediction, "QuarterMap every:3" and "the best option on
every block" timed against their predictions.

Writes planner_study.json, planner_study.md and planner_pareto.png (each atomically) into --out
and prints the Markdown. ``--device cuda`` without a usable GPU runtime exits with status 2 and the
reason; nothing falls back silently. Iteration counts are options (defaults sized so that the GPU
run takes a few minutes on an H200).
"""
from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from exporter.compress import load_calibration, select_vmeanba_layers  # noqa: E402
from exporter.compress import cost_model as cm  # noqa: E402
from exporter.compress.layer_specs import every_kth_layers  # noqa: E402
from exporter.compress.planner import SEARCH_EVALUATIONS, choose_plan  # noqa: E402
from exporter.compress.report import format_speedup, plot_plan_pareto, save_figure  # noqa: E402
from exporter.compress.selection import CalibratedEvaluator, vmeanba_specs  # noqa: E402
from exporter.files import write_json_and_markdown  # noqa: E402
from exporter.models import create_model  # noqa: E402
from exporter.models.ss2d import QuarterMapSpec  # noqa: E402
from exporter.samples_data import FAMILIES, load_digits_model  # noqa: E402

BACKEND = {"cuda": "cuda", "cpu": "cpu-torch"}
FULL_MODELS = ["vmamba_tiny_s1l8", "vmamba_small_s1l20", "vmamba_base_s1l20"]
# per device: (digits batch, precision, iters, warmup, full models, full batch, full resolution, full iters)
DEFAULTS = {"cuda": dict(batch=128, precision="fp16", iters=20, warmup=3, full_models=FULL_MODELS, full_batch=128,
                         full_resolution=224, full_iters=10),
            "cpu": dict(batch=16, precision="fp32", iters=5, warmup=1, full_models=["vmamba_tiny_s1l8"], full_batch=1,
                        full_resolution=64, full_iters=5)}


def log(*args) -> None:
    print(*args, flush=True)


def check_device(device: str) -> str:
    """The reason the cost backend cannot run, or exit 2 when CUDA was asked for and is not usable."""
    if device == "cuda":
        from exporter.runtime import kernel_status

        ok, reason = kernel_status()
        if not ok:
            print(f"planner_study: --device cuda, but the project's GPU runtime is not usable: {reason}", file=sys.stderr)
            sys.exit(2)
        return reason
    return "CPU (cpu-torch backend: PyTorch eager, float32)"


def option_counts(plan: dict[str, str]) -> str:
    counts = {o: sum(1 for v in plan.values() if v == o) for o in cm.COMPRESSED_OPTIONS}
    return ", ".join(f"{o} {n}" for o, n in counts.items() if n) or "nothing"


# --------------------------------------------------------------------------- digits models
def digits_rows(args, family: str, axes) -> dict:
    model = load_digits_model(family)
    eval_device = "cuda" if args.device == "cuda" else "cpu"
    cal = load_calibration("digits:calibration", family)
    test = load_calibration("digits:test", family)
    timer = cm.make_timer(BACKEND[args.device], args.batch, args.precision, (32, 32), args.iters, args.warmup)
    names = list(model.ssm_layers())
    vm_of, qm = vmeanba_specs(model, names), QuarterMapSpec()
    t0 = time.perf_counter()
    cost = cm.measure_cost_model(model, timer, vmeanba=vm_of, quartermap=qm, per_block=args.per_block,
                                 cache_dir=args.cache_dir, use_cache=not args.no_cache, rounds=args.rounds)
    cost_s = time.perf_counter() - t0
    log(f"digits {family}: cost model {cost.label} in {cost_s:.1f} s ({'cache' if cost.from_cache else 'measured'}), "
        f"uncompressed {cost.baseline_ms:.3f} ms")
    evaluator = CalibratedEvaluator(model, cal, "accuracy", device=eval_device)
    tester = CalibratedEvaluator(model, test, "accuracy", device=eval_device)

    def test_drop(plan: dict[str, str]) -> float:
        return tester.drop(tester.evaluate({n: cm.option_specs(plan.get(n, "none"), vm_of[n], qm) for n in names}))

    every3 = {n: "quartermap" for n in every_kth_layers(names, 3)}
    rows, plans = [], {}

    def chosen(plan: dict[str, str]) -> dict[str, str]:
        return {n: o for n, o in plan.items() if o != "none"}

    for budget in args.budgets:
        t0 = time.perf_counter()
        plan = choose_plan(evaluator, cost, names, budget, vm_of, qm, model=model, timer=timer, rounds=args.rounds,
                           search_evaluations=args.search_evaluations)
        plan_s = time.perf_counter() - t0
        paper = select_vmeanba_layers(model, cal, max_drop=budget, curve=False, progress=False, device=eval_device)
        paper_plan = {n: "vmeanba" for n in paper.layers}
        # the plan may spend more of the budget than the paper's choice: then the planner is asked again with
        # the paper's measured drop as its budget, for the comparison at the same drop
        larger_drop = plan.joint_drop > paper.joint_drop + 1e-12 and chosen(plan.plan) != paper_plan
        at_paper = choose_plan(evaluator, cost, names, paper.joint_drop, vm_of, qm, model=model, timer=timer,
                               rounds=args.rounds, search_evaluations=args.search_evaluations) if larger_drop else None
        timed = [{}, plan.plan, paper_plan, every3] + ([at_paper.plan] if at_paper else [])
        base_ms, plan_ms, paper_ms, every3_ms, *at_paper_ms = cm.time_plans_ms(model, timer, timed, vm_of, qm,
                                                                               args.rounds)
        row = {"family": family, "budget": budget, "plan": plan.plan, "plan_options": option_counts(plan.plan),
               "plan_cal_drop": plan.joint_drop, "plan_test_drop": test_drop(plan.plan),
               "plan_predicted": plan.predicted_speedup, "plan_measured": base_ms / plan_ms, "plan_seconds": plan_s,
               "plan_search_exact": plan.search_exact, "plan_evaluations": plan.evaluations,
               "paper_layers": paper.layers, "paper_cal_drop": paper.joint_drop, "paper_test_drop": test_drop(paper_plan),
               "paper_predicted": cost.predicted_speedup(paper_plan), "paper_measured": base_ms / paper_ms,
               "every3_measured": base_ms / every3_ms, "every3_predicted": cost.predicted_speedup(every3),
               "baseline_ms": base_ms, "plan_ms": plan_ms, "paper_ms": paper_ms, "steps": plan.steps}
        row["same_plan"] = chosen(plan.plan) == paper_plan
        row["plan_faster"] = row["plan_measured"] > row["paper_measured"]
        if at_paper is not None:
            row["at_paper_drop"] = {"plan": at_paper.plan, "options": option_counts(at_paper.plan),
                                    "cal_drop": at_paper.joint_drop, "test_drop": test_drop(at_paper.plan),
                                    "predicted": at_paper.predicted_speedup, "measured": base_ms / at_paper_ms[0],
                                    "search_exact": at_paper.search_exact, "same_plan": chosen(at_paper.plan) == paper_plan,
                                    "steps": at_paper.steps}
        row["verdict"] = verdict(row)
        rows.append(row)
        log(f"  budget {budget:g}: plan [{row['plan_options']}] drop {100 * row['plan_cal_drop']:.2f} pt, "
            f"{row['plan_measured']:.3f}x measured ({format_speedup(row['plan_predicted'])} predicted) | paper K={len(paper.layers)} "
            f"drop {100 * row['paper_cal_drop']:.2f} pt, {row['paper_measured']:.3f}x measured | faster at same or "
            f"lower drop: {row['verdict']}")
        if budget == args.plot_budget:
            plans[budget] = plan
            key = cost.key
            plot_plan_pareto(plan, None, ax=axes, title=f"digits {family}: budget {100 * budget:g} pt; {key['backend']}, "
                                                        f"batch {key['batch']}, {key['precision']}")
    return {"rows": rows, "cost": cost.to_dict(), "cost_seconds": cost_s, "cost_from_cache": cost.from_cache,
            "impacts": (plans.get(args.plot_budget).impacts if plans else None),
            "baseline_accuracy": {"calibration": evaluator.baseline, "test": tester.baseline}}


def verdict(row: dict) -> str:
    """Is the planner's plan faster (measured, side by side) than the paper's choice at a calibration drop no
    larger than the paper's? yes / same plan / no; when the plan's drop is larger, the answer of the planner
    run with the paper's drop as its budget (``at_paper_drop``)."""
    if row["same_plan"]:
        return "same plan"
    if row["plan_cal_drop"] <= row["paper_cal_drop"] + 1e-12:
        return "yes" if row["plan_faster"] else "no"
    at = row["at_paper_drop"]
    answer = "same plan" if at["same_plan"] else "yes" if at["measured"] > row["paper_measured"] else "no"
    return (f"{answer} (the plan's drop is larger; with the paper's drop as budget: {at['options']}, "
            f"{100 * at['cal_drop']:+.2f} pt cal., {100 * at['test_drop']:+.2f} pt test, "
            f"{format_speedup(at['predicted'])} / {at['measured']:.3f}x)")


# --------------------------------------------------------------------------- full-size models (speed side)
def official_reference(code, args, name: str) -> dict:
    """The official model of the same name, in this process, at the full-size batch and precision (fp16:
    autocast; fp32: both TF32 settings), so every speed figure of the study has the official code
    measured in the same run."""
    import bench_side_by_side as sbs

    torch.manual_seed(0)
    model = code.model(name)
    precs = ["fp16"] if args.precision == "fp16" else ["fp32-tf32off", "fp32-default"]
    rows = {p: sbs.official_e2e_row(model, name, sbs.PRECISIONS[p], args.full_batch, args.full_iters, args.warmup,
                                    args.full_resolution)["median_ms"] for p in precs}
    del model
    torch.cuda.empty_cache()
    log(f"{name}: official " + ", ".join(f"{p} {ms:.2f} ms" for p, ms in rows.items()))
    return rows


def full_size(args, name: str, code=None) -> dict:
    if args.device == "cuda":
        from bench_e2e import build  # seeded random weights, initialised on the GPU (much faster for B)

        model = build(name)
    else:
        torch.manual_seed(0)
        model = create_model(name).eval()
    timer = cm.make_timer(BACKEND[args.device], args.full_batch, args.precision, (args.full_resolution,) * 2,
                          args.full_iters, args.warmup)
    names = list(model.ssm_layers())
    vm_of, qm = vmeanba_specs(model, names), QuarterMapSpec()
    t0 = time.perf_counter()
    cost = cm.measure_cost_model(model, timer, vmeanba=vm_of, quartermap=qm, per_block=False,
                                 cache_dir=args.cache_dir, use_cache=not args.no_cache, rounds=args.rounds)
    best = {n: max(cm.COMPRESSED_OPTIONS, key=lambda o: cost.saved_ms(n, o)) for n in names}
    best = {n: o for n, o in best.items() if cost.saved_ms(n, o) > 0}
    every3 = {n: "quartermap" for n in every_kth_layers(names, 3)}
    base_ms, every3_ms, best_ms = cm.time_plans_ms(model, timer, [{}, every3, best], vm_of, qm, args.rounds)
    stages = {}
    for n in names:
        rep = cost.measured_as[n]
        stages.setdefault(rep, {"blocks": 0, **{o: cost.saved_ms(rep, o) for o in cm.COMPRESSED_OPTIONS}})
        stages[rep]["blocks"] += 1
    out = {"model": name, "cost": cost.to_dict(), "seconds": time.perf_counter() - t0, "stages": stages,
           "checks": [{"plan": "QuarterMap every:3", "predicted": cost.predicted_speedup(every3),
                       "measured": base_ms / every3_ms},
                      {"plan": f"best option on every block ({option_counts(best)})",
                       "predicted": cost.predicted_speedup(best), "measured": base_ms / best_ms}]}
    log(f"{name}: {cost.label}, uncompressed {cost.baseline_ms:.2f} ms, {out['seconds']:.1f} s")
    del model
    if code is not None:
        out["official_ms"] = official_reference(code, args, name)
        out["ours_ms"] = {"uncompressed": base_ms, "best option on every block": best_ms}
    if args.device == "cuda":
        torch.cuda.empty_cache()
    return out


# --------------------------------------------------------------------------- tables
def markdown(study: dict) -> str:
    env = study["environment"]
    lines = [f"Command: `{env['command']}`; {env['date_utc']}; device: {env['device']}; {env['runtime']}.", "",
             "Digits models: at each budget, the planner's plan and the paper's K-smallest-impact VMeanba choice "
             "(same budget, measured joint drop), both timed side by side with the uncompressed model.", "",
             "| model | budget | planner: options | cal. drop | test drop | speed-up pred. / meas. | paper: K | "
             "cal. drop | test drop | speed-up pred. / meas. | faster at same or lower drop | QuarterMap every:3 meas. |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for family, part in study["digits"].items():
        for r in part["rows"]:
            lines.append(
                f"| {family} | {100 * r['budget']:g} pt | {r['plan_options']} | {100 * r['plan_cal_drop']:+.2f} pt | "
                f"{100 * r['plan_test_drop']:+.2f} pt | {format_speedup(r['plan_predicted'])} / {r['plan_measured']:.3f}x | "
                f"{len(r['paper_layers'])} | {100 * r['paper_cal_drop']:+.2f} pt | {100 * r['paper_test_drop']:+.2f} pt | "
                f"{format_speedup(r['paper_predicted'])} / {r['paper_measured']:.3f}x | "
                f"{r['verdict']} | "
                f"{r['every3_measured']:.3f}x |")
    for family, part in study["digits"].items():
        c = part["cost"]
        lines += ["", f"Cost model, digits {family} ({c['key']['backend']}, batch {c['key']['batch']}, "
                      f"{c['key']['precision']}): uncompressed {c['baseline_ms']:.3f} ms; time saved per block (ms):", "",
                  "| block (timed as) | vmeanba | quartermap | both |", "|---|---|---|---|"]
        for n, rep in c["measured_as"].items():
            saved = {o: c["baseline_ms"] - c["option_ms"][n][o] for o in cm.COMPRESSED_OPTIONS}
            lines.append(f"| {n} ({rep}) | {saved['vmeanba']:.3f} | {saved['quartermap']:.3f} | {saved['both']:.3f} |")
    if study["full_size"]:
        lines += ["", "Full-size models, random weights (speed only): time saved per block of each stage (ms), one "
                      "block per stage timed; the additive prediction checked on two whole plans.", "",
                  "| model | uncompressed ms | stage (blocks) | vmeanba | quartermap | both |", "|---|---|---|---|---|---|"]
        for f in study["full_size"]:
            for rep, s in f["stages"].items():
                lines.append(f"| {f['model']} | {f['cost']['baseline_ms']:.2f} | {rep.split('.blocks.')[0]} "
                             f"({s['blocks']}) | {s['vmeanba']:.3f} | {s['quartermap']:.3f} | {s['both']:.3f} |")
        lines += ["", "| model | plan | predicted | measured |", "|---|---|---|---|"]
        for f in study["full_size"]:
            for c in f["checks"]:
                lines.append(f"| {f['model']} | {c['plan']} | {format_speedup(c['predicted'])} | {c['measured']:.3f}x |")
        refs = [f for f in study["full_size"] if f.get("official_ms")]
        if refs:
            lines += ["", "The official models in the same process (eager, no_grad, oflex; fp16 = autocast), same "
                          "batch and resolution, against ours (prepare_runtime graph):", "",
                      "| model | official | ms | ours uncompressed ms | ours / official | ours, best option on every "
                      "block, ms | that / official |", "|---|---|---|---|---|---|---|"]
            for f in refs:
                ours, best = f["ours_ms"]["uncompressed"], f["ours_ms"]["best option on every block"]
                for prec, ms in f["official_ms"].items():
                    lines.append(f"| {f['model']} | {prec} | {ms:.2f} | {ours:.2f} | {ms / ours:.2f}x faster "
                                 f"| {best:.2f} | {ms / best:.2f}x faster |")
    lines += ["", f"Total {study['seconds']:.0f} s."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=list(BACKEND), required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--budgets", nargs="+", type=float, default=[0.005, 0.01, 0.02],
                    help="accuracy budgets, fractions (0.01 = 1 point)")
    ap.add_argument("--plot-budget", type=float, default=None, help="budget of the Pareto plot (default: the middle)")
    ap.add_argument("--batch", type=int, help="digits cost-model batch (default: cuda 128, cpu 16)")
    ap.add_argument("--precision", choices=["fp32", "fp16"], help="default: cuda fp16, cpu fp32")
    ap.add_argument("--iters", type=int, help="timed runs per configuration, digits (default: cuda 20, cpu 5)")
    ap.add_argument("--warmup", type=int, help="untimed runs before timing (default: cuda 3, cpu 1)")
    ap.add_argument("--rounds", type=int, default=None, help="cost-model rounds (median of paired differences) and timing rounds of the "
                         "plans (fastest kept); default: cuda 1, cpu 3")
    ap.add_argument("--per-block", action="store_true", help="digits: time every block, not one per signature")
    ap.add_argument("--full-models", nargs="*", help="full-size models for the speed side (default: cuda VMamba-T/S/B, "
                                                     "cpu VMamba-T); none: --full-models with no name")
    ap.add_argument("--full-batch", type=int, help="default: cuda 128, cpu 1")
    ap.add_argument("--full-resolution", type=int, help="default: cuda 224, cpu 64")
    ap.add_argument("--full-iters", type=int, help="default: cuda 10, cpu 5")
    ap.add_argument("--cache-dir", default=None, help="cost-model cache (default: ~/.cache/vm-deploy/cost_models)")
    ap.add_argument("--no-cache", action="store_true", help="measure every cost model again (and write no cache)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    ap.add_argument("--search-evaluations", type=int, default=SEARCH_EVALUATIONS,
                    help=f"most plans the planner's search measures per budget (default {SEARCH_EVALUATIONS})")
    ap.add_argument("--official", default=None,
                    help="official VMamba checkout (e.g. third_party/VMamba): with --device cuda, the official "
                         "full-size models are timed in the same process as the reference")
    ap.add_argument("--work-dir", default="build/official-oflex",
                    help="where the patched official copy and its oflex build live (default build/official-oflex)")
    args = ap.parse_args(argv)
    for key, value in DEFAULTS[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.plot_budget = args.budgets[len(args.budgets) // 2] if args.plot_budget is None else args.plot_budget
    if args.plot_budget not in args.budgets:
        sys.exit(f"planner_study: --plot-budget {args.plot_budget} is not one of --budgets {args.budgets}")
    runtime = check_device(args.device)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # the digits scans underflow into denormals, ~10x slower on CPU
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start = time.perf_counter()
    device = torch.cuda.get_device_name() if args.device == "cuda" else cm.Timer(1, "fp32", (1, 1), 1, 0).device_name()
    study = {"environment": {"date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                             "device": device, "runtime": runtime, "torch": torch.__version__,
                             "python": platform.python_version(), "command": " ".join(["python"] + sys.argv),
                             "settings": {k: v for k, v in vars(args).items()}},
             "digits": {}, "full_size": []}
    fig, axes = plt.subplots(1, len(FAMILIES), figsize=(6.4 * len(FAMILIES), 4.4))
    for ax, family in zip(axes, FAMILIES):
        study["digits"][family] = digits_rows(args, family, ax)
    code = None
    if args.official:
        if args.device != "cuda":
            sys.exit("planner_study: --official needs --device cuda (the official models run on the GPU)")
        import official as official_code

        code = official_code.OfficialCode(args.official, args.work_dir)
    for name in args.full_models:
        study["full_size"].append(full_size(args, name, code))
    study["seconds"] = time.perf_counter() - start
    out = Path(args.out)
    fig.tight_layout()
    save_figure(fig, out / "planner_pareto.png")
    text = markdown(study)
    write_json_and_markdown(out, "planner_study", study, text)
    log("\n" + text)
    log(f"wrote {out / 'planner_study.json'}, {out / 'planner_study.md'}, {out / 'planner_pareto.png'}")


if __name__ == "__main__":
    main()
