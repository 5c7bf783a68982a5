"""What SNS fan-out costs a task: the drain's enqueue against a synchronous publish.

A task calls ``Publisher.result``, which only queues the Result; the drain's
thread sends it. This compares that call with ``sns.publish`` made inline, on
the same moto, and checks that every queued Result was delivered.

    .venv/bin/python bench/fanout_publish.py [N]
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pudato import aws, devstack, infra
from pudato.fanout import Publisher, topic_arn
from pudato.protocol import Result, utcnow
from pudato.settings import Settings, reset_settings


def main(count: int = 300) -> None:
    with devstack.moto_server() as endpoint:
        os.environ.update({"PUDATO_AWS__ENDPOINT_URL": endpoint, "PUDATO_AWS__ACCESS_KEY_ID": "bench",
                           "PUDATO_AWS__SECRET_ACCESS_KEY": "bench"})
        reset_settings()
        settings = Settings(_env_file=None)
        infra.up(settings)
        now = utcnow()
        result = Result(job_id="bench", step_id="s", handler="storage", action="ping", status="succeeded",
                        started_at=now, finished_at=now, data={"pong": "storage"})
        sns = aws.client("sns", settings.aws)
        arn = topic_arn(sns, settings.fanout.results_topic)
        body = result.model_dump_json()

        inline = []
        for _ in range(count):
            start = time.perf_counter()
            sns.publish(TopicArn=arn, Message=body)
            inline.append(time.perf_counter() - start)

        publisher = Publisher(settings)
        publisher.result(result)
        publisher.drain.flush(30)  # warm: thread started, client made
        queued = []
        drain_start = time.perf_counter()
        for _ in range(count):
            start = time.perf_counter()
            publisher.result(result)
            queued.append(time.perf_counter() - start)
        publisher.drain.flush(120)
        drained = time.perf_counter() - drain_start
        print(f"{count} Results on moto SNS (topic with one raw-delivery SQS subscriber)")
        print(f"inline sns.publish      : median {statistics.median(inline) * 1e3:8.3f} ms per Result")
        print(f"Publisher.result (queue): median {statistics.median(queued) * 1e3:8.3f} ms per Result")
        print(f"ratio queued/inline     : {statistics.median(queued) / statistics.median(inline):.4f}")
        print(f"drain delivered {publisher.drain.delivered - 1} in {drained:.2f} s with publish_batch, "
              f"dropped {publisher.drain.dropped}")


if __name__ == "__main__":
    main(*(int(a) for a in sys.argv[1:2]))
