"""KServe's vLLM runtime for the fake controller: the predictor container KServe would run, and
a real vLLM (the local CPU build) started from it.

What is modelled, from kserve/kserve at aaac4e29:

- the container: the ClusterServingRuntime's ``kserve-container`` with the InferenceService's
  ``args`` appended to the runtime's (``MergeServingRuntimeAndInferenceServiceSpecs``,
  pkg/controller/v1beta1/inferenceservice/utils/utils.go: "Args are concatenated (runtime +
  isvc) rather than replaced"), the ``{{.Name}}`` placeholder replaced by the
  InferenceService's name (``ReplacePlaceholders``), and the image rewritten by
  ``UpdateImageTag``: the vllmserver server type without a GPU limit (``IsGPUEnabled``,
  pkg/utils/utils.go: ``nvidia.com/gpu`` or a MIG resource in limits) runs the sibling
  ``-cpu`` repository (vllm/vllm-openai -> vllm/vllm-openai-cpu); ``runtimeVersion`` replaces
  the tag instead;
- the server: the container's own command line is run (``--port=8080`` on a free port of
  127.0.0.1, ``--model=/mnt/models`` the copied storageUri), so every argument reaches vLLM,
  which refuses the ones it refuses; its routes are the runtime's (OpenAI at the root,
  ``/metrics``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

SERVER_TYPE = "serving.kserve.io/server-type"
_TAG = re.compile(r"(:([\w.\-_]*))$")


def chosen_runtime(runtimes: list[dict], model: dict) -> dict | None:
    """The runtime KServe picks for the predictor's model (named, else auto-selected)."""
    named, fmt = model.get("runtime"), model["modelFormat"]["name"]
    for runtime in runtimes:
        if named and runtime["metadata"]["name"] != named:
            continue
        formats = runtime["spec"].get("supportedModelFormats", [])
        if any(f["name"] == fmt and (named or f.get("autoSelect")) for f in formats):
            return runtime
    return None


def gpu_enabled(resources: dict) -> bool:
    limits = resources.get("limits", {})
    return "nvidia.com/gpu" in limits or any(k.startswith("nvidia.com/mig-") for k in limits)


def predictor_container(runtime: dict, isvc: dict) -> dict[str, Any]:
    """The ``kserve-container`` KServe builds for this InferenceService."""
    base = next(c for c in runtime["spec"]["containers"] if c["name"] == "kserve-container")
    model = isvc["spec"]["predictor"]["model"]
    name = isvc["metadata"]["name"]
    args = [a.replace("{{.Name}}", name) for a in base.get("args", [])] + list(model.get("args", []))
    resources = model.get("resources") or base.get("resources", {})
    image = base["image"]
    tag = _TAG.search(image)
    if model.get("runtimeVersion"):
        image = _TAG.sub(":" + model["runtimeVersion"], image) if tag else f"{image}:{model['runtimeVersion']}"
    elif tag and not gpu_enabled(resources) and runtime["metadata"].get("annotations", {}).get(
            SERVER_TYPE) == "vllmserver" and not image[:tag.start()].endswith("-cpu"):
        image = image[:tag.start()] + "-cpu" + tag.group(0)
    return {"name": "kserve-container", "image": image, "command": list(base.get("command", [])),
            "args": args, "resources": resources}


def flag_value(args: list[str], flag: str) -> str | None:
    for k, arg in enumerate(args):
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
        if arg == flag and k + 1 < len(args):
            return args[k + 1]
    return None


def start_vllm_predictor(container: dict, model_dir: Path, deployment: str):
    """Run the container's vLLM command on this machine: its arguments as given, except the
    host and port (127.0.0.1 and a free one) and ``/mnt/models`` (the copied storageUri)."""
    from kfp_serve.components.llm.vllm_server import start_vllm

    args = container["args"]
    served = flag_value(args, "--served-model-name") or "model"
    length = int(flag_value(args, "--max-model-len") or 0)
    rest, skip = [], False
    for k, arg in enumerate(args):
        if skip:
            skip = False
            continue
        flag = arg.split("=", 1)[0]
        if flag in ("--host", "--port", "--model", "--served-model-name", "--max-model-len"):
            skip = "=" not in arg and k + 1 < len(args)
            continue
        rest.append(arg)
    return start_vllm(model_dir, served, deployment, length, extra_args=rest, timeout_s=240)
