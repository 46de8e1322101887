"""The study's model zoo as data: 51 ImageNet-1k ResNet-50s, their sources and checkpoint layouts.

Pure data and dataclasses; no PyTorch import, so analysis code without torch can use
:func:`zoo_metadata` (categories, accuracies, training budgets). Loading lives in
:mod:`layercrit.zoo.load`. Facts come from ``shared/reference/ZOO.md``.

Adding a family of your own takes a few lines (same spirit as ``layercrit.register_arch``)::

    from layercrit.zoo import register_zoo_model
    for eps in (1, 2):
        register_zoo_model(f"my_rn50_eps{eps}", category="adversarial training", top1=70.0,
                           source=f"https://example.org/rn50_eps{eps}.pth", layout="state_dict")

``source`` is ``timm:<name>``, ``torchvision:<weights enum member>``, ``gdrive:<Drive id>`` or an
``https://`` URL; pass ``head=`` too for a backbone + linear-head pair. ``layout`` names a converter
(see ``layercrit.zoo.layouts``; ``register_layout`` adds one).
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from urllib.parse import urlparse

from ..errors import LayercritError

BASELINE = "baseline"
ADVERSARIAL = "adversarial training"
AUGMENTATION = "augmentation"
SELF_SUPERVISED = "self-supervised (linear probe)"
IMPROVED_RECIPE = "improved training recipe"
CONTROL = "control: frozen random backbone"
#: The study's categories, in the order its figures group them (baseline first).
CATEGORIES = (BASELINE, ADVERSARIAL, AUGMENTATION, SELF_SUPERVISED, IMPROVED_RECIPE, CONTROL)

SOURCE_KINDS = ("timm", "torchvision", "url", "gdrive")
_EPS_RE = re.compile(r"_(l2|linf)_eps(\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class Source:
    """One downloadable file (or pretrained-weights name) a zoo model is built from."""

    kind: str  # "timm" (model name), "torchvision" (weights enum member), "url", "gdrive" (Drive file id)
    ref: str
    role: str = "weights"  # "weights"; or "backbone" / "head" of a split pair

    @property
    def filename(self) -> str | None:
        """File name in the zoo cache (None: timm/torchvision keep their own caches)."""
        if self.kind == "url":
            return urlparse(self.ref).path.rsplit("/", 1)[-1]
        if self.kind == "gdrive":
            return f"gdrive-{self.ref}.pth"
        return None

    def describe(self) -> str:
        where = {"timm": "timm", "torchvision": "torchvision weights", "url": "URL",
                 "gdrive": "Google Drive id"}[self.kind]
        return f"{where} {self.ref}"


@dataclass(frozen=True)
class ZooModel:
    """One zoo entry.

    ``top1`` is the top-1 accuracy [%] its authors report (None if none). ``epsilon`` and ``norm``
    ("l2" / "linf") describe adversarial training; the number is stored exactly as written in the id,
    so an Linf budget is in units of 1/255 (``..._linf_eps4.0`` -> 4.0, i.e. 4/255) and an L2
    budget is in pixel-space L2 units on [0, 1] images (``..._l2_eps3`` -> 3.0).
    ``normalized`` False means the network takes raw [0, 1] input (no ImageNet mean/std).
    """

    id: str
    category: str
    display_name: str
    top1: float | None
    layout: str
    sources: tuple[Source, ...]
    normalized: bool = True
    epsilon: float | None = None
    norm: str | None = None
    arch: str = "torchvision/resnet50"
    num_classes: int = 1000

    @property
    def files(self) -> tuple[Source, ...]:
        """The sources that are files downloaded into the zoo cache."""
        return tuple(s for s in self.sources if s.filename is not None)

    @property
    def source_text(self) -> str:
        if len(self.sources) == 1:
            return self.sources[0].describe()
        return " + ".join(f"{s.role}: {s.describe()}" for s in self.sources)


_ZOO: dict[str, ZooModel] = {}


def parse_source(text: str | Source, role: str = "weights") -> Source:
    """``timm:<name>`` | ``torchvision:<weights>`` | ``gdrive:<id>`` | ``https://...`` -> :class:`Source`."""
    if isinstance(text, Source):
        return text
    if text.startswith(("https://", "http://")):
        return Source("url", text, role)
    kind, _, ref = text.partition(":")
    if kind not in ("timm", "torchvision", "gdrive") or not ref:
        raise LayercritError(f"unknown zoo source '{text}': use timm:<name>, torchvision:<weights>, "
                             "gdrive:<Drive id> or an https:// URL")
    return Source(kind, ref, role)


