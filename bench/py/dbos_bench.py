"""DBOS Transact peer: the 3-step no-op workflow.

    dbos_bench.py throughput N      start N workflows at once, wait for all; workflows/s
    dbos_bench.py latency N RATE    start N workflows at RATE/s; latency from DBOS's own tables

Prints one JSON object. Times come from DBOS's system tables (created_at, updated_at in ms)
where possible, from the client clock otherwise.
"""
import json
import os
import sys
import threading
import time

from dbos import DBOS

URL = os.environ["BENCH_DBOS_URL"]
DBOS(config={"name": "dbos-bench", "system_database_url": URL})


@DBOS.step()
def step_a():
    return None


@DBOS.step()
def step_b():
    return None


@DBOS.step()
def step_c():
    return None


@DBOS.workflow()
def three_noops():
    step_a()
    step_b()
    step_c()
    return None


def pct(xs, p):
    xs = sorted(xs)
    if not xs:
        return None
    k = max(1, min(len(xs), int(-(-p * len(xs) // 100))))
    return xs[k - 1]


def latencies(since_ms):
    import psycopg

    with psycopg.connect(URL) as conn:
        rows = conn.execute(
            "select created_at, updated_at from dbos.workflow_status "
            "where name like '%%three_noops' and created_at >= %s and status = 'SUCCESS'",
            (since_ms,),
        ).fetchall()
        first = conn.execute(
            "select min(s.created_at), max(s.updated_at) from dbos.workflow_status s "
            "where name like '%%three_noops' and created_at >= %s",
            (since_ms,),
        ).fetchone()
    done = [float(u - c) for c, u in rows]
    return done, first


def main():
    mode, n = sys.argv[1], int(sys.argv[2])
    DBOS.launch()
    # warm up: connections, prepared statements
    for h in [DBOS.start_workflow(three_noops) for _ in range(20)]:
        h.get_result()
    since = int(time.time() * 1000)
    start = time.perf_counter()
    if mode == "throughput":
        handles = [DBOS.start_workflow(three_noops) for _ in range(n)]
    else:
        rate = float(sys.argv[3])
        handles = []
        for i in range(n):
            target = start + i / rate
            delay = target - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            handles.append(DBOS.start_workflow(three_noops))
    for h in handles:
        h.get_result()
    wall = time.perf_counter() - start
    done, (first_ms, last_ms) = latencies(since)
    span = (last_ms - first_ms) / 1000.0 if first_ms is not None else wall
    out = {
        "n": n,
        "ok": len(done),
        "wall_secs": wall,
        "db_span_secs": span,
        "workflows_per_s": len(done) / span if span else None,
        "latency_ms": {"p50": pct(done, 50), "p90": pct(done, 90), "p99": pct(done, 99), "max": max(done) if done else None},
        "rss_kb": int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]),
        "threads": threading.active_count(),
    }
    print(json.dumps(out))
    DBOS.destroy()


if __name__ == "__main__":
    main()
