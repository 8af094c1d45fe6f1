"""Render bench results (results.json from bench.py) as BENCHMARKS.md."""
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def f(x, digits=0):
    if x is None:
        return "–"
    if digits == 0 and abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:,.{digits if digits else 1}f}"


def ms(x):
    return "–" if x is None else (f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:,.0f}")


def stat(xs, fmt=f):
    """median [min–max] (n)"""
    xs = [x for x in xs if x is not None]
    if not xs:
        return "–"
    if len(xs) == 1:
        return f"{fmt(xs[0])} (1 run)"
    return f"{fmt(med(xs))} [{fmt(min(xs))}–{fmt(max(xs))}]"


def ratios(ours, theirs):
    return [o / t for o, t in zip(ours, theirs) if o is not None and t]


def rstat(rs):
    if not rs:
        return "–"
    if len(rs) == 1:
        return f"{rs[0]:.2f}× (1 pair)"
    return f"**{med(rs):.2f}×** [{min(rs):.2f}–{max(rs):.2f}]"


def mib(kb):
    return "–" if kb is None else f"{kb / 1024:.1f} MiB"


def verdict(ok, miss):
    if ok is None:
        return "not measured"
    return "**met**" if ok else "**missed** " + miss


def best_throughput(R):
    """The worker count with the most steps/s, its missions/s runs, and DBOS's workflows/s runs."""
    tp = R.get("throughput", {})
    best_w, best_steps = None, None
    for W in ("1", "2", "4"):
        if W in tp:
            v = med([r["steps_per_s"] for r in tp[W]])
            if best_steps is None or v > best_steps:
                best_w, best_steps = W, v
    ours_tp = [r["missions_per_s"] for r in tp.get(best_w, [])] if best_w else []
    dbos_tp = [d["workflows_per_s"] for d in R.get("dbos_throughput", [])]
    return best_w, ours_tp, dbos_tp


