"""Where real data lives: the shared data folder ($LITESEG_DATA) and the demo's sample CT.

The sample is downloaded once into a cache with its sha256 checked; without network it is taken
from the local data folder (also checked). Nothing here is ever committed to the repository.
"""

from __future__ import annotations

import os
import shutil
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from liteseg.errors import LiteSegError
from liteseg.io.modelcard import sha256_file

DATA_ENV = "LITESEG_DATA"
CACHE_ENV = "LITESEG_CACHE"
OFFLINE_ENV = "LITESEG_OFFLINE"


def data_root() -> Path:
    """The real-data folder: $LITESEG_DATA, else `../shared/data` beside the checkout."""
    override = os.environ.get(DATA_ENV)
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def require_data(relative: str) -> Path:
    """A file or folder of the data folder, or a clear error saying where it was looked for."""
    path = data_root() / relative
    if not path.exists():
        raise LiteSegError(
            f"data not found: {path} (set {DATA_ENV} to the folder holding ct/ and mri/)"
        )
    return path


def cache_dir() -> Path:
    """$LITESEG_CACHE, else ~/.cache/liteseg."""
    override = os.environ.get(CACHE_ENV)
    return Path(override) if override else Path.home() / ".cache" / "liteseg"


@dataclass(frozen=True)
class SampleFile:
    """A public file the demo needs: where to download it, its checksum, its local fallback."""

    name: str
    url: str
    sha256: str
    local: str  # path relative to the data folder


_TS = "https://github.com/wasserth/TotalSegmentator/raw"
SAMPLE_CT = SampleFile(
    "example_ct.nii.gz",
    f"{_TS}/0e65a448d557382b1e925276212b3bec7f5aff83/tests/reference_files/example_ct.nii.gz",
    "dbd3ae6d614d1d7ef3a46925c30c70038ed52da6b37fdd6afdc7b9b71387e3e1",
    "ct/pancreas_TS-A/ct.nii.gz",
)
SAMPLE_PANCREAS = SampleFile(
    "example_pancreas.nii.gz",
    f"{_TS}/5de6e4dcf702d525e0b2813683575b2c9e998aee/tests/reference_files/example_seg/pancreas.nii.gz",
    "eebfc8180eaa341b02766df54a7840d379c84eed632117460df7b0580f3baa43",
    "ct/pancreas_TS-A/pancreas_pred_totalseg_v1.nii.gz",
)


def fetch_sample(sample: SampleFile, timeout: float = 20.0) -> Path:
    """The cached copy of `sample`; downloaded (or copied from the data folder) on first use.

    Every copy is checked against the sha256 before it is used or cached.
    """
    cached = cache_dir() / sample.name
    if cached.is_file() and sha256_file(cached) == sample.sha256:
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(cached.name + ".download")
    reasons = []
    if not os.environ.get(OFFLINE_ENV):
        try:
            with urllib.request.urlopen(sample.url, timeout=timeout) as response, open(partial, "wb") as out:
                shutil.copyfileobj(response, out)
            if sha256_file(partial) == sample.sha256:
                os.replace(partial, cached)
                return cached
            reasons.append("downloaded file has the wrong sha256")
        except OSError as error:
            reasons.append(f"download failed ({error.__class__.__name__}: {error})")
        finally:
            partial.unlink(missing_ok=True)
    local = data_root() / sample.local
    if local.is_file():
        if sha256_file(local) == sample.sha256:
            shutil.copyfile(local, partial)
            os.replace(partial, cached)
            return cached
        reasons.append(f"{local} has the wrong sha256")
    else:
        reasons.append(f"not in the data folder ({local}; set {DATA_ENV})")
    raise LiteSegError(f"sample {sample.name} unavailable: " + "; ".join(reasons))
