"""KFP wrappers: serve a Triton repository on this machine, and stop it."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from kfp_serve.components import images


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def deploy_local(
    repository: Input[Artifact],
    endpoint: Output[Artifact],
    deployment: str,
    http_port: int = 0,
    grpc_port: int = 0,
    ready_timeout_s: float = 120.0,
):
    """Serves a Triton model repository with a real Triton server on 127.0.0.1, detached.

    The server keeps running after this step; stop it with ``undeploy_local`` (the pipelines do
    so in an exit handler). On failure the server is stopped and the error quotes its log.

    Args:
        repository: A TritonRepository artifact, or a PublishedVersion of one (fetched from
            GCS or a folder with every file checked against the version's manifest; KServe's
            storage initializer copies whatever lies under the URI and checks nothing).
        deployment: A name for this deployment, unique on the machine (pipelines pass the run
            id); ``undeploy_local`` stops the server by the same name.
        http_port: HTTP port on 127.0.0.1; 0 picks a free one (as binding port 0 does).
        grpc_port: gRPC port on 127.0.0.1; 0 picks a free one.
        ready_timeout_s: How long to wait for the model to become ready.

    Returns:
        endpoint: A ServingEndpoint artifact; metadata ``url``, ``grpc_url``, ``metrics_url``
            (Triton's Prometheus metrics), ``model_name``, ``pid`` and ``log_path``.
    """
    import json

    from kfp_serve.components import artifacts
    from kfp_serve.components.local.triton_server import hold_while_serving, start_server

    given = artifacts.read(repository, artifacts.TritonRepository, artifacts.PublishedVersion)
    if isinstance(given, artifacts.PublishedVersion):
        served = artifacts.read_published(repository, artifacts.TritonRepository).content
        source = given.uri
    else:
        served, source = given, repository.path
    # Ports are plain ints (0 = any free port): kfp.local 2.17.3 crashes on Optional[int] = None.
    record = start_server(source, served.model_name, deployment, http_port=http_port,
                          grpc_port=grpc_port, timeout_s=ready_timeout_s)
    artifacts.mark(endpoint, artifacts.ServingEndpoint(
        url=record.url, model_name=record.model_name, grpc_url=record.grpc_url,
        metrics_url=record.metrics_url, tensor_names=served.tensor_names, pid=record.pid,
        deployment=record.deployment, log_path=record.log_path))
    with open(endpoint.path, "w") as handle:
        json.dump(endpoint.metadata, handle, indent=2)
    print(f"serving {record.model_name!r} at {record.url} (pid {record.pid})")
    hold_while_serving(record)  # in a container: keep it (and so the server) alive


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def undeploy_local(deployment: str) -> bool:
    """Stops the local server that ``deploy_local`` started under the same deployment name.

    Safe to run when nothing is running (for example after a failed deploy).

    Args:
        deployment: The name given to ``deploy_local``.

    Returns:
        Output: True if a running server was stopped.
    """
    from kfp_serve.components.local.triton_server import undeploy

    return undeploy(deployment)
