"""A training run's settings: :class:`TrainConfig` (every hyperparameter, recorded in ``run.json``),
``make_config`` (a recipe's defaults, then overrides, checked once) and ``parse_eps``."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..errors import LayercritError

AUGMENTS = ("none", "flip-crop", "randaugment", "autoaugment", "augmix", "trivialaugment")
PRECISIONS = ("fp32", "bf16")


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
    precision: str = "fp32"         # fp32 | bf16: autocast of the training forward passes (evaluation is fp32)
    save_epochs: tuple[int, ...] = ()  # also write epoch-N.safetensors after these epochs (trajectories)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["save_epochs"] = list(self.save_epochs)  # JSON round trip: a list
        return d

    def same_as(self, stored: dict) -> bool:
        """Whether a recorded configuration equals this one; keys it lacks (added to layercrit
        later) count as their defaults, which reproduce the behaviour before they existed."""
        defaults = TrainConfig(method=self.method).to_dict()
        return {**defaults, **stored} == self.to_dict()


HYPERPARAMETERS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.name != "method")
_KINDS = {"int": int, "float": float, "bool": bool, "str": str}


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


def parse_epochs(value) -> tuple[int, ...]:
    """``[1, 3, 10]``, ``"1,3,10"`` or ``""`` -> a sorted tuple of distinct positive epochs."""
    items = [v for v in value.split(",") if v.strip()] if isinstance(value, str) else value
    try:
        epochs = sorted({int(v) for v in items if not isinstance(v, (bool, float))})
        if len(epochs) != len(set(items)) or any(e < 1 for e in epochs):
            raise ValueError
    except (TypeError, ValueError):
        raise LayercritError(f"save_epochs = {value!r} should be epoch numbers >= 1, e.g. 1,3,10") from None
    return tuple(epochs)


def make_config(method: str, defaults: dict | None = None, validate=None, **overrides) -> TrainConfig:
    """``defaults`` (a recipe's), then ``overrides``; unknown names and bad values are LayercritErrors.

    ``validate(cfg)`` adds the recipe's own checks. Prefer :func:`layercrit.train.make_config`,
    which looks the recipe up by ``method``.
    """
    unknown = sorted(set(overrides) - set(HYPERPARAMETERS))
    if unknown:
        raise LayercritError(f"unknown hyperparameter(s) {', '.join(unknown)} for method {method}: "
                             f"use any of {', '.join(HYPERPARAMETERS)}")
    values = {**(defaults or {}), **{k: v for k, v in overrides.items() if v is not None}}
    if "eps" in values:
        values["eps"] = parse_eps(values["eps"])
    if "save_epochs" in values:
        values["save_epochs"] = parse_epochs(values["save_epochs"])
    types = {f.name: f.type for f in dataclasses.fields(TrainConfig)}
    for k, v in list(values.items()):
        want = _KINDS.get(str(types[k]))
        if want is None:
            continue  # parsed above
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            v = values[k] = float(v)
        if not isinstance(v, want) or (want is int and isinstance(v, bool)):
            raise LayercritError(f"hyperparameter {k} = {v!r} should be a {want.__name__}")
    cfg = TrainConfig(method=method, **values)
    _check(cfg)
    if validate is not None:
        validate(cfg)
    return cfg


def _check(cfg: TrainConfig) -> None:
    if cfg.augment not in AUGMENTS:
        raise LayercritError(f"unknown augmentation '{cfg.augment}': use one of {', '.join(AUGMENTS)}")
    if cfg.schedule not in ("cosine", "step", "constant"):
        raise LayercritError(f"unknown schedule '{cfg.schedule}': use cosine, step or constant")
    if cfg.precision not in PRECISIONS:
        raise LayercritError(f"unknown precision '{cfg.precision}': use {' or '.join(PRECISIONS)}")
    for name in ("epochs", "batch_size"):
        if getattr(cfg, name) < 1:
            raise LayercritError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    for name in ("train_samples", "eval_samples", "robust_eval_samples", "probe_epochs", "steps",
                 "robust_eval_steps", "proj_dim"):
        if getattr(cfg, name) < 0:
            raise LayercritError(f"{name} must be 0 or more, got {getattr(cfg, name)}")
    for name in ("lr", "probe_lr", "temperature"):
        value = getattr(cfg, name)
        if not math.isfinite(value) or value <= 0:
            raise LayercritError(f"{name} must be a positive number, got {value}")
    for name in ("momentum", "weight_decay", "warmup_epochs", "label_smoothing", "mixup_alpha", "cutmix_alpha",
                 "ema_decay", "noise_std", "eps", "step_size"):
        value = getattr(cfg, name)
        if not math.isfinite(value) or value < 0:
            raise LayercritError(f"{name} must be a finite number >= 0, got {value}")
    if cfg.ema_decay >= 1 or cfg.label_smoothing >= 1:
        raise LayercritError("ema_decay and label_smoothing must be below 1")
