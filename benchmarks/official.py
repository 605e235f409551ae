"""The official VMamba code (github.com/MzeroMiko/VMamba), built and imported for same-process benchmarks.

Nothing of the official code is part of this repository: the user points at a checkout of it
(``--official PATH``; ``third_party/VMamba`` is the git-ignored place the device scripts expect) and
this module

1. copies the files it needs (``OFFICIAL_FILES``) into a scratch folder (default
   ``build/official-oflex``, git-ignored), writing a file only when its content changed so that a
   second run on the same machine reuses the compiled extension;
2. applies, in that copy only, the fixes the official sources need on CUDA 13:
   ``cub::LaneId()`` -> a ``%laneid`` PTX read and ``cub::CTA_SYNC()`` -> ``__syncthreads()`` in
   ``reverse_scan.cuh`` (both helpers were removed from CUB), and a fallback for ``setup.py``'s
   ``from wheel.bdist_wheel import bdist_wheel`` (gone from recent ``wheel`` releases);
3. builds the ``selective_scan_cuda_oflex`` extension for one architecture (default sm_90):
   - ``build="forward"`` (default, fastest): ``torch.utils.cpp_extension.load`` on the official
     binding (``selective_scan_oflex.cpp``) and the official forward kernel header, instantiated only
     for the two input types the benchmarks use (float32 and float16 in, float32 out: what
     ``forward_corev2`` asks for, ``oflex=True``); the other instantiations the binding refers to
     (bfloat16, half out, the whole backward) are compiled as stubs that raise. Sources compile in
     parallel (``MAX_JOBS``);
   - ``build="setup"``: the official ``setup.py build_ext --inplace`` in the patched copy, forward and
     backward, every dtype (slower; the build ANCHORS.md describes);
4. imports the official ``classification/models`` from the copy as a package of its own, with the
   extension registered under the name the official code imports (``selective_scan_cuda_oflex``),
   and with stand-ins for ``fvcore`` (only used by the official FLOP counter) and, where it is not
   installed, ``timm`` (``DropPath`` and ``trunc_normal_``).

``OfficialCode`` then gives: the official SS2D core for one stage shape (``core``), the oflex scan alone
(``scan``) and the official end-to-end models by factory name (``model``).

Command line (no GPU needed for ``prepare``):

    python benchmarks/official.py prepare --official /path/to/VMamba [--dest third_party/VMamba]
      (from a bare git mirror: git --git-dir MIRROR archive HEAD classification/models
       kernels/selective_scan LICENSE | tar -x -C /tmp/vmamba, then --official /tmp/vmamba)
    python benchmarks/official.py build --official third_party/VMamba [--work-dir DIR] [--build forward|setup]

Exit codes: 0 success, 2 bad input (checkout missing or incomplete), 3 the extension did not build,
5 the official modules did not import.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CHECKOUT = REPO / "third_party" / "VMamba"
DEFAULT_WORK_DIR = REPO / "build" / "official-oflex"

MODELS_DIR = "classification/models"
KERNEL_DIR = "kernels/selective_scan"
SCAN_SRC = f"{KERNEL_DIR}/csrc/selective_scan"
# What the benchmarks need from an official checkout: a folder entry takes the whole folder.
OFFICIAL_FILES = (
    f"{MODELS_DIR}/vmamba.py",
    f"{MODELS_DIR}/csm_triton.py",
    f"{MODELS_DIR}/csms6s.py",
    f"{MODELS_DIR}/mamba2/",
    f"{KERNEL_DIR}/setup.py",
    f"{KERNEL_DIR}/csrc/",
)
OPTIONAL_FILES = ("LICENSE", "README.md")
REVERSE_SCAN = f"{SCAN_SRC}/reverse_scan.cuh"
OFLEX_BINDING = f"{SCAN_SRC}/cusoflex/selective_scan_oflex.cpp"
OFLEX_FWD_HEADER = "selective_scan_fwd_kernel_oflex.cuh"
EXTENSION_NAME = "selective_scan_cuda_oflex"
PACKAGE_NAME = "vmamba_official_models"

# nvcc flags of the official setup.py that change generated code (its -v/--threads only change logs/speed)
OFFICIAL_NVCC_FLAGS = [
    "-O3", "-std=c++17",
    "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
    "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
    "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math", "-lineinfo",
]
# (input_t, output_t) of selective_scan_fwd_cuda<1, input_t, float, output_t> that the "forward" build
# compiles for real, and the ones the binding also refers to (compiled as raising stubs).
FORWARD_BUILT = (("float", "float"), ("at::Half", "float"))
FORWARD_STUBBED = (("at::BFloat16", "float"), ("at::Half", "at::Half"), ("at::BFloat16", "at::BFloat16"))
BACKWARD_STUBBED = (("float", "float"), ("at::Half", "float"), ("at::BFloat16", "float"),
                    ("at::Half", "at::Half"), ("at::BFloat16", "at::BFloat16"))


class OfficialCodeError(RuntimeError):
    """The official checkout is missing, incomplete or could not be patched (exit code 2)."""


class OfficialBuildError(RuntimeError):
    """The oflex extension did not build (exit code 3) or the official modules did not import."""


class OfficialImportError(OfficialBuildError):
    """The official modules did not import, e.g. a package they need is missing (exit code 5)."""


def _log(msg: str) -> None:
    print(f"[official] {msg}", flush=True)


# --------------------------------------------------------------------------- checkout and copy
def check_checkout(root: str | os.PathLike) -> Path:
    """The checkout folder, after checking that every needed file is there."""
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise OfficialCodeError(
            f"official VMamba checkout not found at {root}: clone github.com/MzeroMiko/VMamba and pass "
            f"its folder with --official PATH (or copy the needed files with "
            f"'python benchmarks/official.py prepare --official CLONE --dest {DEFAULT_CHECKOUT}')")
    missing = [rel for rel in OFFICIAL_FILES if not (root / rel.rstrip("/")).exists()]
    if missing:
        raise OfficialCodeError(
            f"{root} is not a complete official VMamba checkout: missing {', '.join(missing)} "
            f"(point --official at the repository root, the folder holding classification/ and kernels/)")
    for rel in (REVERSE_SCAN, OFLEX_BINDING, f"{SCAN_SRC}/cusoflex/{OFLEX_FWD_HEADER}"):
        if not (root / rel).is_file():
            raise OfficialCodeError(f"{root} lacks {rel}: this layout of the official code is not supported")
    return root


def needed_files(root: Path) -> list[str]:
    """Relative paths of every file ``OFFICIAL_FILES`` (and the optional ones present) names."""
    out = []
    for rel in OFFICIAL_FILES:
        path = root / rel.rstrip("/")
        if path.is_dir():
            out += sorted(str(p.relative_to(root)) for p in path.rglob("*")
                          if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
        else:
            out.append(rel)
    out += [rel for rel in OPTIONAL_FILES if (root / rel).is_file()]
    return out


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write ``data`` to ``path`` (temp file beside it, then rename) unless it already holds it."""
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
    return True


