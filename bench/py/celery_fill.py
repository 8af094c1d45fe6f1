"""Fill the Celery queue: `celery_fill.py tasks N` or `celery_fill.py chains N`. Prints seconds taken."""
import sys
import time

import redis
from celery import chain

import celery_tasks as t

kind, n = sys.argv[1], int(sys.argv[2])
r = redis.Redis.from_url(t.BROKER)
r.flushdb()
start = time.perf_counter()
with t.app.producer_or_acquire() as producer:
    for _ in range(n):
        if kind == "tasks":
            t.noop.apply_async(producer=producer)
        else:
            chain(t.noop.si(), t.noop.si(), t.chain_done.si()).apply_async(producer=producer)
print(time.perf_counter() - start)
