"""Build a serialized TensorRT engine from an exported ONNX file with whichever builder is installed.

Two TensorRT-family builders are supported:

- ``tensorrt`` (full TensorRT 10/11, needs a GPU to build);
- ``tensorrt_rtx`` (TensorRT-RTX 1.7, PyPI wheels ``tensorrt-rtx-cu13-libs`` and
  ``tensorrt-rtx-cu13-bindings``). Its builder and ONNX parser run on a CPU-only machine: CPU-only
  ahead-of-time build is its default. The engines it writes cannot be *run* on every GPU
  (its runtime refuses compute capability 9.0, the H200/H100).

Usage::

    from exporter.engine import build_engine, ShapeProfile
    result = build_engine("model.onnx", "model.engine",
                          profiles=[ShapeProfile("x", (1, 3, 224, 224), (8, 3, 224, 224), (32, 3, 224, 224))])
    print(result.builder, result.num_layers, result.engine_bytes, result.build_seconds)

The plugin library (``libvmamba_trt_plugins.so``, see docs/PLUGINS.md) is loaded when the graph
has ``vmamba.trt`` nodes without function bodies (a ``.trt.onnx``), or when ``plugin_library`` is
given. The engine is written atomically (temporary file beside the target, then rename).

Errors are :class:`EngineError` subclasses carrying the documented exit code a command line
returns for them: :data:`EXIT_NO_BUILDER` (7: no builder installed), :data:`EXIT_ENGINE` (8: bad
input for the build, the parser or the builder failed); ``vm-export`` lists them with its other exit
codes in ``exporter.pipeline.EXIT_CODES``. :func:`runtime_support` says in plain
words whether this machine's GPU could execute the engine (TensorRT-RTX refuses sm_90, the H200).

Without the plugin library the custom ops' function bodies are inlined with ``onnx.inliner``
before parsing (TensorRT would otherwise give every instance's nodes the same names and warn for
each, docs/EXPORT.md section 7).

Why not Polygraphy's loaders (``NetworkFromOnnxPath``, ``CreateConfig``, ``EngineBytesFromNetwork``):
they choose TensorRT or TensorRT-RTX once, at import, from ``POLYGRAPHY_USE_TENSORRT_RTX``, and
import the RTX module under the name ``tensorrt_rtx`` only (``pip install --no-deps
tensorrt-rtx-cu13==1.7.1.116``); they route the parser's messages into Polygraphy's logger, where
the warning counts this module reports are not available; and none of them would apply the
library-name fix below before the wheel loads. The calls they wrap are the few used here. For
Polygraphy on the command line: ``POLYGRAPHY_USE_TENSORRT_RTX=1 polygraphy convert model.onnx -o
model.engine --trt-min-shapes ...`` works for graphs without plugin nodes.

TensorRT-RTX wheel quirk (the cause of the plugin-import abort, docs/PLUGINS.md): when the parser
imports an IPluginV3 node it ``dlopen``s ``libtensorrt_rtx.so`` (the unversioned development name)
to look up ``getPrivateApi_INTERNAL``. The wheel ships only ``libtensorrt_rtx.so.1``; the failed
``dlopen`` throws a ``std::runtime_error`` inside a ``noexcept`` function of the parser, and the
process dies with ``terminate called without an active exception``. :func:`import_builder` avoids
it before the wheel's libraries are loaded: it loads them from a private folder of symbolic links
that also holds the unversioned name, so the parser's ``$ORIGIN`` run path finds it.
"""
from __future__ import annotations

import atexit
import ctypes
import importlib
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import onnx
from onnx import inliner

from plugins.contract import DOMAIN

# Exit codes for a command line that builds engines; exporter.pipeline.EXIT_CODES is the one table
# of vm-export's codes (0-6 and 130 are its own) and imports these two.
EXIT_NO_BUILDER = 7
EXIT_ENGINE = 8

BUILDERS = ("tensorrt", "tensorrt_rtx")
PLUGIN_DOMAIN = DOMAIN  # the custom ops' domain (plugins/contract)
# Parser warnings that mean our graph is not clean (tests assert there are none).
DUPLICATE_NODE_WARNING = "already exists, the output tensors of this new instance will not be queryable"
ZERO_PLACEHOLDER_WARNING = "IShuffleLayer with zeroIsPlaceHolder=true"
CHECKED_WARNINGS = {"duplicate_node_name": DUPLICATE_NODE_WARNING, "reshape_zero_placeholder": ZERO_PLACEHOLDER_WARNING}