def copy_needed(root: str | os.PathLike, dest: str | os.PathLike) -> list[str]:
    """Copy the needed official files (unpatched) from ``root`` into ``dest``; returns them."""
    root = check_checkout(root)
    dest = Path(dest).resolve()
    if dest == root:
        raise OfficialCodeError(f"source and destination are the same folder: {root}")
    files = needed_files(root)
    for rel in files:
        write_if_changed(dest / rel, (root / rel).read_bytes())
    return files


# --------------------------------------------------------------------------- CUDA 13 patches
LANE_ID_HELPER = (
    "\n// added by vm-deploy benchmarks/official.py: CUB removed its lane-id helper in CUDA 13\n"
    "__device__ __forceinline__ unsigned int vmd_lane_id() {\n"
    "    unsigned int lane;\n"
    "    asm volatile(\"mov.u32 %0, %%laneid;\" : \"=r\"(lane));\n"
    "    return lane;\n"
    "}\n"
)
_LANE_ID = re.compile(r"\bcub::LaneId\s*\(\s*\)")
_CTA_SYNC = re.compile(r"\bcub::CTA_SYNC\s*\(\s*\)")
_BDIST_IMPORT = re.compile(r"^from wheel\.bdist_wheel import bdist_wheel as (\w+)[ \t]*$", re.M)


