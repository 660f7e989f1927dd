"""int8 models for the OpenVINO backend: NNCF's quantisation of our network runs through the
"openvino-int8" backend close to float32, and a card's int8 model is used only when its check
passed and its files match their checksums."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

from liteseg.errors import LiteSegError
from liteseg.io.labels import PANCREAS_LABEL
from liteseg.io.modelcard import ModelCard, sha256_file
from liteseg.segmentation import openvino_runtime
from liteseg.segmentation.inference import load_model
from liteseg.segmentation.preprocessing import Preprocessing
from liteseg.segmentation.quantization import quantize_network
from liteseg.segmentation.runtime import make_runner, resolve_backend

pytest.importorskip("openvino", reason="int8 runs on the OpenVINO backend: pip install 'liteseg[int8]'")
pytest.importorskip("nncf", reason="int8 quantisation needs NNCF: pip install 'liteseg[int8]'")


@pytest.fixture()
def quantised_card(tmp_path, monkeypatch):
    """A card of the bundled MoNet's weights with an int8 model of them beside it (check passed), in tmp_path."""
    monkeypatch.setenv("LITESEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(openvino_runtime, "_compiled", {})
    monkeypatch.setattr(openvino_runtime, "_int8_models", {})
    network, _ = load_model()
    weights = tmp_path / "monet.pt"
    torch.save(network.state_dict(), weights)
    batches = [torch.rand(1, 1, 64, 64, generator=torch.Generator().manual_seed(i)).numpy() for i in range(4)]
    model = quantize_network(network, batches, tmp_path / "monet.int8.xml")
    data = {
        "name": "monet-int8-test", "version": "0.0.1", "network": "monet", "weights": weights.name,
        "sha256": sha256_file(weights), "input": {"preprocessing": Preprocessing(slice_size=(64, 64)).to_dict()},
        "output": {"activation": "sigmoid", "threshold": 0.5}, "labels": [PANCREAS_LABEL],
        "int8": {"model": model.name, "sha256_xml": sha256_file(model), "sha256_bin": sha256_file(model.with_suffix(".bin")),
                 "check": {"passed": True}},
    }
    (tmp_path / "monet.json").write_text(json.dumps(data))
    return tmp_path / "monet.json", network


def test_an_int8_model_runs_close_to_float32_and_auto_takes_it_when_its_check_passed(quantised_card):
    card_path, original = quantised_card
    network, _ = load_model(card_path)
    assert resolve_backend("auto", network) == "openvino-int8" and resolve_backend("auto", original) == "openvino-int8"
    batch = torch.rand(2, 1, 64, 64)
    int8, float32 = make_runner(network, "openvino-int8")(batch), make_runner(network, "openvino")(batch)
    assert int8.shape == float32.shape and not torch.equal(int8, float32)  # really another model
    assert (int8 - float32).abs().mean() < 0.1 * float32.abs().mean()


def test_an_int8_model_that_failed_its_check_or_its_checksum_is_not_used(quantised_card, monkeypatch):
    card_path, _ = quantised_card
    data = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**data, "int8": {**data["int8"], "check": {"passed": False}}}))
    network, _ = load_model(card_path)
    assert resolve_backend("auto", network) != "openvino-int8"
    with pytest.raises(LiteSegError, match="no int8 model of these weights: make one with liteseg quantize"):
        make_runner(network, "openvino-int8")

    card_path.write_text(json.dumps(data))
    bin_file = card_path.parent / "monet.int8.bin"
    bin_file.write_bytes(bin_file.read_bytes()[:-4] + b"\0\0\0\0")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        network, _ = load_model(card_path)
    assert any("does not match its card: running in float32" in str(w.message) for w in caught)
    assert resolve_backend("auto", network) != "openvino-int8"


def test_liteseg_quantize_calibrates_on_training_patients_checks_the_held_out_ones_and_records_it(
        tmp_path, monkeypatch, capsys, sample_ct_path):
    import shutil

    from liteseg.cli.main import main
    from liteseg.io.modelcard import find_card
    from test_slice_dataset import synthetic_slices, write_dataset

    monkeypatch.setenv("LITESEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(openvino_runtime, "_compiled", {})
    monkeypatch.setattr(openvino_runtime, "_int8_models", {})
    bundled = find_card("monet-pancreas-nih")
    folder = tmp_path / "model"
    folder.mkdir()
    shutil.copy(bundled.weights_path, folder / bundled.weights_path.name)
    data = json.loads(bundled.path.read_text())
    data["training"]["validation_data"] = [{"patient": "P0"}]
    card_path = folder / "card.json"
    card_path.write_text(json.dumps(data))
    (tmp_path / "slices").mkdir()
    dataset = write_dataset(tmp_path / "slices", synthetic_slices(3, 2, seed=0))
    assert main(["--threads", "2", "quantize", "--model", str(card_path), "--slices", str(dataset), "--per-patient", "1"]) == 0
    out = capsys.readouterr().out
    assert "calibrated on 2 slices of 2 training patients" in out and "held-out patients: P0" in out
    entry = json.loads(card_path.read_text())["int8"]
    assert entry["calibration_patients"] == ["P1", "P2"] and list(entry["check"]["held_out_dice_change"]) == ["P0"]
    assert entry["sha256_bin"] == sha256_file(folder / "monet-pancreas-nih.int8.bin")
    assert entry["check"]["passed"] == (entry["check"]["largest_change"] <= 0.005)
    assert "passed: auto takes it" in out if entry["check"]["passed"] else "not passed: auto does not take it" in out
