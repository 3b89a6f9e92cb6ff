"""The floor served by a real server (bench/throughput.py): bare graphene-django plus one
durable row a request, written after the view as gql_audit writes its own.

``BENCH_FLOOR_ROW`` holds the row's values (JSON), those of the reads row the default
configuration wrote for the same request; each request gets its own id and time.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from typing import Any

from django.db import DEFAULT_DB_ALIAS
from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from bench.models import FloorReads
from gql_audit.evidence.sealing import insert


def write_row(values: dict[str, Any], alias: str = DEFAULT_DB_ALIAS) -> None:
    """One durable floor row of ``values``, with an id and time of its own, written as
    gql_audit writes its reads row (one raw INSERT, nothing read back)."""
    insert(alias, FloorReads(id=uuid.uuid4(), at=timezone.now(), **values))


class FloorRowMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.values: dict[str, Any] = json.loads(os.environ["BENCH_FLOOR_ROW"])

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        write_row(self.values)
        return response