def patch_reverse_scan(text: str) -> tuple[str, int]:
    """Replace the two CUB helpers CUDA 13 removed; returns (text, number of replacements).

    The lane-id helper is defined after the last ``#include`` (before any use)."""
    text, n_lane = _LANE_ID.subn("vmd_lane_id()", text)
    text, n_sync = _CTA_SYNC.subn("__syncthreads()", text)
    if n_lane and "vmd_lane_id() {" not in text:
        includes = list(re.finditer(r"^[ \t]*#include[^\n]*\n", text, re.M))
        if not includes:
            raise OfficialCodeError("reverse_scan.cuh: cub::LaneId() is used but there is no #include to place "
                                    "the replacement after; this version of the file is not supported")
        at = includes[-1].end()
        text = text[:at] + LANE_ID_HELPER + text[at:]
    return text, n_lane + n_sync


def patch_setup_py(text: str) -> tuple[str, int]:
    """Make ``from wheel.bdist_wheel import bdist_wheel as X`` fall back to setuptools' own command."""
    def fallback(m: re.Match) -> str:
        name = m.group(1)
        return ("try:  # patched by vm-deploy benchmarks/official.py: wheel.bdist_wheel is gone from recent wheel\n"
                f"    from wheel.bdist_wheel import bdist_wheel as {name}\n"
                "except ImportError:\n"
                "    try:\n"
                f"        from setuptools.command.bdist_wheel import bdist_wheel as {name}\n"
                "    except ImportError:\n"
                "        from setuptools import Command as _Command\n"
                f"        class {name}(_Command):\n"
                "            user_options = []\n"
                "            def initialize_options(self): pass\n"
                "            def finalize_options(self): pass\n"
                "            def run(self): raise SystemExit('bdist_wheel is unavailable here')\n")
    return _BDIST_IMPORT.subn(fallback, text)


def prepare_copy(root: str | os.PathLike, work_dir: str | os.PathLike = DEFAULT_WORK_DIR) -> Path:
    """Copy the needed files into ``work_dir/src`` and apply the CUDA 13 fixes there; returns ``src``."""
    root = check_checkout(root)
    src = Path(work_dir).resolve() / "src"
    files = needed_files(root)
    for rel in files:
        data = (root / rel).read_bytes()
        if rel == REVERSE_SCAN:
            text, n = patch_reverse_scan(data.decode())
            if n == 0 and ("LaneId" in text or "CTA_SYNC" in text):
                raise OfficialCodeError(f"{rel}: found LaneId/CTA_SYNC in a form the patch does not recognise")
            data = text.encode()
        elif rel == f"{KERNEL_DIR}/setup.py":
            data = patch_setup_py(data.decode())[0].encode()
        write_if_changed(src / rel, data)
    return src


# --------------------------------------------------------------------------- generated build sources
def _instantiation(kind: str, input_t: str, output_t: str) -> str:
    params = "SSMParamsBase" if kind == "fwd" else "SSMParamsBwd"
    return f"selective_scan_{kind}_cuda<1, {input_t}, float, {output_t}>({params} &params, cudaStream_t stream)"


