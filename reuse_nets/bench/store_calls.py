"""A runner that times its own store calls: `python -m reuse_nets.bench.store_calls OUT -- RUN ARGS`.

Runs `reuse-nets run RUN ARGS` with two kinds of call timed, and writes
`{"optuna": {call: [seconds, ...]}, "mlflow": {...}}` to OUT (JSON) when it ends:

- `optuna`: every method of Optuna's `RDBStorage`, the private ones that Optuna's
  cache in front of it calls too (`_get_trials`, named `get_trials`), outermost call
  per thread: one storage operation, however many SQL statements it makes; the
  heartbeat thread's writes among them.
- `mlflow`: every HTTP request the process makes (`requests.Session.request`): the
  MLflow client's REST calls and artifact uploads to the tracking server, each
  with its retries. Ids in the path are replaced by `{id}`.

Used by the benchmark's `runners` section (`bench.runners`).
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import sys
import threading
import time
import urllib.parse
from collections import defaultdict
from pathlib import Path

# RDBStorage methods that answer without the database.
LOCAL = {"remove_session", "get_heartbeat_interval", "get_heartbeat_stale_trial_callback"}
_ID = re.compile(r"/(?:m-)?[0-9a-f]{16,}(?=/|$)|/\d+(?=/|$)")


def call_name(method: str, url: str) -> str:
    """`POST runs/log-batch`, `PUT artifacts`: a request's method and path, without ids."""
    path = urllib.parse.urlsplit(url).path
    if "/mlflow-artifacts/" in path:
        return f"{method.upper()} artifacts"
    path = re.sub(r"^/(?:ajax-)?api/\d\.\d/mlflow/", "", path)
    return f"{method.upper()} {_ID.sub('/{id}', path)}"


def install(times: defaultdict[str, defaultdict[str, list[float]]]) -> None:
    """Wraps Optuna's RDBStorage methods and `requests.Session.request` to append to `times`."""
    import optuna
    import requests

    depth = threading.local()

    def timed_storage(name: str, method):
        @functools.wraps(method)
        def wrapper(*args, **kwargs):
            outermost = not getattr(depth, "value", 0)
            depth.value = getattr(depth, "value", 0) + 1
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                depth.value -= 1
                if outermost:
                    times["optuna"][name].append(time.perf_counter() - start)

        return wrapper

    storage = optuna.storages.RDBStorage
    for name, method in list(vars(storage).items()):
        if not name.startswith("__") and name not in LOCAL and inspect.isfunction(method):
            setattr(storage, name, timed_storage(name.lstrip("_"), method))

    request = requests.Session.request

    @functools.wraps(request)
    def timed_request(self, method, url, *args, **kwargs):
        start = time.perf_counter()
        try:
            return request(self, method, url, *args, **kwargs)
        finally:
            times["mlflow"][call_name(method, url)].append(time.perf_counter() - start)

    requests.Session.request = timed_request  # type: ignore[method-assign]


def main(argv: list[str]) -> int:
    out = Path(argv[0])
    run_args = argv[argv.index("--") + 1 :]
    from reuse_nets.commands import common, run

    times: defaultdict[str, defaultdict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    install(times)
    try:
        return common.main_guard(lambda: run.main(run_args))
    finally:
        out.write_text(json.dumps(times))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
