from django.contrib import admin
from django.utils import timezone

from router.models import AddressRule, Region, RegistrationToken
from router.services import region_is_stale


class AddressRuleInline(admin.TabularInline):
    model = AddressRule
    extra = 0


@admin.register(Region)
class RegionAdmin(admin.ModelAdmin):
    list_display = ("region_id", "orchestrator_url", "labels", "available_agents", "health", "received_at",
                    "config_version", "config_since")
    list_filter = ("enabled", "config_version")
    readonly_fields = ("token_hash", "capabilities", "last_updated", "received_at", "config_since")
    inlines = [AddressRuleInline]

    @admin.display(description="health")
    def health(self, region):
        return "stale" if region_is_stale(region, timezone.now()) else "fresh"


@admin.register(RegistrationToken)
class RegistrationTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "regions", "created_at", "revoked_at")
    readonly_fields = ("prefix", "token_hash", "created_at")
