"""The `liteseg` command: tables, one-line errors with exit status 2, and no partial outputs."""

import subprocess
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from conftest import GEOMETRIES, phantom_image, real_data

from liteseg.cli.main import main


def run_cli(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "liteseg", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_models_table_prints_the_paper_counts(capsys):
    assert main(["models"]) == 0
    table = capsys.readouterr().out
    rows = {line.split()[0]: line for line in table.splitlines() if line.strip()}
    assert "401,666" in rows["monet"] and "403,556" in rows["monet"]
    assert "1,946,705" in rows["unet16"]
    assert "31,054,145" in rows["unet64"]
    assert "31,753,349" in rows["attention_unet"]
    assert "150,066" in rows["pocket_unet3d"]
    assert "not reproducible" in rows["pocket_unet2d"]


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: sitk.Image(32, 32, sitk.sitkInt16), "2D"),
        (lambda: sitk.Image([16, 16, 8, 3], sitk.sitkInt16), "4D"),
        (lambda: sitk.Image([16, 16, 8], sitk.sitkVectorFloat32, 3), "components per voxel"),
        (lambda: sitk.Image([16, 16, 8], sitk.sitkInt16), "empty"),
        (lambda: sitk.GetImageFromArray(np.full((8, 16, 16), np.nan, dtype=np.float32)), "NaN"),
        (lambda: sitk.GetImageFromArray(np.random.default_rng(0).uniform(0, 900, (8, 32, 32)).astype(np.float32)), "does not look like a CT"),
    ],
)
def test_bad_input_one_line_error_exit_2_no_output(tmp_path, make, message):
    source = tmp_path / "input.nrrd"
    sitk.WriteImage(make(), str(source))
    output = tmp_path / "out.nii.gz"
    result = run_cli("segment", str(source), str(output))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("liteseg: error:") and message in lines[-1]
    assert "Traceback" not in result.stderr
    assert not output.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.nrrd"]


def test_unreadable_file_and_missing_model(tmp_path):
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x00" * 100)
    result = run_cli("segment", str(broken), str(tmp_path / "out.nii.gz"))
    assert result.returncode == 2 and "cannot read" in result.stderr
    source = tmp_path / "ct.nrrd"
    sitk.WriteImage(phantom_image(GEOMETRIES["oblique_20deg"]), str(source))
    result = run_cli("segment", str(source), str(tmp_path / "out.nii.gz"), "--model", "no-such-model")
    assert result.returncode == 2 and "unknown model 'no-such-model'" in result.stderr
    assert not (tmp_path / "out.nii.gz").exists()


def test_folder_without_dicom_needs_the_folder_flag(tmp_path):
    result = run_cli("segment", str(tmp_path), str(tmp_path / "out"))
    assert result.returncode == 2 and "--folder" in result.stderr


def test_evaluate_prints_and_writes_csv(tmp_path, capsys):
    reference = real_data("ct/pancreas_TS-A/pancreas_pred_totalseg_v1.nii.gz")
    csv_path = tmp_path / "metrics.csv"
    assert main(["evaluate", str(reference), str(reference), "--csv", str(csv_path)]) == 0
    assert "1.000" in capsys.readouterr().out
    lines = csv_path.read_text().splitlines()
    assert lines[0] == "case,dice,hd95_mm,pred_voxels,ref_voxels"
    assert lines[1].split(",")[1:] == ["1.000000", "0.000000", "818", "818"] or float(lines[1].split(",")[1]) == 1.0


@pytest.mark.parametrize("method, option", [("monet", "--passes-per-epoch"), ("lowres", "--stage1-epochs")])
def test_train_methods_have_their_own_options(capsys, method, option):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--method", method, "--help"])
    assert exit_.value.code == 0
    assert option in capsys.readouterr().out


def test_train_reports_bad_data_as_a_one_line_error(tmp_path, capsys):
    code = main(["train", "--method", "lowres", "--image", str(tmp_path / "no.nii.gz"), "--label", str(tmp_path / "x.nii.gz"), "--output", str(tmp_path / "o")])
    assert code == 2
    assert "training file not found" in capsys.readouterr().err


def engine_remedies() -> set[str]:
    """The parameters named by every `Remedy(...)` the engine raises (and `ALLOW_NON_CT`'s)."""
    import ast
    from pathlib import Path

    import liteseg

    found = set()
    for path in Path(liteseg.__file__).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Remedy" and node.args:
                found.add(node.args[0].value)
    return found


def test_every_remedy_the_engine_names_is_a_flag_of_the_command_line():
    from liteseg.cli.main import build_parser, train_parser

    parsers = [train_parser("monet"), train_parser("lowres")]
    for action in build_parser()._actions:
        if isinstance(action.choices, dict):  # the subcommands
            parsers.extend(action.choices.values())
    flags = {flag for parser in parsers for action in parser._actions for flag in action.option_strings}
    remedies = engine_remedies()
    assert {"allow_non_ct", "overwrite", "series", "resume", "model"} <= remedies
    missing = {r for r in remedies if "--" + r.replace("_", "-") not in flags}
    assert not missing, f"remedies without a command-line flag: {missing}"


def test_errors_name_the_python_parameter_and_the_command_line_its_flag(tmp_path, capsys):
    from liteseg.errors import LiteSegError
    from liteseg.io.images import check_output_path

    existing = tmp_path / "seg.nii.gz"
    existing.write_bytes(b"x")
    with pytest.raises(LiteSegError) as raised:
        check_output_path(existing)
    assert str(raised.value) == f"output exists, not overwritten: {existing} (overwrite=True to replace it)"
    ct = tmp_path / "ct.nii.gz"
    sitk.WriteImage(phantom_image(GEOMETRIES["axial_identity"]), str(ct))
    assert main(["segment", str(ct), str(existing)]) == 2
    error = capsys.readouterr().err
    assert f"output exists, not overwritten: {existing} (use --overwrite to replace it)" in error
    assert "overwrite=True" not in error and existing.read_bytes() == b"x"
