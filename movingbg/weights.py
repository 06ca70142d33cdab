"""Finding, downloading and verifying weight files.

Every download is written to a temporary file beside its destination, verified against its SHA-256
and only then renamed into place, so an interrupted or corrupt download never leaves a file that
looks valid. Files the user placed in a model folder themselves are used as they are.
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from .io.atomic import temp_beside

logger = logging.getLogger(__name__)

ProgressFn = Callable[[int, Optional[int]], None]
"""``progress(bytes_done, bytes_total_or_None)``."""

_CHUNK = 1 << 20


@dataclass(frozen=True)
class WeightSpec:
    """A weight file known to MovingBG.

    Attributes:
        filename: file name looked up in the model folders and used for the download.
        urls: download locations, tried in order.
        sha256: hex SHA-256 every download must match (None when only ``md5`` is published).
        description: what the file is, for error messages.
        md5: hex MD5 published by the upstream project, checked as well when given.
    """

    filename: str
    urls: tuple[str, ...]
    sha256: Optional[str]
    description: str = ""
    md5: Optional[str] = None

    def __post_init__(self) -> None:
        if not (self.sha256 or self.md5):
            raise ValueError(f"WeightSpec {self.filename}: a download needs a sha256 or md5 to verify")

    @property
    def checksum_text(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in (("SHA-256", self.sha256), ("MD5", self.md5)) if v)


class WeightsNotFoundError(FileNotFoundError):
    """A weight file is neither in the model folders nor downloadable."""


class ChecksumError(RuntimeError):
    """A downloaded file does not match its expected SHA-256."""


def sha256_file(path: os.PathLike | str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def find_weight(filename: str, search_dirs: Iterable[os.PathLike | str]) -> Optional[Path]:
    """First existing ``<dir>/<filename>`` among ``search_dirs`` (non-empty files only)."""
    for d in search_dirs:
        p = Path(d) / filename
        if p.is_file() and p.stat().st_size > 0:
            return p
    return None


def download(url: str, dest: os.PathLike | str, sha256: Optional[str], progress: Optional[ProgressFn] = None,
             timeout: float = 30.0, md5: Optional[str] = None) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying ``sha256`` and/or ``md5``. Returns ``dest``."""
    if not (sha256 or md5):
        raise ValueError("download() needs an expected sha256 or md5")
    dest = Path(dest)
    tmp = temp_beside(dest, dest.name + ".", ".part")
    h, h_md5 = hashlib.sha256(), hashlib.md5()
    try:
        with open(tmp, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            total = resp.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            done = 0
            for chunk in iter(lambda: resp.read(_CHUNK), b""):
                out.write(chunk)
                h.update(chunk)
                h_md5.update(chunk)
                done += len(chunk)
                if progress is not None:
                    progress(done, total)
            out.flush()
            os.fsync(out.fileno())
        for name, want, got in (("SHA-256", sha256, h.hexdigest()), ("MD5", md5, h_md5.hexdigest())):
            if want and got.lower() != want.lower():
                raise ChecksumError(
                    f"{dest.name} downloaded from {url} has {name} {got}, expected {want}; "
                    "the file was discarded. Try again, or download it by hand into " + str(dest.parent)
                )
        os.replace(tmp, dest)
        return dest
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def ensure_weight(spec: WeightSpec, search_dirs: Sequence[os.PathLike | str], download_dir: os.PathLike | str,
                  *, allow_download: bool = True, progress: Optional[ProgressFn] = None) -> Path:
    """Path of ``spec.filename``: found in ``search_dirs``, else downloaded into ``download_dir``.

    Raises:
        WeightsNotFoundError: not found and the download is disabled or failed for every URL; the
            message names the file, the URLs and the folder to put it in.
        ChecksumError: a download completed with the wrong hash.
    """
    found = find_weight(spec.filename, search_dirs)
    if found is not None:
        return found
    dest = Path(download_dir) / spec.filename
    errors = []
    if allow_download:
        for url in spec.urls:
            logger.info("Downloading %s from %s", spec.filename, url)
            try:
                return download(url, dest, spec.sha256, progress, md5=spec.md5)
            except (urllib.error.URLError, OSError, TimeoutError) as exc:
                errors.append(f"{url}: {exc}")
                logger.warning("Download of %s from %s failed: %s", spec.filename, url, exc)
    what = f" ({spec.description})" if spec.description else ""
    looked = ", ".join(str(d) for d in search_dirs) or "(no folders)"
    reason = "; ".join(errors) if errors else "downloads are disabled"
    raise WeightsNotFoundError(
        f"Weight file '{spec.filename}'{what} is missing. Looked in: {looked}. "
        f"Download it from {' or '.join(spec.urls)} ({spec.checksum_text}) and put it in {download_dir}. "
        f"Automatic download failed: {reason}."
    )


def _listing(names: Sequence[str], limit: int = 20) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" ... and {len(names) - limit} more" if len(names) > limit else "")


def read_state_dict(path: os.PathLike | str, wrappers: Sequence[str] = ("model", "state_dict")) -> dict:
    """A weight file's tensors on the CPU: ``.safetensors``, or ``.pth``/``.pt`` through
    ``torch.load(weights_only=True)`` (a dict wrapped under one of ``wrappers`` is unwrapped).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unreadable, not a mapping, or holding entries that are not tensors (named).
    """
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        obj = load_file(str(path), device="cpu")
    else:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as exc:  # unpickling errors come in many types
            raise ValueError(f"{path.name}: not a readable PyTorch weights file ({exc})") from exc
    if isinstance(obj, dict):
        inner = next((obj[w] for w in wrappers if isinstance(obj.get(w), dict)), None)
        obj = obj if inner is None else inner
    if not isinstance(obj, dict):
        raise ValueError(f"{path.name}: expected a state dict (name -> tensor), got {type(obj).__name__}")
    bad = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if bad:
        raise ValueError(f"{path.name}: entries that are not tensors: {_listing(bad)}")
    return {str(k): v for k, v in obj.items()}


def check_state_dict_keys(name: str, got: dict, want: dict, what: str, *, optional: Sequence[str] = (),
                          extra: Sequence[str] = ()) -> None:
    """Raise ValueError naming every missing, unexpected and mis-shaped key of a strict load.

    Args:
        name: the file name, for the message.
        got: the file's tensors. want: ``{key: shape}`` of the network.
        what: the network, for the message. optional: keys of ``want`` that may be absent.
        extra: further keys of the file to report as unexpected.
    """
    required = [k for k in want if k not in set(optional)]
    missing = [k for k in required if k not in got]
    unexpected = [k for k in got if k not in want] + list(extra)
    mismatched = [f"{k}: file {tuple(got[k].shape)} vs network {tuple(want[k])}" for k in want
                  if k in got and tuple(got[k].shape) != tuple(want[k])]
    if missing or unexpected or mismatched:
        parts = [f"{name} does not match the {what} ({len(got)} tensors in the file, {len(required)} expected)."]
        for label, items in (("Missing keys", missing), ("Unexpected keys", unexpected),
                             ("Shape mismatches", mismatched)):
            if items:
                parts.append(f"{label} ({len(items)}): {_listing(items)}.")
        raise ValueError(" ".join(parts))
