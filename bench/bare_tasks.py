"""A bare Celery task on Pudato's app and queues: the baseline the benchmarks divide by."""

from workers.app import app


@app.task(name="bench.noop", queue="pudato-storage")
def noop() -> None:
    return None
