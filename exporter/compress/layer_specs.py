"""Layer specs: which SS2D blocks a compression method acts on.

A layer is one block's SS2D, named ``layers.{stage}.blocks.{j}`` (``model.ssm_layers()`` lists
them in forward order). :func:`parse_layer_spec` accepts, everywhere (CLI and API):

==========================  ===================================================================
``none``                    no layer
``all``                     every SS2D layer
``auto``                    chosen on calibration data (VMeanba: :func:`select_vmeanba_layers`;
                            QuarterMap: the authors' default ``every:3``)
``k=4``                     the 4 layers with the smallest calibrated impact (VMeanba only)
``layers.2.blocks.0,...``   explicit layer names
``0,3,5``                   global indices, counted **from 0** in forward order over all SS2D
                            layers (index 0 is ``layers.0.blocks.0``)
``stage:2``, ``stage:1-2``  every block of one stage or of an inclusive range of stages
``every:3``                 QuarterMap's strategy: number the blocks globally **from 1** in
                            forward order and take every 3rd one, stage 0 excluded
==========================  ===================================================================

Names, indices and stage selectors can be mixed in one comma-separated list; the result is always
in forward order without duplicates.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Iterable, Sequence

_NAME = re.compile(r"^layers\.(\d+)\.blocks\.(\d+)$")
_KEYWORDS = ("auto", "none", "all")


@dataclasses.dataclass(frozen=True)
class AutoLayers:
    """A spec that needs calibration data to become layer names: ``auto`` (k is None: choose by
    budget) or ``k=N``."""

    k: int | None = None

    def __str__(self) -> str:
        return "auto" if self.k is None else f"k={self.k}"


def ssm_layer_names(model) -> list[str]:
    if not hasattr(model, "ssm_layers"):
        raise TypeError(f"{type(model).__name__} has no ssm_layers(): not a VMamba/MedMamba model of exporter.models")
    return list(model.ssm_layers().keys())


def stage_of(name: str) -> int:
    match = _NAME.match(name)
    if not match:
        raise ValueError(f"{name!r} is not a layer name of the form layers.<stage>.blocks.<j>")
    return int(match.group(1))


def every_kth_layers(names: Sequence[str], k: int) -> list[str]:
    """QuarterMap's default block choice: count blocks globally from 1 in forward order, take
    every k-th, skip stage 0 (the authors' strategy; k = 3 is their chosen setting)."""
    if k < 1:
        raise ValueError(f"every:k needs k >= 1, got {k}")
    return [name for number, name in enumerate(names, start=1) if number % k == 0 and stage_of(name) != 0]


def _valid_forms(names: Sequence[str]) -> str:
    stages = sorted({stage_of(n) for n in names})
    shown = ", ".join(names) if len(names) <= 30 else ", ".join(names[:30]) + ", ..."
    return (
        f"valid specs: auto, none, all, k=<1..{len(names)}>, every:<k>, stage:<s> or stage:<a>-<b> with stages "
        f"{stages[0]}..{stages[-1]}, global indices 0..{len(names) - 1} (forward order, from 0), or layer names: {shown}"
    )


def parse_layer_spec(spec, model, method: str = "vmeanba"):
    """Resolve ``spec`` against ``model``'s SS2D layers.

    Returns a list of layer names in forward order, or :class:`AutoLayers` for ``auto`` / ``k=N``
    with ``method="vmeanba"`` (the caller runs the calibrated selection). For
    ``method="quartermap"``, ``auto`` means ``every:3`` and ``k=N`` is refused (QuarterMap has no
    calibrated selection). ``spec`` may also be a list of names/indices. Raises ValueError naming
    the problem and listing what is valid.
    """
    if method not in ("vmeanba", "quartermap"):
        raise ValueError(f"method must be 'vmeanba' or 'quartermap', got {method!r}")
    names = ssm_layer_names(model)
    if not names:
        raise ValueError(f"{type(model).__name__} has no SS2D layers to compress")
    if isinstance(spec, AutoLayers):
        return spec
    if spec is None:
        raise ValueError("empty layer spec; " + _valid_forms(names))
    if isinstance(spec, (list, tuple)):
        tokens = [str(t).strip() for t in spec]
    else:
        text = str(spec).strip()
        low = text.lower()
        if low in _KEYWORDS:
            if low == "none":
                return []
            if low == "all":
                return list(names)
            return every_kth_layers(names, 3) if method == "quartermap" else AutoLayers(None)
        if low.startswith("k="):
            k = _integer(text[2:], "k", names)
            if method == "quartermap":
                raise ValueError(f"{text!r}: QuarterMap has no calibrated selection; use every:<k>, stage:<s>, "
                                 "layer names or indices (" + _valid_forms(names) + ")")
            if not 1 <= k <= len(names):
                raise ValueError(f"k={k} but the model has {len(names)} SS2D layers; k must be in 1..{len(names)}")
            return AutoLayers(k)
        tokens = [t.strip() for t in text.split(",")]
    if not tokens or any(t == "" for t in tokens):
        raise ValueError(f"empty layer spec or empty item in {spec!r}; " + _valid_forms(names))
    chosen: set[str] = set()
    for token in tokens:
        chosen.update(_resolve_token(token, names))
    return [n for n in names if n in chosen]


def _integer(text: str, what: str, names) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{what} must be an integer, got {text!r}; " + _valid_forms(names)) from None


def _resolve_token(token: str, names: list[str]) -> Iterable[str]:
    low = token.lower()
    if low in _KEYWORDS or low.startswith("k="):
        raise ValueError(f"{token!r} cannot be combined with other items in a list; " + _valid_forms(names))
    if low.startswith("every:"):
        return every_kth_layers(names, _integer(token[6:], "every:k", names))
    if low.startswith("stage:"):
        body = token[6:]
        parts = body.split("-")
        if len(parts) > 2:
            raise ValueError(f"bad stage selector {token!r}; " + _valid_forms(names))
        lo = _integer(parts[0], "stage", names)
        hi = _integer(parts[-1], "stage", names)
        stages = sorted({stage_of(n) for n in names})
        for s in (lo, hi):
            if s not in stages:
                raise ValueError(f"stage {s} does not exist in {token!r}: the model has stages "
                                 f"{stages[0]}..{stages[-1]}; " + _valid_forms(names))
        if lo > hi:
            raise ValueError(f"empty stage range {token!r} (start {lo} > end {hi})")
        return [n for n in names if lo <= stage_of(n) <= hi]
    if re.fullmatch(r"-?\d+", token):
        index = int(token)
        if not 0 <= index < len(names):
            raise ValueError(f"layer index {index} is out of range: the model has {len(names)} SS2D layers, "
                             f"indices 0..{len(names) - 1} counted from 0 in forward order; " + _valid_forms(names))
        return [names[index]]
    if token in names:
        return [token]
    raise ValueError(f"unknown layer {token!r}; " + _valid_forms(names))
