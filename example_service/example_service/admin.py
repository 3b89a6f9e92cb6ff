"""The example's own admin: each profile, document and user links to who read and changed it."""

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin

from example_service.models import Document, Profile
from gql_audit.admin import AccessHistoryAdminMixin


@admin.register(Profile)
class ProfileAdmin(AccessHistoryAdminMixin, admin.ModelAdmin):
    list_display = ("id", "user", "full_name")
    search_fields = ("full_name", "user__username")


@admin.register(Document)
class DocumentAdmin(AccessHistoryAdminMixin, admin.ModelAdmin):
    list_display = ("id", "title", "owner", "classification", "updated_at")
    list_filter = ("classification",)
    list_select_related = ("owner",)


User = get_user_model()
if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class AuditedUserAdmin(AccessHistoryAdminMixin, UserAdmin):
    pass
