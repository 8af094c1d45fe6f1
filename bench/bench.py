"""HyperCode benchmark driver (run it through `bench/run`, which sets up the services).

Runs every measurement against the loopback Postgres/Redis of the bench, collects the figures in
`$BENCH_OUT/results.json`, and writes BENCHMARKS.md. Durations and latencies of missions come
from Postgres timestamps (one clock); rates are counted over those timestamps.
"""
import argparse
import datetime as dt
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILE = os.environ.get("BENCH_PROFILE", "release")
BIN = os.path.join(ROOT, "target", PROFILE)
PY = os.path.join(ROOT, "bench", "py")
VENV_PY = sys.executable
DB = os.environ["DATABASE_URL"]
REDIS = os.environ["HYPERCODE_REDIS_URL"]
OUT = os.environ.get("BENCH_OUT", "/tmp/hc-bench/out")
THREE = {"workflow": "plan", "input": {"steps": [{"name": n, "noop": {}} for n in "abc"]}}


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}]", *a, file=sys.stderr, flush=True)


def sql(q, args=None, fetch=True, url=DB):
    with psycopg.connect(url, autocommit=True) as c:
        cur = c.execute(q, args)
        return cur.fetchall() if fetch and cur.description else None


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def spread(xs):
    xs = [x for x in xs if x is not None]
    return (min(xs), max(xs)) if xs else (None, None)


# ---------------------------------------------------------------- processes and memory


def rss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
    except (OSError, AttributeError):
        return 0


def tree(pid):
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return pids


def tree_rss_kb(pid):
    return sum(rss_kb(p) for p in tree(pid))


class Sampler:
    """Peak RSS (KiB) of named process trees, sampled every 50 ms while active."""

    def __init__(self, pids):
        self.pids, self.peak, self.stop = pids, {k: 0 for k in pids}, threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)

    def run(self):
        while not self.stop.is_set():
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], tree_rss_kb(pid))
            time.sleep(0.05)

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.t.join()


def hc_env(**extra):
    env = dict(os.environ)
    env.setdefault("HYPERCODE_LOG", "warn")
    # The per-key API rate limit (50/s by default) would throttle the load generator; the bench
    # measures the engine, so it is off (0) unless set.
    env.setdefault("HYPERCODE_RATE_LIMIT", "0")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def start_server(**extra):
    env = hc_env(HYPERCODE_LISTEN="127.0.0.1:0", **extra)
    p = subprocess.Popen([f"{BIN}/hypercode", "serve"], env=env, stdout=subprocess.PIPE,
                         stderr=open(f"{OUT}/server.log", "a"), text=True)
    line = p.stdout.readline()
    m = re.search(r"listening on (http://\S+)", line)
    if not m:
        raise RuntimeError(f"server did not start: {line!r}")
    return p, m.group(1)


def start_worker(concurrency=16, **extra):
    return subprocess.Popen([f"{BIN}/hypercode", "worker", "--concurrency", str(concurrency)],
                            env=hc_env(**extra), stdout=subprocess.DEVNULL,
                            stderr=open(f"{OUT}/worker.log", "a"))