def forward_sources(gen_dir: str | os.PathLike) -> list[Path]:
    """Write this project's small build files for the forward-only oflex build; returns their paths.

    One .cu per real instantiation (they compile in parallel) and one .cpp with raising stubs for the
    instantiations the official binding refers to but the benchmarks never call."""
    gen = Path(gen_dir)
    paths = []
    for input_t, output_t in FORWARD_BUILT:
        tag = re.sub(r"\W", "", input_t.replace("at::", "")).lower()
        path = gen / f"oflex_fwd_{tag}_{output_t.replace('at::', '').lower()}.cu"
        write_if_changed(path, (
            "// generated by vm-deploy benchmarks/official.py: one instantiation of the official forward\n"
            f"#include \"{OFLEX_FWD_HEADER}\"\n\n"
            f"template void {_instantiation('fwd', input_t, output_t)};\n").encode())
        paths.append(path)
    lines = [
        "// generated by vm-deploy benchmarks/official.py: instantiations the official binding refers to",
        "// but the benchmarks never call; each raises instead of running.",
        "#include <cstdint>",
        "#include <cuda_runtime_api.h>",
        "#include <c10/util/BFloat16.h>",
        "#include <c10/util/Exception.h>",
        "#include <c10/util/Half.h>",
        "#include \"selective_scan_oflex.h\"",
        "",
        "template <int knrows, typename input_t, typename weight_t, typename output_t>",
        "void selective_scan_fwd_cuda(SSMParamsBase &params, cudaStream_t stream);",
        "template <int knrows, typename input_t, typename weight_t, typename output_t>",
        "void selective_scan_bwd_cuda(SSMParamsBwd &params, cudaStream_t stream);",
        "",
    ]
    for kind, combos in (("fwd", FORWARD_STUBBED), ("bwd", BACKWARD_STUBBED)):
        for input_t, output_t in combos:
            lines += [f"template <> void {_instantiation(kind, input_t, output_t)} {{",
                      f"    TORCH_CHECK(false, \"selective_scan_{kind}_cuda<{input_t}, {output_t}> is not built by "
                      "vm-deploy's forward-only oflex build (use build='setup')\");",
                      "}"]
    path = gen / "oflex_not_built.cpp"
    write_if_changed(path, ("\n".join(lines) + "\n").encode())
    return paths + [path]


# --------------------------------------------------------------------------- build
def _arch_env(arch: str, jobs: int | None) -> dict:
    return {"TORCH_CUDA_ARCH_LIST": arch, "MAX_JOBS": str(jobs or os.cpu_count() or 4)}


class _Env:
    """Set environment variables for a block, then restore them."""

    def __init__(self, values: dict):
        self.values, self.saved = values, {}

    def __enter__(self):
        for k, v in self.values.items():
            self.saved[k] = os.environ.get(k)
            os.environ[k] = v

    def __exit__(self, *exc):
        for k, v in self.saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def build_oflex(src: Path, work_dir: Path, build: str = "forward", arch: str = "9.0", jobs: int | None = None,
                verbose: bool = False) -> types.ModuleType:
    """Build (or reuse) the oflex extension from the patched copy ``src``; returns the imported module."""
    from torch.utils import cpp_extension

    if cpp_extension.CUDA_HOME is None:
        raise OfficialBuildError("no CUDA toolkit found (CUDA_HOME unset and no nvcc on PATH): the oflex "
                                 "extension needs nvcc")
    t0 = time.perf_counter()
    kernel_dir = src / KERNEL_DIR
    if build == "forward":
        scan = src / SCAN_SRC
        sources = [src / OFLEX_BINDING] + forward_sources(work_dir / "gen")
        build_dir = work_dir / f"ext-forward-sm{arch.replace('.', '')}"
        build_dir.mkdir(parents=True, exist_ok=True)
        lock = build_dir / "lock"  # left behind by a build that was killed; torch would wait on it forever
        if lock.exists():
            _log(f"removing a stale build lock {lock}")
            lock.unlink()
        try:
            with _Env(_arch_env(arch, jobs)):
                module = cpp_extension.load(
                    name=EXTENSION_NAME, sources=[str(s) for s in sources],
                    extra_cflags=["-O3"], extra_cuda_cflags=list(OFFICIAL_NVCC_FLAGS),
                    extra_include_paths=[str(scan), str(scan / "cusoflex")],
                    build_directory=str(build_dir), verbose=verbose)
        except Exception as exc:
            raise OfficialBuildError(f"building the oflex extension (forward-only) in {build_dir} failed: "
                                     f"{type(exc).__name__}: {exc}") from exc
    elif build == "setup":
        cmd = [sys.executable, "setup.py", "build_ext", "--inplace"]
        with _Env(_arch_env(arch, jobs)):
            proc = subprocess.run(cmd, cwd=kernel_dir, capture_output=not verbose, text=True)
        if proc.returncode != 0:
            tail = (proc.stdout or "")[-3000:] + (proc.stderr or "")[-3000:]
            raise OfficialBuildError(f"'{' '.join(cmd)}' in {kernel_dir} failed (exit {proc.returncode}):\n{tail}")
        built = sorted(kernel_dir.glob(f"{EXTENSION_NAME}*.so"))
        if not built:
            raise OfficialBuildError(f"setup.py finished but left no {EXTENSION_NAME}*.so in {kernel_dir}")
        spec = importlib.util.spec_from_file_location(EXTENSION_NAME, built[0])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        raise ValueError(f"build must be 'forward' or 'setup', got {build!r}")
    sys.modules[EXTENSION_NAME] = module  # the name csms6s.py imports
    _log(f"oflex extension ({build}, sm_{arch.replace('.', '')}) ready in {time.perf_counter() - t0:.1f} s: "
         f"{getattr(module, '__file__', module)}")
    return module


