#!/usr/bin/env python3
"""Mutation check for the compression, export, verification and checkpoint code (issue 15).

Applies single, plausible bugs one at a time to a temporary copy of the repository, runs the test
files that should catch each one, and prints a caught / survived table with the total time:

    python tests/mutation_check.py                 # every mutation (19: 287 s on the 2-core CI-like machine, loaded, 2026-12-01)
    python tests/mutation_check.py --list          # names, targets, the diffs and test files only (exit 1: one not found)
    python tests/mutation_check.py --only every-k-stage0,parity-fp32-tolerance-1000x
    python tests/mutation_check.py --tests both    # also run the older suites of each area
    python tests/mutation_check.py --tests existing  # only the older suites: what they alone catch

Not collected by pytest (the name does not start with ``test_``) and not run in CI. Exit status:
0 when every mutation was caught, 1 otherwise (survived, target not found, ambiguous, error).

Targets are located by what the code says, not by file and line: each mutation holds one or more
regular expressions, searched over every ``.py`` and ``.yaml`` file under ``exporter/`` and
``plugins/`` with comments and docstrings masked out. "target not found" (the code moved or
changed: update the pattern) and "ambiguous" (the pattern matched several places where one was
expected) are reported as outcomes of their own, never as caught. Tests run with one torch / BLAS
thread, without bytecode caches, stopping at the first failure (-x).
"""
from __future__ import annotations

import argparse
import dataclasses
import difflib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tokenize
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
SEARCH_ROOTS = ("exporter", "plugins")
SEARCH_SUFFIXES = (".py", ".yaml", ".yml")
COPY_IGNORE = shutil.ignore_patterns(".git", "__pycache__", ".pytest_cache", "build", "third_party", "out", "runs",
                                     "*.onnx", "*.engine", "*.plan", ".whl", ".trt", ".gl", "*.egg-info")

CAUGHT, SURVIVED, NOT_FOUND, AMBIGUOUS, ERROR, TIMEOUT = (
    "caught", "SURVIVED", "TARGET NOT FOUND", "AMBIGUOUS", "ERROR", "TIMEOUT")


# --------------------------------------------------------------------------- locating targets
def _masked_python(text: str) -> str:
    """``text`` with comments and docstrings (string statements) blanked, offsets unchanged."""
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))
    chars = list(text)

    def blank(start, end):
        a = starts[start[0] - 1] + start[1]
        b = starts[end[0] - 1] + end[1]
        for i in range(a, b):
            if chars[i] != "\n":
                chars[i] = " "

    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
    except (tokenize.TokenError, SyntaxError):
        return text
    skip = {tokenize.NL, tokenize.COMMENT}
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.COMMENT:
            blank(tok.start, tok.end)
        elif tok.type == tokenize.STRING:
            prev = next((t for t in reversed(tokens[:i]) if t.type not in skip), None)
            nxt = next((t for t in tokens[i + 1:] if t.type not in skip), None)
            statement_start = prev is None or prev.type in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT)
            if statement_start and (nxt is None or nxt.type in (tokenize.NEWLINE, tokenize.ENDMARKER)):
                blank(tok.start, tok.end)
    return "".join(chars)


def _masked_yaml(text: str) -> str:
    return re.sub(r"(^|\s)#[^\n]*", lambda m: m.group(1) + " " * (len(m.group(0)) - len(m.group(1))), text)


def masked(path: Path, text: str) -> str:
    return _masked_python(text) if path.suffix == ".py" else _masked_yaml(text)


@dataclasses.dataclass
class Pattern:
    """One way to find a target: ``regex`` over masked code; the match is replaced by
    ``replace`` (a re template) or by ``fn(match) -> str``."""

    regex: str
    replace: str | Callable[[re.Match], str]
    flags: int = re.M

    def substitute(self, match: re.Match) -> str:
        return self.replace(match) if callable(self.replace) else match.expand(self.replace)


@dataclasses.dataclass
class Mutation:
    name: str
    description: str
    tests: list[str]               # test files that must catch it (run first)
    patterns: list[Pattern]        # alternatives, tried in order; the first that matches is used
    existing: list[str] = dataclasses.field(default_factory=list)  # older suites of the area (--with-existing)
    occurrence: int | str = "one"  # "one": exactly one match expected; "all"; or an index into the matches