def stop(*procs):
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def run_json(cmd, env=None, timeout=900):
    r = subprocess.run(cmd, env=env or hc_env(), capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed ({r.returncode}): {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def reset_missions():
    # cascade: every table that references missions (steps, signals, ...) is emptied too.
    sql("truncate events, steps, missions cascade", fetch=False)


def wait_finished(n, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        (done,), = sql("select count(*) from missions where status in ('succeeded','failed','cancelled')")
        if done >= n:
            return
        time.sleep(0.1)
    raise RuntimeError(f"only {done}/{n} missions finished in {timeout}s")


def submit(url, key, n, concurrency=64, rate=None, body=None):
    cmd = [f"{BIN}/hc-submit", "--url", url, "--key", key, "--n", str(n),
           "--concurrency", str(concurrency)]
    if rate:
        cmd += ["--rate", str(rate)]
    if body:
        cmd += ["--body", json.dumps(body)]
    out = run_json(cmd)
    if out["errors"]:
        raise RuntimeError(f"{out['errors']} of {n} submissions failed")
    return out


# ---------------------------------------------------------------- 1. pgbench ceiling


def pgbench(clients, secs):
    script = f"{OUT}/one_row_update.sql"
    with open(script, "w") as f:
        f.write("\\set id random(1, 1000)\nupdate bench_counter set n = n + 1 where id = :id;\n")
    m = re.match(r"postgres://([^@]+)@([^:/]+):(\d+)/(\w+)", DB)
    user, host, port, db = m.groups()
    r = subprocess.run(["pgbench", "-n", "-M", "prepared", "-f", script, "-c", str(clients),
                        "-j", str(min(clients, 2)), "-T", str(secs), "-h", host, "-p", port,
                        "-U", user, db], capture_output=True, text=True, cwd="/tmp")
    m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", r.stdout)
    if not m:
        raise RuntimeError(f"pgbench: {r.stdout}{r.stderr}")
    lat = re.search(r"latency average = ([\d.]+) ms", r.stdout)
    return {"tps": float(m.group(1)), "latency_ms": float(lat.group(1)) if lat else None}


def bench_pgbench(cfg):
    sql("create table if not exists bench_counter (id int primary key, n bigint not null)", fetch=False)
    sql("insert into bench_counter select i, 0 from generate_series(1, 1000) i on conflict do nothing", fetch=False)
    out = {}
    for c in (1, 8, 32):
        runs = [pgbench(c, cfg.pg_secs) for _ in range(cfg.reps)]
        out[c] = {"tps": [r["tps"] for r in runs], "latency_ms": [r["latency_ms"] for r in runs]}
        log(f"pgbench c={c}: {[round(r['tps']) for r in runs]} tps")
    return out


# ---------------------------------------------------------------- 2. durable throughput


def throughput_stats():
    (row,) = sql("""
        select count(*) filter (where type = 'mission_succeeded'),
               extract(epoch from max(at) filter (where type = 'mission_succeeded')
                                - min(at) filter (where type = 'mission_submitted')),
               extract(epoch from max(at) filter (where type = 'mission_succeeded')
                                - min(at) filter (where type = 'mission_started')),
               count(*) filter (where type = 'step_succeeded')
        from events""")
    n, span, exec_span, steps = row
    return {"missions": n, "steps": steps, "secs": float(span), "missions_per_s": n / float(span),
            "steps_per_s": steps / float(span), "exec_missions_per_s": n / float(exec_span)}


def bench_throughput(cfg, key, pgss):
    out = {}
    for workers in (1, 2, 4):
        runs = []
        for rep in range(cfg.reps):
            reset_missions()
            queue = f"bench-tp-{workers}-{rep}-{int(time.time())}"
            server, url = start_server(HYPERCODE_QUEUE=queue)
            ws = [start_worker(cfg.concurrency, HYPERCODE_QUEUE=queue) for _ in range(workers)]
            time.sleep(1.0)
            if pgss and workers == 1 and rep == 0:
                sql("select pg_stat_statements_reset()")
            pids = {"server": server.pid, **{f"w{i}": w.pid for i, w in enumerate(ws)}}
            with Sampler(pids) as s:
                sub = submit(url, key, cfg.n_missions, concurrency=64)
                wait_finished(cfg.n_missions)
            st = throughput_stats()
            st.update(submit=sub, peak_rss_kb=s.peak)
            if pgss and workers == 1 and rep == 0:
                out["pg_stat_statements"] = statements_per_mission(cfg.n_missions)
            runs.append(st)
            stop(*ws, server)
            log(f"throughput W={workers}: {st['missions_per_s']:.0f} missions/s, {st['steps_per_s']:.0f} steps/s")
        out[workers] = runs
    return out


def statements_per_mission(n):
    rows = sql("""
        select calls, total_exec_time, regexp_replace(left(query, 400), '\\s+', ' ', 'g')
        from pg_stat_statements where dbid = (select oid from pg_database where datname = current_database())
        order by total_exec_time desc limit 12""")
    return [{"calls_per_mission": c / n, "ms_per_mission": t / n, "query": q} for c, t, q in rows]


# ---------------------------------------------------------------- 2b. cost per step (machine-independent)


class Callee(BaseHTTPRequestHandler):
    """The local callee of the HTTP-step missions: answers every request at once with `{}`."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"{}"
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *a):
        pass


def clk_tck():
    return os.sysconf("SC_CLK_TCK")


def pg_cpu_secs(data_directory):
    """CPU seconds (user + system) of the bench's PostgreSQL: its live processes, plus what the
    postmaster has collected from children that exited (backends of closed connections)."""
    with open(os.path.join(data_directory, "postmaster.pid")) as f:
        postmaster = int(f.readline())
    ticks = 0
    for pid in tree(postmaster):
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is field 3 of stat(5): utime, stime = 14, 15; cutime, cstime = 16, 17.
        ticks += int(fields[11]) + int(fields[12])
        if pid == postmaster:
            ticks += int(fields[13]) + int(fields[14])
    return ticks / clk_tck()


COUNTERS = """
    select (select xact_commit + xact_rollback from pg_stat_database where datname = current_database()),
           wal_records, wal_bytes, wal_sync, wal_write
    from pg_stat_wal"""
STATEMENTS = """
    select coalesce(sum(calls), 0) from pg_stat_statements
    where dbid = (select oid from pg_database where datname = current_database())"""


WAL_BY_RELATION = """
    select coalesce(pg_filenode_relation(0, substring(block_ref from 'rel \\d+/\\d+/(\\d+)')::oid)::text,
                    case when coalesce(block_ref, '') = '' then resource_manager else 'other' end),
           resource_manager || '/' || record_type, count(*), sum(record_length)
    from pg_get_wal_records_info(%s, %s)
    group by 1, 2 order by 3 desc"""


def wal_by_relation(start, end, steps):
    """WAL records and bytes per step by relation and record type (pg_walinspect), largest first;
    None where the extension is not available."""
    if not sql("select 1 from pg_available_extensions where name = 'pg_walinspect'"):
        return None
    sql("create extension if not exists pg_walinspect", fetch=False)
    return [{"relation": rel, "record": rec, "records_per_step": n / steps, "bytes_per_step": float(b) / steps}
            for rel, rec, n, b in sql(WAL_BY_RELATION, (start, end))]


def counters(pgss, data_directory):
    """PostgreSQL's cumulative counters now (read in one or two transactions of the bench's own)."""
    row = sql(COUNTERS)[0]
    out = dict(zip(("transactions", "wal_records", "wal_bytes", "wal_fsyncs", "wal_writes"),
                   (float(x) for x in row)))
    out["statements"] = float(sql(STATEMENTS)[0][0]) if pgss else None
    out["pg_cpu_secs"] = pg_cpu_secs(data_directory)
    return out


class Polls:
    """The bench's own transactions while it waits (each poll: one connection, one statement,
    one transaction), so they can be taken out of PostgreSQL's counters."""

    def __init__(self):
        self.n = 0

    def wait_finished(self, n, timeout=600):
        deadline = time.time() + timeout
        while time.time() < deadline:
            self.n += 1
            (done,), = sql("select count(*) from missions where status in ('succeeded','failed','cancelled')")
            if done >= n:
                return
            time.sleep(0.1)
        raise RuntimeError(f"only {done}/{n} missions finished in {timeout}s")


def cost_run(cfg, key, pgss, kind, body):
    """One run of `cfg.n_cost` 3-step missions of one kind, 64 in flight, one worker process: the
    deltas of PostgreSQL's own counters over the run, per mission and per step. The server and
    the worker are stopped before the second reading, so every backend has flushed its statistics
    (an idle backend may hold them for up to 10 s); the window includes their start-up and the
    reconciler's ticks, a small fixed cost against the missions."""
    reset_missions()
    queue = f"bench-cost-{kind}-{int(time.time())}"
    data_directory = sql("show data_directory")[0][0]
    # Every run starts right after a checkpoint, so each writes the same full-page images
    # (the first change of each page after a checkpoint logs the whole page).
    sql("checkpoint", fetch=False)
    if pgss:
        sql("select pg_stat_statements_reset()")
    before = counters(pgss, data_directory)
    (start_lsn,), = sql("select pg_current_wal_insert_lsn()::text")
    server, url = start_server(HYPERCODE_QUEUE=queue)
    w = start_worker(cfg.concurrency, HYPERCODE_QUEUE=queue)
    time.sleep(1.0)
    polls = Polls()
    n = cfg.n_cost
    t0 = time.time()
    submit(url, key, n, concurrency=64, body=body)
    polls.wait_finished(n)
    secs = time.time() - t0
    stop(w, server)
    time.sleep(0.5)
    after = counters(pgss, data_directory)
    (end_lsn,), = sql("select pg_current_wal_flush_lsn()::text")
    (steps,), = sql("select count(*) from events where type = 'step_succeeded'")
    (ok,), = sql("select count(*) from missions where status = 'succeeded'")
    delta = {k: after[k] - before[k] for k in after if after[k] is not None}
    # Take out the bench's own: each poll, the transactions of the first reading (counted when
    # they end, after their own read), and the statements read after their count was taken
    # (the first reading's statement count, the second's pg_stat_wal read).
    delta["transactions"] -= polls.n + (2 if pgss else 1)
    if pgss:
        delta["statements"] -= polls.n + 2
    per_mission = {k: v / n for k, v in delta.items()}
    per_step = {k: v / steps for k, v in delta.items()} if steps else {}
    top = statements_per_mission(n) if pgss else []
    by_relation = wal_by_relation(start_lsn, end_lsn, steps) if steps else None
    out = {"kind": kind, "missions": n, "succeeded": ok, "steps": steps, "secs": secs,
           "total": delta, "per_mission": per_mission, "per_step": per_step, "statements": top,
           "wal_by_relation": by_relation}
    log(f"cost {kind}: per step {per_step.get('wal_records', 0):.1f} WAL records, "
        f"{per_step.get('wal_bytes', 0):.0f} WAL bytes, {per_step.get('wal_fsyncs', 0):.2f} fsyncs, "
        f"{per_step.get('transactions', 0):.2f} transactions, {per_step.get('statements', 0):.2f} statements, "
        f"{per_step.get('pg_cpu_secs', 0) * 1e6:.0f} µs PostgreSQL CPU")
    return out


def bench_cost(cfg, key, pgss):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Callee)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    callee = f"http://127.0.0.1:{srv.server_address[1]}/ok"
    http = {"workflow": "plan", "input": {"steps": [
        {"name": n, "http": {"method": "GET", "url": f"{callee}/{n}"}} for n in "abc"]}}
    out = {"noop": [], "http": []}
    try:
        for rep in range(cfg.reps):
            out["noop"].append(cost_run(cfg, key, pgss, "noop", THREE))
            out["http"].append(cost_run(cfg, key, pgss, "http", http))
    finally:
        srv.shutdown()
    return out


