from django import forms
from django.contrib import admin

from project.accounts.audit import audit_record, audited
from project.accounts.models import SCOPES, ApiKey, AuditEvent


class ApiKeyForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(choices=[(scope, f"{scope}: {what}") for scope, what in SCOPES.items()],
                                       widget=forms.CheckboxSelectMultiple, required=False,
                                       help_text="What the key may do (docs/security.md, who may do what).")

    class Meta:
        model = ApiKey
        fields = ["name", "user", "scopes", "revoked_at"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """Keys are made by create_api_key (the raw key is printed once); here their
    name, scopes and revocation change, each change in the audit trail."""

    form = ApiKeyForm
    list_display = ("name", "prefix", "user", "scopes", "created_at", "revoked_at")
    readonly_fields = ("prefix", "created_at")
    list_filter = ("revoked_at",)

    def has_add_permission(self, request):
        return False  # a key made here would have no raw value anyone was given

    def save_model(self, request, obj, form, change):
        before = ApiKey.objects.filter(pk=obj.pk).values("scopes", "revoked_at").first() or {}
        super().save_model(request, obj, form, change)
        target = f"key {obj.prefix}… of {obj.user.username}"
        if "revoked_at" in form.changed_data:
            audit_record(action="api_key.revoke" if obj.revoked_at else "api_key.unrevoke", target=target,
                         request=request)
        if "scopes" in form.changed_data and before.get("scopes") != obj.scopes:
            audit_record(action="api_key.scopes", target=target, request=request,
                         detail=f"{', '.join(before.get('scopes') or []) or '-'} -> {', '.join(obj.scopes) or '-'}")

    def delete_model(self, request, obj):  # a deleted key is revoked for good: in the trail too
        with audited(request, "api_key.delete", target=f"key {obj.prefix}… of {obj.user.username}"):
            super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for key in queryset.select_related("user"):
            self.delete_model(request, key)


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    """The audit trail: read-only, filterable (project/accounts/audit.py writes it)."""

    list_display = ("at", "actor", "action", "target", "outcome", "address", "detail")
    list_filter = ("outcome", "action")
    search_fields = ("actor", "target", "detail", "=address")
    date_hierarchy = "at"
    list_per_page = 100

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
