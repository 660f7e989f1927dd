"""A bare install (torch, numpy, SimpleITK only): every command runs without tqdm, matplotlib and
OpenVINO, and the commands of an optional extra say how to install it."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[2]

# Run liteseg's CLI with the optional packages unimportable, as after `pip install .` without extras.
BARE = textwrap.dedent("""
    import sys

    for name in ("tqdm", "matplotlib", "flwr", "openvino"):
        sys.modules[name] = None  # import fails: ImportError
    from liteseg.cli.main import main
    sys.exit(main(sys.argv[1:]))
""")

def bare(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", BARE, "--threads", "1", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def ct_phantom(path: Path) -> Path:
    z, y, x = np.mgrid[:12, :40, :40]
    array = np.where((y - 20) ** 2 + (x - 20) ** 2 < 300, 40, -1000).astype(np.int16)
    array[(z > 3) & ((y - 18) ** 2 + (x - 22) ** 2 < 30)] = 150
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.5, 1.5, 3.0))
    sitk.WriteImage(image, str(path))
    return path


def test_segment_train_and_evaluate_run_without_tqdm_and_matplotlib(tmp_path):
    ct = ct_phantom(tmp_path / "ct.nii.gz")
    result = bare("segment", str(ct), str(tmp_path / "seg.nii.gz"), "--no-localise")
    assert result.returncode == 0, result.stderr
    assert "wrote" in result.stdout and "segmenting: 100/100 %" in result.stderr  # plain progress lines
    label = sitk.ReadImage(str(ct)) > 100
    sitk.WriteImage(sitk.Cast(label, sitk.sitkUInt8), str(tmp_path / "label.nii.gz"))
    result = bare("train", "--image", str(ct), "--label", str(tmp_path / "label.nii.gz"), "--output", str(tmp_path / "run"),
                  "--epochs", "1", "--batch-size", "4", "--network", "pocket_unet2d", "--label-values", "1")
    assert result.returncode == 0, result.stderr
    assert "training curve not drawn: matplotlib is not installed" in result.stderr
    assert (tmp_path / "run" / "monet-pancreas-ct.json").is_file() and not (tmp_path / "run" / "training_curve.png").exists()
    result = bare("evaluate", str(tmp_path / "seg.nii.gz"), str(tmp_path / "label.nii.gz"))
    assert result.returncode == 0 and "Dice" in result.stdout, result.stderr
    assert bare("models").returncode == 0


def test_the_openvino_backend_without_openvino_says_how_to_install_it(tmp_path):
    ct = ct_phantom(tmp_path / "ct.nii.gz")
    result = bare("segment", str(ct), str(tmp_path / "seg.nii.gz"), "--no-localise", "--backend", "openvino")
    assert result.returncode == 2 and not (tmp_path / "seg.nii.gz").exists()
    assert result.stderr.strip().endswith("the openvino backend needs OpenVINO: pip install 'liteseg[openvino]'")


def test_federated_training_without_flower_says_how_to_install_it(tmp_path):
    dataset = ROOT / "Resources" / "Training" / "nih_pancreas_slices.json"
    result = bare("federated", "simulate", str(dataset), "--output", str(tmp_path / "run"))
    assert result.returncode == 2
    assert result.stderr.strip() == "liteseg: error: federated training needs Flower: pip install 'liteseg[federated]'"
    assert not (tmp_path / "run").exists()
