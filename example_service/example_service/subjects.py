"""Which objects hold a person's data: GQL_AUDIT["SUBJECT_OBJECTS"] for gql_audit_report."""

from example_service.models import Document, Profile


def subject_objects(user):
    """The user, their profile and their documents."""
    return [user, *Profile.objects.filter(user=user), *Document.objects.filter(owner=user)]
