"""``compress()``: remove residual blocks by a rule, save the smaller model, optionally fine-tune it."""
from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from ..accuracy import accuracy
from ..data import EvalData
from ..errors import ConfigError, LayercritError
from ..models import ModelBundle, get_arch, save_safetensors
from ..models.checkpoint import describe_weights
from .cost import flops, parameter_count
from ..train import get_recipe, train
from .select import RULES, input_size, select_greedy, select_magnitude, select_random, without_blocks

log = logging.getLogger("layercrit")

MODEL_FILE = "model.safetensors"
SIDECAR_FILE = "compress.json"
FINETUNED_DIR = "finetuned"
STAMP_FILE = "in-progress.json"  # what OUT.partial holds the work of


def top1(bundle: ModelBundle, data: EvalData) -> float:
    """Top-1 accuracy (%) of ``bundle`` on ``data`` (the training lab's evaluation, on the model's device)."""
    return accuracy(bundle.model, data)


def choose_blocks(bundle: ModelBundle, rule: str, *, remove: int | None, max_drop: float | None,
                  data: EvalData | None, seed: int = 0, batch_size: int = 128, device: str = "cpu",
                  progress: bool = False) -> tuple[list[str], dict]:
    """The blocks ``rule`` removes, and what the choice was based on (for the sidecar)."""
    if rule not in RULES:
        raise LayercritError(f"unknown rule '{rule}': use {', '.join(RULES)}")
    if rule != "criticality":
        if remove is None or max_drop is not None:
            raise ConfigError(f"{{rule}} {rule} takes {{remove}} N (only the criticality rule measures, so only it "
                              "can stop at {max_drop})")
        blocks = select_random(bundle, remove, seed) if rule == "random" else select_magnitude(bundle, remove)
        return blocks, {}
    if data is None:
        raise ConfigError("the criticality rule measures blocks: give {data} (selection images)")
    result = select_greedy(bundle, data, remove=remove, max_drop=max_drop, batch_size=batch_size, device=device,
                           progress=progress)
    return result.removed, {"selection_top1_acc": result.base_top1_acc, "steps": result.steps.to_dict("records")}