def targets(R):
    """The targets of issue 16 as rows (target, measured, met: True/False/None, how far off)."""
    s = R["settings"]
    rows = []
    row = lambda *a: rows.append(a)
    cost = R.get("cost", {})
    for kind, label, limits in (
            ("http", "HTTP step", (("wal_fsyncs", 0.3, "WAL fsyncs", "{:.3f}"), ("wal_records", 12, "WAL records", "{:.1f}"),
                                   ("wal_bytes", 1500, "WAL bytes", "{:,.0f}"))),
            ("noop", "no-op step", (("wal_fsyncs", 0.15, "WAL fsyncs", "{:.3f}"), ("wal_records", 6, "WAL records", "{:.1f}")))):
        for k, limit, what, fmt in limits:
            v = med([r["per_step"].get(k) for r in cost.get(kind, [])])
            shown = fmt.format(limit)
            if v is None:
                row(f"{label}: ≤ {shown} {what} per step (64 in flight)", "–", None, "")
            else:
                row(f"{label}: ≤ {shown} {what} per step (64 in flight)", fmt.format(v), v <= limit,
                    f"(×{v / limit:.2f} of the target)")
    tp = R.get("throughput", {})
    pg32 = med(R["pgbench"]["32"]["tps"]) if "pgbench" in R else None
    one = med([r["steps_per_s"] for r in tp.get("1", [])])
    two = med([r["steps_per_s"] for r in tp.get("2", [])])
    share = f" = {one / pg32:.0%} of the ceiling ({f(pg32)} tps)" if one and pg32 else ""
    row("≥ 4,000 no-op durable steps/s with one worker process", f"{f(one)} steps/s{share}" if one else "–",
        None if one is None else one >= 4000, f"(×{4000 / one:.2f} needed)" if one else "")
    row("more steps/s with two worker processes than with one", f"{f(two)} vs {f(one)}" if two and one else "–",
        None if not (two and one) else two > one, "")
    best_w, ours_tp, dbos_tp = best_throughput(R)
    for name, theirs, goal in (("≥ 10× DBOS workflows/s on the 3-step workflow", dbos_tp, 10),
                               ("≥ 3× Celery 3-task chains with 3-step durable missions",
                                [c["per_s"] for c in R.get("celery_chains", [])], 3)):
        r = ratios(ours_tp, theirs)
        row(name, rstat(r), None if not r else med(r) >= goal, f"(×{goal / med(r):.2f} more needed)" if r else "")
    r = ratios([j["jobs_per_s"] for j in R.get("jobs", [])], [c["per_s"] for c in R.get("celery_tasks", [])])
    row("≥ 10× Celery no-op jobs", rstat(r), None if not r else med(r) >= 10,
        f"(×{10 / med(r):.2f} more needed)" if r else "")
    lat = R.get("latency", [])
    p50 = med([r["finished_ms"]["p50"] for r in lat])
    p99 = med([r["finished_ms"]["p99"] for r in lat])
    row(f"p50 submit → finished ≤ 4 ms at {s['rate']} missions/s", f"{ms(p50)} ms", None if p50 is None else p50 <= 4,
        f"by {(p50 or 0) - 4:.1f} ms")
    row(f"p99 submit → finished ≤ 12 ms at {s['rate']} missions/s", f"{ms(p99)} ms", None if p99 is None else p99 <= 12,
        f"by {(p99 or 0) - 12:.1f} ms")
    ap = R.get("approval")
    a99 = ap["resumed_ms"]["p99"] if ap else None
    row("approval → resumed p99 ≤ 10 ms", f"{ms(a99)} ms", None if a99 is None else a99 <= 10, f"by {(a99 or 0) - 10:.1f} ms")
    h = R.get("history")
    h50 = h["resume_ms"]["p50"] if h else None
    row("a 10,000-step mission resumes in ≤ 100 ms", f"{ms(h50)} ms (p50)", None if h50 is None else h50 <= 100,
        f"by {(h50 or 0) - 100:.0f} ms")
    hp = h.get("history_pages") if h else None
    if hp:
        # Constant cost: the last page of the history costs no more than 1.5× the first (the
        # spread of two reads of one page on a busy machine), each the median of its reads.
        first, last = hp["first_ms"]["p50"], hp["last_ms"]["p50"]
        row(f"a {hp['events']:,}-event history pages at constant cost",
            f"first page {ms(first)} ms, last {ms(last)} ms (p50)", last <= 1.5 * first,
            f"(last page ×{last / first:.1f} the first)")
    else:
        row("a 100,000-event history pages at constant cost", "not measured", None, "")
    return rows


def targets_text(R):
    """The targets table as plain text, for the end of a run."""
    rows = targets(R)
    width = max(len(r[0]) for r in rows)
    mwidth = max(len(str(r[1])) for r in rows)
    lines = ["", "Targets (issue 16):"]
    for name, value, ok, miss in rows:
        mark = "not measured" if ok is None else ("met" if ok else f"MISSED {miss}")
        lines.append(f"  {name:<{width}}  {str(value).replace('**', ''):<{mwidth}}  {mark}")
    return "\n".join(lines)