def parse_epsilon(model_id: str) -> tuple[float | None, str | None]:
    """(epsilon, norm) from an id ending in ``_l2_eps<E>`` / ``_linf_eps<E>``, else (None, None)."""
    m = _EPS_RE.search(model_id)
    return (float(m.group(2)), m.group(1)) if m else (None, None)


def register_zoo_model(model_id: str, *, category: str, layout: str, source: str | Source,
                       head: str | Source | None = None, top1: float | None = None,
                       display_name: str | None = None, normalized: bool = True,
                       epsilon: float | None = None, norm: str | None = None,
                       arch: str = "torchvision/resnet50", num_classes: int = 1000) -> ZooModel:
    """Register (or replace) a zoo model; epsilon/norm default to what the id says (see :class:`ZooModel`)."""
    sources: tuple[Source, ...]
    if head is None:
        sources = (parse_source(source),)
    else:
        sources = (parse_source(source, "backbone"), parse_source(head, "head"))
    if epsilon is None and norm is None:
        epsilon, norm = parse_epsilon(model_id)
    if norm not in (None, "l2", "linf"):
        raise LayercritError(f"zoo model {model_id}: norm must be 'l2', 'linf' or None, not '{norm}'")
    entry = ZooModel(model_id, category, display_name or model_id, None if top1 is None else float(top1),
                     layout, sources, normalized, epsilon, norm, arch, num_classes)
    _ZOO[model_id] = entry
    return entry


