"""How a trained 2D network is executed for inference on the CPU (float32 backends give the same
results up to float rounding; bfloat16 and int8 must keep Dice within 0.005 of float32).

- "auto" (default): the fastest available here: "openvino-int8" for weights with a checked int8
  model, else "openvino-bf16" on CPUs with native bfloat16, else "openvino" where OpenVINO is
  installed, else "fast".
- "openvino": OpenVINO's CPU plugin, float32 (optional extra; `liteseg.segmentation.openvino_runtime`).
- "openvino-bf16": the same in bfloat16, only on CPUs with AVX512-BF16 or AMX.
- "openvino-int8": the int8 model `liteseg quantize` made of the same weights (`liteseg.segmentation.quantization`).
- "fast": BatchNorm folded into the preceding convolutions, weights and activations in
  channels-last layout (oneDNN's fast path), run in small batches (`batch_for`): MoNet's
  activations are large and its convolutions memory-bound, so batches that stay in cache win.
- "eager": the network as trained (float32, NCHW, BatchNorm as its own layer): the naive path.

Measured by `liteseg bench` and recorded in the README; ONNX Runtime and TorchScript were
measured too and were not faster than "fast" on our CPUs, so they are not offered.
"""

from __future__ import annotations

import copy
from typing import Callable, Optional

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from liteseg.errors import LiteSegError

BACKENDS = ("auto", "openvino", "openvino-bf16", "openvino-int8", "fast", "eager")
OPENVINO_PRECISIONS = {"openvino": "float32", "openvino-bf16": "bfloat16", "openvino-int8": "int8"}
BATCH_PIXELS = 2 * 256 * 256  # pixels per "fast" batch: two 256x256 slices

Runner = Callable[[torch.Tensor], torch.Tensor]
"""Maps a batch (N, C, H, W) float32 to logits (N, out, H, W), without autograd."""


def fold_batchnorm(network: nn.Module) -> nn.Module:
    """An eval-mode copy of `network` in which every BatchNorm that directly follows a Conv2d or
    ConvTranspose2d inside an nn.Sequential is folded into that convolution's weights and bias."""
    folded = copy.deepcopy(network).eval()
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            conv, norm = module._modules[first], module._modules[second]
            if isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) and isinstance(norm, nn.BatchNorm2d):
                module._modules[first] = fuse_conv_bn_eval(conv, norm, transpose=isinstance(conv, nn.ConvTranspose2d))
                module._modules[second] = nn.Identity()
    return folded


def eager_runner(network: nn.Module) -> Runner:
    """The network as it is (eval mode)."""
    network.eval()

    def run(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return network(batch)

    return run


def fast_runner(network: nn.Module) -> Runner:
    """BatchNorm folded, weights and activations channels-last."""
    fast = fold_batchnorm(network).to(memory_format=torch.channels_last)

    def run(batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return fast(batch.contiguous(memory_format=torch.channels_last)).contiguous()

    return run


def resolve_backend(backend: str, network: Optional[nn.Module] = None) -> str:
    """The backend `backend` names ("auto": the fastest available on this machine for `network`)."""
    if backend not in BACKENDS:
        raise LiteSegError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    from liteseg.segmentation.openvino_runtime import cpu_supports_bfloat16, has_int8, openvino_available

    if not openvino_available():
        return "fast"
    if network is not None and has_int8(network):
        return "openvino-int8"
    return "openvino-bf16" if cpu_supports_bfloat16() else "openvino"


def make_runner(network: nn.Module, backend: str = "auto") -> Runner:
    """The runner of `network` for a backend name of BACKENDS."""
    backend = resolve_backend(backend, network)
    if backend in OPENVINO_PRECISIONS:
        from liteseg.segmentation.openvino_runtime import openvino_runner

        return openvino_runner(network, OPENVINO_PRECISIONS[backend])
    return fast_runner(network) if backend == "fast" else eager_runner(network)


def batch_for(slice_size: tuple[int, int], backend: str) -> int:
    """Slices per batch: about BATCH_PIXELS pixels, except 16 slices for the naive "eager"."""
    return 16 if resolve_backend(backend) == "eager" else max(1, BATCH_PIXELS // (slice_size[0] * slice_size[1]))
