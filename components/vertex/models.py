"""Model versions in the Vertex AI Model Registry: one version per deploy under one model per
display name, found again by this deploy's label when a step is retried."""

from __future__ import annotations

import json
import time
from typing import Any

from kfp_serve.components.errors import UserError
from kfp_serve.components.vertex.api import VertexClient, translate
from kfp_serve.components.vertex.spec import LABEL_KEY, VertexDeploySpec


def get_model(client: VertexClient, name: str) -> Any | None:
    """The model (or version) ``name``; None when Vertex AI has none."""
    from google.api_core import exceptions as gexc

    try:
        return client.models.get_model(name=name, **client.options())
    except gexc.NotFound:
        return None
    except Exception as err:
        raise translate(err, f"reading model {name}") from err


def find_version(client: VertexClient, model: str, key: str) -> Any | None:
    """The newest version of ``model`` labelled with ``key`` (this deploy's), or None."""
    pager = client.call(f"listing versions of {model}", client.models.list_model_versions,
                        request={"name": model, "filter": f'labels.{LABEL_KEY}="{key}"'})
    found = sorted(pager, key=lambda m: int(m.version_id or 0))
    return found[-1] if found else None


def upload(client: VertexClient, spec: VertexDeploySpec, timeout_s: float) -> tuple[Any, list[str]]:
    """Upload a new version of the model with the spec's display name (its id derives from
    it, so each run adds a version, not a model). A retry resumes: it waits for an upload
    an earlier attempt left running and reuses the version it made.
    Returns (model version, what was reused)."""
    from google.api_core import exceptions as gexc

    name = f"{client.parent}/models/{spec.model_id}"
    reused = client.finish_pending(client.models, name, "an earlier upload", timeout_s)
    body = client.types.Model.from_json(json.dumps(spec.model_body()), ignore_unknown_fields=False)
    for attempt in range(5):
        parent_model = get_model(client, name)
        if parent_model is not None:
            existing = find_version(client, name, spec.key)
            if existing is not None:
                _check_same_version(existing, body, f"{name}@{existing.version_id}")
                return existing, [*reused, f"model version {name}@{existing.version_id}"]
        request: dict[str, Any] = {"parent": client.parent, "model": body}
        if parent_model is not None:
            request["parent_model"] = name
        else:
            request["model_id"] = spec.model_id
        try:
            started = client.models.upload_model(request=request, **client.options(idempotent=False))
            break
        except gexc.AlreadyExists as err:  # another attempt created the model meanwhile
            if attempt == 4:
                raise translate(err, "uploading the model") from err
            time.sleep(0.5 * 2 ** attempt)
        except Exception as err:
            raise translate(err, "uploading the model") from err
    response = client.wait(client.models, started.operation.name, "uploading the model", timeout_s)
    uploaded = client.types.UploadModelResponse.deserialize(response.value)
    version = uploaded.model_version_id
    model = client.call("reading the uploaded model", client.models.get_model,
                        name=f"{uploaded.model}@{version}" if version else uploaded.model)
    return model, reused


def _check_same_version(found: Any, wanted: Any, name: str) -> None:
    """A version found by this deploy's label must hold this deploy's artifact and serving
    container: Vertex AI merges model-level labels into every version, so a label alone can
    match another one."""
    def container(model: Any) -> dict:
        spec = type(model.container_spec).to_dict(model.container_spec)
        spec["env"] = sorted(spec.get("env", []), key=lambda e: e.get("name", ""))
        return {k: v for k, v in spec.items() if v not in ("", [], {}, None, 0)}

    differs = [what for what, a, b in (
        ("artifact", found.artifact_uri, wanted.artifact_uri),
        ("serving container", container(found), container(wanted))) if a != b]
    if differs:
        raise UserError(f"model version {name} carries this deploy's label but another"
                        f" {' and '.join(differs)} ({found.artifact_uri},"
                        f" {found.container_spec.image_uri}); remove the label"
                        f" {LABEL_KEY} from the model or its other versions, or use another"
                        " model display name")


#: Triton in Vertex AI mode names the model it serves in this argument (container.py)
_TRITON_DEFAULT_MODEL = "--vertex-ai-default-model="


def registry_version(client: VertexClient, reference: str) -> tuple[Any, str, str]:
    """A model version already in the Model Registry, by ``ID@VERSION``, ``ID@alias`` or
    resource name (no ``@``: its default version), and how the suite calls what it serves:
    (version, protocol, served model name). Triton in Vertex AI mode is called through
    rawPredict, Vertex AI's PyTorch container (TorchServe) through predict; another container
    is refused, since neither validation nor a rollback could call it."""
    name = reference if reference.startswith("projects/") else f"{client.parent}/models/{reference}"
    model = get_model(client, name)
    if model is None:
        raise UserError(f"model {name} is not in the Model Registry of {client.parent}; give an"
                        " existing MODEL_ID@VERSION or @alias (gcloud ai models list)")
    container = model.container_spec
    triton = [a[len(_TRITON_DEFAULT_MODEL):] for a in container.args if a.startswith(_TRITON_DEFAULT_MODEL)]
    if triton:
        return model, "vertex-raw", triton[0]
    if container.predict_route == "/predictions/model":
        return model, "vertex-predict", "model"
    raise UserError(f"model {name}@{model.version_id} runs {container.image_uri or 'a prebuilt image'}"
                    f" (predict route {container.predict_route or 'none'}): the suite deploys Triton"
                    f" in Vertex AI mode ({_TRITON_DEFAULT_MODEL}NAME) or Vertex AI's PyTorch"
                    " container (/predictions/model), which it can validate and roll back")
