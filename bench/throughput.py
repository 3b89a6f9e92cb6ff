"""Requests per second and latency under concurrent clients, through real servers, against bare graphene-django.

    BENCH_DB=postgres PGHOST=... python bench/throughput.py [--objects 20] [--clients 8,16] [--rounds 5] [--seconds 5]

Needs ``wrk`` (Debian's package). Starts four servers of each kind on the same database,
one per configuration: bare graphene-django; the floor, bare plus one durable row a
request written after the view as gql_audit writes its reads row (bench/floor.py);
gql_audit as installed; and gql_audit with ``TAMPER_EVIDENCE``; the database
connections kept from one request to the next (``CONN_MAX_AGE``; under ASGI, where each
request runs in a thread of its own, Django's connection pool), as a service under load
keeps them. Kinds of server:

- ``sync``: gunicorn, 2 sync workers;
- ``gthread``: gunicorn, 2 workers of 4 threads;
- ``uvicorn``: uvicorn, 2 workers (ASGI).

For each kind and each number of clients, the configurations take turns, ``--seconds``
of load each, for ``--rounds`` rounds (which goes first rotates), so that all of them
meet the same machine. Printed for each: requests per second, p50 and p99 latency
(medians of the rounds), and its requests per second as a ratio to bare's and to the
floor's in the same round (median, lowest-highest). The client (wrk, 2 threads) runs on
the same machine and takes its share of the CPU alike in every configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness  # noqa: F401 - configures Django

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ("bare", "floor", "default", "sealed")
SERVERS = {
    "sync": ["gunicorn", "--workers", "2", "example_service.wsgi:application"],
    "gthread": [
        "gunicorn",
        "--workers",
        "2",
        "--worker-class",
        "gthread",
        "--threads",
        "4",
        "example_service.wsgi:application",
    ],
    "uvicorn": [
        "uvicorn",
        "--workers",
        "2",
        "--log-level",
        "warning",
        "--no-access-log",
        "example_service.asgi:application",
    ],
}
SCRIPT = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(kind: str, config: str, port: int, floor_row: str) -> subprocess.Popen[bytes]:
    command = [str(Path(sys.executable).parent / SERVERS[kind][0]), *SERVERS[kind][1:]]
    command += ["--bind", f"127.0.0.1:{port}"] if kind != "uvicorn" else ["--host", "127.0.0.1", "--port", str(port)]
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "BENCH_SERVE": config,
        "BENCH_FLOOR_ROW": floor_row,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "example_service")]),
        "EXAMPLE_LOG_LEVEL": "WARNING",
        **({"BENCH_POOL": "1"} if kind == "uvicorn" else {}),
    }
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_until_serving(port: int, path: str, body: bytes, server: subprocess.Popen[bytes]) -> None:
    import http.client

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server stopped: {server.stderr.read().decode()[-2000:] if server.stderr else ''}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            answer = response.read()
            if response.status != 200 or b'"errors"' in answer:
                raise SystemExit(f"benchmark request failed: {response.status} {answer[:300]!r}")
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"no server on port {port}")


def load(url: str, script: Path, clients: int, seconds: int) -> tuple[float, float, float]:
    """Requests per second, p50 and p99 latency (ms) of ``clients`` connections for ``seconds``."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{clients}", f"-d{seconds}s", "--timeout", "30s", "--latency", "-s", str(script), url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def percentile(name: str) -> float:
        value, unit = re.search(rf"\s{name}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]

    return rps, percentile("50"), percentile("99")


def spread(rps: list[float], baseline: list[tuple[float, float, float]]) -> str:
    """Requests per second as ratios to ``baseline``'s in the same rounds: median (lowest-highest)."""
    ratios = [r / b for r, (b, _, _) in zip(rps, baseline, strict=True)]
    return f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--objects", type=int, default=20)
    parser.add_argument("--clients", default="8,16")
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=5)
    args = parser.parse_args()

    from access import fill_records, floor_row
    from django.db import connection
    from harness import audited_handler, call, environ, with_settings

    from bench.schema import RECORD_FIELDS

    if connection.vendor != "postgresql":
        parser.error("BENCH_DB=postgres: throughput is measured on PostgreSQL")
    connection.creation.create_test_db(verbosity=0, autoclobber=True, serialize=False)
    fill_records(args.objects)
    query = "{ records { %s } }" % RECORD_FIELDS
    # The row the floor writes: the one the default configuration writes for this request.
    call(with_settings(audited_handler(), {"ACCESS_STORE": "gql_audit"}), environ("/records/audit/", query))
    floor = json.dumps(floor_row())
    connection.close()
    body = json.dumps({"query": query})
    script = Path(tempfile.mkdtemp()) / "post.lua"
    script.write_text(SCRIPT.format(body=json.dumps(body)))
    paths = {
        "bare": "/records/bare/",
        "floor": "/records/bare/",
        "default": "/records/audit/",
        "sealed": "/records/audit/",
    }
    print(
        f"gql_audit throughput ({connection.vendor}): {args.objects} objects x 8 fields, "
        f"{args.rounds} rounds x {args.seconds} s per configuration"
    )
    try:
        for kind in args.servers.split(","):
            servers = {}
            try:
                for config in CONFIGS:
                    port = free_port()
                    servers[config] = (start(kind, config, port, floor), port)
                for config, (server, port) in servers.items():
                    wait_until_serving(port, paths[config], body.encode(), server)
                for clients in (int(n) for n in args.clients.split(",")):
                    results: dict[str, list[tuple[float, float, float]]] = {config: [] for config in CONFIGS}
                    for name in CONFIGS:  # warm-up
                        load(f"http://127.0.0.1:{servers[name][1]}{paths[name]}", script, clients, 1)
                    for round_ in range(args.rounds):
                        turn = round_ % len(CONFIGS)
                        order = CONFIGS[turn:] + CONFIGS[:turn]
                        for name in order:
                            url = f"http://127.0.0.1:{servers[name][1]}{paths[name]}"
                            results[name].append(load(url, script, clients, args.seconds))
                    print(
                        f"\n{kind}, {clients} clients        req/s     p50 ms    p99 ms   "
                        "req/s to bare (rounds)   to the floor (rounds)"
                    )
                    for name in CONFIGS:
                        rps = [r for r, _, _ in results[name]]
                        print(
                            f"  {name:<22} {statistics.median(rps):9.1f} "
                            f"{statistics.median(p for _, p, _ in results[name]):9.2f} "
                            f"{statistics.median(p for _, _, p in results[name]):9.2f}   "
                            f"{spread(rps, results['bare'])}   {spread(rps, results['floor'])}"
                        )
            finally:
                for server, _ in servers.values():
                    server.terminate()
                for server, _ in servers.values():
                    server.wait(timeout=30)
    finally:
        connection.creation.destroy_test_db(connection.settings_dict["NAME"], verbosity=0)


if __name__ == "__main__":
    main()