def _source_files(root: Path):
    for top in SEARCH_ROOTS:
        for path in sorted((root / top).rglob("*")):
            if path.suffix in SEARCH_SUFFIXES and "__pycache__" not in path.parts and path.is_file():
                yield path


def locate(mutation: Mutation, root: Path):
    """-> (status, {path: new_text}, [location strings]); status is None when the mutation applies."""
    for pattern in mutation.patterns:
        found = []
        for path in _source_files(root):
            text = path.read_text()
            for m in re.finditer(pattern.regex, masked(path, text), pattern.flags):
                # re-match on the real text at the same place so that replacements see the original
                real = re.compile(pattern.regex, pattern.flags).match(text, m.start())
                if real is not None and real.end() == m.end():
                    found.append((path, real, text))
        if not found:
            continue
        if mutation.occurrence == "one" and len(found) > 1:
            return AMBIGUOUS, {}, [_where(root, p, t, m) for p, m, t in found]
        if mutation.occurrence in ("one", "all"):
            chosen = found
        else:
            if mutation.occurrence >= len(found):
                return NOT_FOUND, {}, [f"only {len(found)} match(es) of the pattern, wanted #{mutation.occurrence + 1}"]
            chosen = [found[mutation.occurrence]]
        edits: dict[Path, str] = {}
        places = []
        for path, m, text in sorted(chosen, key=lambda f: (str(f[0]), -f[1].start())):
            current = edits.get(path, text)
            new = pattern.substitute(m)
            edits[path] = current[:m.start()] + new + current[m.end():]
            places.append(_where(root, path, text, m))
        for path, text in edits.items():
            if path.suffix == ".py":
                try:
                    compile(text, str(path), "exec")
                except SyntaxError as exc:
                    return ERROR, {}, [f"mutated {path.relative_to(root)} does not compile: {exc}"]
            if text == path.read_text():
                return ERROR, {}, [f"pattern matched {path.relative_to(root)} but changed nothing"]
        return None, edits, sorted(places)
    return NOT_FOUND, {}, ["no pattern matched under " + ", ".join(SEARCH_ROOTS)]


def _where(root: Path, path: Path, text: str, m: re.Match) -> str:
    return f"{path.relative_to(root)}:{text.count(chr(10), 0, m.start()) + 1}"


# --------------------------------------------------------------------------- the mutations
# 1e-4 as Python or YAML may write it: 1e-4, 1.0e-4, 1e-04, 0.0001 (PyYAML needs the dot for a float)
NUM_1E4 = r"(?:1(?:\.0*)?e-0*4|0\.0001)"
NUM_3E2 = r"(?:3(?:\.0*)?e-0*2|0\.03)"


def _tolerance(precision: str, number: str) -> str:
    """fp32: Tolerance(atol=1e-4, rtol=1e-4) in Python, or fp32: {atol: 1.0e-4, rtol: 1.0e-4} in YAML
    (plugins/contract/tolerances.yaml, ``model:`` section; the ``op:`` rows are keyed float32/float16)."""
    return (rf"(['\"]?{precision}['\"]?\s*[:=]\s*(?:\w*Tolerance\()?[\s{{]*['\"]?atol['\"]?\s*[:=]\s*){number}"
            rf"([\s,]*['\"]?rtol['\"]?\s*[:=]\s*){number}")


def _drop_ds(m: re.Match) -> str:
    text = m.group(0)
    new = re.sub(r"\s*['\"]Ds['\"]\s*,", "", text, count=1)
    return new if new != text else re.sub(r",\s*['\"]Ds['\"]", "", text, count=1)


