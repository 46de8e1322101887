"""Load a checkpoint into an architecture whose parameter names differ: key maps.

A checkpoint trained in another codebase names its tensors its own way (``_blocks.3._bn0.weight`` in
lukemelas' ``efficientnet_pytorch``, ``blocks.1.1.bn1.weight`` in timm). A key map says which checkpoint
tensor fills which parameter or buffer of the architecture, in one of two ways:

**Rules** (:class:`KeyMap`): ordered regular-expression renames, applied like a ``sed`` script: each
checkpoint name goes through every rule in turn (``re.sub(pattern, replace, name)``, the rule's output
is the next rule's input; ``\\1`` / ``\\g<name>`` refer to groups). From the command line
``--key-map 'PATTERN=REPLACEMENT'`` (repeatable; split at the last ``=``), or a TOML file::

    [[rename]]                       # in order; each one sees the previous one's result
    pattern = '^_fc\\.'
    replace = 'classifier.'

    [keys]                           # exact names, taken as they are (no rule applies to them)
    "_conv_stem.weight" = "conv_stem.weight"

**Auto** (``--key-map auto``, :func:`auto_map`): tensors are paired by *kind* (the name's last part:
``weight``, ``bias``, ``running_mean``, ...) and *shape*, the checkpoint's in the order it stores them,
the model's in the order it defines them (its ``state_dict()`` order). A tensor whose (kind, shape)
occurs exactly once in the checkpoint and once in the model is paired by that alone, wherever it
stands. Tensors whose (kind, shape) occurs more than once (the blocks of a stage) are paired in order,
and only where those repeated tensors, of all kinds and shapes together, come in the same sequence on
both sides: then the pairing is the only one that matches every kind and shape and keeps their order.
Anything else is refused, naming where it fails: a (kind, shape) that one side has more often than the
other ("no pairing": a tensor without a partner), or repeated shapes in another sequence ("ambiguous":
several pairings fit and nothing tells which is right). The pairing found is refused as ambiguous too where
it does not keep layers whole, where a checkpoint module's tensors (those whose names differ only in the last
dotted part: ``blocks.1.weight`` and ``blocks.1.bias`` are module ``blocks.1``) do not all go to one model
module, or two checkpoint modules go to the same one; and where the tensors of a repeated (kind, shape) come
sorted as text (``blocks.10`` before ``blocks.2``) and that is not the order of the numbers in their names, the
sign of a file sorted by name that in order would pair layer 10 with the model's layer 2. Auto needs a
checkpoint that keeps the order in which its model was saved (``torch.save(model.state_dict())`` does). A
``.safetensors`` file sorts its names: the checks above refuse what that does to numbered layers and to layers
whose tensors it puts out of the model's sequence (a Conv2d's ``bias`` before its ``weight``), but not a swap
of whole layers of equal shapes whose names carry no numbers to tell (``head`` sorted before ``stem``). For a
sorted file, give rules, e.g. the pairs auto writes (:func:`mapping_toml`) for a copy of the checkpoint saved
in its model's order, unless its names sort in the order of its model's layers.

Either way the result is strict (:meth:`KeyMapping.check`): every checkpoint tensor is used once, every
parameter and buffer of the model is filled, shapes are equal; what breaks that is one error naming
counts and the first examples of each problem. BatchNorm's ``num_batches_tracked`` buffers (its count of
training batches, never read in eval mode and absent from many checkpoints) take no part in that: they
are carried over where both sides have one (in auto mode with the BatchNorm the ``running_mean`` next to
them went to), dropped where the model has none, and left at the model's value where the checkpoint
has none; the mapping counts them.

The mapping (:class:`KeyMapping`) says itself in one line (:meth:`KeyMapping.summary`), is recorded in
the run's configuration (:meth:`KeyMapping.record`: method, rules, every renamed pair and a sha256 over
all pairs) and can be written as a TOML key map (:func:`mapping_toml`) that pins it for later runs.
"""
from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError

AUTO = "auto"
COUNTER = "num_batches_tracked"  # BatchNorm's training-batch count: outside strictness (see the module doc)
# Other codebases' words for the same kinds of tensor (TensorFlow ports, old Torch7 conversions)
_KIND_ALIASES = {"gamma": "weight", "beta": "bias", "moving_mean": "running_mean", "moving_variance": "running_var",
                 "kernel": "weight"}
