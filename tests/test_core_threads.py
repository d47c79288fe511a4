import pytest
import torch

from critwin._threads import THREADS_ENV, set_threads, threads_from_env


def test_threads_from_env(monkeypatch):
    monkeypatch.delenv(THREADS_ENV, raising=False)
    assert threads_from_env() == 1 and threads_from_env(default=3) == 3
    monkeypatch.setenv(THREADS_ENV, "2")
    assert threads_from_env() == 2
    for bad in ("0", "two", "-1"):
        monkeypatch.setenv(THREADS_ENV, bad)
        with pytest.raises(ValueError, match=THREADS_ENV):
            threads_from_env()


def test_set_threads_returns_the_previous_setting():
    before = torch.get_num_threads()
    try:
        assert set_threads(2) == before and torch.get_num_threads() == 2
        assert set_threads(1) == 2 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="threads"):
        set_threads(0)