RTX_LIBS_PACKAGE = "tensorrt_rtx_libs"
RTX_CORE_LIBRARY = "libtensorrt_rtx.so.1"
RTX_UNVERSIONED_NAME = "libtensorrt_rtx.so"
RTX_PARSER_LIBRARY = "libtensorrt_onnxparser_rtx.so.1"


class EngineError(RuntimeError):
    """An engine could not be built; ``exit_code`` is what a command line should return."""

    exit_code = EXIT_ENGINE


class NoBuilderError(EngineError):
    exit_code = EXIT_NO_BUILDER


@dataclass(frozen=True)
class ShapeProfile:
    """min/opt/max shapes of one network input for the optimization profile."""

    input: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def __post_init__(self):
        if not (len(self.min) == len(self.opt) == len(self.max)):
            raise EngineError(f"shape profile for {self.input!r}: min/opt/max must have the same rank")
        if any(not (0 < a <= b <= c) for a, b, c in zip(self.min, self.opt, self.max)):
            raise EngineError(f"shape profile for {self.input!r}: need 0 < min <= opt <= max in every "
                              f"dimension, got min={self.min} opt={self.opt} max={self.max}")

    @classmethod
    def parse(cls, text: str) -> "ShapeProfile":
        """``NAME:MIN,OPT,MAX`` with ``AxBxC`` shapes, e.g. ``x:1x3x224x224,8x3x224x224,32x3x224x224``
        (one shape means min = opt = max)."""
        name, sep, shapes = text.partition(":")
        try:
            dims = [tuple(int(d) for d in s.lower().split("x")) for s in shapes.split(",")]
        except ValueError:
            dims = []
        if not sep or not name or len(dims) not in (1, 3):
            raise EngineError(f"bad shape profile {text!r}: write NAME:MIN,OPT,MAX with AxBxC shapes, "
                              "e.g. x:1x3x224x224,8x3x224x224,32x3x224x224")
        if len(dims) == 1:
            dims *= 3
        return cls(name, *dims)


@dataclass(frozen=True)
class Builder:
    """An imported TensorRT-family Python module."""

    name: str  # "tensorrt" or "tensorrt_rtx"
    module: Any
    version: str
    # False when the TensorRT-RTX wheel was loaded before import_builder could provide the
    # unversioned library name: importing a plugin node would then abort the process.
    plugin_import_safe: bool = True


@dataclass
class EngineBuildResult:
    path: Path
    builder: str
    builder_version: str
    num_layers: int
    engine_bytes: int
    parse_seconds: float
    build_seconds: float
    plugin_library: Path | None
    plugin_nodes: int
    profiles: list[ShapeProfile]
    precision: str  # the network's input precision (strongly typed: types come from the ONNX)
    output_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)  # as parsed; -1 = dynamic
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def count(self, kind: str) -> int:
        """How many warnings of one CHECKED_WARNINGS kind the parser and builder printed."""
        return sum(CHECKED_WARNINGS[kind] in w for w in self.warnings)

    @property
    def checked_warning_counts(self) -> dict[str, int]:
        return {kind: self.count(kind) for kind in CHECKED_WARNINGS}

    def as_dict(self) -> dict:
        return {"path": str(self.path) if self.path else None, "builder": self.builder, "builder_version": self.builder_version,
                "num_layers": self.num_layers, "engine_bytes": self.engine_bytes,
                "parse_seconds": round(self.parse_seconds, 3), "build_seconds": round(self.build_seconds, 3),
                "plugin_library": str(self.plugin_library) if self.plugin_library else None,
                "plugin_nodes": self.plugin_nodes, "precision": self.precision,
                "output_shapes": {k: list(v) for k, v in self.output_shapes.items()},
                "profiles": [{"input": p.input, "min": p.min, "opt": p.opt, "max": p.max} for p in self.profiles],
                "warnings": len(self.warnings), "checked_warnings": self.checked_warning_counts}


# ----------------------------------------------------------------------------------- builders
_RTX_LINK_DIR: Path | None = None
_LOADED_PLUGIN_LIBRARIES: set[tuple[str, Path]] = set()  # (builder, resolved path): load once per process


