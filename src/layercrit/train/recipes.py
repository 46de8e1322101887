"""The method registry: a :class:`Recipe` per training method, built from phases.

A recipe is defaults (hyperparameters that differ from :class:`TrainConfig`'s) plus the phases it
runs: ``supervised`` (the whole classifier, a ``step`` per batch), ``ssl`` (contrastive pre-training
of the backbone) or ``probe`` (a linear classifier ``fc`` on frozen features). The recipes live in
``standard.py``, ``improved.py``, ``adversarial.py`` and ``simclr.py``; ``loop.py`` runs them.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Callable

from ..errors import LayercritError


@dataclass
class TrainConfig:
    """Every hyperparameter of a run (recorded in the sidecar JSON). Recipes override the defaults."""

    method: str
    arch: str = "cifar_resnet50"
    seed: int = 0
    epochs: int = 10                # epochs of the main phase (SimCLR: of contrastive pre-training)
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    no_decay_norm_bias: bool = False  # weight decay only on conv/linear weights (improved recipe)
    schedule: str = "cosine"        # cosine | step (x0.1 at 50 % and 75 %) | constant; per step
    warmup_epochs: float = 0.0      # linear warm-up from lr/steps to lr
    label_smoothing: float = 0.0
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    augment: str = "flip-crop"      # none | flip-crop | randaugment | autoaugment | augmix | trivialaugment
    ema_decay: float = 0.0          # > 0: keep an EMA of the weights (per step); the EMA is what is saved
    noise_std: float = 0.0          # gaussian-noise: std of N(0, s^2) added to [0, 1] inputs
    norm: str = ""                  # adversarial: linf | l2
    eps: float = 0.0                # adversarial budget in [0, 1] input space (linf: 2/255 = 0.00784)
    steps: int = 0                  # attack steps during training (1 = FGSM with random start)
    step_size: float = 0.0          # 0: 1.25*eps for one step (Wong et al. 2020), else 2.5*eps/steps
    temperature: float = 0.5        # SimCLR NT-Xent temperature
    proj_dim: int = 128             # SimCLR projection head output size
    probe_epochs: int = 0           # linear probe epochs on frozen features (simclr, frozen-random)
    probe_lr: float = 1e-3          # Adam learning rate of the probe
    train_samples: int = 0          # 0: the whole training set; N: a subset of N images drawn with seed
    eval_samples: int = 0           # test images for clean accuracy (0: all)
    robust_eval_samples: int = 500  # test images for PGD accuracy (adversarial methods)
    robust_eval_steps: int = 10     # PGD steps of the robustness evaluation (at the training eps)
    init_from: str = ""             # start from these weights (.safetensors of arch), e.g. fine-tuning

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def same_as(self, stored: dict) -> bool:
        """Whether a recorded configuration equals this one; keys it lacks (added to layercrit
        later) count as their defaults, which reproduce the behaviour before they existed."""
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        return {**defaults, **stored} == self.to_dict()


HYPERPARAMETERS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "method")


@dataclass
class Phase:
    name: str
    kind: str                        # supervised | ssl | probe
    epochs: Callable[[TrainConfig], int]
    step: Callable | None = None     # supervised/ssl: step(ctx, x_uint8, y) -> (loss, logits or None)
    views: int = 1                   # augmented views per image (SimCLR: 2)
    transform: Callable | None = None  # cfg -> per-sample v2 transform (default: data.train_transform(cfg.augment))


@dataclass
class Recipe:
    name: str
    summary: str
    phases: list[Phase]
    defaults: dict = field(default_factory=dict)
    adversarial: bool = False
    validate: Callable[[TrainConfig], None] | None = None


METHODS: dict[str, Recipe] = {}


def register(recipe: Recipe) -> Recipe:
    METHODS[recipe.name] = recipe
    return recipe


def get_recipe(method: str) -> Recipe:
    _load()
    if method not in METHODS:
        raise LayercritError(f"unknown training method '{method}': use one of {', '.join(list_methods())}")
    return METHODS[method]


def list_methods() -> list[str]:
    _load()
    return list(METHODS)


def _load() -> None:
    from . import standard, improved, adversarial, simclr  # noqa: F401  (each registers its recipes; this order)


def parse_eps(value) -> float:
    """``"2/255"``, ``"0.5"``, ``0.0078`` -> float."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip()
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise LayercritError(f"eps '{value}' is not a number: give e.g. 2/255, 0.0078 or 0.5") from None


def make_config(method: str, **overrides) -> TrainConfig:
    """The recipe's defaults, then ``overrides``; unknown names and bad values are LayercritErrors."""
    recipe = get_recipe(method)
    unknown = sorted(set(overrides) - set(HYPERPARAMETERS))
    if unknown:
        raise LayercritError(f"unknown hyperparameter(s) {', '.join(unknown)} for method {method}: "
                             f"use any of {', '.join(HYPERPARAMETERS)}")
    values = {**recipe.defaults, **{k: v for k, v in overrides.items() if v is not None}}
    if "eps" in values:
        values["eps"] = parse_eps(values["eps"])
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for k, v in list(values.items()):
        want = {"int": int, "float": float, "bool": bool, "str": str}[types[k]]
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            v = values[k] = float(v)
        if not isinstance(v, want) or (want is int and isinstance(v, bool)):
            raise LayercritError(f"hyperparameter {k} = {v!r} should be a {want.__name__}")
    cfg = TrainConfig(method=method, **values)
    _check(cfg, recipe)
    return cfg


def _check(cfg: TrainConfig, recipe: Recipe) -> None:
    from .data import AUGMENTS

    if cfg.augment not in AUGMENTS:
        raise LayercritError(f"unknown augmentation '{cfg.augment}': use one of {', '.join(AUGMENTS)}")
    if cfg.schedule not in ("cosine", "step", "constant"):
        raise LayercritError(f"unknown schedule '{cfg.schedule}': use cosine, step or constant")
    for name in ("epochs", "batch_size"):
        if getattr(cfg, name) < 1:
            raise LayercritError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.lr <= 0:
        raise LayercritError(f"lr must be positive, got {cfg.lr}")
    if recipe.validate is not None:
        recipe.validate(cfg)
