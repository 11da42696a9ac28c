"""`me doctor`: is everything in place? Each check is a dict: name, ok, detail."""

from __future__ import annotations

import time

from mecli.environment import MeError


def run(app) -> list[dict]:
    from mecli import models

    checks = []

    def check(name: str, fn, required: bool = True):
        try:
            detail = fn()
            checks.append({"name": name, "ok": True, "detail": detail, "required": required})
        except MeError as e:
            checks.append({"name": name, "ok": False, "detail": e.message, "required": required})
        except Exception as e:  # doctor reports, it doesn't crash
            checks.append({"name": name, "ok": False, "detail": f"{type(e).__name__}: {e}",
                           "required": required})

    def chat_model():
        start = time.perf_counter()
        m = app.models.chat()
        ms = (time.perf_counter() - start) * 1000
        return f"{m.path} (context {m.n_ctx} tokens, loaded in {ms:.0f} ms)"

    def gpu():
        if models.gpu_offload_supported():
            return f"available; n_gpu_layers = {app.config.n_gpu_layers}"
        raise MeError("not available in this llama-cpp-python build: CPU only (see README: GPU)")

    def database():
        store = app.store
        size = app.paths.database.stat().st_size
        c = store.counts()
        return (f"{app.paths.database} ({size / 1024:.0f} KiB, schema version "
                f"{store.schema_version()}, {c['messages']} messages, {c['rules']} rules)")

    def sqlite_vec():
        return f"sqlite-vec {app.store.vec_version()} loaded"

    def embeddings():
        return models.embedding_status(app.models)

    check("chat model", chat_model)
    check("gpu offload", gpu, required=False)
    check("database", database)
    check("sqlite-vec", sqlite_vec)
    check("embeddings", embeddings, required=False)
    return checks
