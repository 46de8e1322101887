"""The plan of one model's measurement: its units, resets and jobs, checked before anything runs.

A *job* is one (reset, trial, unit): put the reset parameters into that unit, evaluate the
images, compare with the unmodified model, restore the unit. :func:`plan_measurement` loads the
data (if given as a folder), finds the units, checks that model and data fit, and lists the jobs;
every executor starts from the resulting :class:`MeasurePlan`.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..data import EvalData, load_data
from ..errors import ConfigError, LayercritError, Message
from ..paths import file_sha256
from ..models import ModelBundle, NormalizedModel
from ..resets import Reset, ResetContext, Unit, discover_blocks, discover_layers, parse_reset
from .batching import choose_for_plan
from .calibration import at_bound, calibration_record, fit_temperature, logits_of
from .config import MeasureConfig, output_label
from .hardware import warn_if_slow
from .metrics import ResetMetrics
from .outputs import Output

log = logging.getLogger("layercrit")

JobKey = tuple[str, str, int]  # (unit name, reset name, trial): a result row's key
Row = dict[str, Any]  # one finished job: the columns of store.RESULT_COLUMNS


@dataclass
class Job:
    """One (reset, trial, unit) to measure, with its running sums (possibly restored from a saved state)."""

    reset: Reset
    trial: int
    unit: Unit
    metrics: ResetMetrics = field(default_factory=ResetMetrics)
    values: dict[str, torch.Tensor] | None = None  # the unit's reset parameters, drawn once

    @property
    def key(self) -> JobKey:
        return self.unit.name, self.reset.name, self.trial


@dataclass
class MeasurePlan:
    """One model's measurement, prepared and checked; what every executor starts from."""

    bundle: ModelBundle
    data: EvalData
    config: MeasureConfig
    device: torch.device  # where the jobs run (as requested; an executor may place them itself)
    units: list[Unit]
    resets: list[Reset]  # in the order of config.reset
    jobs: list[Job]
    model_id: str
    category: str | None
    identity: dict[str, Any]  # what must not change when a run resumes
    record: dict[str, Any]  # the configuration as the results database records it

    @property
    def n_samples(self) -> int:
        return len(self.data)

    @property
    def weights_sha256(self) -> str:
        return str(self.identity["weights_sha256"])

    @property
    def data_fingerprint(self) -> str:
        return self.data.fingerprint


