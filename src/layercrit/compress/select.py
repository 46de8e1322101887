"""Which residual blocks to remove: criticality-guided (greedy), weight magnitude, random.

The guided rule measures, for every block still present, how far removing it moves the
predictions (``measure(..., unit="block", reset="remove")``), removes the least critical one,
and measures again on the smaller network: criticality changes as blocks go. The baselines
choose in one shot.
"""
from __future__ import annotations

import copy
import logging
import random
from dataclasses import dataclass

import pandas as pd

from ..data import EvalData
from ..engine import MeasureConfig, measure
from ..errors import ConfigError, LayercritError
from ..models import ModelBundle, arch_factory, get_arch, remove_blocks
from ..models.registry import variant_name
from ..resets import block_magnitude, discover_blocks

log = logging.getLogger("layercrit")

RULES = ("criticality", "magnitude", "random")


def without_blocks(bundle: ModelBundle, blocks: list[str]) -> ModelBundle:
    """A copy of ``bundle`` with ``blocks`` replaced by their shortcuts: its own architecture
    variant (``<arch>:remove=...``), whose factory builds the same smaller network."""
    if not blocks:
        return bundle
    order = {b: i for i, b in enumerate(block_names(bundle))}
    blocks = sorted(blocks, key=lambda b: order.get(b, len(order)))  # one name per network: forward order
    model = copy.deepcopy(bundle.model)
    remove_blocks(model.model, list(blocks))
    arch = variant_name(bundle.arch, list(blocks))
    variant, nc = get_arch(arch), bundle.num_classes
    if nc is None:
        raise LayercritError(f"{bundle.model_id}: its class count is unknown (a module given directly, or a network "
                             "without a classifier): removing blocks is judged by accuracy, so it needs a classifier "
                             "created with layercrit.create_model")
    return ModelBundle(model.eval(), arch_factory(variant, nc), f"{bundle.spec} -{','.join(blocks)}", arch, nc,
                       bundle.input_size, f"{bundle.model_id}-{len(blocks)}blocks", bundle.category)


def block_names(bundle: ModelBundle) -> list[str]:
    return [b.name for b in discover_blocks(bundle.network, input_size(bundle))]


def input_size(bundle: ModelBundle) -> int:
    """The bundle's input resolution; known for every model from create_model, not for a module given directly."""
    if bundle.input_size is None:
        raise LayercritError(f"{bundle.model_id}: its input resolution is unknown (a module given directly): "
                             "create the model with layercrit.create_model to compress it")
    return bundle.input_size


def _check_count(bundle: ModelBundle, n: int) -> list[str]:
    names = block_names(bundle)
    if not 1 <= n < len(names):
        raise ConfigError(f"cannot remove {n} of the {len(names)} residual blocks of {bundle.model_id}: "
                          f"choose {{remove}} between 1 and {len(names) - 1}")
    return names


def select_random(bundle: ModelBundle, n: int, seed: int) -> list[str]:
    """``n`` blocks drawn uniformly with ``seed`` (in forward order)."""
    names = _check_count(bundle, n)
    chosen = set(random.Random(seed).sample(names, n))
    return [b for b in names if b in chosen]


def select_magnitude(bundle: ModelBundle, n: int) -> list[str]:
    """The ``n`` blocks whose branch output parameters have the smallest RMS (see block_magnitude)."""
    _check_count(bundle, n)
    blocks = discover_blocks(bundle.network, input_size(bundle))
    ranked = sorted(blocks, key=lambda b: (block_magnitude(bundle.network, b), b.index))
    return [b.name for b in ranked[:n]]


@dataclass
class GreedyResult:
    removed: list[str]  # in the order removed
    steps: pd.DataFrame  # one row per step: step, block, criticality, top1_acc (after), candidates
    first: pd.DataFrame | None  # the first measurement (every block of the full model): the one-shot ranking
    base_top1_acc: float | None  # the full model's top-1 on the selection images (None: nothing was measured)


def select_greedy(bundle: ModelBundle, data: EvalData, *, remove: int | None = None, max_drop: float | None = None,
                  batch_size: int = 128, device: str = "cpu", progress: bool = False) -> GreedyResult:
    """Remove the least critical block, re-measure, repeat: until ``remove`` blocks are gone, or
    before the removal that would drop top-1 on ``data`` more than ``max_drop`` points below
    the full model's."""
    if remove is None and max_drop is None:
        raise ConfigError("say how much to remove: {remove} N (blocks) or {max_drop} PP (accuracy points)")
    if remove is not None:
        _check_count(bundle, remove)
    if max_drop is not None and max_drop < 0:
        raise ConfigError(f"{{max_drop}} must be a number of accuracy points >= 0, got {max_drop}")
    removed: list[str] = []
    steps, first, base = [], None, None
    current = bundle
    while remove is None or len(removed) < remove:
        if len(block_names(current)) <= 1:
            break  # keep at least one block
        table = measure(current, data, MeasureConfig(unit="block", reset=("remove",), trials=1, samples=None,
                                                     batch_size=batch_size), device=device, progress=progress)
        if first is None:
            first, base = table, float(table["base_top1_acc"].iloc[0])
        best = table.sort_values(["criticality", "layer_index"], kind="stable").iloc[0]
        if max_drop is not None and base - best["top1_acc"] > max_drop:
            break
        removed.append(best["layer"])
        steps.append({"step": len(removed), "block": best["layer"], "criticality": best["criticality"],
                      "top1_acc": best["top1_acc"], "candidates": len(table)})
        log.info(f"step {len(removed)}: removed {best['layer']} (criticality {best['criticality']:.2f}%, "
                 f"top-1 {best['top1_acc']:.2f}% on the selection images)")
        current = without_blocks(bundle, removed)
    return GreedyResult(removed, pd.DataFrame(steps, columns=["step", "block", "criticality", "top1_acc",
                                                              "candidates"]), first, base)
