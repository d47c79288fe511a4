"""The GPU check scripts' logic, dry-run at toy size on the CPU (the CUDA runs are in test_gpu.py)."""

from __future__ import annotations

from gpu_scripts import load_script


def test_sd3_check_dry_run_on_cpu(capsys):
    script = load_script("gpu_sd3_check")
    code = script.main(["--tiny", "--device", "cpu", "--steps", "3", "--batch", "2", "--repeats", "1"])
    out = capsys.readouterr().out
    # Check 1 passes (same ops as SD3's loop, byte for byte) and check 2 reports both rates and the ratio.
    assert code == 0 and "byte-identical" in out and "ratio adapter/bare time" in out, out


def test_sd3_check_without_cuda_says_so(capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert load_script("gpu_sd3_check").main([]) == 0
    assert "no CUDA device" in capsys.readouterr().out