# --------------------------------------------------------------------------- import
def _stand_ins() -> dict[str, types.ModuleType]:
    """Modules the official vmamba.py imports at the top but the benchmarks do not use, for those
    missing here: fvcore (its FLOP counter) and timm (DropPath, trunc_normal_)."""
    from torch import nn

    made = {}
    if importlib.util.find_spec("fvcore") is None:
        fvcore, fvnn = types.ModuleType("fvcore"), types.ModuleType("fvcore.nn")

        def unavailable(*_a, **_k):
            raise RuntimeError("fvcore is not installed: the official FLOP counter is unavailable")
        for name in ("FlopCountAnalysis", "flop_count_str", "flop_count", "parameter_count"):
            setattr(fvnn, name, unavailable)
        fvcore.nn = fvnn
        made.update({"fvcore": fvcore, "fvcore.nn": fvnn})
    if importlib.util.find_spec("timm") is None:
        timm, models, layers = (types.ModuleType(n) for n in ("timm", "timm.models", "timm.models.layers"))

        class DropPath(nn.Module):
            """Stochastic depth per sample (identity in eval mode, which is all a benchmark uses)."""

            def __init__(self, drop_prob: float = 0.0):
                super().__init__()
                self.drop_prob = float(drop_prob)

            def forward(self, x):
                if self.drop_prob == 0.0 or not self.training:
                    return x
                keep = 1.0 - self.drop_prob
                mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
                return x * mask / keep

        layers.DropPath = DropPath
        layers.trunc_normal_ = nn.init.trunc_normal_
        timm.models, models.layers = models, layers
        made.update({"timm": timm, "timm.models": models, "timm.models.layers": layers})
    return made


def use_torch_cross_scan(models: types.ModuleType) -> types.ModuleType:
    """Let the imported official models run on a CPU: their ``cross_scan_fn`` / ``cross_merge_fn``
    open a ``torch.cuda.device`` context even for CPU tensors, which fails without CUDA. Replaces
    those two entry points, in the imported module only, by calls of the same official
    ``CrossScanF`` / ``CrossMergeF`` (its pure-PyTorch cross-scan) without that context; nothing
    else of the official arithmetic is touched and no official file is changed. Returns ``models``."""
    csm = sys.modules[f"{PACKAGE_NAME}.csm_triton"]

    def cross_scan_cpu(x, in_channel_first=True, out_channel_first=True, one_by_one=False, scans=0, force_torch=False):
        return csm.CrossScanF.apply(x, in_channel_first, out_channel_first, one_by_one, scans)

    def cross_merge_cpu(y, in_channel_first=True, out_channel_first=True, one_by_one=False, scans=0, force_torch=False):
        return csm.CrossMergeF.apply(y, in_channel_first, out_channel_first, one_by_one, scans)

    models.cross_scan_fn, models.cross_merge_fn = cross_scan_cpu, cross_merge_cpu
    return models


