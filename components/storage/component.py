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
    """Publishes a built Triton repository (or other model folder) as a new, immutable version.

    Writes ``<destination>/v<N>/...`` with parallel uploads (google-cloud-storage's
    transfer_manager), checks every object's size and CRC32C, then commits the version by
    writing its manifest last. Nothing that exists is ever overwritten; an interrupted publish
    is never visible to readers and a rerun takes the next version.

    Args:
        source: The folder artifact to publish (for example a TritonRepository).
        destination: ``gs://BUCKET/PATH`` (or a local folder, for runs on one machine).
        version: Version number to publish; 0 takes the next free one.
        workers: Parallel uploads.

    Returns:
        published: A PublishedVersion artifact whose URI is the committed ``.../v<N>`` — the
            ``storageUri`` / ``artifact_uri`` deploy steps use; metadata repeats the source's
            model name and signature.
    """
    from kfp_serve.components.artifacts import KIND_KEY, mark
    from kfp_serve.components.storage.publish import publish

    result = publish(source.path, destination, version=version, workers=workers)
    inherited = {k: v for k, v in source.metadata.items() if k != KIND_KEY}
    mark(published, "PublishedVersion", **{
        **inherited, "uri": result.uri, "published_version": result.version,
        "files": result.files, "bytes": result.bytes,
        "content_kind": source.metadata.get(KIND_KEY, ""),
    })
    published.uri = result.uri
    print(f"published {result.files} files ({result.bytes / 1e6:.1f} MB) to {result.uri}"
          f" in {result.seconds:.1f} s")
