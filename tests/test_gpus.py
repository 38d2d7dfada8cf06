"""GPU declaration, detection and usage (mlcomp.worker.gpus)."""
from __future__ import annotations

import pytest

from mlcomp.errors import ConfigError
from mlcomp.worker.gpus import detect_gpus, gpu_usage, parse_gpus


@pytest.mark.parametrize("text, expected", [
    ("0,1,3", [0, 1, 3]), (" 2 , 0 ", [2, 0]), ("", []), ("7", [7]), (None, None),
])
def test_parse_gpus(text, expected):
    assert parse_gpus(text) == expected


@pytest.mark.parametrize("text, message", [
    ("0,x", "expected comma-separated GPU indices"), ("-1", "expected comma-separated"), ("1,1", "repeat"),
])
def test_parse_gpus_rejects(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_gpus(text)


def test_declared_gpus_are_taken_as_they_are():
    gpus = detect_gpus([2, 0])
    assert gpus == [{"index": 2, "memory": 0, "name": "declared"}, {"index": 0, "memory": 0, "name": "declared"}]
    assert gpu_usage(gpus) == []


def test_detected_gpus_have_the_computer_format():
    gpus = detect_gpus()  # none on a CPU machine; the real ones where there are
    assert [g["index"] for g in gpus] == list(range(len(gpus)))
    assert all(isinstance(g["memory"], int) and g["memory"] > 0 and g["name"] for g in gpus)
    assert len(gpu_usage(gpus)) in (0, len(gpus))


def test_without_a_driver_torch_is_not_imported(tmp_path, monkeypatch):
    import mlcomp.worker.gpus as gpus_module

    monkeypatch.setattr(gpus_module, "PROC_GPUS", str(tmp_path / "missing"))
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    monkeypatch.setattr(gpus_module, "_nvml_gpus", lambda: None)  # NVML installed but no driver
    monkeypatch.setattr(gpus_module, "_torch_gpus", lambda: pytest.fail("torch must not be asked"))
    assert gpus_module.detect_gpus() == []


def test_a_driver_is_found_in_proc_or_on_the_path(tmp_path, monkeypatch):
    from mlcomp.worker.gpus import nvidia_driver_present

    monkeypatch.setenv("PATH", str(tmp_path))
    proc = tmp_path / "gpus"
    proc.mkdir()
    assert not nvidia_driver_present(str(proc))  # the folder without a GPU in it
    (proc / "0000:01:00.0").mkdir()
    assert nvidia_driver_present(str(proc))
    smi = tmp_path / "nvidia-smi"
    smi.write_text("#!/bin/sh\n")
    smi.chmod(0o755)
    assert nvidia_driver_present(str(tmp_path / "missing"))
