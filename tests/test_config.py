"""Config resolution and validation (unit), and the `me config` commands."""

import pytest

from mecli.config import BUNDLED_MODEL, Config, Paths, load_config
from mecli.environment import UsageError


def test_me_home_holds_config_and_data(tmp_path):
    paths = Paths.resolve({"ME_HOME": str(tmp_path)})
    assert paths.config_file == tmp_path / "config.toml"
    assert paths.database == tmp_path / "me.db"


def test_xdg_dirs_without_me_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    paths = Paths.resolve({})
    assert paths.config_file == tmp_path / "cfg" / "me" / "config.toml"
    assert paths.database == tmp_path / "data" / "me" / "me.db"


def test_defaults_without_a_file(tmp_path):
    config = load_config(Paths(tmp_path, tmp_path), {})
    assert config.model == BUNDLED_MODEL
    assert config.n_ctx == Config().n_ctx and config.source is None


def test_file_and_environment_overrides(tmp_path):
    (tmp_path / "config.toml").write_text('model = "/m/a.gguf"\nn_ctx = 1024\ntemperature = 1\n')
    config = load_config(Paths(tmp_path, tmp_path), {"ME_EMBEDDING_MODEL": "none"})
    assert (config.model, config.n_ctx, config.temperature) == ("/m/a.gguf", 1024, 1.0)
    assert config.embedding_model == "none"
    config = load_config(Paths(tmp_path, tmp_path), {"ME_MODEL": "/m/b.gguf", "ME_OFFLINE": "1"})
    assert config.model == "/m/b.gguf" and config.offline


def test_invalid_toml_names_the_line(tmp_path):
    (tmp_path / "config.toml").write_text('model = "ok"\nn_ctx = = 3\n')
    with pytest.raises(UsageError, match="line 2"):
        load_config(Paths(tmp_path, tmp_path), {})


def test_unknown_key_and_wrong_type(tmp_path):
    (tmp_path / "config.toml").write_text("n_cxt = 3\n")
    with pytest.raises(UsageError, match="unknown config key 'n_cxt'"):
        load_config(Paths(tmp_path, tmp_path), {})
    (tmp_path / "config.toml").write_text('n_ctx = "big"\n')
    with pytest.raises(UsageError, match="must be int"):
        load_config(Paths(tmp_path, tmp_path), {})


def test_example_config_documents_every_key_and_parses(tmp_path):
    from mecli.config import example_config_text

    text = example_config_text()
    for key in Config.keys():
        assert f"{key} =" in text, key
    (tmp_path / "config.toml").write_text(text)
    load_config(Paths(tmp_path, tmp_path), {})


def test_bad_config_is_exit_2_with_one_line(me, me_home):
    (me_home / "config.toml").write_text("n_ctx = = 3\n")
    r = me("history")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and "line 1" in r.stderr
    (me_home / "config.toml").write_text("colour = 1\n")
    r = me("hello")
    assert r.returncode == 2 and "unknown config key" in r.stderr


def test_config_commands(me, me_home):
    r = me("config", "path")
    assert r.returncode == 0 and r.stdout.strip() == str(me_home / "config.toml")
    assert me("config", "init").returncode == 0
    assert (me_home / "config.toml").exists()
    assert me("config", "init").returncode == 2  # exists: needs --force
    r = me("config", "show", "--json")
    assert r.returncode == 0 and r.json()["config"]["n_ctx"] == 4096