def plan_measurement(bundle: ModelBundle, data: EvalData | str | os.PathLike[str], config: MeasureConfig, *,
                     device: torch.device, probe_device: torch.device | None = None,
                     progress: bool = False) -> MeasurePlan:
    """Load the data (a folder) or draw from it (an :class:`EvalData`), find the units, list the jobs.

    The model is run once on ``probe_device`` (default ``device``) to check that its outputs fit the
    data's classes; a driver that only prepares work for other machines probes on the CPU.
    """
    probe_device = probe_device or device
    source = data  # the folder or EvalData the measured images are drawn from (held-out images come from it too)
    if isinstance(data, EvalData):
        if config.samples is not None and config.samples != len(data):
            data = data.subset(config.samples, config.seed)
    else:
        size = config.input_size or bundle.input_size
        if size is None:
            raise ConfigError(f"the input resolution of {bundle.arch} is unknown, so images cannot be loaded for it: "
                              "give {input_size}: the image size it was trained on (e.g. 32 for CIFAR-10, 224 for "
                              "ImageNet)", ("input_size",),
                              python={"input_size": "input_size=N (or data loaded with layercrit.load_data)"})
        data = load_data(os.fspath(data), input_size=size, samples=config.samples, seed=config.seed,
                         split=config.split, progress=progress, cache=config.data_cache)
    net = bundle.model.eval().to(probe_device)
    context = ResetContext(bundle.factory, bundle.network, config.seed, config.trust_pickle)
    resets = [parse_reset(r).prepare(context) for r in config.reset]
    size = data.images.shape[-1]
    if config.unit == "block":
        units = discover_blocks(bundle.network, size, patterns=list(config.layers))
    else:
        units = discover_layers(bundle.network, size, types=config.types, patterns=list(config.layers))
    output = Output(config.output, net)  # what is compared (outputs.py): checked on the probe pass
    with torch.inference_mode():
        first = data.images[:2].to(probe_device)
        probe, after = output.probe(first.float().div(255) if first.dtype == torch.uint8 else first.float(),
                                    [u.name for u in units])
    if not bool(torch.isfinite(probe).all()):
        raise nonfinite_base_error()
    if output.classes and probe.dim() != 2:
        raise ConfigError(
            f"the model's output has shape {tuple(probe.shape)} for {len(first)} image(s): a classifier returns one "
            "row of class scores (logits) per image; to compare another output (e.g. the pooled features of a "
            "headless backbone) give {output} module:<name>", ("output",))
    # no class count from the model and no Linear layer: its outputs may be features (a headless backbone) or the
    # class scores of a convolutional head (SqueezeNet): said, since only the data's class count was checked
    unknown_head = bundle.num_classes is None and not any(isinstance(m, nn.Linear) for m in net.modules())
    if output.classes and probe.shape[1] != data.num_classes:
        if unknown_head:  # no num_classes would change what such a network builds
            raise ConfigError(f"the model has {probe.shape[1]} outputs but the data has {data.num_classes} classes, "
                              "and no Linear layer: if it is a backbone without a classifier, compare its features "
                              "with {output} module:<name> (or use data with matching classes)", ("output",))
        raise ConfigError(f"the model has {probe.shape[1]} outputs but the data has {data.num_classes} "
                          f"classes: pass {{num_classes}} {data.num_classes} (or use matching data; to compare "
                          "features instead of class scores give {output} module:<name>)", ("num_classes", "output"))
    if output.classes and unknown_head:
        log.warning(Message(f"{bundle.model_id} has no Linear layer and no known class count: its "
                            f"{probe.shape[1]} outputs are taken as class scores of the data's {data.num_classes} "
                            "classes; if they are features (a backbone without a classifier), give {output} "
                            "module:<name>"))
    if after:
        raise ConfigError(f"{{output}} {output.label}: {len(after)} of the {len(units)} selected unit(s) run after "
                          f"that module ({', '.join(after[:3])}{', ...' if len(after) > 3 else ''}), so a reset of "
                          "them cannot change it: leave them out with {layers} "
                          + " ".join(f"'!{n}'" for n in after[:3]) + (" ..." if len(after) > 3 else "")
                          + " (or compare a later module)", ("output", "layers"))
    warn_if_slow(config.precision, device)
    calibration = None
    if config.temperature == "calibrate":  # fitted once here; the jobs see a number (config.temperature)
        held_out = _held_out(data, source, config, bundle, progress)
        logits = logits_of(net, held_out.images, probe_device)
        fitted = fit_temperature(logits, held_out.labels)
        calibration = calibration_record(logits, held_out.labels, fitted, held_out.fingerprint)
        log.info(f"{bundle.model_id}: temperature {fitted:g} fitted on {len(held_out)} held-out images "
                 f"(NLL {calibration['nll_at_1']:.4f} at T = 1, {calibration['nll_at_t']:.4f} at T = {fitted:g})")
        if at_bound(fitted):
            log.warning(f"{bundle.model_id}: the fitted temperature {fitted:g} is the edge of the search (1/20 to "
                        "20): the held-out NLL kept falling, as for an untrained or at-chance model; its calibrated "
                        "criticality describes a nearly flat (or one-hot) softmax")
        config = config.replace(temperature=fitted)
    auto = None
    if config.batch_size == "auto":  # the fastest batch size whose memory fits the budget (batching.py)
        auto = choose_for_plan(net, data.images, [u.name for u in units], engine=config.engine,
                               precision=config.precision, channels_last=config.channels_last,
                               max_memory=config.max_memory, device=device, probe_device=probe_device)
        config = config.replace(batch_size=auto.batch_size, max_memory=None)
    jobs = [Job(r, t, u) for r in resets for t in config.trials_of(r.stochastic) for u in units]
    identity = {"weights_sha256": bundle.checksum(), "data_fingerprint": data.fingerprint, "seed": config.seed,
                "arch": bundle.arch, "normalize": _normalization(bundle.model), "precision": config.precision,
                "target_ci": config.target_ci}
    if bundle.arch_code is not None:  # an architecture from the user's code: a changed file is a changed model
        identity["arch_code"] = dict(bundle.arch_code)
    if calibration is not None or config.temperature is not None:  # only then: older runs have no such key
        identity["temperature"] = "calibrate" if calibration is not None else config.temperature
    if config.output != "probs":  # likewise: runs from before it compared the softmax
        identity["output"] = output_label(config.output)
    files = {f for r in resets for f in r.files()}
    if files:  # init:/interpolate: checkpoints are named by their path: what is in them decides the rows
        identity["reset_files"] = {f: file_sha256(f) for f in sorted(files)}
    record = {**identity, "model_spec": bundle.spec, "num_classes": data.num_classes, "samples": len(data),
              "data_source": data.source, "trials": config.trials, "resets": [r.name for r in resets],
              "unit": config.unit, "types": list(config.types) if config.unit == "layer" else [],
              "layers": list(config.layers), "batch_size": config.batch_size, "device": str(device),
              "engine": config.engine, "output": output.label}
    if bundle.key_map is not None:  # a checkpoint named otherwise: how its tensors found their places
        record["key_map"] = bundle.key_map
    if calibration is not None:
        record["calibration"] = calibration  # the fitted T, its held-out images and the NLL it reached
    if auto is not None:
        record["batch_size_auto"] = auto.record()  # how it was chosen: budget, bytes per image, images/s
    return MeasurePlan(bundle, data, config, device, units, resets, jobs, bundle.model_id, bundle.category, identity,
                       record)