SHOWN = 3  # examples per problem in an error line


def _fail(message: str) -> ConfigError:
    return ConfigError(message, ("key_map",))


@dataclass(frozen=True)
class Rename:
    """One rule: ``re.sub(pattern, replace, name)``."""

    pattern: str
    replace: str
    compiled: re.Pattern[str] | None = field(compare=False, repr=False, default=None)

    @classmethod
    def make(cls, pattern: Any, replace: Any, where: str) -> Rename:
        if not isinstance(pattern, str) or not isinstance(replace, str):
            raise _fail(f"{{key_map}} {where}: a rule needs a pattern and a replacement (strings), got "
                        f"{pattern!r} and {replace!r}")
        if not pattern:
            raise _fail(f"{{key_map}} {where}: empty pattern: give a regular expression, e.g. '^_fc\\.=classifier.'")
        try:
            compiled = re.compile(pattern)
        except re.error as e:
            raise _fail(f"{{key_map}} {where}: pattern {pattern!r} is not a regular expression ({e})") from None
        return cls(pattern, replace, compiled)

    def __call__(self, name: str) -> str:
        try:
            return (self.compiled or re.compile(self.pattern)).sub(self.replace, name)
        except (re.error, IndexError) as e:
            raise _fail(f"{{key_map}}: replacement {self.replace!r} of pattern {self.pattern!r} does not fit it "
                        f"({e}): refer only to groups the pattern has (\\1, \\g<name>)") from None


@dataclass(frozen=True)
class KeyMap:
    """How checkpoint names become the architecture's: ``auto``, or exact ``keys`` then ordered ``rules``.

    Build one with :meth:`parse` from what ``create_model(key_map=...)`` and ``--key-map`` take.
    """

    rules: tuple[Rename, ...] = ()
    keys: tuple[tuple[str, str], ...] = ()  # exact checkpoint name -> model name, before any rule
    auto: bool = False
    files: tuple[str, ...] = ()  # TOML files the rules came from (for the record)

    @classmethod
    def parse(cls, value: Any) -> KeyMap:
        """``"auto"``; a TOML file's path; one rule ``"PATTERN=REPLACEMENT"``; or a sequence of rules and
        files (their rules in the order given). A :class:`KeyMap` is returned as it is."""
        if isinstance(value, KeyMap):
            return value
        given = [value] if isinstance(value, (str, Path)) else value
        if not isinstance(given, Sequence) or isinstance(given, (bytes, bytearray)) or not given:
            raise _fail(f"{{key_map}} {value!r}: give 'auto', a TOML file of rules, or rules 'PATTERN=REPLACEMENT'")
        items: list[str] = [str(v) if isinstance(v, Path) else v for v in given]
        if any(not isinstance(v, str) for v in items):
            raise _fail(f"{{key_map}} {value!r}: give 'auto', a TOML file of rules, or rules 'PATTERN=REPLACEMENT' "
                        "(strings)")
        if AUTO in items:
            if len(items) > 1:
                raise _fail("{key_map} auto pairs every tensor by itself: give it alone, not with rules or files")
            return cls(auto=True)
        rules: list[Rename] = []
        keys: dict[str, str] = {}
        files: list[str] = []
        for n, item in enumerate(items, 1):
            path = Path(item)
            if path.is_file() or ("=" not in item and item.endswith(".toml")):
                file_rules, file_keys = _read_toml(path)
                rules += file_rules
                for k, v in file_keys.items():
                    if keys.setdefault(k, v) != v:
                        raise _fail(f"{{key_map}}: {k!r} is mapped to both {keys[k]!r} and {v!r}: keep one")
                files.append(str(path))
            elif "=" in item:
                pattern, _, replace = item.rpartition("=")
                rules.append(Rename.make(pattern, replace, f"rule {n} {item!r}"))
            else:
                raise _fail(f"{{key_map}} {item!r}: not 'auto', not an existing file and not a rule "
                            "'PATTERN=REPLACEMENT'")
        return cls(tuple(rules), tuple(keys.items()), False, tuple(files))

    def rename(self, name: str) -> str:
        """The model name a checkpoint name becomes under these rules (not for ``auto``)."""
        exact = dict(self.keys)
        if name in exact:
            return exact[name]
        for rule in self.rules:
            name = rule(name)
        return name

    def describe(self) -> str:
        if self.auto:
            return AUTO
        parts = [f"{len(self.rules)} rule(s)"] + ([f"{len(self.keys)} exact name(s)"] if self.keys else [])
        return " + ".join(parts) + (f" from {', '.join(self.files)}" if self.files else "")

    def pair(self, state: Mapping[str, torch.Tensor], model: nn.Module | Mapping[str, torch.Tensor] | None = None
             ) -> KeyMapping:
        """The mapping of ``state``'s names: by the rules, or for ``auto`` against ``model`` (needed then).
        Not yet checked for strictness: :meth:`KeyMapping.check` against the model does that."""
        if self.auto:
            if model is None:
                raise _fail("{key_map} auto needs the model to pair the checkpoint's tensors with")
            return auto_map(state, model)
        pairs = tuple((k, self.rename(k)) for k in state)
        rules = tuple((r.pattern, r.replace) for r in self.rules)
        return KeyMapping("rules", pairs, rules=rules, keys=self.keys, files=self.files)


