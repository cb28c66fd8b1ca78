#!/usr/bin/env python3
"""Markdown tables from the JSON that the rehearsal's benchmark writes
(benches/rehearsal.rs): per agent and runtime, start to ready and
mention-to-reply round trips (median, p90, min), memory, and the ratios to
runc. usage: bench-rehearsal-table.py RESULTS.json"""

import json
import statistics
import sys


def percentile(values, p):
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * p // 100))
    return ordered[int(rank) - 1]


def summary(values):
    if not values:  # every round trip timed out (or the agent died)
        return {"median": float("nan"), "p90": float("nan"), "min": float("nan"), "n": 0}
    return {
        "median": statistics.median(values),
        "p90": percentile(values, 90),
        "min": min(values),
        "n": len(values),
    }


def seconds(ms):
    return "%.1f s" % (ms / 1000)


def millis(ms):
    return "%.0f ms" % ms if ms < 10000 else "%.1f s" % (ms / 1000)


def mib(value):
    return "-" if value is None else "%.0f MiB" % value


def by_config(samples):
    configs = {}
    for sample in samples:
        configs.setdefault(sample["config"], []).append(sample)
    return configs


def main(path):
    results = json.load(open(path))
    cold = results["cold_start"]
    machine = results["machine"]
    print("%s; %d CPUs; %s" % (machine["runsc"], machine["cpus"], machine["kernel"].split(" (")[0]))
    print()
    print("Cold start (gVisor, the hub's generated runtimes): services %.1f s "
          "(namespace, dockerd, bridge, DNS, secrets, Synapse, bootstrap); images %.1f s "
          "(rehearsal only: imported from the cache); sandboxes started to every agent answering %.1f s (%s); "
          "load %s -> %s" % (
              cold["services_s"], cold["images_s"], cold["sandboxes_to_all_answering_s"],
              ", ".join("%s %.1f s" % kv for kv in sorted(cold["agent_answered_s"].items())),
              cold["load_before"], cold["load_after"]))
    if "sandboxes_started_s" in cold:
        print()
        print("(the `docker run`s of every sandbox took %.1f s; every agent probed every %.0f s, all at once)" % (
            cold["sandboxes_started_s"], cold["probe_every_s"]))
    if "machine" in cold:
        print()
        print("CPU seconds by each agent's first answer: %s; of every sandbox when all answered: %s; "
              "the machine: %s; once every agent had answered its backlog of probes (%.0f s later), each "
              "agent's idle CPU (share of one core): %s" % (
                  cpu_list(cold["agent_cpu_s_at_answer"]), cpu_list(cold["sandbox_cpu_s"]),
                  busy(cold["machine"]), cold["settled"]["settled_s"], idle(cold["settled"])))
    print()
    restart_tables(results.get("restarts") or [])
    load_tables(results.get("load") or [])
    if not results["agents"]:
        return
    print("| agent | runtime | starts | start to ready median (p90, min) | round trips | "
          "round trip median (p90, min) | cgroup usage | of which anon + shmem | PSS sum | load (1 min) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    ratios = []
    for agent in results["agents"]:
        configs = by_config(agent["samples"])
        rows = {}
        for label, samples in configs.items():
            refused = [s for s in samples if "refused" in s]
            samples = [s for s in samples if "refused" not in s]
            if not samples:
                print("| %s (%s) | %s | refused by runsc: %s |||||||" % (
                    agent["agent"], agent["kind"], label, refused[0]["refused"][-160:]))
                continue
            ready = summary([s["ready_ms"] for s in samples])
            trips = summary([t for s in samples for t in s["round_trips_ms"]])
            pss = statistics.median(s["memory"]["pss_mib"] for s in samples)
            usage = [s["memory"]["cgroup_usage_mib"] for s in samples if s["memory"]["cgroup_usage_mib"] is not None]
            private = [s["memory"]["cgroup_anon_mib"] + s["memory"]["cgroup_shmem_mib"]
                       for s in samples if s["memory"].get("cgroup_anon_mib") is not None]
            timeouts = sum(s.get("round_trip_timeouts", 0) for s in samples)
            loads = [float(s["load_before"].split()[0]) for s in samples]
            rows[label] = (ready, trips, statistics.median(usage) if usage else None, pss)
            print("| %s (%s) | %s | %d | %s (%s, %s) | %s | %s (%s, %s) | %s | %s | %.0f MiB | %.1f-%.1f |" % (
                agent["agent"], agent["kind"], label, ready["n"],
                seconds(ready["median"]), seconds(ready["p90"]), seconds(ready["min"]),
                "%d%s" % (trips["n"], " + %d timed out" % timeouts if timeouts else ""), millis(trips["median"]), millis(trips["p90"]), millis(trips["min"]),
                mib(rows[label][2]), mib(statistics.median(private)) if private else "-", pss,
                min(loads), max(loads)))
        runc = rows.get("runc")
        if runc:
            for label, (ready, trips, usage, pss) in rows.items():
                if label != "runc":
                    ratios.append((agent["agent"], label, ready["median"] / runc[0]["median"],
                                   trips["median"] / runc[1]["median"], trips["p90"] / runc[1]["p90"],
                                   usage / runc[2] if usage and runc[2] else float("nan")))
    print()
    print("| agent | runtime vs runc | start to ready (target <= 1.5x) | round trip median (target <= 1.3x) "
          "| round trip p90 | memory (cgroup usage) |")
    print("|---|---|---|---|---|---|")
    for agent, label, ready, median, p90, pss in ratios:
        print("| %s | %s | %.2fx | %.2fx | %.2fx | %.2fx |" % (agent, label, ready, median, p90, pss))
    cpu_table(results["agents"])
    cpu_split_table(results["agents"])
    print()
    print("Processes counted per sandbox (PSS from the host, summed):")
    for agent in results["agents"]:
        for label, samples in by_config(agent["samples"]).items():
            samples = [s for s in samples if "refused" not in s]
            if samples:
                    print("- %s, %s: %s" % (agent["agent"], label, ", ".join(samples[-1]["memory"]["processes"])))


def cpu_list(seconds):
    return ", ".join("%s %s" % (name, "-" if cpu is None else "%.1f" % cpu)
                     for name, cpu in sorted(seconds.items(), key=lambda kv: -(kv[1] or 0)))


def idle(settled):
    return ", ".join("%s %s" % (a, "-" if share is None else "%.3f" % share)
                     for a, share in sorted(settled["idle_cpu_share"].items()))


def busy(machine):
    return "%.0f busy CPU s in %.0f s (%.0f %% of every core's time)" % (
        machine["busy_cpu_s"], machine["wall_s"], 100 * machine["busy_share"])


def cpu_table(agents):
    """Per agent and runtime: the CPU seconds its container used to ready and
    per round trip (medians), and the ratios to runc."""
    rows = []
    for agent in agents:
        medians = {}
        for label, samples in by_config(agent["samples"]).items():
            ready = [s["cpu_ready_s"] for s in samples if s.get("cpu_ready_s") is not None]
            trip = [s["cpu_per_round_trip_s"] for s in samples if s.get("cpu_per_round_trip_s") is not None]
            if ready and trip:
                medians[label] = (statistics.median(ready), statistics.median(trip))
        for label, (ready, trip) in medians.items():
            runc = medians.get("runc")
            rows.append("| %s | %s | %.1f | %.2f | %s |" % (
                agent["agent"], label, ready, trip,
                "" if label == "runc" or not runc else "%.2fx / %.2fx" % (ready / runc[0], trip / runc[1])))
    if rows:
        print()
        print("| agent | runtime | CPU s to ready (median) | CPU s per round trip (median) | vs runc (ready / round trip) |")
        print("|---|---|---|---|---|")
        print("\n".join(rows))


def split_cell(split, digits=1):
    """`kind user+system` per process kind of a container, largest first."""
    if not split:
        return "-"
    total = lambda v: v["user_s"] + v["system_s"]
    return ", ".join("%s %.*f+%.*f" % (kind, digits, v["user_s"], digits, v["system_s"])
                     for kind, v in sorted(split.items(), key=lambda kv: -total(kv[1])) if abs(total(v)) >= 0.01)


def split_difference(after, before, per):
    """`after - before` per kind of process, over every kind in either (a
    process that ended in between moves its time to `exited`)."""
    if not after or not before:
        return None
    zero = {"user_s": 0.0, "system_s": 0.0}
    return {kind: {key: (after.get(kind, zero)[key] - before.get(kind, zero)[key]) / per
                   for key in ("user_s", "system_s")}
            for kind in set(after) | set(before)}


def cpu_split_table(agents):
    """Per start: the container's CPU seconds by kind of process, user +
    system, to ready and per round trip (benches/rehearsal/cpu.rs,
    `container_cpu_split`)."""
    rows = []
    for agent in agents:
        for label, samples in by_config(agent["samples"]).items():
            for s in samples:
                if not s.get("cpu_split_at_ready"):
                    continue
                trips = max(len(s.get("round_trips_ms") or []), 1)
                per_trip = split_difference(s["cpu_split_after_round_trips"], s["cpu_split_before_round_trips"], trips)
                rows.append("| %s | %s | %d | %s | %s |" % (
                    agent["agent"], label, s["round"], split_cell(s["cpu_split_at_ready"]), split_cell(per_trip, 2)))
    if rows:
        print()
        print("CPU seconds by process, user + system (under gVisor: the sentry `runsc-sandbox`, the gofer, and the "
              "systrap stubs that run the program's code):")
        print()
        print("| agent | runtime | round | to ready | per round trip |")
        print("|---|---|---|---|---|")
        print("\n".join(rows))


def restart_tables(restarts):
    """The agents restarted together under gVisor and under runc."""
    if not restarts:
        return
    agents = sorted(restarts[0]["agent_answered_s"])
    print("The hub's agents restarted together (services up as generated), alternating:")
    print()
    print("| runtime | round | every agent answering | %s | machine | idle afterwards, CPU per agent (share of one core) | load (1 min) |" % " | ".join(
        "%s: answered (CPU s by then)" % a for a in agents))
    print("|---|---|---|%s---|---|---|" % ("---|" * len(agents)))
    by_runtime = {}
    for r in restarts:
        by_runtime.setdefault(r["runtime"], []).append(r)
        print("| %s | %d | %.1f s | %s | %s | %s | %s -> %s |" % (
            r["runtime"], r["round"], r["all_answering_s"],
            " | ".join("%.1f s (%s)" % (r["agent_answered_s"][a], "-" if r["agent_cpu_s_at_answer"].get(a) is None
                                        else "%.1f" % r["agent_cpu_s_at_answer"][a]) for a in agents),
            busy(r["machine"]), idle(r["settled"]), r["load_before"].split()[0], r["load_after"].split()[0]))
    def median(runtime, pick):
        values = [pick(r) for r in by_runtime[runtime] if pick(r) is not None]
        return statistics.median(values) if values else float("nan")
    for label in by_runtime:
        if label == "runc" or "runc" not in by_runtime:
            continue
        print()
        print("%s vs runc, medians: every agent answering %.2fx; %s" % (
            label,
            median(label, lambda r: r["all_answering_s"]) / median("runc", lambda r: r["all_answering_s"]),
            "; ".join("%s answered %.2fx, CPU s by then %.2fx" % (
                a,
                median(label, lambda r: r["agent_answered_s"][a]) / median("runc", lambda r: r["agent_answered_s"][a]),
                median(label, lambda r: r["agent_cpu_s_at_answer"].get(a))
                / median("runc", lambda r: r["agent_cpu_s_at_answer"].get(a))) for a in agents)))
    print()


def load_tables(rounds):
    """The load rounds (issue 25, item 5), one table each."""
    for load in rounds:
        senders = "; ".join("%s%s: %d sent in %.1f s, %d failed, %d x 429 waited out" % (
            s["user"], "" if s["in_spec"] else " (not in the spec)", s["sent"], s["send_s"],
            s["send_failed"], s["rate_limited_429"]) for s in load["senders"])
        print("Load round `%s`: %d mentions per human over %.0f s, round-robin over the agents; humans' "
              "rate limits %s; %s; replies waited for %.0f s after the sending; load %s -> %s" % (
                  load["round"], load["mentions_per_human"], load["spread_s"],
                  "lifted" if load["human_limits_lifted"] else "Synapse's defaults", senders,
                  load["waited_s"], load["load_before"], load["load_after"]))
        print()
        print("| agent | mentions | answered once | twice or more | unanswered (of which the model saw) "
              "| p50 | p95 | max | replies 429'd | unlisted human's mentions answered |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for agent, a in sorted(load["agents"].items()):
            print("| %s | %d | %d | %d | %d (%d) | %s | %s | %s | %d | %d of %d |" % (
                agent, a["sent"], a["answered_once"], a["answered_twice_or_more"], a["unanswered"],
                a["unanswered_seen_by_model"],
                *("-" if a[k] is None else millis(a[k]) for k in ("p50_ms", "p95_ms", "max_ms")),
                a["replies_rate_limited_429"], a["unlisted_human_answered"], a["unlisted_human_sent"]))
        gaps = load.get("sync_gaps_by_requester") or {}
        if gaps:
            print()
            print("Each account's `/sync`s in the round: %s (events between one sync and the next, "
                  "from the room stream positions of their `since` tokens, every room's)" % "; ".join(
                      "%s %d, at most %s events apart, %d over Synapse's default timeline limit of 10%s" % (
                          user, g["syncs"], g["max_events_between"], g["over_default_timeline_limit"],
                          "" if g["sends_filter"] else ", no filter")
                      for user, g in sorted(gaps.items())))
        for agent, a in sorted(load["agents"].items()):
            kill = a.get("kill")
            if not kill:
                continue
            back = "not back" if kill["back_s"] is None else "first message after restart at %.1f s" % kill["back_s"]
            print()
            print("%s killed (SIGKILL) at %.1f s, started again at %.1f s, %s (%d probes); its mentions: "
                  "before the kill %d, %d answered; while down %d, %d answered; after it was back %d, "
                  "%d answered" % (
                      agent, kill["killed_s"], kill["restarted_s"], back, kill["probes"],
                      kill["before_kill"]["sent"], kill["before_kill"]["answered"],
                      kill["while_down"]["sent"], kill["while_down"]["answered"],
                      kill["after_back"]["sent"], kill["after_back"]["answered"]))
        print()


if __name__ == "__main__":
    main(sys.argv[1])