def import_models(src: Path) -> types.ModuleType:
    """Import the official ``vmamba.py`` from the copy ``src`` as ``vmamba_official_models.vmamba``.

    The package is assembled under ``src/../python`` from the copied files with an empty
    ``__init__.py`` (the official one imports training-only modules)."""
    pkg_root = src.parent / "python"
    pkg = pkg_root / PACKAGE_NAME
    models = src / MODELS_DIR
    for path in sorted(models.rglob("*.py")):
        write_if_changed(pkg / path.relative_to(models), path.read_bytes())
    write_if_changed(pkg / "__init__.py", b'"""The official VMamba classification/models, copied by vm-deploy."""\n')
    if (pkg / "mamba2").is_dir():
        write_if_changed(pkg / "mamba2" / "__init__.py", (models / "mamba2" / "__init__.py").read_bytes()
                         if (models / "mamba2" / "__init__.py").is_file() else b"")
    if EXTENSION_NAME not in sys.modules:
        import warnings
        warnings.warn(f"{EXTENSION_NAME} is not loaded: the official models will use their slow fallbacks")
    stand_ins = {k: v for k, v in _stand_ins().items() if k not in sys.modules}
    sys.modules.update(stand_ins)
    sys.path.insert(0, str(pkg_root))
    try:
        module = importlib.import_module(f"{PACKAGE_NAME}.vmamba")
    except Exception as exc:
        raise OfficialImportError(f"importing the official vmamba.py from {pkg} failed: {type(exc).__name__}: "
                                  f"{exc} (it needs torch, triton, einops; fvcore and timm are stood in for "
                                  f"when missing)") from exc
    finally:
        sys.path.remove(str(pkg_root))
        for name in stand_ins:
            sys.modules.pop(name, None)
    return module


# --------------------------------------------------------------------------- what the benchmarks call
class OfficialCore:
    """The official SS2D core at one stage shape: ``forward_corev2`` of an official SS2D (forward type
    ``v05_noz``: Triton cross-scan, x_proj/dt_proj as grouped conv1d, oflex scan, Triton cross-merge)
    with ``out_norm`` set to Identity, i.e. everything between the depthwise conv/act and out_norm.

    ``self(x)``: x (B, D, H, W) -> (B, D, H, W) in x's dtype. ``weights()``: the operands of this
    project's SS2DScan op in its order, the same tensors the official core uses."""

    def __init__(self, models: types.ModuleType, d_inner: int, dt_rank: int, d_state: int, device="cuda"):
        from torch import nn

        self.ss2d = models.SS2D(
            d_model=d_inner, d_state=d_state, ssm_ratio=1.0, dt_rank=int(dt_rank), act_layer=nn.SiLU,
            d_conv=3, conv_bias=False, dropout=0.0, initialize="v0", forward_type="v05_noz",
            channel_first=True).to(device).eval()
        built = (self.ss2d.d_inner, self.ss2d.dt_rank, self.ss2d.d_state)
        if built != (d_inner, dt_rank, d_state):
            raise OfficialBuildError(f"official SS2D built with (D, R, N) = {built}, asked for "
                                     f"{(d_inner, dt_rank, d_state)}")
        self.ss2d.out_norm = nn.Identity()  # forward_corev2 reads self.out_norm at call time
        self.forward_core = self.ss2d.forward_core
        self.shape = (d_inner, dt_rank, d_state)

    def __call__(self, x):
        return self.forward_core(x)

    def weights(self) -> tuple:
        m = self.ss2d
        return (m.x_proj_weight.detach(), m.dt_projs_weight.detach(), m.dt_projs_bias.detach(),
                m.A_logs.detach(), m.Ds.detach())

    def scan_inputs(self, x) -> tuple:
        """The exact operands this core passes to the oflex scan for input ``x`` (call under the same
        autocast state as the timed core): (u, delta, A, B, C, D, delta_bias)."""
        import torch

        m = self.ss2d
        setattr(m, "__DEBUG__", True)  # forward_corev2 then keeps its intermediates in m.__data__
        try:
            with torch.no_grad():
                self.forward_core(x)
            data = getattr(m, "__data__")
        finally:
            setattr(m, "__DEBUG__", False)
            if hasattr(m, "__data__"):
                delattr(m, "__data__")
        A = -torch.exp(data["A_logs"].detach().float())
        return (data["us"], data["dts"], A, data["Bs"], data["Cs"], data["Ds"], data["delta_bias"])


