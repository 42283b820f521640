from django.contrib import admin
from django.utils import timezone

from router.models import AddressRule, Region, RegistrationToken
from router.services import region_is_stale, region_watermark_reset


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
    actions = ["reset_replay_watermark"]

    @admin.display(description="health")
    def health(self, region):
        return "stale" if region_is_stale(region, timezone.now()) else "fresh"

    @admin.action(description="Reset replay watermark (accept the next summary whatever its date)")
    def reset_replay_watermark(self, request, queryset):
        region_ids = list(queryset.values_list("region_id", flat=True))
        for region_id in region_ids:
            region_watermark_reset(region_id=region_id)
        self.message_user(request, f"Replay watermark cleared for {len(region_ids)} region(s): "
                                   f"{', '.join(region_ids)}.")


@admin.register(RegistrationToken)
class RegistrationTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "regions", "created_at", "revoked_at")
    readonly_fields = ("prefix", "token_hash", "created_at")