# ---------------------------------------------------------------- 3. latency


def mission_marks(**marks):
    """A `with m as (...)` clause: one row per mission with the time of each mark, given as
    name=(aggregate, event type), e.g. submitted=("min", "mission_submitted")."""
    cols = ",\n".join(f"{agg}(at) filter (where type = '{event}') as {name}"
                      for name, (agg, event) in marks.items())
    return f"with m as (select mission_id, {cols} from events group by mission_id)"


def gap_percentiles(quantiles, start, end):
    """The percentiles (ms) of `end - start` over the rows of `m`, as one array column."""
    return (f"percentile_cont(array[{', '.join(map(str, quantiles))}]) "
            f"within group (order by extract(epoch from {end} - {start}) * 1000)")


def latency_stats():
    qs = (0.5, 0.9, 0.99)
    marks = mission_marks(submitted=("min", "mission_submitted"), first_step=("min", "step_started"),
                          finished=("min", "mission_succeeded"))
    (row,) = sql(f"""
        {marks}
        select count(*), {gap_percentiles(qs, "submitted", "first_step")},
               {gap_percentiles(qs, "submitted", "finished")},
               max(extract(epoch from finished - submitted) * 1000)
        from m where finished is not null""")
    n, first, done, mx = row
    return {"n": n, "first_step_ms": dict(zip(("p50", "p90", "p99"), first)),
            "finished_ms": dict(zip(("p50", "p90", "p99"), done)), "finished_max_ms": mx}


