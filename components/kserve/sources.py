"""Model sources KServe reads besides object stores: Hugging Face Hub repositories (``hf://``)
and OCI images (``oci://``, KServe's modelcars), each checked against what the cluster's KServe
can read before anything is applied.

Upstream (kserve/kserve at aaac4e29): the storage initializer downloads ``hf://owner/model
[:revision]`` since v0.14 (python/storage/kserve_storage/kserve_storage.py ``_download_hf``,
kserve#3584); earlier ones answer "Cannot recognize storage type". ``oci://`` is served by a
modelcar sidecar since v0.12 (kserve#3110), only where the ``storageInitializer`` entry of the
``inferenceservice-config`` ConfigMap enables it: ``enableModelcar``, or from v0.20
``enableOciModelSupport`` / ``ociModelMode`` (pkg/types/config.go ResolveOciModelMode).
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from kfp_serve.components.errors import UserError

if TYPE_CHECKING:  # the manifest builder imports this module and stays free of the API client
    from kfp_serve.components.kserve.api import KServeCluster

CONFIG_MAP = "inferenceservice-config"
#: the first storage-initializer release that downloads hf:// (kserve#3584)
HF_SINCE = (0, 14)
_HF = re.compile(r"^hf://[^/:]+/[^/:]+(:[^/:]+)?$")
_OCI = re.compile(r"^oci://[a-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)+(:[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64})?$")
_VERSION = re.compile(r":v?(\d+)\.(\d+)")


def check_uri(storage_uri: str) -> None:
    """The forms KServe parses: ``hf://owner/model[:revision]``, ``oci://registry/repo[:tag|@digest]``."""
    if storage_uri.startswith("hf://") and not _HF.match(storage_uri):
        raise UserError(f"storage_uri {storage_uri!r}: KServe reads Hugging Face models as"
                        " hf://OWNER/MODEL or hf://OWNER/MODEL:REVISION")
    if storage_uri.startswith("oci://") and not _OCI.match(storage_uri):
        raise UserError(f"storage_uri {storage_uri!r}: an OCI model image is"
                        " oci://REGISTRY/REPOSITORY[:TAG or @sha256:DIGEST]")


def check_cluster_reads(cluster: KServeCluster, storage_uri: str, kserve_namespace: str) -> list[str]:
    """Refuse a source this cluster's KServe cannot read (one line naming the setting or the
    version); notes when its configuration may not be read."""
    if not storage_uri.startswith(("hf://", "oci://")):
        return []
    from kubernetes.client.exceptions import ApiException

    from kfp_serve.components.kserve.api import translate

    try:
        config = cluster.core.read_namespaced_config_map(CONFIG_MAP, kserve_namespace)
    except ApiException as err:
        if err.status in (403, 404):
            return [f"cannot read ConfigMap {kserve_namespace}/{CONFIG_MAP} ({err.status}; the"
                    " optional Role in rbac/kfp-serve-kserve.yaml grants it): whether KServe reads"
                    f" {storage_uri.split('://')[0]}:// sources was not checked"]
        raise translate(err, f"reading ConfigMap {kserve_namespace}/{CONFIG_MAP}") from err
    try:
        initializer = json.loads((config.data or {}).get("storageInitializer", "{}"))
    except ValueError:
        return [f"ConfigMap {kserve_namespace}/{CONFIG_MAP} has a storageInitializer entry that is"
                " not JSON: its sources were not checked"]
    where = f"the storageInitializer entry of ConfigMap {kserve_namespace}/{CONFIG_MAP}"
    if storage_uri.startswith("oci://"):
        if not (initializer.get("ociModelMode") or initializer.get("enableModelcar")
                or initializer.get("enableOciModelSupport")):
            raise UserError(f"storage_uri {storage_uri} is an OCI image, and this KServe does not"
                            f" read them: set \"enableModelcar\": true in {where} (KServe 0.12+),"
                            " or publish the model to a bucket")
        return []
    version = _VERSION.search(initializer.get("image", ""))
    if version and (int(version.group(1)), int(version.group(2))) < HF_SINCE:
        raise UserError(f"storage_uri {storage_uri} is on the Hugging Face Hub, and this KServe's"
                        f" storage initializer ({initializer['image']}) cannot download it: hf://"
                        " needs KServe 0.14 or later; upgrade KServe, or publish the model to a"
                        " bucket")
    return []
