"""The weights store: pretrained weight files that do not ship in a package, where they live and
how they are checked.

The store knows no model. Each method declares the files it reads beside its code
(``Method.weight_files``, :class:`~harness.api.types.WeightFile`: name, file name, sha256 when
published or the torchvision-style hash prefix in its file name, the public source for users
with internet, the licence, the input the network was trained on); :func:`catalogue` walks the
registries to list them all. Files live in ``$PRIVBENCH_HOME/weights``. Nothing downloads:
``privbench weights add NAME PATH`` copies a file the user obtained, after checking it (and
converting it first when its declaration says how). When no checksum is published, the first
added file's sha256 is recorded in ``weights/checksums.json`` and every later use is checked
against it (trust on first use; the status says so). A missing or mismatched file is one
message: which file, where it goes, where to get it.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from harness.api.registry import ALL_REGISTRIES
from harness.api.types import WeightFile
from harness.core.cache import privbench_home
from harness.core.errors import ModelFileError, PrivbenchError, UnknownNameError
from harness.core.files import atomic_write_json, sha256_of
from harness.core.params import suggest


def weights_dir() -> Path:
    """``$PRIVBENCH_HOME/weights``."""
    return privbench_home() / "weights"


def catalogue() -> dict[str, WeightFile]:
    """Every weight file a registered method declares, by name, each with ``used_by`` set to
    the registered names that declare it: registries in their order (defenses, recognizers,
    counter-attacks, metrics, data sets), names sorted, files in declaration order. Imports
    every registered method; a name declared as two different files is a PrivbenchError."""
    found: dict[str, WeightFile] = {}
    users: dict[str, list[str]] = {}
    for registry in ALL_REGISTRIES.values():
        for method, cls in registry.loadable().items():
            for w in cls.weight_files:
                first = found.setdefault(w.name, w)
                if first != w:
                    raise PrivbenchError(
                        f"weights {w.name!r} are declared as two different files, by "
                        f"{', '.join(users[w.name])} and by {method}"
                    )
                users.setdefault(w.name, []).append(method)
    return {name: replace(w, used_by=tuple(users[name])) for name, w in found.items()}


def get(name: str, declared: Iterable[WeightFile] = ()) -> WeightFile:
    """The weight file ``name``: one of ``declared`` (the asking method's own, found without
    importing any other method), else any registered method's; UnknownNameError with
    suggestions otherwise."""
    for w in declared:
        if w.name == name:
            return w
    known = catalogue()
    if name not in known:
        raise UnknownNameError(
            f"unknown weights {name!r}{suggest(name, list(known))}; known: {', '.join(known)}"
        )
    return known[name]


def _file(weights: WeightFile | str) -> WeightFile:
    return get(weights) if isinstance(weights, str) else weights


def _recorded() -> dict[str, str]:
    path = weights_dir() / "checksums.json"
    if not path.is_file():
        return {}
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, ValueError):
        return {}


def _check(w: WeightFile, digest: str) -> str | None:
    """None if ``digest`` is acceptable for ``w``, else what is wrong."""
    if w.sha256 and digest != w.sha256:
        return f"has sha256 {digest}, expected {w.sha256}"
    if w.sha256_prefix and not digest.startswith(w.sha256_prefix):
        return f"has sha256 {digest}, which does not start with {w.sha256_prefix}"
    recorded = _recorded().get(w.name)
    if not (w.sha256 or w.sha256_prefix) and recorded and digest != recorded:
        return f"has sha256 {digest}, but {recorded} was recorded when it was added"
    return None


def _missing_message(w: WeightFile, target: Path) -> str:
    file = Path(w.filename).name
    return (
        f"weights {w.name!r} not found: expected {target}. Get {file} from {w.source} "
        f"and run `privbench weights add {w.name} /path/to/{file}`"
    )


def locate(weights: WeightFile | str) -> Path:
    """The verified local path of ``weights`` (a declaration or a name); ModelFileError saying
    what to do otherwise."""
    w = _file(weights)
    target = weights_dir() / w.filename
    if not target.is_file():
        raise ModelFileError(_missing_message(w, target))
    problem = _check(w, sha256_of(target))
    if problem:
        raise ModelFileError(
            f"{target} {problem}; replace it with the file from {w.source} "
            f"(`privbench weights add {w.name} PATH`)"
        )
    return target


def status(weights: WeightFile | str) -> tuple[str, str]:
    """('ready' | 'missing' | 'mismatch', detail) without raising."""
    w = _file(weights)
    target = weights_dir() / w.filename
    if not target.is_file():
        return "missing", _missing_message(w, target)
    problem = _check(w, sha256_of(target))
    if problem:
        return "mismatch", f"{target} {problem}"
    how = (
        "checked against the published sha256"
        if w.sha256
        else "checked against the hash prefix in its file name"
        if w.sha256_prefix
        else "matches the sha256 recorded when it was added (none is published)"
    )
    return "ready", f"{target} ({how})"


def model_file_missing(
    checkpoint: str | None, name: str | None, declared: Iterable[WeightFile] = ()
) -> list[str]:
    """Readiness of a model that takes ``checkpoint`` (a path) or the weights ``name`` (looked
    up among ``declared`` first, see :func:`get`)."""
    if checkpoint:
        path = Path(checkpoint).expanduser()
        return [] if path.is_file() else [f"checkpoint {path} not found"]
    if not name:
        return ["set 'weights' (a registered name) or 'checkpoint' (a file path)"]
    state, detail = status(get(name, declared))
    return [] if state == "ready" else [detail]


def model_file(
    checkpoint: str | None, name: str | None, declared: Iterable[WeightFile] = ()
) -> Path:
    """The checkpoint path if given, else the verified weights ``name`` (see :func:`get`)."""
    if checkpoint:
        return Path(checkpoint).expanduser()
    if not name:
        raise ModelFileError("set 'weights' (a registered name) or 'checkpoint' (a file path)")
    return locate(get(name, declared))


def add(weights: WeightFile | str, source_file: str | Path) -> Path:
    """Verify ``source_file`` (converted first if ``weights`` declares how) and copy it into the
    weights folder under its declared file name."""
    w = _file(weights)
    src = Path(source_file).expanduser()
    if not src.is_file():
        raise ModelFileError(f"{src}: no such file")
    converted = _convert(w, src)
    if converted is not None:
        src = converted
    digest = sha256_of(src)
    problem = _check(w, digest)
    if problem:
        raise ModelFileError(f"{src} {problem}; not added (source: {w.source})")
    target = weights_dir() / w.filename
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    try:
        shutil.copyfile(src, tmp)
        tmp.replace(target)
    except BaseException:  # a full disk, Ctrl-C, SIGTERM: no partial copy left behind
        tmp.unlink(missing_ok=True)
        raise
    if not (w.sha256 or w.sha256_prefix):
        recorded = _recorded()
        recorded[w.name] = digest
        atomic_write_json(weights_dir() / "checksums.json", recorded)
    return target


def _convert(w: WeightFile, src: Path) -> Path | None:
    """A converted copy of ``src`` (e.g. a Keras .h5 as a torch state dict) when ``w`` takes one
    in that format, else None."""
    if w.convert is None or src.suffix.lower() not in w.convert_suffixes:
        return None
    # torch is imported here: listing and checking weights runs without it.
    import torch

    folder = Path(tempfile.mkdtemp(prefix="privbench-convert-"))
    atexit.register(shutil.rmtree, folder, True)  # also on Ctrl-C and SIGTERM (cli.main)
    out = folder / (src.stem + ".pt")
    torch.save(w.convert(src), out)
    return out


def load_state_into(module: Any, path: Path | str, what: str) -> Any:
    """``module`` (eval mode, frozen) with the state dict at ``path`` loaded strictly;
    ModelFileError naming the file and ``what`` it should hold otherwise."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        module.load_state_dict(state, strict=True)
    except (RuntimeError, OSError, ValueError) as exc:
        raise ModelFileError(
            f"{path} is not a {what} state dict: {str(exc).splitlines()[0]}"
        ) from None
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()