def bench_latency(cfg, key):
    runs = []
    for rep in range(cfg.reps):
        reset_missions()
        queue = f"bench-lat-{rep}-{int(time.time())}"
        server, url = start_server(HYPERCODE_QUEUE=queue)
        w = start_worker(cfg.concurrency, HYPERCODE_QUEUE=queue)
        time.sleep(1.0)
        submit(url, key, 20, concurrency=4)  # warm-up (connections, caches)
        wait_finished(20)
        reset_missions()
        n = int(cfg.rate * cfg.lat_secs)
        sub = submit(url, key, n, concurrency=256, rate=cfg.rate)
        wait_finished(n)
        st = latency_stats()
        st["submit"] = sub
        runs.append(st)
        stop(w, server)
        log(f"latency rep {rep}: first step p50 {st['first_step_ms']['p50']:.2f} ms, finished p50 "
            f"{st['finished_ms']['p50']:.2f} p99 {st['finished_ms']['p99']:.2f} ms")
    return runs


def bench_approval(cfg, key):
    reset_missions()
    queue = f"bench-appr-{int(time.time())}"
    server, url = start_server(HYPERCODE_QUEUE=queue)
    w = start_worker(cfg.concurrency, HYPERCODE_QUEUE=queue)
    time.sleep(1.0)
    body = {"workflow": "plan", "input": {"steps": [
        {"name": "gate", "approval": {"message": "m"}}, {"name": "a", "noop": {}}]}}
    n = cfg.n_approvals
    submit(url, key, n, concurrency=16, body=body)
    run_json([f"{BIN}/hc-approve", "--url", url, "--key", key, "--n", str(n), "--rate", str(cfg.rate)])
    wait_finished(n)
    qs = (0.5, 0.99)
    marks = mission_marks(granted=("min", "approval_granted"), resumed=("max", "mission_resumed"),
                          finished=("max", "mission_succeeded"))
    (row,) = sql(f"""
        {marks}
        select count(*), {gap_percentiles(qs, "granted", "resumed")},
               {gap_percentiles(qs, "granted", "finished")}
        from m where finished is not null and resumed > granted""")
    stop(w, server)
    res = {"n": row[0], "resumed_ms": dict(zip(("p50", "p99"), row[1])),
           "finished_ms": dict(zip(("p50", "p99"), row[2]))}
    log(f"approval -> resumed p50 {res['resumed_ms']['p50']:.2f} ms p99 {res['resumed_ms']['p99']:.2f} ms")
    return res


