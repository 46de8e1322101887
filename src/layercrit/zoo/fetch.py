"""Getting zoo checkpoints: downloads into ``$LAYERCRIT_CACHE/zoo/<model id>/`` with a sha256 record.

URLs go through ``torch.hub.download_url_to_file`` and Google Drive ids through ``gdown`` (both show a
progress bar); each file is written under a ``.part`` name and renamed when complete, so an
interrupted download never looks cached. Beside each file, ``<file>.json`` records its source,
size and sha256. timm and torchvision weights stay in those libraries' own caches.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..errors import ConfigError, LayercritError
from ..paths import cache_dir, file_sha256, path_inside
from .registry import Source, ZooModel, get_zoo_model


def zoo_cache() -> Path:
    return cache_dir("zoo")


def cache_path(entry: ZooModel, source: Source) -> Path:
    if source.filename is None:
        raise ValueError(f"{source.describe()} is kept by its library, not in layercrit's cache")
    # both names come from a registry anyone can add to (register_zoo_model): they must stay inside the cache
    folder = path_inside(zoo_cache(), entry.id, "zoo model id")
    return path_inside(folder, source.filename, f"file name of zoo model {entry.id}")


def expected_paths(entry: ZooModel) -> dict[str, Path]:
    """role -> where the model's downloadable files live in the cache (empty for timm/torchvision models)."""
    return {s.role: cache_path(entry, s) for s in entry.files}


def is_cached(entry: ZooModel) -> bool:
    """Whether loading needs no download (files in our cache, or timm's / torchvision's cache)."""
    if entry.files:
        return all(p.is_file() for p in expected_paths(entry).values())
    return all(_library_cached(s) for s in entry.sources)


def read_record(path: Path) -> dict | None:
    """The sha256 record written beside a downloaded file, if any."""
    record = path.with_name(path.name + ".json")
    try:
        return json.loads(record.read_text())
    except (OSError, ValueError):
        return None


def fetch_model(model: str | ZooModel, *, force: bool = False, progress: bool = True) -> dict[str, Path]:
    """Download what ``model`` needs (unless cached); returns role -> file path (empty for timm/torchvision)."""
    entry = get_zoo_model(model) if isinstance(model, str) else model
    if not entry.files:
        for source in entry.sources:
            pretrained_state(entry, source, progress=progress)  # fills timm's / torchvision's cache
        return {}
    paths = {}
    for source in entry.files:
        dest = cache_path(entry, source)
        if force or not dest.is_file():
            download(entry, source, dest, progress=progress)
        paths[source.role] = dest
    return paths


def download(entry: ZooModel, source: Source, dest: Path, *, progress: bool = True) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    try:
        if source.kind == "gdrive":
            _download_gdrive(source.ref, part, progress)
        else:
            _download_url(source.ref, part, progress)
        if not part.is_file() or part.stat().st_size == 0:
            raise OSError("no data received")
    except LayercritError:
        raise
    except BaseException as e:
        part.unlink(missing_ok=True)
        if isinstance(e, KeyboardInterrupt):
            raise
        raise ConfigError(f"could not download {entry.id} from {source.describe()} ({_reason(e)}): "
                          f"download it by hand to {dest}, or pass {{checkpoint}} PATH") from None
    part.replace(dest)
    record = {"model_id": entry.id, "source": source.ref, "kind": source.kind, "role": source.role,
              "size": dest.stat().st_size, "sha256": file_sha256(dest),
              "downloaded": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    dest.with_name(dest.name + ".json").write_text(json.dumps(record, indent=1) + "\n")


def _download_url(url: str, dest: Path, progress: bool) -> None:
    import torch.hub  # torch and the libraries below only when downloading: `layercrit zoo list` stays torch-free

    torch.hub.download_url_to_file(url, str(dest), progress=progress)


def _download_gdrive(file_id: str, dest: Path, progress: bool) -> None:
    import gdown  # only for Google Drive downloads

    if gdown.download(id=file_id, output=str(dest), quiet=not progress) is None:  # gdown's "failed"
        raise OSError("Google Drive refused the download (quota or permissions)")


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0][:120] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


# --- timm / torchvision sources: their own pretrained mechanisms and caches -----------------------------------

def pretrained_state(entry: ZooModel, source: Source, *, progress: bool = True) -> dict:
    """The state dict of a timm / torchvision pretrained source, downloading it into that library's cache."""
    try:
        if source.kind == "timm":
            import timm  # torch-side: imported when a download needs it

            return timm.create_model(source.ref, pretrained=True).state_dict()
        return _torchvision_weights(source.ref).get_state_dict(progress=progress)
    except LayercritError:
        raise
    except Exception as e:
        raise ConfigError(f"could not download {entry.id} from {source.describe()} ({_reason(e)}): "
                          f"{_by_hand(source)}, or pass {{checkpoint}} PATH") from None


def _torchvision_weights(name: str):  # -> torchvision.models.ResNet50_Weights
    from torchvision.models import ResNet50_Weights  # torch-side: imported when used (see _download_url)

    try:
        return ResNet50_Weights[name]
    except KeyError:
        raise LayercritError(f"unknown torchvision ResNet-50 weights '{name}': use one of "
                             f"{', '.join(w.name for w in ResNet50_Weights)}") from None


def _torchvision_file(name: str) -> Path:
    import torch.hub  # torch-side: imported when used (see _download_url)

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(_torchvision_weights(name).url).name


def _timm_repo(name: str) -> str | None:
    import timm  # torch-side: imported when used (see _download_url)

    cfg = timm.models.get_pretrained_cfg(name)
    return getattr(cfg, "hf_hub_id", None) if cfg else None


def _by_hand(source: Source) -> str:
    if source.kind == "torchvision":
        return f"download {_torchvision_weights(source.ref).url} by hand to {_torchvision_file(source.ref)}"
    repo = _timm_repo(source.ref)
    return (f"download model.safetensors from https://huggingface.co/{repo} by hand" if repo
            else f"save timm's {source.ref} weights by hand")


def _library_cached(source: Source) -> bool:
    try:
        if source.kind == "torchvision":
            return _torchvision_file(source.ref).is_file()
        from huggingface_hub import try_to_load_from_cache  # timm's download library, used for its cache only

        repo = _timm_repo(source.ref)
        return repo is not None and any(isinstance(try_to_load_from_cache(repo, f), str)
                                        for f in ("model.safetensors", "pytorch_model.bin"))
    except Exception:  # a cache we cannot inspect counts as not cached; loading will tell more
        return False