def _read_toml(path: Path) -> tuple[list[Rename], dict[str, str]]:
    """The ``[[rename]]`` rules and ``[keys]`` of a key-map file."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise _fail(f"{{key_map}} file {path} not found: check the path") from None
    except OSError as e:
        raise _fail(f"{{key_map}} file {path} cannot be read ({e.strerror or e}): check the path") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise _fail(f"{{key_map}} file {path} is not valid TOML ({e})") from None
    unknown = sorted(set(raw) - {"rename", "keys"})
    if unknown:
        raise _fail(f"{{key_map}} file {path}: unknown section(s) {', '.join(unknown)}: a key map has [[rename]] "
                    "rules (pattern, replace) and a [keys] table")
    renames = raw.get("rename", [])
    keys = raw.get("keys", {})
    if not isinstance(renames, list) or not all(isinstance(r, dict) for r in renames):
        raise _fail(f"{{key_map}} file {path}: rename must be an array of tables: [[rename]] pattern = ... "
                    "replace = ...")
    if not isinstance(keys, dict) or not all(isinstance(v, str) for v in keys.values()):
        raise _fail(f"{{key_map}} file {path}: [keys] must map checkpoint names to model names (strings)")
    rules = []
    for n, r in enumerate(renames, 1):
        extra = sorted(set(r) - {"pattern", "replace"})
        if extra:
            raise _fail(f"{{key_map}} file {path}: rename {n}: unknown field(s) {', '.join(extra)} (pattern, replace)")
        rules.append(Rename.make(r.get("pattern"), r.get("replace"), f"file {path}, rename {n}"))
    if not rules and not keys:
        raise _fail(f"{{key_map}} file {path} holds no rules: add [[rename]] pattern = ... replace = ..., or [keys]")
    return rules, keys


def _kind(name: str) -> str:
    last = name.rsplit(".", 1)[-1]
    return _KIND_ALIASES.get(last, last)


def _shape(t: torch.Tensor) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def _counter(name: str) -> bool:
    return name.rsplit(".", 1)[-1] == COUNTER


def auto_map(state: Mapping[str, torch.Tensor], model: nn.Module | Mapping[str, torch.Tensor]) -> KeyMapping:
    """Pair ``state``'s tensors with ``model``'s by kind and shape in order (the rule: this module's doc).
    Refused, naming where, unless the pairing is unique."""
    target = model.state_dict() if isinstance(model, nn.Module) else model
    src = [(k, (_kind(k), _shape(v))) for k, v in state.items() if not _counter(k)]
    dst = [(k, (_kind(k), _shape(v))) for k, v in target.items() if not _counter(k)]
    have, want = Counter(s for _, s in src), Counter(s for _, s in dst)
    if have != want:
        extra, lacking = have - want, want - have
        first = {s: k for k, s in reversed(src)}, {s: k for k, s in reversed(dst)}
        parts = []
        if extra:
            parts.append(f"{sum(extra.values())} checkpoint tensor(s) without a partner in the model "
                         f"({_examples([f'{first[0][s]} ({s[0]} {s[1]})' for s in extra])})")
        if lacking:
            parts.append(f"{sum(lacking.values())} model tensor(s) without a partner in the checkpoint "
                         f"({_examples([f'{first[1][s]} ({s[0]} {s[1]})' for s in lacking])})")
        raise _fail(f"{{key_map}} auto: no pairing by kind and shape: the checkpoint has {len(src)} tensors, the "
                    f"model {len(dst)} (not counting {COUNTER}); {'; '.join(parts)}: check the architecture and "
                    "the class count, or give rules (PATTERN=REPLACEMENT, or a TOML file)")
    repeated = {s for s, n in have.items() if n > 1}
    src_rep = [(k, s) for k, s in src if s in repeated]
    dst_rep = [(k, s) for k, s in dst if s in repeated]
    for n, ((sk, ss), (dk, ds)) in enumerate(zip(src_rep, dst_rep)):
        if ss != ds:
            raise _fail(f"{{key_map}} auto: ambiguous: tensors of repeated shapes come in another order in the "
                        f"checkpoint than in the model (first at the {_ordinal(n + 1)} of them: checkpoint {sk} "
                        f"({ss[0]} {ss[1]}), model {dk} ({ds[0]} {ds[1]})), so several pairings fit and nothing tells which "
                        "is right: give rules (PATTERN=REPLACEMENT, or a TOML file)")
    queues: dict[tuple[str, str], list[str]] = defaultdict(list)
    for k, s in dst:
        queues[s].append(k)
    taken = {s: iter(ks) for s, ks in queues.items()}
    pairs = {k: next(taken[s]) for k, s in src}
    _check_layers_whole(pairs)
    _check_numbered_order(src, repeated)
    # num_batches_tracked: with the BatchNorm its running_mean went to, where the model has one there
    for k in state:
        if _counter(k):
            sibling = pairs.get(k[: -len(COUNTER)] + "running_mean")
            if sibling is not None and sibling.endswith(".running_mean"):
                pairs[k] = sibling[: -len("running_mean")] + COUNTER
    return KeyMapping(AUTO, tuple((k, pairs[k]) for k in state if k in pairs),
                      dropped=tuple(k for k in state if k not in pairs))


_GIVE_RULES = ("give rules (PATTERN=REPLACEMENT, or a TOML file of renames), e.g. the TOML file of pairs that auto "
               "writes (mapping_toml; on the command line, its key-map output) for a copy of the checkpoint saved in "
               "its model's order (torch.save(model.state_dict()))")


def _module(name: str) -> str:
    """The module a tensor belongs to: its name less the last dotted part ('' for a top-level tensor)."""
    return name.rpartition(".")[0]


def _shown_module(module: str) -> str:
    return module or "(the top level)"


def _check_layers_whole(pairs: Mapping[str, str]) -> None:
    """Refused unless the pairing maps modules one to one: all tensors of one checkpoint module into one model
    module, and no two checkpoint modules into the same one (num_batches_tracked aside: they follow)."""
    onto: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))  # src module -> dst module -> src
    for s, t in pairs.items():
        onto[_module(s)][_module(t)].append(s)
    for module, targets in onto.items():
        if len(targets) > 1:
            shown = [f"{ss[0]} -> {pairs[ss[0]]}" for ss in targets.values()]  # the first tensor to each
            raise _fail(f"{{key_map}} auto: ambiguous: paired by kind and shape in order, the tensors of checkpoint "
                        f"module {_shown_module(module)} go to {len(targets)} model modules ({_examples(shown)}): the "
                        "order matches tensors of different layers (as a checkpoint whose names come sorted, a "
                        f".safetensors file, can), so nothing tells which pairing is right: {_GIVE_RULES}")
    into: dict[str, list[str]] = defaultdict(list)  # dst module -> src modules, in checkpoint order
    for module, targets in onto.items():
        into[next(iter(targets))].append(module)
    for target, modules in into.items():
        if len(modules) > 1:
            shown = [f"{ss[0]} -> {pairs[ss[0]]}" for ss in (onto[m][target] for m in modules)]
            names = (" and ".join(map(_shown_module, modules)) + " both" if len(modules) == 2
                     else _examples(list(map(_shown_module, modules))) + f" (all {len(modules)})")
            raise _fail(f"{{key_map}} auto: ambiguous: paired by kind and shape, checkpoint modules {names} go to "
                        f"model module {_shown_module(target)} ({_examples(shown)}), so the pairing joins tensors "
                        f"of different layers and nothing tells which is right: {_GIVE_RULES}")


def _natural(name: str) -> tuple[str | int, ...]:
    """Sort key reading runs of digits as numbers: blocks.2 before blocks.10."""
    return tuple(int(part) if n % 2 else part for n, part in enumerate(re.split(r"(\d+)", name)))


def _check_numbered_order(src: Sequence[tuple[str, tuple[str, str]]], repeated: set[tuple[str, str]]) -> None:
    """Refused where the checkpoint's tensors of one repeated (kind, shape) come in text order (as a sorted file
    gives them) and that is not the order of the numbers in their names (blocks.10 before blocks.2): in order
    they would go to the model's tensors by the file's sorting, not by the layers' order."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for k, s in src:
        if s in repeated:
            groups[s].append(k)
    for s, names in groups.items():
        keys = [_natural(k) for k in names]
        if names != sorted(names) or keys == sorted(keys):
            continue
        later_min = keys[-1]  # the first name some later name's numbers put after it
        first = len(names) - 1
        for i in range(len(names) - 2, -1, -1):
            if later_min < keys[i]:
                first = i
            later_min = min(later_min, keys[i])
        after = next(names[j] for j in range(first + 1, len(names)) if keys[j] < keys[first])
        raise _fail(f"{{key_map}} auto: ambiguous: the checkpoint's names come sorted as text ({names[first]} before "
                    f"{after}), not by their numbers, for its {len(names)} tensors of {s[0]} {s[1]}: paired in that "
                    "order they would go to the model's by the file's sorting (as a .safetensors file sorts its "
                    "names), not by the order of the layers, and nothing tells which pairing is right: "
                    f"{_GIVE_RULES}")