# ---------------------------------------------------------------- 4. plain jobs (+ Celery)


def bench_jobs(cfg):
    return run_json([f"{BIN}/hc-jobs", "--n", str(cfg.n_jobs), "--concurrency", str(cfg.concurrency)])


CELERY_BROKER = re.sub(r"/\d*$", "", REDIS.rstrip("/")) + "/7"


def celery_env():
    env = dict(os.environ)
    env.update(BENCH_CELERY_BROKER=CELERY_BROKER, PYTHONPATH=PY)
    return env


def start_celery_worker(cfg):
    """A prefork Celery worker on the `bench` queue, logging to celery.log."""
    return subprocess.Popen(
        [VENV_PY, "-m", "celery", "-A", "celery_tasks", "worker", "--pool", "prefork",
         "-c", str(cfg.celery_procs), "-Q", "bench", "--without-gossip", "--without-mingle",
         "--without-heartbeat", "-l", "WARNING"],
        env=celery_env(), cwd=PY, stdout=subprocess.DEVNULL, stderr=open(f"{OUT}/celery.log", "a"))


def celery_run(kind, n, cfg):
    """Fill the queue with the worker stopped, start the worker, time the drain."""
    import redis

    r = redis.Redis.from_url(CELERY_BROKER)
    fill = subprocess.run([VENV_PY, f"{PY}/celery_fill.py", kind, str(n)], env=celery_env(),
                          capture_output=True, text=True, check=True)
    push_secs = float(fill.stdout.strip().splitlines()[-1])
    worker = start_celery_worker(cfg)
    time.sleep(0.0)
    with Sampler({"celery": worker.pid}) as s:
        t0 = None
        deadline = time.time() + 600
        while time.time() < deadline:
            queued = r.llen("bench")
            if t0 is None and queued < n:
                t0 = time.perf_counter()
            if kind == "tasks":
                if queued == 0 and r.hlen("unacked") == 0 and t0 is not None:
                    break
            elif int(r.get("bench:chains_done") or 0) >= n:
                break
            time.sleep(0.002)
        t1 = time.perf_counter()
        idle_after = tree_rss_kb(worker.pid)
    procs = len(tree(worker.pid))
    stop(worker)
    secs = t1 - (t0 or t1)
    return {"n": n, "secs": secs, "per_s": n / secs if secs else None, "push_secs": push_secs,
            "peak_rss_kb": s.peak["celery"], "rss_after_kb": idle_after, "processes": procs}


