"""KServe's TorchServe runtime, for the fake controller: a real TorchServe serving the archive,
behind KServe's v1 and v2 inference routes (what the runtime's kserve wrapper exposes)."""

from __future__ import annotations

import contextlib
import json
import re
import urllib.error
import urllib.request
from pathlib import Path

from fakes.http_fake import FakeServer

_V1_PREDICT = re.compile(r"^/v1/models/(?P<name>[^/:]+):predict$")
_V1_MODEL = re.compile(r"^/v1/models/(?P<name>[^/:]+)$")
_V2_INFER = re.compile(r"^/v2/models/(?P<name>[^/]+)/infer$")
_V2_READY = re.compile(r"^/v2/models/(?P<name>[^/]+)/ready$")
_V2_MODEL = re.compile(r"^/v2/models/(?P<name>[^/]+)$")


class TorchServeBehindKServe:
    """Started from a fetched storageUri folder (config/ + model-store/<name>.mar)."""

    def __init__(self, folder: Path, workdir: Path):
        from fakes.torchserve_runner import torchserve

        self.model = next((folder / "model-store").glob("*.mar")).stem
        self.stack = contextlib.ExitStack()
        self.backend = self.stack.enter_context(torchserve(folder, self.model, workdir))
        self.log_path = str(workdir / "torchserve.out")
        self.proxy = self.stack.enter_context(FakeServer(self._route))
        self.url = self.proxy.url

    def _forward(self, name: str, body: dict):
        request = urllib.request.Request(f"{self.backend}/predictions/{name}", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, {"error": err.read().decode(errors="replace")}

    def _route(self, method, path, query, body):
        for pattern, verb in ((_V1_PREDICT, "POST"), (_V2_INFER, "POST")):
            match = pattern.match(path)
            if match and method == verb:
                return self._forward(match["name"], body)
        for pattern in (_V1_MODEL, _V2_READY):
            match = pattern.match(path)
            if match and method == "GET":
                known = match["name"] == self.model
                return (200, {"name": self.model, "ready": True}) if known else (404, {"error": "model not found"})
        match = _V2_MODEL.match(path)
        if match and method == "GET":  # KServe's wrapper publishes no tensor metadata
            return 200, {"name": match["name"], "versions": [], "platform": "", "inputs": [], "outputs": []}
        if path == "/v2/health/ready" and method == "GET":
            return 200, {"ready": True}
        return 404, {"error": f"no route {method} {path}"}

    def stop(self) -> None:
        self.stack.close()
