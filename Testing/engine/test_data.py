"""The sample CT: cached with its checksum, taken from the data folder when offline."""

import pytest
from conftest import real_data

from liteseg.errors import LiteSegError
from liteseg.io.data import SAMPLE_CT, SampleFile, data_root, fetch_sample, require_data
from liteseg.io.modelcard import sha256_file


def test_offline_fetch_copies_the_verified_local_file_into_the_cache(tmp_path, monkeypatch):
    real_data(SAMPLE_CT.local)
    monkeypatch.setenv("LITESEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LITESEG_OFFLINE", "1")
    path = fetch_sample(SAMPLE_CT)
    assert path == tmp_path / "cache" / SAMPLE_CT.name
    assert sha256_file(path) == SAMPLE_CT.sha256
    # a corrupted cache entry is not used: it is replaced by a verified copy
    path.write_bytes(b"corrupted")
    assert sha256_file(fetch_sample(SAMPLE_CT)) == SAMPLE_CT.sha256


def test_missing_or_wrong_files_give_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("LITESEG_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LITESEG_OFFLINE", "1")
    monkeypatch.setenv("LITESEG_DATA", str(tmp_path / "data"))
    assert data_root() == tmp_path / "data"
    with pytest.raises(LiteSegError, match="not in the data folder.*LITESEG_DATA"):
        fetch_sample(SAMPLE_CT)
    (tmp_path / "data" / "ct").mkdir(parents=True)
    (tmp_path / "data" / "ct" / "x.nii.gz").write_bytes(b"something else")
    wrong = SampleFile("x.nii.gz", "https://invalid.invalid/x", "0" * 64, "ct/x.nii.gz")
    with pytest.raises(LiteSegError, match="wrong sha256"):
        fetch_sample(wrong)
    with pytest.raises(LiteSegError, match="data not found"):
        require_data("ct/absent.nii.gz")
    assert not (tmp_path / "cache" / "x.nii.gz").exists()