def _rtx_libs_dir() -> Path | None:
    spec = importlib.util.find_spec(RTX_LIBS_PACKAGE)  # not imported: its __init__ dlopens the libraries
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def provide_rtx_unversioned_library() -> bool:
    """Make ``dlopen("libtensorrt_rtx.so")`` from the TensorRT-RTX ONNX parser succeed (see the
    module docstring). Returns True when it will succeed, False when it is too late (the wheel's
    parser is already loaded from its own folder, which lacks the name)."""
    global _RTX_LINK_DIR
    libs = _rtx_libs_dir()
    if libs is None or (libs / RTX_UNVERSIONED_NAME).exists() or _RTX_LINK_DIR is not None:
        return True
    if RTX_LIBS_PACKAGE in sys.modules:
        return False
    # The parser's run path is $ORIGIN, i.e. the folder it was loaded from. Load both libraries
    # from a folder of links that also has the unversioned name; the wheel's own later loads of
    # the same files then return these already loaded objects (glibc matches them by inode).
    link_dir = Path(tempfile.mkdtemp(prefix="vmamba-trt-rtx-"))
    atexit.register(shutil.rmtree, link_dir, True)
    for name, target in ((RTX_CORE_LIBRARY, RTX_CORE_LIBRARY), (RTX_UNVERSIONED_NAME, RTX_CORE_LIBRARY),
                         (RTX_PARSER_LIBRARY, RTX_PARSER_LIBRARY)):
        (link_dir / name).symlink_to(libs / target)
    for name in (RTX_CORE_LIBRARY, RTX_PARSER_LIBRARY):
        ctypes.CDLL(str(link_dir / name), mode=ctypes.RTLD_GLOBAL)
    _RTX_LINK_DIR = link_dir
    return True


def _import_rtx() -> Builder:
    safe = provide_rtx_unversioned_library()
    try:
        module = importlib.import_module("tensorrt_rtx")  # pip install --no-deps tensorrt-rtx-cu13 (Polygraphy's name)
    except ImportError:
        module = importlib.import_module("tensorrt_rtx_bindings")
        # The name Polygraphy imports (POLYGRAPHY_USE_TENSORRT_RTX=1); the metapackage's
        # tensorrt_rtx package does nothing but re-export the bindings.
        sys.modules.setdefault("tensorrt_rtx", module)
    return Builder("tensorrt_rtx", module, module.__version__, plugin_import_safe=safe)


def import_builder(prefer: str | None = None) -> Builder:
    """The first importable builder of ``BUILDERS`` (or only ``prefer``). Raises NoBuilderError
    naming what to install."""
    names = [prefer] if prefer else list(BUILDERS)
    unknown = [n for n in names if n not in BUILDERS]
    if unknown:
        raise EngineError(f"unknown builder {unknown[0]!r}: choose one of {', '.join(BUILDERS)}")
    reasons = []
    for name in names:
        try:
            if name == "tensorrt_rtx":
                if _rtx_libs_dir() is None:
                    raise ImportError(f"no module named {RTX_LIBS_PACKAGE!r}")
                return _import_rtx()
            module = importlib.import_module("tensorrt")
            module.Builder  # the PyPI "tensorrt" stubs import but have no builder
            return Builder("tensorrt", module, module.__version__)
        except (ImportError, AttributeError, OSError) as exc:
            reasons.append(f"{name}: {exc}")
    raise NoBuilderError(
        "no TensorRT builder is installed (" + "; ".join(reasons) + "). Install TensorRT-RTX, which builds "
        "on a CPU-only machine: pip install tensorrt-rtx-cu13-libs==1.7.1.116 "
        "tensorrt-rtx-cu13-bindings==1.7.1.116, or a full TensorRT on a GPU machine")


def _make_logger(trt, verbose: bool):
    class CollectingLogger(trt.ILogger):
        """Keeps warnings and errors (the tests count them); prints them when verbose."""

        def __init__(self):
            trt.ILogger.__init__(self)
            self.warnings: list[str] = []
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.ERROR, trt.ILogger.INTERNAL_ERROR):
                self.errors.append(msg)
            elif severity == trt.ILogger.WARNING:
                self.warnings.append(msg)
            else:
                return
            if verbose:
                print(f"[{trt.__name__}] {msg}", file=sys.stderr)

    return CollectingLogger()


# Compute capabilities the TensorRT-RTX 1.7 runtime accepts, from its own refusal on the H200:
# "Supported compute capabilities: 8.0 8.6 8.9 12.0 12.1 >12.0".
RTX_RUNTIME_CAPABILITIES = ((8, 0), (8, 6), (8, 9), (12, 0), (12, 1))


