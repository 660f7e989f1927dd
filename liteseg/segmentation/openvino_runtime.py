"""OpenVINO execution of a 2D network on the CPU (optional extra: pip install 'liteseg[openvino]').

OpenVINO's CPU plugin fuses MoNet's ELUs and BatchNorms into its convolutions, which PyTorch's
eager fusion does not. Converting a PyTorch network takes seconds, so the converted model is kept
in liteseg's cache folder (`LITESEG_CACHE`, default `~/.cache/liteseg`) keyed by the network's
weights and the OpenVINO version, and compiled models are kept in memory for the rest of the
process. Precision: float32, bfloat16 on CPUs that report BF16 support, or int8 where a
quantised model of the same weights was made by `liteseg quantize` (`liteseg.segmentation.quantization`)
and registered when its card was loaded.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from liteseg.errors import LiteSegError
from liteseg.io.data import cache_dir

OPENVINO_MISSING = "the openvino backend needs OpenVINO: pip install 'liteseg[openvino]'"
PRECISIONS = {"float32": "f32", "bfloat16": "bf16", "int8": "f32"}  # ours -> OpenVINO's precision hint
# (an int8 model runs its quantised layers in int8 whatever the hint; the rest stays float32)

_compiled: dict[tuple[str, str, int], object] = {}  # (network key, precision, threads) -> CompiledModel
_int8_models: dict[str, Path] = {}  # network key -> its quantised OpenVINO model (.xml beside its .bin)


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def _openvino():
    try:
        import openvino
    except ImportError:
        raise LiteSegError(OPENVINO_MISSING) from None
    return openvino


@functools.lru_cache(maxsize=1)
def _core():
    """The process's one OpenVINO runtime core."""
    return _openvino().Core()


@functools.lru_cache(maxsize=1)
def cpu_supports_bfloat16() -> bool:
    """Whether OpenVINO's CPU plugin reports native bfloat16 (AVX512-BF16 or AMX) on this machine."""
    return "BF16" in _core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def network_key(network: nn.Module) -> str:
    """A digest of the network's class, state (names, shapes, values) and the OpenVINO version."""
    digest = hashlib.sha256(f"{type(network).__qualname__} openvino {_openvino().__version__}".encode())
    for name, tensor in network.state_dict().items():
        digest.update(f"{name} {tuple(tensor.shape)} {tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:32]


def register_int8(network: nn.Module, model: Path) -> None:
    """Make `model` (a quantised OpenVINO model of exactly these weights) the int8 form of `network`."""
    _int8_models[network_key(network)] = Path(model)


def has_int8(network: nn.Module) -> bool:
    return network_key(network) in _int8_models


def converted_model(network: nn.Module, key: str):
    """The OpenVINO model of `network` (any batch and slice size), from the cache or converted
    and stored there (float32 weights; a cache that cannot be written only costs the conversion)."""
    openvino = _openvino()
    path = cache_dir() / "openvino" / f"{key}.xml"
    if path.is_file() and path.with_suffix(".bin").is_file():
        try:
            return _core().read_model(path)
        except RuntimeError:
            pass  # a damaged cache entry: convert again and replace it
    model = openvino.convert_model(network.eval(), example_input=torch.zeros(1, 1, 256, 256))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as folder:
            staged = Path(folder) / path.name
            openvino.save_model(model, staged, compress_to_fp16=False)
            os.replace(staged.with_suffix(".bin"), path.with_suffix(".bin"))
            os.replace(staged, path)
    except OSError:
        pass
    return model


def openvino_runner(network: nn.Module, precision: str = "float32") -> Callable[[torch.Tensor], torch.Tensor]:
    """A runner (batch (N, C, H, W) float32 -> logits) executing `network` with OpenVINO on the
    CPU at `precision` (PRECISIONS), with as many threads as torch uses."""
    if precision not in PRECISIONS:
        raise LiteSegError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "bfloat16" and not cpu_supports_bfloat16():
        raise LiteSegError("this CPU has no native bfloat16 (AVX512-BF16 or AMX): use float32")
    network.eval()
    threads = torch.get_num_threads()
    key = network_key(network)
    if precision == "int8" and key not in _int8_models:
        raise LiteSegError("no int8 model of these weights: make one with liteseg quantize (needs liteseg[int8])")
    compiled = _compiled.get((key, precision, threads))
    if compiled is None:
        model = _core().read_model(_int8_models[key]) if precision == "int8" else converted_model(network, key)
        compiled = _core().compile_model(model, "CPU", {
            "INFERENCE_PRECISION_HINT": PRECISIONS[precision], "INFERENCE_NUM_THREADS": threads,
            "PERFORMANCE_HINT": "LATENCY"})
        _compiled[(key, precision, threads)] = compiled
    request = compiled.create_infer_request()

    def run(batch: torch.Tensor) -> torch.Tensor:
        outputs = request.infer({0: np.ascontiguousarray(batch.detach().numpy(), dtype=np.float32)})
        return torch.from_numpy(np.array(outputs[0]))  # a copy: the request reuses its buffer

    return run