MUTATIONS = [
    # ---- the five gaps of issue 15
    Mutation("parity-fp32-tolerance-1000x", "float32 parity tolerance 1e-4 -> 1e-1",
             ["tests/test_export_contract_gaps.py"],
             [Pattern(_tolerance("fp32", NUM_1E4), r"\g<1>1.0e-1\g<2>1.0e-1")],
             existing=["tests/test_export.py", "tests/test_cli.py"]),
    Mutation("calibration-vmamba-bilinear", "VMamba calibration resize bicubic -> bilinear",
             ["tests/test_calibration_golden.py"],
             # the pretrained config's interpolation (exporter/models/registry.py PretrainedCfg, whose
             # default VMamba's default_cfg takes; MedMamba sets its own "bilinear")
             [Pattern(r"(\binterpolation['\"]?\s*(?::\s*\w+\s*)?[:=]\s*)['\"]bicubic['\"]", r'\1"bilinear"'),
              Pattern(r"(['\"]resize-crop['\"][^\n]{0,160}?)['\"]bicubic['\"]", r'\1"bilinear"')],
             existing=["tests/test_selection.py"]),
    Mutation("greedy-stops-at-first-over-budget", "budgeted greedy: break at the first layer over budget instead "
             "of skipping it", ["tests/test_selection_documented.py"],
             [Pattern(r"^(?P<i>[ \t]*)if (?P<cond>[^\n]*max_drop[^\n]*):\n"
                      r"(?P<body>(?P=i)[ \t]+(?:chosen\s*=\s*trial|chosen\.append\(\w+\))[^\n]*\n)",
                      r"\g<i>if \g<cond>:\n\g<body>\g<i>else:\n\g<i>    break\n")],
             existing=["tests/test_selection.py"]),
    Mutation("fp16-Ds-not-float32", "Ds dropped from the float32-always scan parameters of fp16 exports",
             ["tests/test_export_contract_gaps.py"],
             # cast_model (exporter/models/ss2d.py) walks FLOAT32_SCAN_INPUTS: leave Ds out of that walk,
             # so it is cast with the rest of the model; or a literal list of names without "Ds"
             [Pattern(r"(\bfor\s+(\w+)\s+in\s+FLOAT32_SCAN_INPUTS\b)(?=\s*[\]):])", r"\1 if \2 != 'Ds'"),
              Pattern(r"FP32\w*\s*=\s*[\(\[][^\)\]]*['\"]Ds['\"][^\)\]]*[\)\]]", _drop_ds)],
             existing=["tests/test_export.py"]),
    Mutation("every-k-stage0", "every:k no longer excludes stage 0",
             ["tests/test_every_k_rule.py"],
             [Pattern(r"\s+and\s+stage_of\(\s*\w+\s*\)\s*!=\s*0", ""),
              Pattern(r"^[ \t]*if\s+stage_of\(\s*\w+\s*\)\s*==\s*0\s*:\s*\n[ \t]*continue[ \t]*\n", "")],
             existing=["tests/test_compress.py"]),
    # ---- the two "also weak" of issue 15
    Mutation("pickle-retry-full-unpickling", "the retry with harmless stand-ins unpickles without weights_only",
             ["tests/test_pickle_defence_layers.py"],
             [Pattern(r"(safe_globals\((?P<a>\w+)\)[\s\S]{0,240}?weights_only\s*=\s*)True", r"\1not \g<a>")],
             existing=["tests/test_checkpoint.py"]),
    Mutation("softplus-threshold-10-ref#1", "softplus pass-through at 10 instead of 20 (PyTorch reference, 1st site)",
             ["tests/test_softplus_threshold.py"],
             [Pattern(r"F\.softplus\((?P<arg>[^()\n]*(?:\([^()\n]*\)[^()\n]*)*)\)", r"F.softplus(\g<arg>, threshold=10.0)")],
             existing=["tests/test_reference.py"], occurrence=0),
    Mutation("softplus-threshold-10-ref#2", "softplus pass-through at 10 instead of 20 (PyTorch reference, 2nd site)",
             ["tests/test_softplus_threshold.py"],
             [Pattern(r"F\.softplus\((?P<arg>[^()\n]*(?:\([^()\n]*\)[^()\n]*)*)\)", r"F.softplus(\g<arg>, threshold=10.0)")],
             existing=["tests/test_reference.py"], occurrence=1),
    Mutation("softplus-threshold-10-onnx", "softplus pass-through at 10 instead of 20 (ONNX function body)",
             ["tests/test_softplus_threshold.py"],
             [Pattern(r"(['\"]Greater['\"][^\n]{0,120}?)\b20(?:\.0*)?\b", r"\g<1>10.0")],
             existing=["tests/test_functions.py"]),
    # ---- relatives, added by this check
    Mutation("parity-fp16-tolerance-10x", "float16 parity tolerance 3e-2 -> 3e-1",
             ["tests/test_export_contract_gaps.py"],
             [Pattern(_tolerance("fp16", NUM_3E2), r"\g<1>3.0e-1\g<2>3.0e-1")],
             existing=["tests/test_cli.py"]),
    Mutation("fp16-scan-params-rounded", "fp16 export keeps the scan parameters float32 but rounded through float16",
             ["tests/test_export_contract_gaps.py"],
             # cast_model keeps float32 copies taken before model.to(dtype) and puts them back: put back
             # the parameter converted to float32 after the cast instead (its values rounded to fp16)
             [Pattern(r"^(?P<i>[ \t]*)(?P<p>\w+)\.data\s*=\s*(?P<d>\w+)[ \t]*$",
                      r"\g<i>\g<p>.data = \g<p>.data.float()"),
              Pattern(r"(\.data\s*=\s*\w+\.data)\.float\(\)", r"\1.half().float()")],
             existing=["tests/test_export.py"]),
    Mutation("contract-Ds-not-float32", "the op contract lists Ds as type T instead of float32 (both scan ops)",
             ["tests/test_export_contract_gaps.py"],
             [Pattern(r"(\{\s*name:\s*Ds\s*,[^\n}]*?\bdtype:\s*)float32\b", r"\1T")],
             existing=["tests/test_contract.py", "tests/test_export.py"], occurrence="all"),
    Mutation("every-k-counts-from-0", "every:k numbers blocks from 0 instead of 1",
             ["tests/test_every_k_rule.py"],
             [Pattern(r"(enumerate\([^()\n]*start\s*=\s*)1(\)[^\n]*%)", r"\g<1>0\2")],
             existing=["tests/test_compress.py"]),
    Mutation("calibration-crop-floor", "centre-crop offset floor((size - R) / 2) instead of torchvision's round",
             ["tests/test_calibration_golden.py"],
             [Pattern(r"int\(\s*round\(\s*\((?P<e>[^()\n]*)\)\s*/\s*2(?:\.0)?\s*\)\s*\)", r"((\g<e>) // 2)")],
             existing=["tests/test_selection.py"], occurrence="all"),
    Mutation("calibration-imagenet-mean-swapped", "ImageNet mean of channels 1 and 2 swapped",
             ["tests/test_calibration_golden.py"],
             [Pattern(r"([\[(]\s*)0\.485(\s*,\s*)0\.456(\s*,\s*)0\.406", r"\g<1>0.485\g<2>0.406\g<3>0.456")],
             existing=["tests/test_selection.py"]),
    Mutation("calibration-no-resize-margin", "VMamba resizes the shorter side to R instead of int(256 / 224 * R)",
             ["tests/test_calibration_golden.py"],
             # exporter/preprocess.py: resize_size = int(resolution / crop_pct) (crop_pct 224/256)
             [Pattern(r"int\(\s*(\w+)\s*/\s*(?:\w+\.)*crop_pct\b[^()\n]*\)", r"\1"),
              Pattern(r"int\(\s*256\s*/\s*224\s*\*\s*(\w+)\s*\)", r"\1")],
             existing=["tests/test_selection.py"]),
    Mutation("greedy-order-reversed", "greedy walk in decreasing instead of increasing impact",
             ["tests/test_selection_documented.py"],
             [Pattern(r"(sorted\([^\n]*key\s*=\s*lambda\s+(\w+)\s*:\s*\(\s*)(\w*impact\w*\[\2\])", r"\1-\3")],
             existing=["tests/test_selection.py"]),
    Mutation("pickle-static-scan-blind-zip", "the static pickle scan sees no global in zip checkpoints",
             ["tests/test_pickle_defence_layers.py"],
             [Pattern(r"(?:torch\.serialization\.)?get_unsafe_globals_in_checkpoint\([^()\n]*\)", "[]")],
             existing=["tests/test_checkpoint.py"]),
    Mutation("pickle-static-scan-blind-legacy", "the static pickle scan sees no global in legacy / plain pickles",
             ["tests/test_pickle_defence_layers.py"],
             [Pattern(r"pickletools\.genops\([^()\n]*\)", "iter(())")],
             existing=["tests/test_checkpoint.py"]),
]


