"""The bench's statistical profiler for Python agents (Hermes), loaded at
interpreter start through PYTHONPATH when `BENCH_PYPROF` names a
directory (benches/rehearsal/profile.rs mounts both). Every 10 ms of the
process's CPU time (`ITIMER_PROF`: user and system time, which under gVisor
includes the sentry's work on the process's system calls) it counts the
main thread's stack. On SIGUSR2 it writes the counts so far to
`<dir>/<name>.txt`, `<name>` read from `<dir>/window`, and starts again:
collapsed stacks, `frame;frame;... count`, outermost first, as py-spy and
flamegraph.pl write them.

A signal handler runs between bytecodes of the main thread, so a sample
that falls in a C call is counted where the call returns; CPU used by
other threads is counted against the main thread's stack. Hermes' gateway
runs its work on the main thread's event loop.
"""

import atexit
import os
import signal
import sys
from collections import Counter

_DIR = os.environ.get("BENCH_PYPROF")
_INTERVAL_S = 0.01


def _frame_name(frame):
    code = frame.f_code
    return f"{code.co_name} ({code.co_filename}:{frame.f_lineno})"


def _start():
    counts = Counter()

    def sample(_signum, frame):
        stack = []
        while frame is not None:
            stack.append(_frame_name(frame))
            frame = frame.f_back
        counts[";".join(reversed(stack))] += 1

    def dump(_signum, _frame):
        try:
            with open(os.path.join(_DIR, "window")) as f:
                name = f.read().strip() or "window"
            lines = [f"{stack} {n}\n" for stack, n in counts.items()]
            counts.clear()
            path = os.path.join(_DIR, f"{name}.txt")
            with open(path + ".part", "w") as f:
                f.writelines(lines)
            os.rename(path + ".part", path)
        except OSError as e:
            print(f"bench profiler: {e}", file=sys.stderr)

    signal.signal(signal.SIGPROF, sample)
    signal.signal(signal.SIGUSR2, dump)
    signal.setitimer(signal.ITIMER_PROF, _INTERVAL_S, _INTERVAL_S)
    # Off before the interpreter's shutdown restores SIGPROF's default
    # action, which ends the process.
    atexit.register(signal.setitimer, signal.ITIMER_PROF, 0)


# Only the gateway: Hermes' other Python processes (tools it runs) are not
# sent the bench's SIGUSR2 and would only be slowed down.
if _DIR and any("gateway" in a for a in sys.argv):
    _start()