class OfficialCode:
    """An official checkout, copied, patched, built and imported (see the module docstring)."""

    def __init__(self, checkout: str | os.PathLike = DEFAULT_CHECKOUT, work_dir: str | os.PathLike = DEFAULT_WORK_DIR,
                 build: str = "forward", arch: str = "9.0", jobs: int | None = None, verbose: bool = False,
                 with_extension: bool = True):
        self.checkout = check_checkout(checkout)
        self.work_dir = Path(work_dir).resolve()
        t0 = time.perf_counter()
        self.src = prepare_copy(self.checkout, self.work_dir)
        self.oflex = build_oflex(self.src, self.work_dir, build, arch, jobs, verbose) if with_extension else None
        self.models = import_models(self.src)
        self.build = build
        self.setup_s = time.perf_counter() - t0
        self.fingerprint = checkout_fingerprint(self.checkout)

    def core(self, d_inner: int, dt_rank: int, d_state: int, device="cuda") -> OfficialCore:
        return OfficialCore(self.models, d_inner, dt_rank, d_state, device)

    def scan(self, u, delta, A, B, C, D, delta_bias):
        """The oflex selective scan alone, as ``forward_corev2`` calls it (softplus on, float32 out)."""
        if self.oflex is None:
            raise OfficialBuildError("the oflex extension was not built (with_extension=False)")
        return self.oflex.fwd(u, delta, A, B, C, D, delta_bias, True, 1, True)[0]

    def model(self, name: str, device="cuda"):
        """An official end-to-end model from its factory (``vmamba_tiny_s1l8`` ...), random weights,
        built directly on ``device`` (much faster on a GPU than initialising on the CPU), eval mode."""
        import torch

        factory = getattr(self.models, name, None)
        if not callable(factory):
            known = sorted(n for n in dir(self.models) if n.startswith(("vmamba_", "vanilla_vmamba_")))
            raise OfficialCodeError(f"the official vmamba.py has no factory {name!r}; it has: {', '.join(known)}")
        with torch.device(device):
            return factory().to(device).eval()


    def backbone(self, config: dict, out_indices=(0, 1, 2, 3), device="cuda"):
        """The official ``Backbone_VSSM`` (what the mmseg / mmdet configs wrap as ``MM_VSSM``) built
        with the constructor arguments ``config`` (e.g. ``MODEL_CONFIGS[name].kwargs`` of this
        project's registry, which mirror the official factories), random weights, on ``device``,
        eval mode. Its forward returns the ``out_indices`` stage maps, channels-first."""
        import torch

        config = {**config, "drop_path_rate": 0.0}
        with torch.device(device):
            return self.models.Backbone_VSSM(out_indices=tuple(out_indices), **config).to(device).eval()


def checkout_fingerprint(root: Path) -> str:
    """sha256 (12 hex digits) over the needed files of a checkout: names the code that was measured."""
    h = hashlib.sha256()
    for rel in needed_files(root):
        h.update(rel.encode() + b"\0" + (root / rel).read_bytes())
    return h.hexdigest()[:12]


# --------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("prepare", help="copy only the needed official files (no patches, no build)")
    prep.add_argument("--official", required=True, help="a full official VMamba checkout")
    prep.add_argument("--dest", default=str(DEFAULT_CHECKOUT), help=f"default {DEFAULT_CHECKOUT}")
    bld = sub.add_parser("build", help="copy, patch and build the oflex extension, then import the models")
    bld.add_argument("--official", default=str(DEFAULT_CHECKOUT))
    bld.add_argument("--work-dir", default=str(DEFAULT_WORK_DIR))
    bld.add_argument("--build", choices=("forward", "setup"), default="forward")
    bld.add_argument("--arch", default="9.0", help="TORCH_CUDA_ARCH_LIST for the build (default 9.0)")
    bld.add_argument("--jobs", type=int, default=None, help="MAX_JOBS (default: all cores)")
    args = ap.parse_args(argv)
    try:
        if args.command == "prepare":
            files = copy_needed(args.official, args.dest)
            size = sum((Path(args.dest) / f).stat().st_size for f in files)
            _log(f"copied {len(files)} files ({size / 1e6:.2f} MB) from {args.official} to {args.dest}; "
                 f"fingerprint {checkout_fingerprint(Path(args.dest).resolve())}")
            return 0
        code = OfficialCode(args.official, args.work_dir, args.build, args.arch, args.jobs, verbose=True)
        _log(f"official code ready in {code.setup_s:.1f} s (fingerprint {code.fingerprint})")
        return 0
    except OfficialCodeError as exc:
        print(f"official.py: {exc}", file=sys.stderr)
        return 2
    except OfficialImportError as exc:
        print(f"official.py: {exc}", file=sys.stderr)
        return 5
    except OfficialBuildError as exc:
        print(f"official.py: {exc}", file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
