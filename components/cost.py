"""Cost per million inferences at a measured throughput, from an hourly price.

The table holds on-demand list prices in USD per hour for us-central1, for one node or one
Vertex AI prediction node of each type (vCPUs and memory included; GPUs as named).
Sources: cloud.google.com/compute/vm-instance-pricing and /compute/gpus-pricing (GKE Standard
nodes are billed as Compute Engine VMs), cloud.google.com/vertex-ai/pricing ("Prediction and
explanation"). Recorded 2026-11-30 from those pages as the maintainers last read them, not
fetched by this code: prices change and differ per region, discount and Spot — pass
``hourly_price`` for yours.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from kfp_serve.components.errors import UserError

PRICES_AS_OF = "2026-11-30"
#: machine type -> USD per hour (us-central1, on-demand)
HOURLY_PRICES: dict[str, float] = {
    "gke:e2-standard-4": 0.134,
    "gke:n2-standard-4": 0.194,
    "gke:n2-standard-8": 0.388,
    "gke:n1-standard-4": 0.190,
    "gke:n1-standard-4+nvidia-tesla-t4": 0.540,  # 0.190 + one T4 at 0.350
    "gke:g2-standard-4": 0.707,  # one L4
    "gke:a2-highgpu-1g": 3.673,  # one A100 40GB
    "vertex:n1-standard-4": 0.219,
    "vertex:n1-standard-4+nvidia-tesla-t4": 0.622,  # 0.219 + one T4 at 0.403
    "vertex:g2-standard-4": 0.813,
    "vertex:a2-highgpu-1g": 4.224,
}


def hourly_price(machine_type: str | None, price: float | None) -> tuple[float, str] | None:
    """``(USD per hour, where it came from)``; None when neither is given."""
    if price is not None:
        if price <= 0:
            raise UserError(f"hourly_price {price} must be > 0 (USD per hour)")
        return price, f"${price:g}/h as given"
    if not machine_type:
        return None
    if machine_type not in HOURLY_PRICES:
        raise UserError(f"no price for machine type {machine_type!r}; use one of"
                        f" {', '.join(sorted(HOURLY_PRICES))}, or pass hourly_price")
    return HOURLY_PRICES[machine_type], (f"{machine_type} at ${HOURLY_PRICES[machine_type]:g}/h"
                                         f" (us-central1 on-demand list price, {PRICES_AS_OF})")


@dataclass(frozen=True)
class Cost:
    """What a million inferences cost at two throughputs (inferences per second)."""

    price_per_hour: float
    source: str
    best_throughput: float
    slo_throughput: float | None  # the best throughput that met the latency SLO; None: no SLO

    @classmethod
    def from_levels(cls, price: tuple[float, str], levels: Sequence[tuple[float, float]],
                    slo_ms: float | None = None, at_slo: float | None = None) -> Cost:
        """The cost at measured load levels, each ``(throughput, latency_ms)`` at the latency
        the SLO is stated in: the best throughput of all, and the best of those within
        ``slo_ms`` (``at_slo`` instead, where a better estimate exists, e.g. confirmed rounds)."""
        best = max((throughput for throughput, _ in levels), default=0.0)
        if slo_ms is not None and at_slo is None:
            at_slo = max((t for t, latency in levels if latency <= slo_ms), default=0.0)
        return cls(price[0], price[1], best, at_slo)

    @staticmethod
    def per_million(price_per_hour: float, throughput: float) -> float | None:
        return price_per_hour / (throughput * 3600) * 1e6 if throughput > 0 else None

    def line(self) -> str:
        best = self.per_million(self.price_per_hour, self.best_throughput)
        text = (f"cost per million inferences: ${best:.4f} at the best measured throughput"
                f" ({self.best_throughput:,.1f}/s)" if best is not None else
                "cost per million inferences: no throughput was measured")
        if self.slo_throughput is not None:
            at_slo = self.per_million(self.price_per_hour, self.slo_throughput)
            text += (f", ${at_slo:.4f} at the SLO ({self.slo_throughput:,.1f}/s)" if at_slo
                     else ", none: no level met the latency SLO")
        return f"{text}; {self.source}, one node serving this model"

    def metrics(self) -> dict[str, float]:
        values = {}
        best = self.per_million(self.price_per_hour, self.best_throughput)
        if best is not None:
            values["usd_per_million"] = round(best, 6)
        if self.slo_throughput:
            values["usd_per_million_at_slo"] = round(
                self.per_million(self.price_per_hour, self.slo_throughput), 6)
        return values