def celery_idle_rss(cfg):
    worker = start_celery_worker(cfg)
    time.sleep(4)
    kb = tree_rss_kb(worker.pid)
    stop(worker)
    return kb


# ---------------------------------------------------------------- DBOS


def dbos_url():
    base = DB.rsplit("/", 1)[0]
    exists = sql("select 1 from pg_database where datname = 'dbos_bench'")
    if not exists:
        sql("create database dbos_bench", fetch=False)
    return f"{base}/dbos_bench"


def dbos_run(mode, n, rate=None):
    env = dict(os.environ, BENCH_DBOS_URL=dbos_url())
    cmd = [VENV_PY, f"{PY}/dbos_bench.py", mode, str(n)] + ([str(rate)] if rate else [])
    return run_json(cmd, env=env)


# ---------------------------------------------------------------- 5. recovery


class Slow(BaseHTTPRequestHandler):
    seen = set()
    release = threading.Event()

    def do_GET(self):
        first = self.path not in Slow.seen
        Slow.seen.add(self.path)
        if first:
            Slow.release.wait(120)
        body = b"{}"
        try:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        except OSError:
            pass

    def log_message(self, *a):
        pass


def bench_recovery(cfg, key, lease_ms, reps):
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    port = srv.server_address[1]
    queue = f"bench-rec-{lease_ms}-{int(time.time())}"
    extra = dict(HYPERCODE_QUEUE=queue, HYPERCODE_LEASE_TTL_MS=lease_ms, HYPERCODE_TICK_MS=100)
    reset_missions()
    server, url = start_server(**extra)
    workers = [start_worker(4, **extra) for _ in range(2)]
    time.sleep(1.0)
    runs = []
    for rep in range(reps):
        body = {"workflow": "plan", "input": {"steps": [
            {"name": "slow", "http": {"method": "GET", "url": f"http://127.0.0.1:{port}/slow/{rep}-{time.time()}",
                                      "timeout_ms": 120000}},
            {"name": "after", "noop": {}}]}}
        submit(url, key, 1, concurrency=1, body=body)
        (mid,), = sql("select id from missions order by created_at desc limit 1")
        while not sql("select 1 from events where mission_id = %s and type = 'step_started'", (mid,)):
            time.sleep(0.01)
        (owner,), = sql("select lease_owner from missions where id = %s", (mid,))
        pid = int(owner.split("-")[-2])
        victim = next(w for w in workers if w.pid == pid)
        victim.kill()
        (killed_at,), = sql("select clock_timestamp()")
        victim.wait()
        workers.remove(victim)
        wait_finished(rep + 1, timeout=max(60, lease_ms / 1000 * 3))
        (row,) = sql("""
            select extract(epoch from min(at) filter (where type = 'step_started' and attempt = 2) - %s) * 1000,
                   extract(epoch from min(at) filter (where type = 'mission_resumed') - %s) * 1000,
                   extract(epoch from min(at) filter (where type = 'mission_succeeded') - %s) * 1000
            from events where mission_id = %s""", (killed_at, killed_at, killed_at, mid))
        (resumer,), = sql("select data->>'worker' from events where mission_id = %s and type = 'mission_resumed'", (mid,))
        runs.append({"step_rerun_ms": float(row[0]), "resumed_ms": float(row[1]), "finished_ms": float(row[2]),
                     "other_worker": resumer != owner})
        log(f"recovery (lease {lease_ms} ms): step re-run {row[0]:.0f} ms after SIGKILL")
        workers.append(start_worker(4, **extra))
        time.sleep(0.5)
    Slow.release.set()
    stop(*workers, server)
    srv.shutdown()
    Slow.release.clear()
    return runs


