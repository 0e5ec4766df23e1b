"""Why an InferenceService is not Ready: one Markdown report of its conditions, model status,
pods, storage-initializer and kserve-container log tails, and Warning events."""

from __future__ import annotations

from kfp_serve.components import vllm_failures
from kfp_serve.components.kserve.api import KServeCluster


def diagnostics(cluster: KServeCluster, name: str, log_lines: int = 30) -> str:
    """A Markdown report of everything that says why an InferenceService is not Ready."""
    from kubernetes.client.exceptions import ApiException

    isvc = cluster.get(name) or {}
    status = isvc.get("status", {})
    lines = [f"# InferenceService `{cluster.namespace}/{name}`: diagnostics", "",
             "## Conditions", "", "| type | status | reason | message |", "|---|---|---|---|"]
    for c in status.get("conditions", []):
        lines.append(f"| {c.get('type')} | {c.get('status')} | {c.get('reason', '')} |"
                     f" {c.get('message', '')} |")
    model_status = status.get("modelStatus", {})
    lines += ["", "## Model status", "",
              f"- transition: {model_status.get('transitionStatus', 'unknown')}",
              f"- states: {model_status.get('states', {})}",
              f"- last failure: {model_status.get('lastFailureInfo', 'none')}", "", "## Pods", ""]
    pods = cluster.pods(name)
    if not pods:
        lines.append("- no predictor pods")
    for pod in pods:
        lines.append(f"- `{pod.metadata.name}`: {pod.status.phase}")
        for container in [*(pod.status.init_container_statuses or []),
                          *(pod.status.container_statuses or [])]:
            state = container.state
            detail = (f"waiting {state.waiting.reason}" if state and state.waiting else
                      f"terminated {state.terminated.reason} (exit {state.terminated.exit_code})"
                      if state and state.terminated else "running")
            lines.append(f"  - {container.name}: {detail}, restarts {container.restart_count}")
        for container in ("storage-initializer", "kserve-container"):
            try:
                log = cluster.core.read_namespaced_pod_log(pod.metadata.name, cluster.namespace,
                                                           container=container, tail_lines=log_lines)
            except ApiException:
                continue
            lines += ["", f"### `{pod.metadata.name}` / {container} (last {log_lines} lines)", "",
                      "```", (log or "").rstrip(), "```"]
            advice = vllm_failures.recognise(log or "")
            if advice:  # a vLLM start-up failure it is known for
                lines += ["", f"**vLLM:** {advice}"]
    lines += ["", "## Warning events", ""]
    try:
        events = cluster.core.list_namespaced_event(cluster.namespace).items
    except ApiException:
        events = []
    warnings = [e for e in events
                if e.type == "Warning" and (e.involved_object.name or "").startswith(name)]
    lines += [f"- {e.involved_object.kind}/{e.involved_object.name}: {e.reason}: {e.message}"
              for e in warnings] or ["- none"]
    return "\n".join(lines) + "\n"
