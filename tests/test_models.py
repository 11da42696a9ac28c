"""Model specs and the saved prefix state, with real local GGUF files (no downloads)."""

import os

import pytest

from mecli.config import Paths
from mecli.environment import UsageError
from mecli.models import ModelUnavailable, bundled_model_path, parse_hf_spec, resolve_model


def _fake_hf_cache(models_dir, repo, filename, target):
    """The layout huggingface-hub leaves after a download, pointing at a local file."""
    base = models_dir / f"models--{repo.replace('/', '--')}"
    snap = base / "snapshots" / "0123456789abcdef"
    snap.mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text("0123456789abcdef")
    os.symlink(target, snap / filename)


def test_parse_hf_spec():
    assert parse_hf_spec("hf:owner/repo/sub/file.gguf") == ("owner/repo", "sub/file.gguf")
    with pytest.raises(UsageError):
        parse_hf_spec("hf:owner/file.gguf")


def test_hf_spec_uses_the_downloaded_copy(tmp_path):
    paths = Paths(tmp_path, tmp_path)
    _fake_hf_cache(paths.models_dir, "someone/smol", "smol.gguf", bundled_model_path())
    path = resolve_model("hf:someone/smol/smol.gguf", paths, offline=True)
    assert path.name == "smol.gguf" and path.exists()


def test_hf_spec_offline_and_missing_is_unavailable(tmp_path):
    with pytest.raises(ModelUnavailable, match="ME_OFFLINE"):
        resolve_model("hf:someone/else/x.gguf", Paths(tmp_path, tmp_path), offline=True)


def test_me_chats_with_an_hf_spec_already_downloaded(me, me_home):
    _fake_hf_cache(me_home / "models", "someone/smol", "smol.gguf", bundled_model_path())
    r = me("--json", "hi", "--max-tokens", "4", env={"ME_MODEL": "hf:someone/smol/smol.gguf"})
    assert r.returncode == 0, r.stderr
    assert r.json()["model"] == "smol.gguf"


def test_hf_spec_not_downloaded_offline_is_one_line_error(me, store):
    r = me("hi", env={"ME_MODEL": "hf:someone/missing/m.gguf"})
    assert r.returncode == 1 and "ME_OFFLINE" in r.stderr and "Traceback" not in r.stderr
    assert store.counts()["messages"] == 0


def test_offline_embedding_model_falls_back_to_words_once(me, me_home):
    env = {"ME_EMBEDDING_MODEL": "hf:someone/emb/e.gguf"}
    r = me("remember the blue door", "--max-tokens", "4", env=env)
    assert r.returncode == 0 and r.stdout.strip()
    assert len([l for l in r.stderr.splitlines() if "words only" in l]) == 1
    r = me("search", "--json", "blue door", env=env)
    assert r.returncode == 0 and r.json()["results"]


def test_long_profile_prefix_is_saved_and_restored(me, me_home):
    for i in range(25):
        assert me("profile", "add", f"For topic {i}, start with background and cite a source.").returncode == 0
    first = me("--json", "--no-memory", "Say hi.", "--max-tokens", "2").json()["timings"]
    saved = list((me_home / "cache" / "prompts").glob("*.state"))
    assert len(saved) == 1 and saved[0].stat().st_mode & 0o777 == 0o600
    second = me("--json", "--no-memory", "Say hi.", "--max-tokens", "2").json()["timings"]
    assert first["cached_tokens"] == 0
    assert second["cached_tokens"] > 150  # system prompt + profile restored, not evaluated
    assert second["prompt_tokens"] == first["prompt_tokens"]
    # A changed profile is a different prefix: a new state replaces the old one.
    me("profile", "add", "Use metric units.")
    third = me("--json", "--no-memory", "Say hi.", "--max-tokens", "2").json()["timings"]
    assert third["cached_tokens"] == 0
    assert [p.name for p in (me_home / "cache" / "prompts").glob("*.state")] != [saved[0].name]
    assert len(list((me_home / "cache" / "prompts").glob("*.state"))) == 1