# ---------------------------------------------------------------- 6. history and list


def bench_history(cfg):
    return run_json([f"{BIN}/hc-history", "--steps", "10000", "--reps", str(cfg.reps)])


def bench_list(cfg, key):
    reset_missions()
    t = time.perf_counter()
    sql("""
        insert into missions (id, workflow, status, input, output, created_at, updated_at)
        select gen_random_uuid(), case when i %% 10 = 0 then 'other' else 'plan' end,
               (case when i %% 50 = 0 then 'failed' when i %% 97 = 0 then 'cancelled'
                     else 'succeeded' end)::mission_status,
               '{"steps": [{"name": "a", "noop": {}}]}'::jsonb, '{"steps": {"a": {}}}'::jsonb,
               now() - make_interval(secs => i), now() - make_interval(secs => i)
        from generate_series(1, %s) i""", (cfg.list_rows,), fetch=False)
    seed = time.perf_counter() - t
    sql("analyze missions", fetch=False)
    server, url = start_server(HYPERCODE_QUEUE=f"bench-list-{int(time.time())}")
    res = run_json([f"{BIN}/hc-list", "--url", url, "--key", key, "--reps", str(cfg.list_reps)])
    stop(server)
    res.update(rows=cfg.list_rows, seed_secs=seed)
    reset_missions()
    sql("vacuum analyze missions", fetch=False)
    log(f"list over {cfg.list_rows} rows: " + ", ".join(f"{q}: p50 {v['p50']:.2f} ms" for q, v in res["queries"].items()))
    return res


# ---------------------------------------------------------------- 7. memory


def bench_idle_rss():
    queue = f"bench-idle-{int(time.time())}"
    server, url = start_server(HYPERCODE_QUEUE=queue)
    w = start_worker(16, HYPERCODE_QUEUE=queue)
    time.sleep(3)
    out = {"server_kb": rss_kb(server.pid), "worker_kb": rss_kb(w.pid)}
    stop(w, server)
    return out


# ---------------------------------------------------------------- main