def _ordinal(n: int) -> str:
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _examples(items: Sequence[str], shown: int = SHOWN) -> str:
    items = list(items)
    return ", ".join(items[:shown]) + (f", ... (+{len(items) - shown} more)" if len(items) > shown else "")


@dataclass(frozen=True)
class KeyMapping:
    """Which checkpoint tensor goes where: ``pairs`` (checkpoint name, model name) in checkpoint order."""

    method: str  # "auto" or "rules"
    pairs: tuple[tuple[str, str], ...]
    dropped: tuple[str, ...] = ()  # checkpoint num_batches_tracked with nowhere to go
    rules: tuple[tuple[str, str], ...] = ()
    keys: tuple[tuple[str, str], ...] = ()
    files: tuple[str, ...] = ()

    @property
    def renamed(self) -> list[tuple[str, str]]:
        return [(s, t) for s, t in self.pairs if s != t]

    def sha256(self) -> str:
        """Over every (checkpoint name, model name) pair: equal for equal mappings, however found."""
        return hashlib.sha256(json.dumps(sorted(self.pairs)).encode()).hexdigest()

    def check(self, state: Mapping[str, torch.Tensor], model: nn.Module | Mapping[str, torch.Tensor],
              what: str = "the checkpoint") -> None:
        """Strictness: every checkpoint tensor used once, every model tensor filled, equal shapes (BatchNorm's
        num_batches_tracked aside); otherwise one error with counts and first examples of each problem."""
        target = model.state_dict() if isinstance(model, nn.Module) else model
        onto: dict[str, list[str]] = defaultdict(list)
        for s, t in self.pairs:
            onto[t].append(s)
        unused = [f"{s} -> {t}" if s != t else s for s, t in self.pairs if t not in target and not _counter(s)]
        twice = [f"{' + '.join(ss)} -> {t}" for t, ss in onto.items() if len(ss) > 1]
        unfilled = [t for t in target if t not in onto and not _counter(t)]
        shapes = [f"{s} {tuple(state[s].shape)} -> {t} {tuple(target[t].shape)}" for s, t in self.pairs
                  if t in target and s in state and state[s].shape != target[t].shape]
        problems = []
        for label, items in (("checkpoint tensor(s) unused (no such name in the model)", unused),
                             ("model name(s) given more than one tensor", twice),
                             ("model tensor(s) not filled", unfilled),
                             ("wrong shape(s)", shapes)):
            if items:
                problems.append(f"{len(items)} {label}: {_examples(items)}")
        if problems:
            raise _fail(f"{what} does not fit the architecture under {{key_map}} {self.method}: {'; '.join(problems)}"
                        ": fix the key map (or the architecture/class count)")

    def apply(self, state: Mapping[str, torch.Tensor], model: nn.Module | Mapping[str, torch.Tensor] | None = None
              ) -> dict[str, torch.Tensor]:
        """``state`` under the model's names (checked first against ``model`` where given). Checkpoint
        num_batches_tracked whose new name the model lacks are left out."""
        if model is not None:
            self.check(state, model)
        target = None if model is None else (model.state_dict() if isinstance(model, nn.Module) else model)
        return {t: state[s] for s, t in self.pairs
                if s in state and not (_counter(s) and target is not None and t not in target)}

    def counters_dropped(self, model: nn.Module | Mapping[str, torch.Tensor]) -> int:
        target = model.state_dict() if isinstance(model, nn.Module) else model
        return len(self.dropped) + sum(1 for s, t in self.pairs if _counter(s) and t not in target)

    def summary(self, what: str = "checkpoint", shown: int = SHOWN) -> str:
        """One line: how many tensors, how many renamed, the first pairs."""
        renamed = self.renamed
        how = "by kind and shape" if self.method == AUTO else "by rules"
        first = ", ".join(f"{s} -> {t}" for s, t in renamed[:shown]) + (", ..." if len(renamed) > shown else "")
        dropped = f"; {len(self.dropped)} {COUNTER} dropped" if self.dropped else ""
        return (f"{what}: key map {self.method}: {len(self.pairs)} tensors mapped {how}, {len(renamed)} renamed"
                + (f": {first}" if renamed else "") + dropped)

    def record(self) -> dict[str, Any]:
        """What the results database keeps of the mapping (the run's configuration)."""
        out: dict[str, Any] = {"method": self.method, "tensors": len(self.pairs), "sha256": self.sha256()}
        if self.method != AUTO:
            out["rules"] = [list(r) for r in self.rules]
            if self.keys:
                out["keys"] = len(self.keys)
            if self.files:
                out["files"] = [{"path": f, "sha256": _file_sha256(f)} for f in self.files]
        out["renamed"] = [list(p) for p in self.renamed]
        if self.dropped:
            out["dropped"] = list(self.dropped)
        return out