def get_zoo_model(model_id: str) -> ZooModel:
    if model_id in _ZOO:
        return _ZOO[model_id]
    close = difflib.get_close_matches(model_id, list(_ZOO), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    raise LayercritError(f"unknown zoo model '{model_id}'{hint}: run `layercrit zoo list` to see the ids")


def list_zoo_models(category: str | None = None) -> list[ZooModel]:
    """Registered models in registration order (the study's order), optionally of one category."""
    if category is None:
        return list(_ZOO.values())
    known = list(dict.fromkeys([*CATEGORIES, *(m.category for m in _ZOO.values())]))
    if category not in known:
        raise LayercritError(f"unknown zoo category '{category}': use one of " + ", ".join(f"'{c}'" for c in known))
    return [m for m in _ZOO.values() if m.category == category]


def zoo_metadata():
    """One row per zoo model: ``model_id, category, accuracy, epsilon, norm, display_name``.

    ``accuracy`` is the reported top-1 [%] (NaN if none); ``epsilon``/``norm`` as in :class:`ZooModel`
    (NaN/None for models that were not adversarially trained).
    """
    import pandas as pd  # here, not at the top: `import layercrit` (and `layercrit --help`) must not import pandas

    models = list_zoo_models()
    return pd.DataFrame({
        "model_id": [m.id for m in models],
        "category": [m.category for m in models],
        "accuracy": pd.Series([m.top1 for m in models], dtype="float64"),
        "epsilon": pd.Series([m.epsilon for m in models], dtype="float64"),
        "norm": pd.Series([m.norm for m in models], dtype="object"),
        "display_name": [m.display_name for m in models],
    })


# --- the study's zoo (shared/reference/ZOO.md), in its order -------------------------------------------------

_MADRY = "https://huggingface.co/madrylab/robust-imagenet-models/resolve/main/"
_HANG = "https://hangzh.s3-us-west-1.amazonaws.com/others/"
_SIN = "https://bitbucket.org/robert_geirhos/texture-vs-shape-pretrained-models/raw/"
_FB = "https://dl.fbaipublicfiles.com/"


def _builtin() -> None:
    reg = register_zoo_model
    reg("tv_resnet50", category=BASELINE, top1=76.15, source="timm:resnet50.tv_in1k", layout="torchvision",
        display_name="torchvision ResNet-50 (IMAGENET1K_V1)")

    for eps, acc in [("0", 75.81), ("0.01", 75.67), ("0.03", 75.77), ("0.05", 75.58), ("0.1", 74.79),
                     ("0.25", 74.14), ("0.5", 73.17), ("1", 70.42), ("3", 62.83), ("5", 56.14)]:
        reg(f"robust_resnet50_l2_eps{eps}", category=ADVERSARIAL, top1=acc, layout="madrylab",
            source=f"{_MADRY}resnet50_l2_eps{eps}.ckpt", display_name=f"Adversarial training L2 eps={eps}")
    for eps, acc in [("0.5", 73.74), ("1.0", 72.04), ("2.0", 69.09), ("4.0", 63.87), ("8.0", 54.53)]:
        reg(f"robust_resnet50_linf_eps{eps}", category=ADVERSARIAL, top1=acc, layout="madrylab",
            source=f"{_MADRY}resnet50_linf_eps{eps}.ckpt", display_name=f"Adversarial training Linf eps={eps}/255")

    for mid, acc, file, name in [
            ("resnet50.autoaugment_270ep", 77.5, "resnet50_aa-0cb27f8e.pth", "AutoAugment (270 ep)"),
            ("resnet50.fastautoaugment_270ep", 77.65, "resnet50_fast_aa-3342410e.pth", "Fast AutoAugment (270 ep)"),
            ("resnet50.randaugment_270ep", 77.64, "resnet50_rand_aug-e38097c7.pth", "RandAugment (270 ep)")]:
        reg(mid, category=AUGMENTATION, top1=acc, source=_HANG + file, layout="state_dict", display_name=name)
    gd = [("resnet50_augmix_180ep", 77.53, "1z-1V3rdFiwqSECz7Wkmn4VJVefJGJGiF", "AugMix (180 ep)"),
          ("resnet50_deepaugment", 77.65, "1DPRElQnBG66nd7GUphVm1t-5NroL7t7k", "DeepAugment"),
          ("resnet50_deepaugment_augmix", 75.8, "1QKmc_p6-qDkh51WvsaS9HKFv8bX5jLnP", "DeepAugment + AugMix")]
    for mid, acc, drive, name in gd:
        reg(mid, category=AUGMENTATION, top1=acc, source=f"gdrive:{drive}", layout="generic", display_name=name)
    reg("resnet50_diffusionnoise_fixed_nonoise", category=AUGMENTATION, top1=67.22, layout="module_model",
        source="https://huggingface.co/paulgavrikov/resnet50.in1k_diffusionnoise_90ep/resolve/main/"
               "resnet50_diffusionnoise_nonorm_last.pth",
        normalized=False, display_name="Diffusion noise (no input normalization)")
    for mid, acc, drive, name in [
            ("resnet50_noisymix", 77.05, "1Na79fzPZ0Azg01h6kGn1Xu5NoWOElSuG", "NoisyMix"),
            ("resnet50_opticsaugment", 74.22, "1y0MSlVfzZBKZQEiZF2FCOmsk-91miIHR", "OpticsAugment"),
            ("resnet50_pixmix_180ep", 78.09, "1cgKYXDym3wgquf-4hwr_Ra3qje6GNHPH", "PixMix (180 ep)"),
            ("resnet50_pixmix_90ep", 77.36, "1_i45yvC88hos50QjkoD97OgbDGreKdp9", "PixMix (90 ep)")]:
        reg(mid, category=AUGMENTATION, top1=acc, source=f"gdrive:{drive}", layout="generic", display_name=name)
    reg("resnet50_prime", category=AUGMENTATION, top1=76.91, layout="state_dict", display_name="PRIME",
        source="https://zenodo.org/record/5801872/files/ResNet50_ImageNet_PRIME_noJSD.ckpt?download=1")
    for mid, acc, path, name in [
            ("resnet50_trained_on_SIN", 60.18, "6f41d2e86fc60566f78de64ecff35cc61eb6436f/"
             "resnet50_train_60_epochs-c8e5653e.pth.tar", "Stylized-ImageNet"),
            ("resnet50_trained_on_SIN_and_IN", 74.59, "60b770e128fffcbd8562a3ab3546c1a735432d03/"
             "resnet50_train_45_epochs_combined_IN_SF-2a0d100e.pth.tar", "Stylized-ImageNet + ImageNet"),
            ("resnet50_trained_on_SIN_and_IN_then_finetuned_on_IN", 76.72,
             "60b770e128fffcbd8562a3ab3546c1a735432d03/resnet50_finetune_60_epochs_lr_decay_after_30_start_"
             "resnet50_train_45_epochs_combined_IN_SF-ca06340c.pth.tar",
             "Stylized-ImageNet + ImageNet, fine-tuned on ImageNet")]:
        reg(mid, category=AUGMENTATION, top1=acc, source=_SIN + path, layout="state_dict", display_name=name)
    for mid, acc, drive, name in [
            ("resnet50_tsbias_debiased", 76.89, "1r-OSfTtrlFhB9GPiQXUE1h6cqosaBePw", "Shape-texture debiased"),
            ("resnet50_tsbias_sbias", 76.21, "1p0fZ9rU-J1v943tA7PlNMLuDXk_1Iy3K", "Shape-biased"),
            ("resnet50_tsbias_tbias", 75.27, "1tFy2Q28rAqqreaS-27jifpyPzlohKDPH", "Texture-biased")]:
        reg(mid, category=AUGMENTATION, top1=acc, source=f"gdrive:{drive}", layout="tsbias", display_name=name)

    reg("resnet50_dino", category=SELF_SUPERVISED, top1=75.28, layout="dino", display_name="DINO (linear probe)",
        source=f"{_FB}dino/dino_resnet50_pretrain/dino_resnet50_pretrain.pth",
        head=f"{_FB}dino/dino_resnet50_pretrain/dino_resnet50_linearweights.pth")
    for ep, acc in [("1000", 74.6), ("100", 68.91), ("300", 72.8)]:
        reg(f"resnet50_moco_v3_{ep}ep", category=SELF_SUPERVISED, top1=acc, layout="state_dict",
            source=f"{_FB}moco-v3/r-50-{ep}ep/linear-{ep}ep.pth.tar", display_name=f"MoCo v3 ({ep} ep, linear probe)")
    reg("resnet50_simclrv2", category=SELF_SUPERVISED, top1=74.9, layout="simclrv2", normalized=False,
        source="gdrive:1fDaMhujPnxo4SYOe4asPqCKQ3XB_sZvj", display_name="SimCLRv2 (linear probe)")
    reg("resnet50_swav", category=SELF_SUPERVISED, top1=75.31, layout="swav", display_name="SwAV (linear probe)",
        source=f"{_FB}deepcluster/swav_800ep_pretrain.pth.tar", head=f"{_FB}deepcluster/swav_800ep_eval_linear.pth.tar")

    for tag, acc in [("a1", 80.1), ("a1h", 80.1), ("a2", 79.8), ("a3", 77.55), ("b1k", 79.16), ("b2k", 79.27),
                     ("c1", 79.76), ("c2", 79.92), ("d", 79.89)]:
        reg(f"resnet50.{tag}_in1k", category=IMPROVED_RECIPE, top1=acc, source=f"timm:resnet50.{tag}_in1k",
            layout="torchvision", display_name=f"timm recipe {tag.upper()}")
    reg("tv2_resnet50", category=IMPROVED_RECIPE, top1=80.34, source="torchvision:IMAGENET1K_V2", layout="torchvision",
        display_name="torchvision ResNet-50 (IMAGENET1K_V2)")

    reg("resnet50_frozen_random", category=CONTROL, top1=None, source="gdrive:1IT65JJauql-Jdw-0AjAhEGGApGMVx-VE",
        layout="generic", display_name="Frozen random backbone (control)")


_builtin()