def machine():
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = re.search(r"Model name:\s+(.*)", lscpu)
    mem = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1))
    def ver(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"
    import celery, importlib.metadata as md
    pg = sql("show server_version")[0][0]
    settings = {k: sql(f"show {k}")[0][0] for k in
                ("synchronous_commit", "fsync", "wal_sync_method", "shared_buffers", "max_connections",
                 "shared_preload_libraries")}
    return {"cpu": model.group(1).strip() if model else platform.processor(), "cores": os.cpu_count(),
            "ram_gib": round(mem / 1024 / 1024, 1), "kernel": platform.release(),
            "postgres": pg, "pg_settings": settings, "redis": ver(["redis-server", "--version"]),
            "dbos": md.version("dbos"), "celery": celery.__version__, "python": platform.python_version(),
            "rustc": ver(["rustc", "--version"]),
            "commit": ver(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"]), "profile": PROFILE,
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated sections to run (debugging)")
    ap.add_argument("--no-write", action="store_true", help="do not write BENCHMARKS.md")
    a = ap.parse_args()
    q = a.quick
    cfg = argparse.Namespace(
        quick=q, reps=1 if q else 3, pg_secs=3 if q else 10, n_missions=300 if q else 2000,
        concurrency=16, rate=50, lat_secs=6 if q else 20, n_approvals=50 if q else 200,
        n_jobs=5000, n_celery=2000 if q else 10000, n_chains=500 if q else 3000,
        n_dbos=300 if q else 2000, n_cost=500 if q else 1000, celery_procs=os.cpu_count(), list_rows=100_000 if q else 1_000_000,
        list_reps=20 if q else 50, recovery_reps=1 if q else 3)
    os.makedirs(OUT, exist_ok=True)
    only = set(filter(None, a.only.split(",")))
    want = lambda s: not only or s in only
    key = os.environ["HC_KEY"]
    pgss = bool(sql("select 1 from pg_extension where extname = 'pg_stat_statements'"))
    R = {"settings": vars(cfg), "machine": machine(), "started": time.time(), "errors": {}}

    def save():
        with open(f"{OUT}/results.json", "w") as fh:
            json.dump(R, fh, indent=1, default=str)

    def section(name, fn):
        if not want(name):
            return
        try:
            fn()
        except Exception as e:  # keep the other sections' figures; the report lists the failure
            log(f"section {name} failed: {e}")
            R["errors"][name] = str(e)[:500]
        save()
    def s_pgbench():
        R["pgbench"] = bench_pgbench(cfg)

    def s_idle():
        R["idle_rss"] = bench_idle_rss()
        R["celery_idle_rss_kb"] = celery_idle_rss(cfg)

    def s_throughput():
        R["throughput"] = bench_throughput(cfg, key, pgss)

    def s_cost():
        R["cost"] = bench_cost(cfg, key, pgss)

    def s_dbos():
        R["dbos_throughput"], R["dbos_latency"] = [], []
        for rep in range(cfg.reps):
            d = dbos_run("throughput", cfg.n_dbos)
            R["dbos_throughput"].append(d)
            log(f"DBOS throughput: {d['workflows_per_s']:.0f} workflows/s")
            # Well below DBOS's own saturation too: at most half the rate it just sustained.
            lrate = max(1, min(cfg.rate, round(0.5 * d["workflows_per_s"])))
            d = dbos_run("latency", int(lrate * cfg.lat_secs), lrate)
            d["rate"] = lrate
            R["dbos_latency"].append(d)
            log(f"DBOS latency p50 {d['latency_ms']['p50']} ms")

    def s_latency():
        R["latency"] = bench_latency(cfg, key)
        R["approval"] = bench_approval(cfg, key)

    def s_jobs():
        R["jobs"], R["celery_tasks"], R["celery_chains"] = [], [], []
        for rep in range(cfg.reps):
            j = bench_jobs(cfg)
            R["jobs"].append(j)
            log(f"apalis-redis no-op jobs: {j['jobs_per_s']:.0f}/s")
            c = celery_run("tasks", cfg.n_celery, cfg)
            R["celery_tasks"].append(c)
            log(f"celery no-op tasks: {c['per_s']:.0f}/s")
            c = celery_run("chains", cfg.n_chains, cfg)
            R["celery_chains"].append(c)
            log(f"celery 3-task chains: {c['per_s']:.0f}/s")

    def s_recovery():
        R["recovery"] = {"1000": bench_recovery(cfg, key, 1000, cfg.recovery_reps)}
        if not q:
            R["recovery"]["30000"] = bench_recovery(cfg, key, 30000, 1)

    def s_history():
        R["history"] = bench_history(cfg)
        log(f"resume with 10000 recorded steps: p50 {R['history']['resume_ms']['p50']:.0f} ms")

    def s_list():
        R["list"] = bench_list(cfg, key)

    for name, fn in (("pgbench", s_pgbench), ("idle", s_idle), ("throughput", s_throughput),
                     ("cost", s_cost),
                     ("dbos", s_dbos), ("latency", s_latency), ("jobs", s_jobs),
                     ("recovery", s_recovery), ("history", s_history), ("list", s_list)):
        section(name, fn)
    R["finished"] = time.time()
    save()
    log(f"results in {OUT}/results.json ({R['finished'] - R['started']:.0f} s)")
    import report
    R = json.loads(json.dumps(R, default=str))
    if not a.no_write:
        report.write(R, os.path.join(ROOT, "BENCHMARKS.md"))
        log("wrote BENCHMARKS.md")
    print(report.targets_text(R))


if __name__ == "__main__":
    main()