def write(R, path):
    m, s = R["machine"], R["settings"]
    L = []
    w = L.append
    w("# HyperCode benchmarks\n")
    w(f"Generated by `bench/run{' --quick' if s['quick'] else ''}` on {m['date']} at commit `{m['commit']}` "
      f"(plus the working tree), {m.get('profile', 'release')} build. {'**Quick mode: one repetition and small N; the figures are indicative only.**' if s['quick'] else ''}\n")
    w(f"**Machine:** {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Linux {m['kernel']}. "
      f"Everything (PostgreSQL, Redis, HyperCode, the peers, the load generator) runs on this one machine over loopback, "
      f"so every figure includes the client's CPU use on the same 2 cores.\n")
    w(f"**Versions:** PostgreSQL {m['postgres']}, {m['redis']}, DBOS Transact {m['dbos']}, Celery {m['celery']} "
      f"(Python {m['python']}), {m['rustc']}.\n")
    w("Each figure is the median of the repetitions, with the spread [min–max] in brackets; a ratio is "
      "ours / theirs, computed per repetition pair (the two were measured back to back in the same run) "
      "and then summarised the same way. Mission latencies and rates come from PostgreSQL timestamps "
      "(`events.at`, one clock), not from client polling.\n")

    # ---- targets
    w("## Targets\n")
    w("| target | measured | met? |")
    w("| --- | --- | --- |")
    for name, value, ok, miss in targets(R):
        w(f"| {name} | {value} | {verdict(ok, miss)} |")
    w("")

    tp = R.get("throughput", {})
    best_w, ours_tp, dbos_tp = best_throughput(R)
    jobs = [j["jobs_per_s"] for j in R.get("jobs", [])]
    cel = [c["per_s"] for c in R.get("celery_tasks", [])]
    chains = [c["per_s"] for c in R.get("celery_chains", [])]
    lat = R.get("latency", [])
    idle = R.get("idle_rss", {})
    w1 = tp.get("1", [])
    worker_load = med([r["peak_rss_kb"].get("w0") for r in w1]) if w1 else None
    server_load = med([r["peak_rss_kb"].get("server") for r in w1]) if w1 else None
    celery_load = med([c["peak_rss_kb"] for c in R.get("celery_tasks", [])])

    # ---- 1
    if "pgbench" in R:
        w("## 1. Ceiling: PostgreSQL tiny committed transactions\n")
        w(f"`pgbench -n -M prepared -T {s['pg_secs']}` with a one-statement script "
          "(`update bench_counter set n = n + 1 where id = random(1, 1000)`; 1 000 rows so clients rarely "
          "wait on each other's row locks), `-j` = min(clients, 2).\n")
        w("| clients | tps | average latency (ms) |")
        w("| ---: | ---: | ---: |")
        for c in ("1", "8", "32"):
            d = R["pgbench"][c]
            w(f"| {c} | {stat(d['tps'])} | {stat(d['latency_ms'], ms)} |")
        ps = m["pg_settings"]
        w(f"\nServer settings: synchronous_commit={ps['synchronous_commit']}, fsync={ps['fsync']}, "
          f"wal_sync_method={ps['wal_sync_method']}, shared_buffers={ps['shared_buffers']}, "
          f"max_connections={ps['max_connections']} (a stock `initdb` cluster otherwise).\n")

    # ---- 2
    if tp:
        w("## 2. Durable throughput: 3-step no-op missions\n")
        w(f"{s['n_missions']} missions submitted over HTTP (`hc-submit`, keep-alive, 64 in flight) to one "
          f"`hypercode serve` (API + reconciler, no worker) and drained by W `hypercode worker --concurrency {s['concurrency']}` "
          "processes (pool of 16 connections each). Rate = missions ÷ (last `mission_succeeded` − first "
          "`mission_submitted`); steps/s counts `step_succeeded` events over the same span. "
          "'Execution only' divides by (last succeeded − first `mission_started`).\n")
        w("| worker processes | missions/s | steps/s | execution only, missions/s |")
        w("| ---: | ---: | ---: | ---: |")
        for W in ("1", "2", "4"):
            if W in tp:
                runs = tp[W]
                w(f"| {W} | {stat([r['missions_per_s'] for r in runs])} | {stat([r['steps_per_s'] for r in runs])} "
                  f"| {stat([r['exec_missions_per_s'] for r in runs])} |")
        if dbos_tp:
            w(f"\n**DBOS Transact**, the same 3-step no-op workflow (three `@DBOS.step`s in a `@DBOS.workflow`), "
              f"{s['n_dbos']} workflows started at once with `DBOS.start_workflow` in one process "
              "(its executor thread pool), system database on the same PostgreSQL; rate from its "
              "`workflow_status` timestamps: "
              f"{stat(dbos_tp)} workflows/s.\n")
            w(f"**Ratio ours ({best_w} worker process{'es' if best_w != '1' else ''}, the best W) / DBOS:** "
              f"{rstat(ratios(ours_tp, dbos_tp))} (missions/s ÷ workflows/s).\n")
            if "1" in tp:
                w(f"With 1 worker process: {rstat(ratios([r['missions_per_s'] for r in tp['1']], dbos_tp))}.\n")

    # ---- 2b
    cost = R.get("cost")
    if cost:
        w("## 2b. What a durable step costs PostgreSQL\n")
        n = cost["noop"][0]["missions"] if cost.get("noop") else "?"
        w(f"{n} 3-step missions per kind, submitted 64 in flight to one `hypercode serve` and run by one "
          f"`hypercode worker --concurrency {s['concurrency']}`: **no-op** steps, and **HTTP** steps (`GET` to a "
          "callee on loopback that answers `{}` at once). Deltas of PostgreSQL's own counters over the run "
          "(`pg_stat_database` transactions, `pg_stat_statements` calls, `pg_stat_wal` records/bytes/syncs) and "
          "the CPU time of every PostgreSQL process (`/proc/*/stat`, exited backends included through the "
          "postmaster's children time), divided by the missions and by the `step_succeeded` events. The "
          "window includes starting and stopping the two processes and the reconciler's ticks (a small "
          "fixed cost); the bench's own polls are taken out. These figures do not depend on the machine's "
          "speed (fsyncs per step do depend on how many commits share a flush, i.e. on load), so they are "
          "the ones to compare between commits.\n")
        w("| | no-op: per step | no-op: per mission | HTTP: per step | HTTP: per mission |")
        w("| --- | ---: | ---: | ---: | ---: |")
        for label, k, fmt in (("PostgreSQL transactions", "transactions", lambda x: f"{x:.2f}"),
                              ("statements (`pg_stat_statements` calls)", "statements", lambda x: f"{x:.2f}"),
                              ("WAL records", "wal_records", lambda x: f"{x:.1f}"),
                              ("WAL bytes", "wal_bytes", lambda x: f"{x:,.0f}"),
                              ("WAL fsyncs", "wal_fsyncs", lambda x: f"{x:.3f}"),
                              ("PostgreSQL CPU (µs)", "pg_cpu_secs", lambda x: f"{x * 1e6:,.0f}")):
            cells = [stat([r[per].get(k) for r in cost.get(kind, [])], fmt)
                     for kind in ("noop", "http") for per in ("per_step", "per_mission")]
            w(f"| {label} | " + " | ".join(cells) + " |")
        for kind in ("noop", "http"):
            runs = cost.get(kind, [])
            if runs and runs[0].get("wal_by_relation"):
                w(f"\nWAL of the first {kind} run per step, by relation and record type (`pg_walinspect`; "
                  "between the run's first reading and its end, so the bench's own reads are in it):\n")
                w("| relation | record | records / step | bytes / step |")
                w("| --- | --- | ---: | ---: |")
                for r in runs[0]["wal_by_relation"][:16]:
                    w(f"| {r['relation']} | {r['record']} | {r['records_per_step']:.2f} | {r['bytes_per_step']:.0f} |")
            if runs and runs[0].get("statements"):
                w(f"\nStatements of the first {kind} run, per mission:\n")
                w("| calls / mission | DB time / mission (ms) | statement |")
                w("| ---: | ---: | --- |")
                for r in runs[0]["statements"]:
                    q = r["query"].replace("|", "\\|")
                    q = q if len(q) <= 110 else q[:107] + "…"
                    w(f"| {r['calls_per_mission']:.2f} | {r['ms_per_mission']:.3f} | `{q}` |")
        w("")

    # ---- 3
    if lat:
        w("## 3. Latency\n")
        w(f"Open-loop arrivals at a fixed {s['rate']} missions/s for {s['lat_secs']} s (one server, one worker "
          f"process, concurrency {s['concurrency']}); from the events table: first `step_started` − "
          "`mission_submitted`, and `mission_succeeded` − `mission_submitted`. (Event times are "
          "`now()` of the writing transaction, i.e. its start: the last write's own commit is not included.)\n")
        w("| | p50 (ms) | p90 (ms) | p99 (ms) |")
        w("| --- | ---: | ---: | ---: |")
        for label, k in (("submit → first step started", "first_step_ms"), ("submit → mission finished", "finished_ms")):
            w(f"| {label} | {stat([r[k]['p50'] for r in lat], ms)} | {stat([r[k]['p90'] for r in lat], ms)} "
              f"| {stat([r[k]['p99'] for r in lat], ms)} |")
        dl = R.get("dbos_latency", [])
        if dl:
            w(f"| DBOS: workflow created → finished, at {', '.join(str(d.get('rate', s['rate'])) for d in dl)}/s | {stat([d['latency_ms']['p50'] for d in dl], ms)} "
              f"| {stat([d['latency_ms']['p90'] for d in dl], ms)} | {stat([d['latency_ms']['p99'] for d in dl], ms)} |")
            w(f"\n**Ratio of p50 latency ours / DBOS:** {rstat(ratios([r['finished_ms']['p50'] for r in lat], [d['latency_ms']['p50'] for d in dl]))} "
              "(below 1 means we are faster). DBOS starts workflows in-process (no HTTP hop, no queue); "
              "its timestamps come from its own `workflow_status` rows (ms resolution).\n")
        ap = R.get("approval")
        if ap:
            w(f"**Approval → resumed** ({ap['n']} missions `[gate (approval), a (noop)]`, decisions sent over HTTP at "
              f"{s['rate']}/s): `approval_granted` → `mission_resumed` p50 {ms(ap['resumed_ms']['p50'])} ms, "
              f"p99 {ms(ap['resumed_ms']['p99'])} ms; → `mission_succeeded` p50 {ms(ap['finished_ms']['p50'])} ms, "
              f"p99 {ms(ap['finished_ms']['p99'])} ms.\n")

    # ---- 4
    if jobs:
        w("## 4. Plain jobs: apalis-redis worker path vs Celery\n")
        j0 = R["jobs"][0]
        w(f"`hc-jobs`: {j0['n']} no-op `WakeJob`s pushed with `push_bulk` (chunks of 1 000) onto a fresh "
          f"queue, then drained by one apalis worker built as in `hypercode worker` (a wake-up announced on "
          f"`QueueConfig::signal_channel` + 500 ms fallback poll, concurrency {j0['concurrency']}) whose handler does nothing; timed from the "
          f"first handler call to the last. Celery: {s['n_celery']} `noop` tasks queued with the worker stopped, "
          f"then a prefork worker with {s['celery_procs']} processes (one per core; `task_ignore_result`, "
          "no gossip/mingle/heartbeat) drains them; timed from the first dequeue to an empty queue and no "
          "unacked message. Chains: `chain(noop.si(), noop.si(), chain_done.si())`, the last task "
          "counts finished chains with one Redis INCR.\n")
        w("| | per second |")
        w("| --- | ---: |")
        w(f"| apalis-redis no-op jobs (drain) | {stat(jobs)} |")
        w(f"| apalis-redis push_bulk (enqueue) | {stat([j['push_per_s'] for j in R['jobs']])} |")
        if cel:
            w(f"| Celery no-op tasks (drain) | {stat(cel)} |")
            w(f"| Celery enqueue (`apply_async`, one producer) | {stat([c['n'] / c['push_secs'] for c in R['celery_tasks']])} |")
        if chains:
            w(f"| Celery 3-task chains | {stat(chains)} |")
            w(f"| HyperCode 3-step missions (section 2, best W) | {stat(ours_tp)} |")
        if cel:
            w(f"\n**Ratio jobs/s ours / Celery:** {rstat(ratios(jobs, cel))}.")
        if chains and ours_tp:
            w(f"**Ratio 3-step durable missions / Celery 3-task chains:** {rstat(ratios(ours_tp, chains))} "
              "(a mission is durable in PostgreSQL; a chain is not).\n")

    # ---- 5
    rec = R.get("recovery")
    if rec:
        w("## 5. Recovery after SIGKILL\n")
        w("Two worker processes; a mission `[slow (HTTP GET that hangs on its first call), after (noop)]`. Once "
          "`slow` has started, the worker holding the lease (read from `missions.lease_owner`) gets SIGKILL; "
          "the kill time is PostgreSQL's `clock_timestamp()` right after the signal. Measured: kill → "
          "`mission_resumed` on the other worker, and kill → `step_started` of `slow`'s second attempt "
          "(the interrupted step runs again: at-least-once for an unfinished step).\n")
        w("| lease TTL | tick | kill → resumed (ms) | kill → step re-run (ms) | on another worker |")
        w("| ---: | ---: | ---: | ---: | --- |")
        for ttl, runs in rec.items():
            w(f"| {int(ttl):,} ms | 100 ms | {stat([r['resumed_ms'] for r in runs], ms)} | "
              f"{stat([r['step_rerun_ms'] for r in runs], ms)} | {all(r['other_worker'] for r in runs)} |")
        w("\nRecovery is bounded by the lease: a dead worker's mission is noticed when its lease expires "
          "(≤ TTL after the last renewal, renewals every TTL/3) plus up to one reconciler tick, plus a claim.\n")

    # ---- 6
    h = R.get("history")
    lst = R.get("list")
    if h or lst:
        w("## 6. Scale of history\n")
    if h:
        w(f"**Resume with {h['steps']:,} recorded steps** (`hc-history`: a mission seeded by SQL with {h['steps']:,} "
          "succeeded journal entries and their events, whose plan asks for those steps plus one more; "
          "`Engine::run_mission` claims it, loads the journal, replays every entry, runs the new step and "
          f"finishes): p50 {ms(h['resume_ms']['p50'])} ms, max {ms(h['resume_ms']['max'])} ms "
          f"({h['resume_ms']['n']} runs). The journal load alone: p50 {ms(h['journal_load_ms']['p50'])} ms.\n")
        hp = h.get("history_pages")
        if hp:
            w(f"**Paging a {hp['events']:,}-event history** (`MissionStore::history`, the history route's read, "
              f"{hp['limit']:,} events a page, keyed by `seq`): first page p50 {ms(hp['first_ms']['p50'])} ms, "
              f"after {hp['middle_after']:,} p50 {ms(hp['middle_ms']['p50'])} ms, after {hp['last_after']:,} "
              f"p50 {ms(hp['last_ms']['p50'])} ms ({hp['first_ms']['n']} reads each); a walk over all "
              f"{hp['walk_pages']} pages: p50 {ms(hp['walk_ms']['p50'])} ms a page, first "
              f"{ms(hp['walk_first_ms'])} ms, last {ms(hp['walk_last_ms'])} ms.\n")
    if lst:
        w(f"**List/filter with {lst['rows']:,} missions** in the table (seeded with one `insert … select "
          f"generate_series` in {lst['seed_secs']:.0f} s; 10% workflow `other`, 2% failed, ~1% cancelled), "
          f"{s['list_reps']} sequential `GET /api/v1/missions?…` each over one keep-alive connection, client-side:\n")
        w("| query | rows | p50 (ms) | p99 (ms) |")
        w("| --- | ---: | ---: | ---: |")
        for q, v in lst["queries"].items():
            w(f"| `{q}` | {v['rows']} | {ms(v['p50'])} | {ms(v['p99'])} |")
        w(f"| walking {lst['pages']['n']} pages by `cursor` (50 per page) | 50 | {ms(lst['pages']['p50'])} | {ms(lst['pages']['p99'])} |")
        w("")

    # ---- 7
    if idle:
        w("## 7. Memory (RSS)\n")
        w("| process | idle | under load (peak) |")
        w("| --- | ---: | ---: |")
        w(f"| `hypercode worker --concurrency {s['concurrency']}` | {mib(idle.get('worker_kb'))} | {mib(worker_load)} |")
        w(f"| `hypercode serve` | {mib(idle.get('server_kb'))} | {mib(server_load)} |")
        if "celery_idle_rss_kb" in R:
            procs = R["celery_tasks"][0]["processes"] if R.get("celery_tasks") else "?"
            w(f"| Celery worker, prefork -c {s['celery_procs']} ({procs} processes, summed) | {mib(R['celery_idle_rss_kb'])} | {mib(celery_load)} |")
        dt = R.get("dbos_throughput", [])
        if dt:
            w(f"| DBOS process (app + workflows, after the throughput run) | – | {mib(med([d['rss_kb'] for d in dt]))} |")
        w("\nIdle = 3 s after start (4 s for Celery). Under load = peak of 50 ms samples during the "
          "1-worker throughput run (Celery: during the no-op task drain); a process tree is summed.\n")

    # ---- profile
    pg = tp.get("pg_stat_statements")
    w("## Where the time per step goes\n")
    if pg:
        w(f"`pg_stat_statements` over the first 1-worker throughput run ({s['n_missions']} missions), "
          "per mission (3 steps):\n")
        w("| calls / mission | DB time / mission (ms) | statement |")
        w("| ---: | ---: | --- |")
        for r in pg:
            q = r["query"].replace("|", "\\|")
            q = q if len(q) <= 110 else q[:107] + "…"
            w(f"| {r['calls_per_mission']:.2f} | {r['ms_per_mission']:.3f} | `{q}` |")
        w("")
    analysis = os.path.join(HERE, "analysis.md")
    if os.path.exists(analysis):
        w(open(analysis).read().strip() + "\n")

    if R.get("errors"):
        w("## Sections that failed in this run\n")
        for k, v in R["errors"].items():
            w(f"- **{k}**: `{v}`")
        w("")

    # ---- settings
    w("## Exact settings\n")
    w("```")
    w(json.dumps({k: v for k, v in s.items()}, indent=1))
    w("```\n")
    w("Processes: `hypercode serve` and `hypercode worker` run with `HYPERCODE_LOG=warn`, default "
      "`HYPERCODE_DB_POOL=16`, `HYPERCODE_RATE_LIMIT=0` (no per-key API limit), `HYPERCODE_TICK_MS=100`, `HYPERCODE_LEASE_TTL_MS=30000` except where stated, "
      "a fresh `HYPERCODE_QUEUE` per run; tables are truncated between runs. PostgreSQL and Redis are the "
      "private instances `bench/run` starts through `scripts/services.sh` on ports 55700/56700 "
      "(state in /tmp/hc-bench), with `pg_stat_statements` preloaded.\n")
    w("## Running\n")
    w("```sh\nbench/run            # everything, 3 repetitions (~15 min); writes BENCHMARKS.md\n"
      "bench/run --quick    # 1 repetition, small N (< 3 min once built and the venv exists)\n"
      "bench/run --only throughput,latency --no-write   # a subset, results in /tmp/hc-bench/out\n```\n")
    w(f"Raw results: `$BENCH_OUT/results.json`. This run took {R['finished'] - R['started']:.0f} s "
      "(after building).\n")
    with open(path, "w") as fh:
        fh.write("\n".join(L))


if __name__ == "__main__":
    write(json.load(open(sys.argv[1])), sys.argv[2] if len(sys.argv) > 2 else "BENCHMARKS.md")
