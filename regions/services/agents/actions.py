"""Which operator actions apply to an agent in its state: one rule, read by the
console to offer its buttons and to refuse an action posted anyway."""
from __future__ import annotations

from regions.models import Agent

AGENT_ACTIONS = ("drain", "cordon", "uncordon", "revoke")


def agent_action_refusal(agent: Agent, action: str) -> str | None:
    """None when `action` applies to `agent` as it is, else why not (a sentence
    naming the agent). Pure: reads the row's status and desired state only."""
    name, desired, status = agent.agent_id, agent.desired, agent.status
    revoked = desired == Agent.Desired.STOPPED
    live = status == Agent.Status.ONLINE and not revoked
    if action in ("drain", "cordon"):
        want, word = {"drain": (Agent.Desired.DRAINING, "draining"), "cordon": (Agent.Desired.CORDONED, "cordoned")}[action]
        if desired == want and live:
            return f"agent {name} is already {word}"
        if not live:
            return f"agent {name} is {'revoked' if revoked else status}: only an online agent can be {action}ed"
        return None
    if action == "uncordon":
        if desired == Agent.Desired.ACTIVE:
            return f"agent {name} is active already: nothing to uncordon"
        return None
    if action == "revoke":
        if revoked:
            return f"agent {name} is revoked already"
        if status == Agent.Status.STOPPED:
            return f"agent {name} is stopped (deregistered): it runs nothing and heartbeats no more"
        return None
    return f"unknown action {action}"


def agent_actions_allowed(agent: Agent) -> list[str]:
    """The actions that apply to `agent` now, in AGENT_ACTIONS order."""
    return [action for action in AGENT_ACTIONS if agent_action_refusal(agent, action) is None]