@dataclass(frozen=True)
class RuntimeSupport:
    can_run: bool
    reason: str  # plain words, for a report or a --verify message


def runtime_support(builder: str, capability: tuple[int, int] | None = None) -> RuntimeSupport:
    """Whether an engine from ``builder`` can be executed on this machine's GPU 0 (``capability``
    overrides the detected one). Nothing is run; this only says whether trying makes sense."""
    if capability is None:
        try:
            import torch

            if not torch.cuda.is_available():
                return RuntimeSupport(False, "no CUDA GPU is visible here, so the engine cannot be executed")
            capability = torch.cuda.get_device_capability(0)
        except Exception as exc:  # noqa: BLE001 - any CUDA probing failure means "cannot run"
            return RuntimeSupport(False, f"the GPU could not be queried ({exc}), so the engine cannot be executed")
    cc = f"{capability[0]}.{capability[1]}"
    if builder == "tensorrt_rtx" and not (tuple(capability) in RTX_RUNTIME_CAPABILITIES or capability[0] > 12):
        return RuntimeSupport(False, f"TensorRT-RTX cannot run engines on this GPU (compute capability {cc}; it "
                                     "supports 8.0, 8.6, 8.9, 12.0 and newer): the engine was built but not executed")
    return RuntimeSupport(True, f"{builder} can run on this GPU (compute capability {cc})")


# ----------------------------------------------------------------------------------- the graph
def count_plugin_nodes(model: onnx.ModelProto) -> tuple[int, int]:
    """(custom-domain nodes, those without a function body): the latter need the plugin library."""
    bodies = {(f.domain, f.name) for f in model.functions}
    nodes = [n for n in model.graph.node if n.domain == PLUGIN_DOMAIN]
    return len(nodes), sum((n.domain, n.op_type) not in bodies for n in nodes)


def _bodies(model: onnx.ModelProto) -> list[str]:
    return [f.name for f in model.functions if f.domain == PLUGIN_DOMAIN]


def _dynamic_inputs(model: onnx.ModelProto) -> dict[str, list]:
    out = {}
    inits = {i.name for i in model.graph.initializer}
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                for d in inp.type.tensor_type.shape.dim]
        if any(not isinstance(d, int) or d <= 0 for d in dims):
            out[inp.name] = dims
    return out


def _precision(model: onnx.ModelProto) -> str:
    elem = model.graph.input[0].type.tensor_type.elem_type if model.graph.input else onnx.TensorProto.FLOAT
    return {onnx.TensorProto.FLOAT16: "fp16", onnx.TensorProto.BFLOAT16: "bf16"}.get(elem, "fp32")