def compress(bundle: ModelBundle, out: str | Path, *, rule: str = "criticality", remove: int | None = None,
             max_drop: float | None = None, data: EvalData | None = None, test_data: EvalData | None = None,
             seed: int = 0, batch_size: int = 128, device: str = "cpu", finetune: dict | None = None,
             progress: bool = False) -> dict:
    """Remove blocks of ``bundle`` by ``rule`` and save the smaller model into ``out``.

    ``out`` gets ``model.safetensors`` (self-describing: ``file:out/model.safetensors`` loads it
    as its architecture variant) and ``compress.json`` (blocks removed, the greedy steps,
    parameters, FLOPs, test top-1 where ``test_data`` is given). ``finetune`` (keyword arguments
    of :func:`layercrit.train.train` plus ``method`` and ``data``, the CIFAR-10 root) fine-tunes
    the compressed model with the training lab into ``out/finetuned``. Everything is written
    into ``out.partial`` first and renamed when complete. A rerun after an interruption chooses
    the blocks again (deterministically) and, where base weights, blocks and fine-tuning options
    are the same, continues the fine-tuning in ``out.partial``; anything else there is discarded.
    """
    out = Path(out)
    if out.exists():
        raise ConfigError(f"{out} exists already: choose another {{out}}, or delete it")
    if not out.parent.is_dir():
        raise ConfigError(f"folder for {{out}} does not exist: {out.parent}: create it first")
    if finetune:
        _check_finetune(bundle, finetune)  # before the (long) selection
    blocks, basis = choose_blocks(bundle, rule, remove=remove, max_drop=max_drop, data=data, seed=seed,
                                  batch_size=batch_size, device=device, progress=progress)
    small = without_blocks(bundle, blocks)
    tmp = out.with_name(out.name + ".partial")
    stamp = json.dumps({"base_weights": bundle.checksum(), "blocks": blocks, "rule": rule,
                        "finetune": {k: v for k, v in (finetune or {}).items() if k != "threads"}},
                       sort_keys=True, default=str)
    if tmp.exists() and not ((tmp / STAMP_FILE).is_file() and (tmp / STAMP_FILE).read_text() == stamp):
        shutil.rmtree(tmp)  # left by a run of another model or other options
    tmp.mkdir(exist_ok=True)
    (tmp / STAMP_FILE).write_text(stamp)
    save_safetensors(small.network, tmp / MODEL_FILE,
                     metadata={**describe_weights(small.arch, _num_classes(small), *_normalization(bundle)),
                               "layercrit.base_spec": bundle.spec, "layercrit.removed_blocks": ",".join(blocks)})
    size = input_size(bundle)
    info = {"base_spec": bundle.spec, "base_arch": bundle.arch, "arch": small.arch, "rule": rule, "seed": seed,
            "remove": remove, "max_drop": max_drop, "removed_blocks": blocks, **basis,
            "params": {"base": parameter_count(bundle.network), "compressed": parameter_count(small.network)},
            "flops": {"base": flops(bundle.network, size), "compressed": flops(small.network, size)},
            "model": MODEL_FILE}
    if test_data is not None:
        info["test"] = {"samples": len(test_data), "base_top1_acc": top1(bundle, test_data),
                        "top1_acc": top1(small, test_data)}
    if finetune:
        options = dict(finetune)
        method, root = options.pop("method", "standard"), options.pop("data")
        sidecar = train(method, root, tmp / FINETUNED_DIR, arch=small.arch, init_from=str(tmp / MODEL_FILE),
                        progress=progress, **options)
        info["finetuned"] = {"method": method, "dir": FINETUNED_DIR, "clean_test_acc": sidecar["clean_test_acc"],
                             "epochs": sidecar["hyperparameters"]["epochs"], "lr": sidecar["hyperparameters"]["lr"],
                             "train_samples": sidecar["hyperparameters"]["train_samples"],
                             "seconds": sidecar.get("train_seconds")}
    (tmp / SIDECAR_FILE).write_text(json.dumps(info, indent=2, default=float))
    if finetune:  # the fine-tuned model's init_from points into the temporary folder: record the final one
        _repoint(tmp / FINETUNED_DIR, tmp, out)
    (tmp / STAMP_FILE).unlink()
    shutil.move(str(tmp), str(out))
    log.info(f"removed {len(blocks)} block(s) ({', '.join(blocks) or 'none'}): "
             f"{info['params']['compressed'] / info['params']['base']:.1%} of the parameters, "
             f"{info['flops']['compressed'] / info['flops']['base']:.1%} of the FLOPs; saved to {out}")
    return info


def _check_finetune(bundle: ModelBundle, finetune: dict) -> None:
    if "data" not in finetune:
        raise ConfigError("fine-tuning needs data: the CIFAR-10 root ({finetune_data})")
    root = Path(finetune["data"])
    if not ((root / "train").is_dir() or (root / "cifar-10-batches-py").is_dir()):
        raise ConfigError(f"{{finetune_data}} {root}: no train/ folder or cifar-10-batches-py there: give the "
                          "CIFAR-10 root, e.g. ../shared/data/cifar10")
    get_recipe(finetune.get("method", "standard"))  # unknown method: one clear error
    arch = get_arch(bundle.arch)
    if not _close(_normalization(bundle), arch):
        raise LayercritError(f"fine-tuning trains with {bundle.arch}'s input normalization, which this model does not "
                             "use: compress without fine-tuning, or fine-tune it yourself")


def _close(norm: tuple, arch) -> bool:
    mean, std = norm
    if mean is None or arch.mean is None:  # raw input, or an architecture whose normalization is not known
        return False
    return all(abs(a - b) < 1e-6 for a, b in zip([*mean, *std], [*arch.mean, *arch.std]))


def _num_classes(bundle: ModelBundle) -> int:
    if bundle.num_classes is None:  # without_blocks refuses such bundles before
        raise LayercritError(f"{bundle.model_id}: its class count is unknown (a module given directly)")
    return bundle.num_classes


def _normalization(bundle: ModelBundle) -> tuple:
    model = bundle.model
    if not model.normalize:
        return None, None
    return model.mean.flatten().tolist(), model.std.flatten().tolist()


def _repoint(run_dir: Path, tmp: Path, out: Path) -> None:
    path = run_dir / "run.json"
    sidecar = json.loads(path.read_text())
    sidecar["hyperparameters"]["init_from"] = str(out / MODEL_FILE)
    path.write_text(json.dumps(sidecar, indent=2))
