"""Time to first token of a one-shot `me` with a long profile: cold vs saved prefix state.

Runs the real `me --json` command (a new process each time, as a user would) in a temp
ME_HOME with N hand-added profile rules, alternating cold runs (cache/prompts emptied
first) and warm runs (the saved state of system prompt + profile restored), side by side.

    python benchmarks/prefix_cache.py --rules 40 --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def me(home: Path, *args: str) -> dict:
    env = {**os.environ, "ME_HOME": str(home), "ME_EMBEDDING_MODEL": "none", "NO_COLOR": "1"}
    out = subprocess.run([sys.executable, "-m", "mecli", *args], capture_output=True, text=True,
                         env=env, stdin=subprocess.DEVNULL, check=True)
    return json.loads(out.stdout) if out.stdout.strip().startswith("{") else {}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rules", type=int, default=40)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="me-bench-"))
    try:
        for i in range(args.rules):
            me(home, "profile", "add", f"When the user asks about topic {i}, give the relevant "
               f"background first and name one reliable source.")
        cold, warm, prompt_tokens, cached = [], [], 0, []
        for _ in range(args.runs):
            shutil.rmtree(home / "cache" / "prompts", ignore_errors=True)
            t = me(home, "--json", "--no-memory", "--max-tokens", "1", "Say hi.")["timings"]
            cold.append(t["ttft_ms"])
            prompt_tokens = t["prompt_tokens"]
            t = me(home, "--json", "--no-memory", "--max-tokens", "1", "Say hi.")["timings"]
            warm.append(t["ttft_ms"])
            cached.append(t["cached_tokens"])
        print(f"profile of {args.rules} rules, prompt {prompt_tokens} tokens, "
              f"{statistics.median(cached):.0f} restored from the saved state; {args.runs} runs each")
        print("| run | ttft median (ms) | ttft min (ms) |")
        print("| --- | ---: | ---: |")
        print(f"| cold (no saved state) | {statistics.median(cold):.0f} | {min(cold):.0f} |")
        print(f"| warm (saved prefix state) | {statistics.median(warm):.0f} | {min(warm):.0f} |")
        print(f"speed-up of the median: {statistics.median(cold) / statistics.median(warm):.1f}x")
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
