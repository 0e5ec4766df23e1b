"""KFP wrapper: publish a built repository or archive as a new immutable version."""

from kfp import dsl
from kfp.dsl import Artifact, Input, Output

from kfp_serve.components import images


@dsl.component(base_image=images.SUITE_IMAGE, install_kfp_package=False)
def publish_model(
    source: Input[Artifact],
    published: Output[Artifact],
    destination: str,
    version: int = 0,
    workers: int = 8,
):
    """Publishes a built Triton repository or TorchServe archive as a new, immutable version.

    Writes ``<destination>/v<N>/...`` with parallel uploads (google-cloud-storage's
    transfer_manager), checks every object's size and CRC32C, then commits the version by
    writing its manifest last. Nothing that exists is ever overwritten; an interrupted publish
    is never visible to readers and a rerun takes the next version.

    Args:
        source: The TritonRepository or TorchServeArchive to publish.
        destination: ``gs://BUCKET/PATH`` (or a local folder, for runs on one machine).
        version: Version number to publish; 0 takes the next free one.
        workers: Parallel uploads.

    Returns:
        published: A PublishedVersion artifact whose URI is the committed ``.../v<N>`` — the
            ``storageUri`` / ``artifact_uri`` deploy steps use; metadata ``content`` holds the
            source's record (model name, tensor names, signature).
    """
    from kfp_serve.components import artifacts
    from kfp_serve.components.storage.publish import publish

    content = artifacts.read(source, artifacts.TritonRepository, artifacts.TorchServeArchive)
    result = publish(source.path, destination, version=version, workers=workers)
    artifacts.mark(published, artifacts.PublishedVersion(
        uri=result.uri, published_version=result.version, content=content, files=result.files,
        bytes=result.bytes))
    published.uri = result.uri
    print(f"published {result.files} files ({result.bytes / 1e6:.1f} MB) to {result.uri}"
          f" in {result.seconds:.1f} s")
