"""Two builds of this project's kernel library, compared row by row from ``bench_kernels.py --json``
files of one device call (``benchmarks/run_device_ab.sh`` writes them).

    python benchmarks/compare_kernels.py --a A1.json [A2.json ...] --b B1.json [B2.json ...] [--md OUT]

Rows are matched by (op, model, stage, batch, dtype). Each side's time is the minimum over its files
(repeated runs alternate A and B, so drift between them hits both). The table gives A ms, B ms and
A / B (above 1: B is faster), flags changes past ``--threshold``, and ends with the geometric mean of
A / B per op.

This is a development comparison of our own kernels against each other. It does not time the
official code, so its figures are never quoted as a speed-up over it (docs/KERNELS.md).

Exit codes: 0 done; 2 bad input (a file missing or not bench_kernels.py JSON, the two sides from
different devices, or no row in common).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from exporter.files import atomic_write_bytes  # noqa: E402

EXIT_BAD_INPUT = 2
KEY = ("op", "model", "stage", "batch", "dtype")


class InputError(Exception):
    pass


def load_side(paths: list[str]) -> tuple[str, dict[tuple, float]]:
    """(device, {row key: minimum ms over the files}) of one side."""
    device, best = None, {}
    for path in paths:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {path}: {exc}; give a file written by bench_kernels.py --json") from exc
        if not isinstance(data, dict) or not isinstance(data.get("rows"), list) or "device" not in data:
            raise InputError(f"{path} is not bench_kernels.py --json output (no 'device' and 'rows'); "
                             "give a file written by bench_kernels.py --json")
        if device is not None and data["device"] != device:
            raise InputError(f"{path} was measured on {data['device']!r}, the side's other files on {device!r}; "
                             "compare files of one device call")
        device = data["device"]
        for row in data["rows"]:
            try:
                key, ms = tuple(row[k] for k in KEY), float(row["ms"])
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(f"{path}: a row lacks {exc}; give a file written by bench_kernels.py --json") from exc
            best[key] = min(ms, best.get(key, math.inf))
    return device, best


def compare(a_paths: list[str], b_paths: list[str], threshold: float) -> str:
    dev_a, a = load_side(a_paths)
    dev_b, b = load_side(b_paths)
    if dev_a != dev_b:
        raise InputError(f"side A was measured on {dev_a!r} and side B on {dev_b!r}; compare files of one device call")
    keys = [k for k in a if k in b]
    if not keys:
        raise InputError("the two sides have no (op, model, stage, batch, dtype) row in common")
    lines = [f"Two builds of our kernels, {dev_a}: A = {', '.join(a_paths)}; B = {', '.join(b_paths)} (minimum over "
             "each side's files). A development comparison: the official code is not timed here.",
             "", "| op | model | stage | batch | dtype | A ms | B ms | A / B | |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    logs: dict[str, list[float]] = {}
    for key in keys:
        ratio = a[key] / b[key]
        logs.setdefault(key[0], []).append(math.log(ratio))
        flag = "B faster" if ratio > 1 + threshold else "B slower" if ratio < 1 - threshold else ""
        lines.append("| " + " | ".join(str(v) for v in key) + f" | {a[key]:.4f} | {b[key]:.4f} | {ratio:.3f} | {flag} |")
    lines += ["", "Geometric mean of A / B: " + "; ".join(
        f"{op} {math.exp(sum(v) / len(v)):.3f} over {len(v)} rows" for op, v in logs.items())]
    only = sorted(set(a) ^ set(b))
    if only:
        lines.append(f"{len(only)} row(s) measured on one side only, left out.")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a", nargs="+", required=True, metavar="JSON", help="bench_kernels.py --json files of build A")
    ap.add_argument("--b", nargs="+", required=True, metavar="JSON", help="bench_kernels.py --json files of build B")
    ap.add_argument("--threshold", type=float, default=0.03,
                    help="relative change past which a row is flagged (default 0.03)")
    ap.add_argument("--md", help="also write the table here (through a temporary file beside it, then a rename)")
    args = ap.parse_args(argv)
    if not 0 <= args.threshold < 1:
        ap.error("--threshold must be in [0, 1)")
    try:
        table = compare(args.a, args.b, args.threshold)
    except InputError as exc:
        print(f"compare_kernels: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(table, end="")
    if args.md:
        atomic_write_bytes(Path(args.md), table.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
