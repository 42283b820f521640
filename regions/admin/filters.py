"""List filters the admin's own field filters cannot express: an agent's state
combines its status, what the region wants of it and whether it is busy (the
overview's "agents by state" links here)."""
from __future__ import annotations

from django.contrib import admin

from regions.selectors import AGENT_STATE_FILTERS, agent_list_in_state


class AgentStateFilter(admin.SimpleListFilter):
    """?state=online_idle|online_busy|cordoned|draining|offline|revoked|stopped,
    counted as the overview counts them (regions.selectors.AGENT_STATE_FILTERS)."""

    title = "state"
    parameter_name = "state"

    def lookups(self, request, model_admin):
        return [(name.replace(" ", "_"), name) for name in AGENT_STATE_FILTERS]

    def queryset(self, request, queryset):
        value = self.value()
        if value is None or value.replace("_", " ") not in AGENT_STATE_FILTERS:
            return queryset
        return agent_list_in_state(queryset, state=value)
