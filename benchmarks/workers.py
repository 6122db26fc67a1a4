"""One worker process of the multi-process storage benchmark.

``python benchmarks/workers.py SPEC``: open the storage SPEC names, print
``ready``, read the common start time from standard input, wait for it,
record SPEC's number of failures on the shared breaker, and print one JSON
line with what happened.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import anyio
import anyio.to_thread
from libraries import Boom, fail, quiet_warnings
from storages import Place, open_storage


async def work(spec: dict[str, Any]) -> dict[str, Any]:
    """Record the failures and count what the guarded calls saw."""
    from anybreaker import CircuitBreaker

    recorded = other = 0
    samples: list[str] = []
    async with open_storage(Place(**spec["place"])) as storage:
        breaker = CircuitBreaker(spec["breaker"], storage=storage, **spec["settings"])
        # Open connections and warm caches before the clock starts.
        await breaker.get_state()
        print("ready", flush=True)
        start_at = float(await anyio.to_thread.run_sync(sys.stdin.readline))
        await anyio.sleep(max(0.0, start_at - time.time()))
        started = time.time()
        for _ in range(spec["failures"]):
            try:
                async with breaker:
                    await fail()
            except Boom:
                recorded += 1
            except Exception as error:  # counted: a guarded call must see only Boom
                other += 1
                if len(samples) < 3:
                    samples.append(f"{type(error).__name__}: {error}")
        finished = time.time()
    return {
        "recorded": recorded,
        "other_errors": other,
        "error_samples": samples,
        "start_at": start_at,
        "started": started,
        "finished": finished,
    }


def main() -> None:
    """Run one worker from the JSON spec given as the only argument."""
    quiet_warnings()
    spec = json.loads(sys.argv[1])
    report = anyio.run(work, spec, backend=spec["runtime"])
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
