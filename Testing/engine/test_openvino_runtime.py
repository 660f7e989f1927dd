"""The OpenVINO backend: the eager network's results up to float rounding, a conversion cache
keyed by the weights that survives damage, and "auto" choosing what is installed."""

from __future__ import annotations

import copy

import pytest
import torch

from liteseg.errors import LiteSegError
from liteseg.models import build_model
from liteseg.segmentation import openvino_runtime
from liteseg.segmentation.runtime import make_runner, resolve_backend
from test_runtime import with_trained_statistics

openvino = pytest.importorskip("openvino", reason="the OpenVINO backend needs the optional extra liteseg[openvino]")


@pytest.fixture(autouse=True)
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LITESEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(openvino_runtime, "_compiled", {})
    return tmp_path / "cache" / "openvino"


@pytest.mark.parametrize("name", ["monet", "unet16", "attention_unet"])
def test_openvino_matches_eager_up_to_rounding_at_any_batch_and_slice_size(name):
    torch.manual_seed(0)
    network = with_trained_statistics(build_model(name))
    run = make_runner(network, "openvino")
    for shape in ((3, 1, 64, 96), (1, 1, 32, 48)):
        batch = torch.rand(*shape)
        result = run(batch[:, :, :, : shape[3]])
        torch.testing.assert_close(result, make_runner(network, "eager")(batch), rtol=1e-3, atol=1e-3)
        assert result.dtype == torch.float32


def test_the_converted_network_is_cached_by_its_weights_and_a_damaged_entry_is_replaced(fresh_cache, monkeypatch):
    network = with_trained_statistics(build_model("monet"))
    batch = torch.rand(2, 1, 32, 32)
    expected = make_runner(network, "openvino")(batch)
    entries = sorted(p.name for p in fresh_cache.iterdir())
    key = openvino_runtime.network_key(network)
    assert entries == [f"{key}.bin", f"{key}.xml"]

    def no_conversion(*args, **kwargs):
        raise AssertionError("converted again although the cache holds the network")

    convert_model = openvino.convert_model
    monkeypatch.setattr(openvino, "convert_model", no_conversion)
    monkeypatch.setattr(openvino_runtime, "_compiled", {})
    torch.testing.assert_close(make_runner(network, "openvino")(batch), expected)  # read from the cache

    changed = copy.deepcopy(network)
    with torch.no_grad():
        next(changed.parameters()).add_(1.0)
    assert openvino_runtime.network_key(changed) != key  # other weights, another entry
    monkeypatch.setattr(openvino, "convert_model", convert_model)
    monkeypatch.setattr(openvino_runtime, "_compiled", {})
    (fresh_cache / f"{key}.xml").write_text("<not a model")
    torch.testing.assert_close(make_runner(network, "openvino")(batch), expected)
    assert (fresh_cache / f"{key}.xml").read_text().startswith("<?xml")  # converted again and replaced


def test_auto_takes_openvino_where_installed_and_the_fast_backend_otherwise(monkeypatch):
    assert resolve_backend("auto") == ("openvino-bf16" if openvino_runtime.cpu_supports_bfloat16() else "openvino")
    monkeypatch.setattr(openvino_runtime, "openvino_available", lambda: False)
    assert resolve_backend("auto") == "fast"
    assert resolve_backend("eager") == "eager"


@pytest.mark.skipif(openvino_runtime.openvino_available() and openvino_runtime.cpu_supports_bfloat16(),
                    reason="this CPU has native bfloat16")
def test_bfloat16_is_refused_with_the_reason_on_a_cpu_without_it():
    with pytest.raises(LiteSegError, match="no native bfloat16"):
        make_runner(build_model("monet"), "openvino-bf16")
