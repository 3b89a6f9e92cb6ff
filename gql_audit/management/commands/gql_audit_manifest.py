"""Build the persisted-operation manifest from a directory of ``.graphql`` files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from graphql import GraphQLError, OperationDefinitionNode, parse

from gql_audit.protect.document import document_hash


def build_manifest(directory: Path) -> dict[str, str]:
    """sha256 -> document of every ``*.graphql`` file under ``directory`` (each file one document,
    its surrounding whitespace stripped), every one checked to parse and to hold an operation."""
    if not directory.is_dir():
        raise CommandError(f"{directory} is not a directory")
    manifest: dict[str, str] = {}
    for path in sorted(directory.rglob("*.graphql")):
        try:
            document = path.read_text(encoding="utf-8").strip()
            parsed = parse(document, no_location=True)
        except (OSError, UnicodeDecodeError) as exc:
            raise CommandError(f"{path}: cannot be read: {exc}") from exc
        except GraphQLError as exc:
            raise CommandError(f"{path}: not a GraphQL document: {exc.message}") from exc
        if not any(isinstance(d, OperationDefinitionNode) for d in parsed.definitions):
            raise CommandError(f"{path}: holds no operation")
        manifest[document_hash(document)] = document
    if not manifest:
        raise CommandError(f"no .graphql file under {directory}")
    return manifest


class Command(BaseCommand):
    help = (
        "Write the persisted-operation manifest (a JSON map of sha256 -> document) for "
        "GQL_AUDIT['PERSISTED_OPERATIONS'] from every .graphql file under a directory."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("directory", help="Directory searched (recursively) for .graphql files.")
        parser.add_argument("--output", "-o", help="File to write (default: standard output).")

    def handle(self, *args: Any, **options: Any) -> None:
        manifest = build_manifest(Path(options["directory"]))
        text = json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        if options["output"]:
            Path(options["output"]).write_text(text, encoding="utf-8")
            self.stderr.write(f"{len(manifest)} operation(s) written to {options['output']}.")
        else:
            self.stdout.write(text, ending="")