def _held_out(data: EvalData, source: EvalData | str | os.PathLike[str], config: MeasureConfig,
              bundle: ModelBundle, progress: bool) -> EvalData:
    """{calibration_samples} labelled images drawn after the measured ones in the same seeded order: disjoint
    from them, and the measured images are the same as without calibration."""
    n = config.calibration_samples
    if isinstance(source, EvalData):
        if len(data) == len(source):
            raise ConfigError("{temperature} calibrate fits T on images held out from the measured ones, but all of "
                              "the given data is measured: give {samples} fewer than its images (or a folder)",
                              ("temperature", "samples"))
    size = data.images.shape[-1]
    try:
        if isinstance(source, EvalData):
            return source.subset(n if n is not None else len(source) - len(data), config.seed, skip=len(data))
        return load_data(os.fspath(source), input_size=config.input_size or bundle.input_size or size, samples=n,
                         seed=config.seed, split=config.split, progress=progress, cache=config.data_cache,
                         skip=len(data))
    except ConfigError as e:
        if e.fields != ("samples",):
            raise
        raise ConfigError(f"{{temperature}} calibrate needs {{calibration_samples}} images beside the {len(data)} "
                          f"measured ({e.template.replace('{samples}', '{calibration_samples}')}): lower {{samples}} or "
                          "{calibration_samples}", ("temperature", "calibration_samples", "samples")) from None


def _normalization(model: NormalizedModel) -> list[list[float]] | None:
    if not model.normalize:
        return None
    return [[round(v, 6) for v in model.mean.flatten().tolist()], [round(v, 6) for v in model.std.flatten().tolist()]]


def nonfinite_base_error() -> LayercritError:
    """The unmodified model's outputs hold NaN or Inf: nothing can be compared with them (issue 14)."""
    return ConfigError("the unmodified model's outputs are not finite (NaN or Inf): check its weights and the "
                       "input normalization ({mean}/{std}); a reset can only be compared with finite outputs")
