"""Celery peer: a no-op task, and a marker task ending a 3-task chain (it counts finished chains)."""
import os

import redis
from celery import Celery

BROKER = os.environ["BENCH_CELERY_BROKER"]
app = Celery("bench", broker=BROKER)
app.conf.update(
    task_ignore_result=True,
    task_default_queue="bench",
    worker_hijack_root_logger=False,
    broker_connection_retry_on_startup=True,
)
_counter = None


@app.task(name="noop")
def noop():
    return None


@app.task(name="chain_done")
def chain_done():
    """The chain's third task: a no-op that also counts the chain as finished (one INCR)."""
    global _counter
    if _counter is None:
        _counter = redis.Redis.from_url(BROKER)
    _counter.incr("bench:chains_done")
