"""Shared test harness: a temp ME_HOME per test, and two ways to run the real `me`.

- `me(...)` runs `python -m mecli` in a subprocess (the real command, real
  streams, real exit codes).
- The embedding model is the shared MiniLM GGUF (../shared/models), found next
  to the repository; tests that need it are skipped when it is absent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
MINILM = Path(os.environ.get("ME_TEST_EMBEDDING_MODEL",
                             REPO.parent / "shared" / "models" / "all-MiniLM-L6-v2.Q8_0.gguf"))


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


@pytest.fixture
def me_home(tmp_path) -> Path:
    home = tmp_path / "mehome"
    home.mkdir()
    return home


@pytest.fixture
def me_env(me_home) -> dict:
    """Environment for `me`: temp ME_HOME, no colour, words-only recall by default."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ME_")}
    env.update({"ME_HOME": str(me_home), "NO_COLOR": "1", "ME_EMBEDDING_MODEL": "none",
                "ME_OFFLINE": "1", "COLUMNS": "200"})
    return env


@pytest.fixture
def minilm() -> Path:
    if not MINILM.exists():
        pytest.skip(f"embedding model not found at {MINILM}")
    return MINILM


@pytest.fixture
def me(me_env):
    """Run the real `me` command: me("ask", "hi", input="piped", env={...})."""

    def run(*args: str, input: str | bytes | None = None, env: dict | None = None,
            timeout: float = 120) -> Result:
        full_env = dict(me_env)
        full_env.update(env or {})
        kwargs = {}
        if isinstance(input, bytes):
            proc = subprocess.run([sys.executable, "-m", "mecli", *args], input=input,
                                  capture_output=True, env=full_env, timeout=timeout)
            return Result(proc.returncode, proc.stdout.decode("utf-8", "replace"),
                          proc.stderr.decode("utf-8", "replace"))
        if input is None:
            kwargs["stdin"] = subprocess.DEVNULL
        proc = subprocess.run([sys.executable, "-m", "mecli", *args], input=input, text=True,
                              capture_output=True, env=full_env, timeout=timeout, **kwargs)
        return Result(proc.returncode, proc.stdout, proc.stderr)

    return run


@pytest.fixture
def store(me_home):
    """The real database under the temp ME_HOME, opened directly."""
    from mecli.db import Store

    s = Store(me_home / "me.db")
    yield s
    s.close()