# --------------------------------------------------------------------------- running
def _env(root: Path) -> dict:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(root), PYTHONDONTWRITEBYTECODE="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1")
    fixtures = REPO.parent / "shared" / "fixtures" / "official"
    if "VM_FIXTURES" not in env and fixtures.is_dir():
        env["VM_FIXTURES"] = str(fixtures)  # the copy lives elsewhere: point its tests at the real fixtures
    return env


def run_tests(root: Path, files: list[str], timeout: float) -> tuple[str, float, str]:
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *files]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=root, env=_env(root), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return TIMEOUT, time.perf_counter() - t0, f"more than {timeout:.0f} s"
    seconds = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    failed = [ln.split(" - ")[0] for ln in out.splitlines() if ln.startswith(("FAILED ", "ERROR "))]
    if proc.returncode == 0:
        return SURVIVED, seconds, "all passed"
    if proc.returncode == 1:
        return CAUGHT, seconds, failed[0] if failed else "tests failed"
    tail = " | ".join(out.strip().splitlines()[-3:])
    return ERROR, seconds, f"pytest exit {proc.returncode}: {failed[0] if failed else tail[:200]}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated mutation names")
    ap.add_argument("--list", action="store_true", help="show mutations, where they apply, and their tests")
    ap.add_argument("--tests", choices=["new", "existing", "both"], default="new",
                    help="new: the tests written for these gaps (default); existing: only the older suites of "
                         "each area (shows what they miss); both")
    ap.add_argument("--timeout", type=float, default=900, help="seconds per test run (default 900)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary copy")
    args = ap.parse_args(argv)

    def test_files(m: Mutation) -> list[str]:
        return {"new": m.tests, "existing": m.existing, "both": m.tests + m.existing}[args.tests]

    chosen = MUTATIONS
    if args.only:
        names = [n.strip() for n in args.only.split(",")]
        unknown = sorted(set(names) - {m.name for m in MUTATIONS})
        if unknown:
            ap.error(f"unknown mutation(s) {unknown}; known: {[m.name for m in MUTATIONS]}")
        chosen = [m for m in MUTATIONS if m.name in names]

    start = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="vm-mutation-"))
    root = tmp / REPO.name
    shutil.copytree(REPO, root, ignore=COPY_IGNORE)
    try:
        if args.list:
            unapplied = 0
            for m in chosen:
                status, edits, places = locate(m, root)
                unapplied += status is not None
                print(f"{m.name}: {m.description}\n    {status or 'applies at'} {', '.join(places)}\n"
                      f"    tests: {' '.join(test_files(m))}")
                for path, text in edits.items():
                    diff = difflib.unified_diff(path.read_text().splitlines(), text.splitlines(), lineterm="", n=0)
                    print("\n".join("      " + line for line in list(diff)[2:]))
            if unapplied:
                print(f"\n{unapplied} of {len(chosen)} mutation(s) do not apply: update their patterns")
            return 1 if unapplied else 0
        files = sorted({f for m in chosen for f in test_files(m)})
        print(f"baseline: {len(files)} test files on the unmodified copy ...", flush=True)
        status, seconds, detail = run_tests(root, files, args.timeout)
        if status != SURVIVED:
            print(f"baseline FAILED ({status}, {detail}): fix the tests before checking mutations")
            return 1
        print(f"baseline passes ({seconds:.0f} s)\n", flush=True)
        rows = []
        for m in chosen:
            status, edits, places = locate(m, root)
            seconds, detail = 0.0, "; ".join(places)
            if status is None:
                originals = {p: p.read_text() for p in edits}
                try:
                    for p, text in edits.items():
                        p.write_text(text)
                    status, seconds, detail = run_tests(root, test_files(m), args.timeout)
                finally:
                    for p, text in originals.items():
                        p.write_text(text)
            rows.append((m.name, status, seconds, ", ".join(places) if status != NOT_FOUND else "-", detail))
            print(f"  {m.name:36s} {status:16s} {seconds:6.1f} s  {rows[-1][3]}  [{detail}]", flush=True)
        total = time.perf_counter() - start
        width = max(len(r[0]) for r in rows)
        print(f"\n{'mutation':{width}s}  {'outcome':16s}  {'time':>7s}  where / first failing test")
        print("-" * (width + 60))
        for name, status, seconds, where, detail in rows:
            print(f"{name:{width}s}  {status:16s}  {seconds:6.1f}s  {where}")
            print(f"{'':{width}s}  {'':16s}  {'':7s}  -> {detail}")
        counts = {s: sum(r[1] == s for r in rows) for s in (CAUGHT, SURVIVED, NOT_FOUND, AMBIGUOUS, ERROR, TIMEOUT)}
        summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
        print(f"\n{len(rows)} mutations: {summary}; total {total:.0f} s wall (baseline included)")
        return 0 if counts[CAUGHT] == len(rows) else 1
    finally:
        if args.keep:
            print(f"copy kept at {root}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
