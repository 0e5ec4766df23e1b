"""Submit a pipeline to a Kubeflow Pipelines API or to Vertex AI Pipelines.

The pipeline is compiled fresh from the code (honouring ``KFP_SERVE_IMAGE``) into a temporary
file, so what runs is exactly what ``kfp-serve compile`` would write.
"""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kfp_serve.components.errors import InfrastructureError, UserError, first_line
from kfp_serve.pipelines import registry

_REGION_RE = re.compile(r"^[a-z]+(-[a-z]+)+\d+$")


@dataclass(frozen=True)
class Submitted:
    """The created run and where to look at it."""

    run_id: str
    url: str


def _compile(name: str, folder: str) -> str:
    from kfp import compiler

    path = str(Path(folder) / f"{name}.yaml")
    compiler.Compiler().compile(registry.load_pipeline(name), path)
    return path


def _run_name(name: str) -> str:
    return f"{name} {time.strftime('%Y-%m-%d %H-%M-%S')}"


def submit_kfp(name: str, host: str, params: dict[str, Any], namespace: str | None = None,
               experiment: str | None = None, pipeline_root: str | None = None,
               service_account: str | None = None, token: str | None = None) -> Submitted:
    """Create a run of pipeline ``name`` through the KFP v2beta1 REST API at ``host``."""
    import warnings

    import kfp
    import kfp_server_api
    import urllib3

    if not host.startswith(("http://", "https://")):
        raise UserError(f"--host {host!r} needs a scheme: http://HOST:PORT or https://HOST")
    if token:
        from kfp_serve.components.credentials import check_bearer_target

        check_bearer_target(host)
    _probe(host, token)
    with tempfile.TemporaryDirectory() as tmp:
        package = _compile(name, tmp)
        try:
            with warnings.catch_warnings():  # "only works with KFP >= 2.0.0-beta.2": we know
                warnings.simplefilter("ignore", FutureWarning)
                client = kfp.Client(host=host, namespace=namespace or "kubeflow",
                                    existing_token=token)
            result = client.create_run_from_pipeline_package(
                package, arguments=params, run_name=_run_name(name),
                experiment_name=experiment or "Default", namespace=namespace,
                pipeline_root=pipeline_root, service_account=service_account,
            )
        except kfp_server_api.ApiException as err:
            detail = (err.body or err.reason or "").strip().splitlines()
            message = f"KFP API at {host} answered {err.status}: {detail[0] if detail else ''}"
            if err.status in (400, 401, 403, 404, 409, 422):
                raise UserError(message) from err
            raise InfrastructureError(message) from err
        except (urllib3.exceptions.HTTPError, TimeoutError) as err:
            raise InfrastructureError(f"cannot reach the KFP API at {host}: {err}") from err
    return Submitted(result.run_id, f"{host.rstrip('/')}/#/runs/details/{result.run_id}")


HEALTHZ = "/apis/v2beta1/healthz"  # what kfp.Client asks first (kfp_server_api.HealthzServiceApi)


def _probe(host: str, token: str | None, timeout_s: float = 10.0) -> None:
    """One GET of the KFP API's health route, so that a wrong URL is one line at once (kfp.Client
    retries it five times over 25 s and logs a traceback each time)."""
    import urllib.error
    import urllib.request

    url = f"{host.rstrip('/')}{HEALTHZ}"
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                    timeout=timeout_s):
            return
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):
            raise UserError(f"the KFP API at {host} refused the credentials ({err.code}); set"
                            " $KFP_SERVE_KFP_TOKEN to a token it accepts") from None
        if err.code == 404:
            raise UserError(f"{host} answers, but not as a KFP API (GET {HEALTHZ}: 404); pass the"
                            " Kubeflow Pipelines URL, e.g. http://localhost:8080 after `kubectl"
                            " port-forward -n kubeflow svc/ml-pipeline-ui 8080:80`") from None
        raise InfrastructureError(f"the KFP API at {host} answered {err.code} to GET {HEALTHZ}") \
            from None
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", err)
        raise InfrastructureError(f"cannot reach the KFP API at {host}: {reason}") from None


def submit_vertex(name: str, project: str, region: str, pipeline_root: str,
                  params: dict[str, Any], service_account: str | None = None,
                  api_endpoint: str | None = None, credentials: Any = None) -> Submitted:
    """Create a Vertex AI PipelineJob of pipeline ``name`` (google-cloud-aiplatform)."""
    if not project:
        raise UserError("--project is required with --vertex")
    if not _REGION_RE.match(region or ""):
        raise UserError(f"--region {region!r} is not a Google Cloud region (e.g. us-central1)")
    if not pipeline_root.startswith("gs://"):
        raise UserError(f"--pipeline-root {pipeline_root!r} must be a gs:// URI on Vertex AI")
    import google.auth.exceptions
    from google.api_core import exceptions as gexc
    from google.cloud import aiplatform

    with tempfile.TemporaryDirectory() as tmp:
        package = _compile(name, tmp)
        try:
            aiplatform.init(project=project, location=region, credentials=credentials,
                            api_endpoint=api_endpoint, api_transport="rest")
            job = aiplatform.PipelineJob(
                display_name=name.replace("_", "-"), template_path=package,
                pipeline_root=pipeline_root, parameter_values=params,
                project=project, location=region, credentials=credentials,
            )
            job.submit(service_account=service_account)
        except google.auth.exceptions.DefaultCredentialsError as err:
            raise UserError("no Google Cloud credentials to submit to Vertex AI: run `gcloud auth"
                            " application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS to"
                            " a service account key") from err
        except google.auth.exceptions.GoogleAuthError as err:
            raise UserError(f"Google Cloud credentials were refused: {first_line(err)}") from err
        except gexc.GoogleAPICallError as err:
            message = f"Vertex AI answered {err.code}: {err.message}"
            if isinstance(err, (gexc.ClientError,)):
                raise UserError(message) from err
            raise InfrastructureError(message) from err
    resource = job.resource_name
    job_id = resource.rsplit("/", 1)[-1]
    url = (f"https://console.cloud.google.com/vertex-ai/locations/{region}/pipelines/runs/"
           f"{job_id}?project={project}")
    return Submitted(resource, url)
