"""Traffic splits of a Vertex AI endpoint: what a deploy, a promote and a rollback make of the
live split, as plain arithmetic.

A split maps deployed-model ids to whole percentages that sum to 100 (or is empty: nothing
takes traffic). Shares are apportioned by largest remainder, and a model that served keeps at
least 1 % while it stays deployed: a share rounded to 0 would leave it deployed, billed and
idle. What a deploy found before it changed the split is written into the new deployed model's
display name (``encode_previous``), in the same request, so a retried step recovers it exactly.
"""

from __future__ import annotations

import re

from kfp_serve.components.errors import UserError


def check_percent(percent: int) -> int:
    if not 0 <= percent <= 100:
        raise UserError(f"traffic_percentage {percent} must be between 0 and 100")
    return percent


def apportion(weights: dict[str, float], total: int) -> dict[str, int]:
    """``total`` percent shared in proportion to ``weights`` (largest remainder, ties by id),
    every positive weight getting at least 1 while ``total`` allows it; zero weights get none."""
    weights = {k: w for k, w in weights.items() if w > 0}
    if not weights or total <= 0:
        return {}
    whole = sum(weights.values())
    exact = {k: total * w / whole for k, w in weights.items()}
    out = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (out[k] - exact[k], k))[:total - sum(out.values())]:
        out[k] += 1
    for k in sorted(out, key=lambda k: (out[k], k)):  # lift zeros, taking from the largest
        if out[k] == 0 and total >= len(out):
            largest = max(out, key=lambda j: (out[j], j))
            out[largest] -= 1
            out[k] = 1
    return {k: v for k, v in out.items() if v > 0}


def rescale(split: dict[str, int]) -> dict[str, int]:
    """The shares scaled to sum to 100."""
    return apportion({k: float(v) for k, v in split.items()}, 100)


def with_new(current: dict[str, int], new_id: str, percent: int) -> dict[str, int]:
    """The split after a deploy gives ``percent`` to ``new_id``: the models that serve now share
    the rest in proportion to their shares, each keeping at least 1 % (unless the new model
    takes 100 %, a full rollout). With nothing else serving the new model takes everything."""
    check_percent(percent)
    others = {k: v for k, v in current.items() if k != new_id and v > 0}
    if not others:
        return {new_id: 100}
    rest = 100 - percent
    if 0 < rest < len(others):
        raise UserError(f"traffic_percentage {percent} leaves {rest} % for the {len(others)} models"
                        " that serve now, each of which needs at least 1 %; ask for at most"
                        f" {100 - len(others)}, or 100 to take all traffic")
    split = apportion({k: float(v) for k, v in others.items()}, rest)
    if percent:
        split[new_id] = percent
    return split


def promoted(current: dict[str, int], ours: str, replaced: set[str]) -> dict[str, int]:
    """Promotion: ``ours`` takes its share and the shares of the models it ``replaced`` (the
    versions of the same model that served before the deploy); every other model keeps its
    share (another pipeline's canary, an unrelated model behind the same endpoint)."""
    split = {k: v for k, v in current.items() if k not in replaced and v > 0}
    split[ours] = current.get(ours, 0) + sum(current.get(k, 0) for k in replaced)
    if sum(split.values()) != 100:  # ours had no traffic and replaced nothing: give it the rest
        split[ours] += 100 - sum(split.values())
    return {k: v for k, v in split.items() if v > 0}


def rolled_back(current: dict[str, int], ours: str, previous: dict[str, int],
                live: set[str]) -> dict[str, int] | None:
    """Rollback: the share of ``ours`` goes back to the models that served before the deploy
    (``previous``, those still ``live``) in proportion to their shares then; models deployed
    since keep theirs. None when nothing that served before is left to take it back."""
    share = current.get(ours, 0)
    rest = {k: v for k, v in current.items() if k != ours and v > 0}
    if share == 0:
        return rest
    back = {k: float(v) for k, v in previous.items() if k in live and k != ours and v > 0}
    if not back:
        return None
    for k, v in apportion(back, share).items():
        rest[k] = rest.get(k, 0) + v
    return rest


_MARK = re.compile(r"\[kfp-serve ([0-9a-f]{12})(?: before ([0-9a-z.,:]*))?\]$")


def _b36(number: int) -> str:
    digits = "0123456789abcdefghijklmnopqrstuvwxyz"
    text = ""
    while True:
        number, digit = divmod(number, 36)
        text = digits[digit] + text
        if not number:
            return text


def deployed_name(display_name: str, marker: str, previous: dict[str, int], limit: int = 128) -> str:
    """The deployed model's display name: the model's, then ``[kfp-serve MARKER before SPLIT]``
    naming this deploy and the split it found (ids in base 36). Where the split does not fit
    the limit it is left out, and a retry recovers it from the live split instead."""
    numeric = all(k.isdigit() for k in previous)
    encoded = ",".join(f"{_b36(int(k)) if numeric else k}.{v}" for k, v in sorted(previous.items()))
    tail = f" [kfp-serve {marker} before {'n' if numeric else 's'}:{encoded}]"
    if len(tail) > limit - 8 or (not numeric and not all(re.fullmatch(r"[0-9a-z]+", k) for k in previous)):
        tail = f" [kfp-serve {marker}]"
    return display_name[:limit - len(tail)] + tail


def read_deployed_name(name: str) -> tuple[str, dict[str, int] | None] | None:
    """(marker, the split before the deploy or None where it was not recorded) of a deployed
    model this suite made; None for any other."""
    match = _MARK.search(name or "")
    if match is None:
        return None
    if match.group(2) is None:
        return match.group(1), None
    kind, _, encoded = match.group(2).partition(":")
    previous = {}
    for item in filter(None, encoded.split(",")):
        key, _, share = item.partition(".")
        previous[str(int(key, 36)) if kind == "n" else key] = int(share)
    return match.group(1), previous
