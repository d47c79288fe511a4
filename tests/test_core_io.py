import json
import math
import os
import stat

import numpy as np
import pytest
import torch

from critwin._io import atomic_path, atomic_write_json, json_text


def test_json_is_strict_and_plain(tmp_path):
    obj = {"a": math.inf, "b": [1.0, float("nan")], "t": torch.tensor([1.5, -math.inf]), "n": np.float64(2.0)}
    text = json_text(obj)
    # Infinities keep their direction (censored endpoints); NaN is plain null.
    above, below = {"value": None, "censored": "above"}, {"value": None, "censored": "below"}
    assert json.loads(text) == {"a": above, "b": [1.0, None], "t": [1.5, below], "n": 2.0}
    atomic_write_json(tmp_path / "x.json", obj)
    assert json.loads((tmp_path / "x.json").read_text())["t"] == [1.5, below]


def test_atomic_write_leaves_nothing_on_failure_and_follows_the_umask(tmp_path):
    target = tmp_path / "result.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []
    old = os.umask(0o022)
    try:
        with atomic_path(target) as tmp:
            tmp.write_text("done")
    finally:
        os.umask(old)
    assert target.read_text() == "done"
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
