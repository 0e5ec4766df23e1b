"""The server's view of a load level, GPU included: Triton's ``nv_gpu_utilization`` gauges
(server docs/user_guide/metrics.md, "GPU Metrics": 0.0-1.0 per GPU, per interval) say whether a
GPU idled or was the limit, and the report names where to watch it over time (DCGM)."""

import urllib.request

from kfp_serve.components.validate.load import LoadLevel
from kfp_serve.components.validate.result import load_table
from kfp_serve.components.validate.server_metrics import difference, parse_counters

#: two GPUs as Triton prints them beside its inference counters (metrics.md's names and labels)
GPU_PAGE = """# HELP nv_gpu_utilization GPU utilization rate [0.0 - 1.0)
# TYPE nv_gpu_utilization gauge
nv_gpu_utilization{{gpu_uuid="GPU-0b6c1a3e"}} {0}
nv_gpu_utilization{{gpu_uuid="GPU-7f2d9c41"}} {1}
"""


def test_the_gpu_utilization_tells_an_idle_gpu_from_a_saturated_one(server):
    """The real local Triton's page (CPU only: no GPU gauges) with GPU lines added as a GPU
    build prints them: the counters difference as before, the gauge is the last sample."""
    with urllib.request.urlopen(server.metrics_url, timeout=10) as answer:
        page = answer.read().decode()
    kind, before = parse_counters(page, "digits")
    assert kind == "triton" and "gpu_utilization" not in before
    plain = difference(kind, before, before, "digits")
    assert plain.gpu_utilization is None and "GPU" not in plain.markdown()
    assert "GPU busy" not in load_table([LoadLevel(1, 10, 0, 1.0, 1, 2, 3)], [plain]).markdown()

    _, idle = parse_counters(page + GPU_PAGE.format(0.08, 0.16), "digits")
    stats = difference("triton", before, idle, "digits")
    assert abs(stats.gpu_utilization - 0.12) < 1e-9 and stats.requests == 0
    assert "12%" in stats.markdown() and "the GPU mostly waited" in stats.markdown()
    assert "DCGM_FI_DEV_GPU_UTIL" in stats.markdown()
    assert stats.metrics()["server_gpu_utilization"] == 0.12
    table = load_table([LoadLevel(1, 10, 0, 1.0, 1, 2, 3)], [stats]).markdown()
    assert "GPU busy" in table and "12%" in table

    _, busy = parse_counters(page + GPU_PAGE.format(0.97, 0.95), "digits")
    assert "the GPU was the limit" in difference("triton", before, busy, "digits").markdown()
