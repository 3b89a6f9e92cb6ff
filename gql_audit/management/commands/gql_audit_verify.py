"""Verify the audit trail: its seals (``TAMPER_EVIDENCE``), or, with the public key alone,
its signed checkpoints and every record they log (``CHECKPOINTS``)."""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from gql_audit.durations import parse_duration
from gql_audit.evidence import log, note, sealing
from gql_audit.evidence.audit import AuditReport, audit
from gql_audit.evidence.verify import Problem, Report, verify
from gql_audit.store import audit_alias

#: ``--jobs`` by default at most: past it the database, not the digests, is what is waited for.
MAX_JOBS = 4


def default_jobs() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return min(MAX_JOBS, cpus)


def plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def problem_data(problem: Problem) -> dict[str, Any]:
    data: dict[str, Any] = {"what": problem.what, "kind": problem.kind, "id": problem.id}
    if problem.chain:
        data["chain"], data["position"] = problem.chain, problem.position
    if problem.detail:
        data["detail"] = problem.detail
    return data


def moment(when: datetime.datetime | None) -> str | None:
    return note.format_time(when) if when is not None else None


class Command(BaseCommand):
    help = (
        "Verify the audit trail and exit non-zero naming each problem: with TAMPER_EVIDENCE's key, every "
        "seal and the records it lists; with --public-key alone, every signed checkpoint, the log's "
        "consistency and every logged record; with --anchor, that the database is not behind the anchor."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--since", default=None, help="Only records (and seals) newer than this age, e.g. 30d.")
        parser.add_argument("--database", default=None, help="Database alias (default: GQL_AUDIT AUDIT_DATABASE).")
        parser.add_argument(
            "--all-sealed",
            action="store_true",
            help="Sealing (with --public-key: the log) was on before the first record: report every record "
            "no seal lists (no leaf names) however old it claims to be.",
        )
        parser.add_argument(
            "--public-key",
            action="append",
            default=[],
            metavar="FILE",
            help="An Ed25519 public key (PEM) the log's checkpoints are signed with; give each key in use "
            "since the oldest checkpoint kept. Needs no secret.",
        )
        parser.add_argument(
            "--anchor",
            action="append",
            default=[],
            metavar="URL",
            help="An anchor the checkpointer writes to (file:///dir/): fail when the database is behind it.",
        )
        parser.add_argument("--format", choices=["text", "json"], default="text", help="Output (default: text).")
        parser.add_argument(
            "--jobs",
            type=int,
            default=default_jobs(),
            metavar="N",
            help="With --public-key on PostgreSQL: processes that read and digest the logged records beside "
            f"the one walking the log (default: the CPUs this process may use, at most {MAX_JOBS}; 1: none).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            since = timezone.now() - parse_duration(options["since"], "--since") if options["since"] else None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        using = options["database"] or audit_alias()
        if options["jobs"] < 1:
            raise CommandError(f"--jobs must be 1 or more, not {options['jobs']}.")
        if options["public_key"] or options["anchor"]:
            self.with_public_keys(options, since, using)
            return
        if not sealing.keys():
            raise CommandError(
                "TAMPER_EVIDENCE is off: nothing is sealed to verify. To check the signed checkpoints, "
                "give --public-key FILE."
            )
        report = verify(since=since, using=using, all_sealed=options["all_sealed"])
        summary = (
            f"{plural(report.records, 'record')} in {plural(report.seals, 'seal')} on "
            f"{plural(report.chains, 'chain')} checked; {report.not_covered} written before sealing began"
        )
        self.finish(options["format"], report.problems, summary, self.sealed_data(report))

    def with_public_keys(self, options: dict[str, Any], since: datetime.datetime | None, using: str) -> None:
        try:
            settings = log.log_settings()
        except ValueError:
            settings = None
        paths = options["public_key"] or (list(settings.public_keys) if settings is not None else [])
        if not paths:
            raise CommandError("--anchor needs the log's public key: give --public-key FILE.")
        keys = []
        for path in paths:
            try:
                keys.append(note.load_public_key(Path(path).read_bytes()))
            except OSError as exc:
                raise CommandError(f"cannot read {path}: {exc.strerror}") from None
            except ValueError as exc:
                raise CommandError(f"{path}: {exc}") from None
        interval = settings.interval if settings is not None else parse_duration(log.DEFAULT_INTERVAL)
        report = audit(
            keys,
            using,
            since=since,
            anchor_urls=options["anchor"],
            interval=interval,
            origin=settings.origin if settings is not None else None,
            all_logged=options["all_sealed"],
            jobs=options["jobs"],
        )
        lines = self.audit_lines(report)
        summary = (
            f"{report.checkpoints_valid} of {report.checkpoints} checkpoints valid, "
            f"{report.records_valid} of {report.records} logged records valid"
        )
        if options["format"] == "text":
            for line in lines:
                self.stdout.write(line)
        self.finish(options["format"], report.problems, summary, self.audit_data(report))

    def finish(self, output: str, problems: list[Problem], summary: str, data: dict[str, Any]) -> None:
        if output == "json":
            self.stdout.write(json.dumps({"ok": not problems, **data, "problems": [problem_data(p) for p in problems]}))
        else:
            for problem in problems:
                self.stdout.write(str(problem))
            if not problems:
                self.stdout.write(self.style.SUCCESS(f"OK: {summary}."))
        if problems:
            raise CommandError(f"{plural(len(problems), 'problem')}: {summary}.", returncode=1)

    @staticmethod
    def sealed_data(report: Report) -> dict[str, Any]:
        return {
            "checkpoints": 0,
            "records": report.records,
            "seals": report.seals,
            "chains": report.chains,
            "not_covered": report.not_covered,
        }

    @staticmethod
    def audit_data(report: AuditReport) -> dict[str, Any]:
        newest = report.newest
        return {
            "checkpoints": report.checkpoints,
            "checkpoints_valid": report.checkpoints_valid,
            "records": report.records,
            "records_valid": report.records_valid,
            "leaves": report.leaves,
            "range_requested": {"from": moment(report.requested[0]), "to": moment(report.requested[1])},
            "range_found": {"from": moment(report.found[0]), "to": moment(report.found[1])},
            "newest_checkpoint": None
            if newest is None
            else {"id": newest.ident, "tree_size": newest.size, "time": moment(newest.time)},
            "anchored": None
            if report.anchored is None
            else {"id": report.anchored.ident, "tree_size": report.anchored.size, "time": moment(report.anchored.time)},
            "purged": [{"kind": k, "records": n, "newest": at} for k, (n, at) in sorted(report.purged.items())],
            "gaps": [{"from": moment(a), "to": moment(b)} for a, b in report.gaps],
            "not_covered": report.not_covered,
            "jobs": report.jobs,
        }

    @staticmethod
    def audit_lines(report: AuditReport) -> list[str]:
        """A summary in the shape CloudTrail's validation gives: the range asked for and found,
        n of m valid, and each gap by name."""
        asked_from = moment(report.requested[0]) or "the first record"
        lines = [f"Results requested for {asked_from} to {moment(report.requested[1])}"]
        found_from, found_to = report.found
        if found_from is None:
            lines.append("Results found: no logged record is stored in that range")
        else:
            lines.append(f"Results found for {moment(found_from)} to {moment(found_to)}:")
        lines.append(f"  {report.checkpoints_valid}/{report.checkpoints} checkpoints valid")
        lines.append(f"  {report.records_valid}/{report.records} logged records valid")
        if report.newest is not None:
            lines.append(f"  newest checkpoint: {report.newest.size} records at {moment(report.newest.time)}")
        if report.anchored is not None:
            lines.append(f"  newest anchored: {report.anchored.size} records at {moment(report.anchored.time)}")
        for kind, (count, at) in sorted(report.purged.items()):
            lines.append(f"  purged (the oldest {kind}): {count}, the newest of them dated {at}")
        for start, end in report.gaps:
            lines.append(f"  gap: no checkpoint from {moment(start)} to {moment(end)}")
        if report.not_covered:
            lines.append(f"  {report.not_covered} records written before the log began (not covered)")
        return lines