# ----------------------------------------------------------------------------------- building
def build_engine(
    onnx_path: str | os.PathLike,
    engine_path: str | os.PathLike | None,
    *,
    profiles: Sequence[ShapeProfile] = (),
    plugin_library: str | os.PathLike | None = None,
    builder: str | None = None,
    workspace_bytes: int | None = None,
    verbose: bool = False,
) -> EngineBuildResult:
    """Parse ``onnx_path`` and build a serialized engine; write it to ``engine_path`` atomically
    (``None``: build and report, write nothing).

    ``profiles``: one ShapeProfile per dynamic input (required when the graph has dynamic inputs).
    ``plugin_library``: the getCreators build of the plugins; default: found with
    ``plugins.trt.find_plugin_library`` when the graph has plugin nodes without function bodies.
    ``builder``: "tensorrt" or "tensorrt_rtx" (default: the first one installed).
    ``workspace_bytes``: the builder's workspace memory-pool limit (default: the builder's).
    Raises EngineError (exit_code EXIT_ENGINE) or NoBuilderError (EXIT_NO_BUILDER).
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise EngineError(f"ONNX file {onnx_path} not found: export it first (vm-export -o {onnx_path})")
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises several types for a bad file
        raise EngineError(f"{onnx_path} is not a readable ONNX model: {exc}") from exc
    n_plugin, n_bodiless = count_plugin_nodes(model)
    dynamic = _dynamic_inputs(model)
    by_input = {p.input: p for p in profiles}
    missing = [name for name in dynamic if name not in by_input]
    if missing:
        raise EngineError(f"input {missing[0]!r} has dynamic dims {dynamic[missing[0]]}: give a shape profile, "
                          f"e.g. ShapeProfile.parse('{missing[0]}:1x3x224x224,8x3x224x224,32x3x224x224')")
    unknown = [name for name in by_input if name not in {i.name for i in model.graph.input}]
    if unknown:
        raise EngineError(f"shape profile for {unknown[0]!r}, which is not an input of {onnx_path}")

    plugin_path = None
    if plugin_library is not None or n_bodiless:
        if plugin_library is None:
            from plugins.trt import find_plugin_library

            try:
                plugin_path = find_plugin_library()
            except FileNotFoundError as exc:
                raise EngineError(f"{onnx_path} has {n_bodiless} plugin node(s) without a function body, "
                                  f"so the plugin library is required: {exc}") from exc
        else:
            plugin_path = Path(plugin_library)
        if not plugin_path.is_file():
            raise EngineError(f"plugin library {plugin_path} not found: build it (docs/PLUGINS.md)")
    b = import_builder(builder)
    trt = b.module
    if plugin_path is not None:
        if not b.plugin_import_safe and n_plugin:
            raise EngineError(
                f"the TensorRT-RTX wheel was loaded before exporter.engine could provide {RTX_UNVERSIONED_NAME}, "
                "so importing a plugin node would abort the process: import exporter.engine (or call "
                "import_builder) before tensorrt_rtx, or put a folder with the link "
                f"{RTX_UNVERSIONED_NAME} -> {RTX_CORE_LIBRARY} on LD_LIBRARY_PATH")

    logger = _make_logger(trt, verbose)
    if plugin_path is not None and (b.name, plugin_path.resolve()) not in _LOADED_PLUGIN_LIBRARIES:
        if trt.get_plugin_registry().load_library(str(plugin_path)) is None:
            raise EngineError(f"{b.name} could not load the plugin library {plugin_path} (a missing symbol, "
                              "or another copy of its creators is already registered)")
        _LOADED_PLUGIN_LIBRARIES.add((b.name, plugin_path.resolve()))
    trt_builder = trt.Builder(logger)
    network = trt_builder.create_network(0)  # strongly typed (the only mode of TRT 11 / TRT-RTX)
    parser = trt.OnnxParser(network, logger)
    t0 = time.perf_counter()
    if n_plugin and plugin_path is None:
        # No plugins: TensorRT would inline the custom ops' bodies itself, but its parser names a
        # function's nodes after the FunctionProto (shared by every instance) and warns once per
        # node per repeated instance ("A node named ... already exists"). onnx's inliner gives
        # every instance's nodes unique names; the layers are the same.
        inlined = inliner.inline_selected_functions(model, [(PLUGIN_DOMAIN, op) for op in _bodies(model)])
        ok = parser.parse(inlined.SerializeToString(), str(onnx_path))
    else:
        ok = parser.parse_from_file(str(onnx_path))
    parse_seconds = time.perf_counter() - t0
    parse_errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
    if not ok:
        raise EngineError(f"the {b.name} ONNX parser rejected {onnx_path}: " + "; ".join(parse_errors or logger.errors))

    outputs = {network.get_output(i).name: tuple(network.get_output(i).shape) for i in range(network.num_outputs)}
    config = trt_builder.create_builder_config()
    if workspace_bytes is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    used_profiles = []
    if dynamic:
        profile = trt_builder.create_optimization_profile()
        for name in dynamic:
            p = by_input[name]
            profile.set_shape(name, p.min, p.opt, p.max)
            used_profiles.append(p)
        config.add_optimization_profile(profile)
    t0 = time.perf_counter()
    serialized = trt_builder.build_serialized_network(network, config)
    build_seconds = time.perf_counter() - t0
    if serialized is None:
        raise EngineError(f"the {b.name} builder failed on {onnx_path}: " + "; ".join(logger.errors or ["no message"]))
    data = memoryview(serialized)
    out = Path(engine_path) if engine_path is not None else None
    if out is not None:
        _atomic_write(out, data)
    return EngineBuildResult(
        path=out, builder=b.name, builder_version=b.version, num_layers=network.num_layers,
        engine_bytes=data.nbytes, parse_seconds=parse_seconds, build_seconds=build_seconds,
        plugin_library=plugin_path, plugin_nodes=n_plugin, profiles=used_profiles, precision=_precision(model),
        output_shapes=outputs,
        warnings=list(logger.warnings), errors=parse_errors + list(logger.errors))


def _atomic_write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