def _file_sha256(path: str) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def _toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string (ASCII, \uXXXX escapes) is a TOML basic string


def mapping_toml(mapping: KeyMapping | Mapping[str, Any], header: str = "") -> str:
    """A key-map file that reproduces ``mapping`` exactly (its renamed pairs as ``[keys]``): ``--key-map FILE``.
    ``mapping``: a :class:`KeyMapping` or its :meth:`KeyMapping.record`."""
    if isinstance(mapping, KeyMapping):
        mapping = mapping.record()
    lines = [f"# {line}" for line in header.splitlines()] if header else []
    lines += [f"# layercrit key map ({mapping['method']}, {mapping['tensors']} tensors, sha256 {mapping['sha256']}):",
              "# checkpoint name = model name; names not listed are kept as they are", "", "[keys]"]
    lines += [f"{_toml_str(s)} = {_toml_str(t)}" for s, t in mapping["renamed"]]
    return "\n".join(lines) + "\n"


def remap(state: Mapping[str, torch.Tensor], key_map: Any, model: nn.Module,
          what: str = "the checkpoint") -> tuple[dict[str, torch.Tensor], KeyMapping]:
    """``state`` under ``model``'s names by ``key_map`` (anything :meth:`KeyMap.parse` takes), strictly
    checked; and the mapping. ``model.load_state_dict(result, strict=False)`` then loads it (strict=False
    only for num_batches_tracked the checkpoint lacks: everything else is checked here)."""
    mapping = KeyMap.parse(key_map).pair(state, model)
    mapping.check(state, model, what)
    return mapping.apply(state, model), mapping


def probe_factory(build: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
    """``build`` run once, on demand (auto mode needs a model to pair against; rules do not)."""
    made: list[nn.Module] = []

    def get() -> nn.Module:
        if not made:
            made.append(build())
        return made[0]

    return get
