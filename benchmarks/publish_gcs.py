"""Benchmark: publish_model's upload vs `gcloud storage rsync`, against fake-gcs-server.

    .venv/bin/python benchmarks/publish_gcs.py [--output benchmarks/results/publish_gcs.md]

Data sets: a 500 MiB repository of 20 files, and one 1 GiB file (random bytes). Every upload
goes to a fresh emulator on 127.0.0.1 (the emulator's cost grows with what it holds), each
tool is run --repeat times, and the table reports the median. The emulator re-hashes the whole
object on every resumable chunk, which real GCS does not: see the note in the output.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from results_io import default_output, write_results

from kfp_serve.components.storage.emulator import start_emulator
from kfp_serve.components.storage.publish import publish

MIB = 1024 * 1024


def _write_random(path: Path, size: int) -> None:
    with open(path, "wb") as handle:
        for _ in range(size // (16 * MIB)):
            handle.write(os.urandom(16 * MIB))
        handle.write(os.urandom(size % (16 * MIB)))


def _with_emulator(work: Path, run) -> float:
    root = Path(tempfile.mkdtemp(dir=work, prefix="emu-"))
    emulator = start_emulator(root)
    emulator.create_bucket("bench")
    saved = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = emulator.url
    try:
        began = time.perf_counter()
        run(emulator.url)
        return time.perf_counter() - began
    finally:
        emulator.stop()
        if saved is None:
            os.environ.pop("STORAGE_EMULATOR_HOST", None)
        shutil.rmtree(root, ignore_errors=True)


def _gcloud(source: Path, url: str) -> None:
    # gcloud's parallel composite upload of a 1 GiB file fails against the emulator ("'NoneType'
    # object has no attribute 'items'" after compose), so it runs as a plain resumable upload.
    env = dict(os.environ, CLOUDSDK_API_ENDPOINT_OVERRIDES_STORAGE=f"{url}/",
               CLOUDSDK_STORAGE_PARALLEL_COMPOSITE_UPLOAD_ENABLED="False",
               CLOUDSDK_AUTH_DISABLE_CREDENTIALS="True", CLOUDSDK_CORE_PROJECT="local")
    subprocess.run(["gcloud", "storage", "rsync", "-r", str(source), "gs://bench/gcloud"],
                   check=True, env=env, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=default_output("publish_gcs"),
                        help="default: benchmarks/runs/publish_gcs-<date>.md; the committed result is"
                        " benchmarks/results/publish_gcs.md")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        work = Path(tmp)
        many, one = work / "many", work / "one"
        many.mkdir()
        one.mkdir()
        for i in range(20):
            _write_random(many / f"part-{i:02d}.bin", 25 * MIB)
        _write_random(one / "model.bin", 1024 * MIB)
        for label, source in (("500 MiB in 20 files", many), ("1 GiB in 1 file", one)):
            ours = [_with_emulator(work, lambda url, s=source: publish(s, "gs://bench/ours",
                                                                       workers=args.workers))
                    for _ in range(args.repeat)]
            theirs = [_with_emulator(work, lambda url, s=source: _gcloud(s, url))
                      for _ in range(args.repeat)]
            rows.append((label, statistics.median(ours), statistics.median(theirs), ours, theirs))
            print(label, ours, theirs, flush=True)
    gcloud_version = subprocess.run(["gcloud", "version"], capture_output=True, text=True).stdout
    lines = [
        "# Publish benchmark: kfp-serve publish vs gcloud storage rsync (fake-gcs-server)", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()};"
        f" {gcloud_version.splitlines()[0] if gcloud_version else 'gcloud'}; a fresh emulator per"
        f" upload; median of {args.repeat}; publish with {args.workers} workers (includes the"
        " CRC32C of the local files, the post-upload check and the manifest; a 1 GiB file goes"
        " up as 32 parallel parts composed server-side). gcloud runs with parallel composite"
        " uploads off: with them on, its 1 GiB upload fails against the emulator.", "",
        "| data | kfp-serve publish (s) | gcloud storage rsync (s) | gcloud / kfp-serve |",
        "|---|---|---|---|",
        *[f"| {label} | {a:.2f} | {b:.2f} | {b / a:.2f}x |" for label, a, b, _, _ in rows], "",
        "Runs (s): " + "; ".join(f"{label}: ours {[round(x, 2) for x in o]}, gcloud"
                                 f" {[round(x, 2) for x in t]}" for label, _, _, o, t in rows), "",
    ]
    write_results(args.output, lines)


if __name__ == "__main__":
    main()
