"""Where `me` keeps things, and what the user configured.

Resolution: ME_HOME (config and data together) or the platform's config and
data directories (XDG on Linux) under `me/`. `config.toml` is validated:
unknown keys and wrong types are errors naming the key; invalid TOML names
the line. Environment variables ME_MODEL, ME_EMBEDDING_MODEL override it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path

from mecli.environment import UsageError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore

BUNDLED_MODEL = "bundled:smollm2"
DEFAULT_EMBEDDING_MODEL = "hf:CompendiumLabs/bge-small-en-v1.5-gguf/bge-small-en-v1.5-q8_0.gguf"


@dataclass
class Config:
    model: str = BUNDLED_MODEL
    embedding_model: str = DEFAULT_EMBEDDING_MODEL
    n_ctx: int = 4096
    n_gpu_layers: int = 0
    threads: int = 0  # 0: let llama.cpp choose
    max_tokens: int = 512
    temperature: float = 0.2
    top_p: float = 0.95
    top_k: int = 40
    repeat_penalty: float = 1.1
    seed: int = -1
    system_prompt: str = (
        "You are me, a private assistant running locally in the user's terminal. "
        "Answer clearly and concisely."
    )
    # Memory: how much recalled past goes into a prompt.
    memory_tokens: int = 600
    memory_results: int = 6
    # Learning: when a group of similar feedback becomes an active rule.
    rule_min_support: int = 2
    profile_tokens: int = 300
    history_size: int = 1000  # REPL input history lines kept on disk
    offline: bool = False
    # Where the file came from, for `me config show`; not a key.
    source: str | None = field(default=None, compare=False)

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in fields(cls) if f.name != "source"]


def _platform_dirs() -> tuple[Path, Path]:
    import platformdirs

    return (
        Path(platformdirs.user_config_dir("me", appauthor=False)),
        Path(platformdirs.user_data_dir("me", appauthor=False)),
    )


@dataclass
class Paths:
    config_dir: Path
    data_dir: Path

    @classmethod
    def resolve(cls, environ=os.environ) -> "Paths":
        home = environ.get("ME_HOME")
        if home:
            p = Path(home).expanduser()
            return cls(p, p)
        config_dir, data_dir = _platform_dirs()
        return cls(config_dir, data_dir)

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def database(self) -> Path:
        return self.data_dir / "me.db"

    @property
    def cache_dir(self) -> Path:
        return self.data_dir / "cache"

    @property
    def models_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def input_history(self) -> Path:
        return self.data_dir / "input_history"


def load_config(paths: Paths, environ=os.environ) -> Config:
    config = Config()
    path = paths.config_file
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise UsageError(f"invalid TOML in {path}: {e}") from None
        except (OSError, UnicodeDecodeError) as e:
            raise UsageError(f"cannot read {path}: {e}") from None
        apply_settings(config, data, where=str(path))
        config.source = str(path)
    overrides = {
        "model": environ.get("ME_MODEL"),
        "embedding_model": environ.get("ME_EMBEDDING_MODEL"),
    }
    for key, value in overrides.items():
        if value:
            setattr(config, key, value)
    if environ.get("ME_OFFLINE", "") not in ("", "0"):
        config.offline = True
    return config


def apply_settings(config: Config, data: dict, where: str) -> None:
    known = {f.name: f for f in fields(Config) if f.name != "source"}
    for key, value in data.items():
        if key not in known:
            raise UsageError(f"unknown config key {key!r} in {where} (known: {', '.join(known)})")
        default = getattr(Config, key)
        expected = type(default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not expected:
            raise UsageError(
                f"config key {key!r} in {where} must be {expected.__name__}, got {value!r}"
            )
        setattr(config, key, value)


def example_config_text() -> str:
    """The documented example, shipped in the package for `me config init`."""
    return (Path(__file__).parent / "config.example.toml").read_text(encoding="utf-8")
