"""Enqueue a few tasks and print their results: the second terminal of the README tour.

    cd examples/quickstart
    taskq worker -A tasks --concurrency 2      # terminal 1
    python producer.py                          # terminal 2

Both use the broker ./.taskq of the directory they run in (or TASKQ_BROKER,
or taskq.toml), so run them from the same folder.
"""

from __future__ import annotations

import os
import sys

from tasks import add, slow_square  # this folder's tasks.py (the script's folder is on sys.path)

TIMEOUT = 10.0


def main() -> int:
    broker = os.path.abspath(add.app.settings.broker)
    print(f"broker: {broker}")
    total = add.delay(2, 3)
    squares = [slow_square.delay(n) for n in range(5)]
    urgent = slow_square.apply_async((10,), priority=9)  # runs before waiting priority-5 ones
    later = add.apply_async((40, 2), countdown=2)  # not before two seconds from now
    print(f"enqueued 8 tasks; add(2, 3) has id {total.id}")
    try:
        print("add(2, 3) =", total.get(timeout=TIMEOUT))
        print("slow_square(0..4) =", [r.get(timeout=TIMEOUT) for r in squares])
        print("slow_square(10) with priority 9 =", urgent.get(timeout=TIMEOUT))
        print("add(40, 2) two seconds later =", later.get(timeout=TIMEOUT))
    except TimeoutError:
        print(
            f"no result within {TIMEOUT:.0f} s: is `taskq worker -A tasks` running "
            f"on the broker {broker}? (`taskq status` shows live workers)",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
