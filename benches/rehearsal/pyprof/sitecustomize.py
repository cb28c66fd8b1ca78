"""The bench's statistical profiler for Python agents (Hermes), loaded at
interpreter start through PYTHONPATH when `BENCH_PYPROF` names a
directory (benches/rehearsal/profile.rs mounts both). A thread of its own
wakes every 10 ms, reads every other thread's CPU clock, and adds the CPU
time each thread used since the last look to the stack that thread is in
now, under the thread's name as the outermost frame (Hermes runs each
agent turn in a thread pool beside the main thread's event loop). On
SIGUSR2 it writes the counts so far to `<dir>/<name>.txt`, `<name>` read
from `<dir>/window`, and starts again: collapsed stacks, `frame;frame;...
milliseconds`, outermost first, as flamegraph.pl reads them.

The CPU a thread used between two looks is put on the stack it is in at
the second: a sampling profiler's approximation. The sampler's own
wake-ups are not counted; they cost the process CPU all the same.
"""

import os
import signal
import sys
import threading
import time
from collections import Counter

_DIR = os.environ.get("BENCH_PYPROF")
_INTERVAL_S = 0.01


def _frame_name(frame):
    # The function's first line, not the line running: a function's time
    # stays in one entry.
    code = frame.f_code
    return f"{code.co_name} ({code.co_filename}:{code.co_firstlineno})"


def _thread_cpu_s(ident):
    try:
        return time.clock_gettime(time.pthread_getcpuclockid(ident))
    except (OSError, OverflowError):
        return None


def _start():
    # Stack -> CPU seconds, summed as floats so that a thread's use of
    # less than a millisecond between two looks is counted too.
    counts = Counter()
    lock = threading.Lock()

    def sampler():
        me = threading.get_ident()
        cpu_before = {}
        while True:
            time.sleep(_INTERVAL_S)
            frames = sys._current_frames()
            names = {t.ident: t.name for t in threading.enumerate()}
            for ident, frame in frames.items():
                now = _thread_cpu_s(ident)
                if ident == me or now is None:
                    continue
                # A thread id reused by a new thread starts again from 0.
                before = cpu_before.get(ident, now)
                used_s = now - before if now >= before else now
                cpu_before[ident] = now
                if used_s <= 0:
                    continue
                stack = []
                while frame is not None:
                    stack.append(_frame_name(frame))
                    frame = frame.f_back
                key = ";".join(["thread " + names.get(ident, "?")] + stack[::-1])
                with lock:
                    counts[key] += used_s

    def dump(_signum, _frame):
        try:
            with open(os.path.join(_DIR, "window")) as f:
                name = f.read().strip() or "window"
            with lock:
                lines = [f"{stack} {round(s * 1000)}\n" for stack, s in counts.items() if s >= 0.0005]
                counts.clear()
            path = os.path.join(_DIR, f"{name}.txt")
            with open(path + ".part", "w") as f:
                f.writelines(lines)
            os.rename(path + ".part", path)
        except OSError as e:
            print(f"bench profiler: {e}", file=sys.stderr)

    signal.signal(signal.SIGUSR2, dump)
    threading.Thread(target=sampler, name="bench-profiler", daemon=True).start()


# Only the gateway: Hermes' other Python processes (tools it runs) are not
# sent the bench's SIGUSR2 and would only be slowed down.
if _DIR and any("gateway" in a for a in sys.argv):
    _start()
