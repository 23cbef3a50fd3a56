"""Kafka in: the three streams from their topics, as chunks per Kafka partition.

Every topic partition is a Bytewax partition, so a cluster of workers shares them. The
snapshot is the next offset, so recovery resumes where the last snapshot left off; no
consumer group commits anything. With `until_end`, a partition ends at the offset that
was its end when first reached (replay-like, for tests and backfills). Otherwise a
caught-up partition is idle, and does not hold event time back. A live feed's events
happened before they were read: one further ahead of the wall clock than `max_ahead_s`
is a clock fault and becomes a dead letter.
"""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from orderwatch.config import ConfigError
from orderwatch.pipelines.decoding import Chunk
from orderwatch.pipelines.sources import Drain, StopSignal

log = logging.getLogger(__name__)
DEFAULT_TOPICS = ("orders", "callbacks", "logistics")


def list_partitions(brokers: str, topics: tuple[str, ...], timeout_s: float = 10) -> list[str]:
    """"topic/partition" names of every partition of the topics."""
    try:
        # librdkafka would log every failed connect (one line each 50 ms); we say it once
        metadata = AdminClient({"bootstrap.servers": brokers, "log_level": 0}).list_topics(
            timeout=timeout_s)
    except Exception as exc:
        raise ConfigError(f"cannot reach Kafka at {brokers}: {exc}") from None
    parts = []
    for topic in topics:
        meta = metadata.topics.get(topic)
        if meta is None or meta.error is not None:
            raise ConfigError(f"Kafka topic {topic!r} does not exist at {brokers}")
        parts += [f"{topic}/{p}" for p in sorted(meta.partitions)]
    return parts


class _KafkaPartition(StatefulSourcePartition[Chunk, int]):
    POLL_S = 0.2

    def __init__(self, brokers: str, part: str, parts: int, batch_size: int,
                 until_end: bool, resume: int | None, stop: StopSignal,
                 max_ahead_s: float = math.inf) -> None:
        topic, number = part.rsplit("/", 1)
        self.part = part
        self.parts = parts
        self.batch_size = batch_size
        self.until_end = until_end
        self.max_ahead_s = max_ahead_s
        self.consumer = Consumer({
            "bootstrap.servers": brokers, "group.id": "orderwatch",  # required, never used
            "enable.auto.commit": False, "enable.partition.eof": True,
            "auto.offset.reset": "earliest"})
        self.consumer.assign([TopicPartition(topic, int(number),
                                             OFFSET_BEGINNING if resume is None else resume)])
        self.next_offset = resume
        self.stop = stop
        self.done = False
        self.ended = False
        self.drain = Drain()
        self.idle_since: datetime | None = None

    def next_batch(self) -> list[Chunk]:
        if self.done:
            if not self.ended:  # stopped, not at the end: event time stays for the resume
                raise StopIteration
            return [Chunk(self.part, self.next_offset or 0, [], True, self.parts, [],
                          draining=self.drain.next_step())]
        records, positions, at_end = [], [], False
        for message in self.consumer.consume(self.batch_size, self.POLL_S):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    at_end = True
                else:
                    log.warning("Kafka %s: %s", self.part, error)
                continue
            records.append(message.value() or b"")
            positions.append(message.offset())
            self.next_offset = message.offset() + 1
        # Only the end of a backfill ends event time, firing every timeout due by the
        # latest event read. A stop (SIGTERM on a deploy, Ctrl-C) must not: the other
        # partitions' next events have not been read yet, and would be late on resume.
        ended = self.ended = at_end and self.until_end
        stopping = self.stop.is_set() and not ended
        self.done = ended or stopping
        idle = not records and (at_end or self.idle_since is not None)
        self.idle_since = (self.idle_since or datetime.now(UTC)) if idle else None
        first = positions[0] if positions else (self.next_offset or 0)
        return [Chunk(self.part, first, records, ended, self.parts, positions, idle,
                      draining=self.drain.draining(ended), skip_empty=False,
                      max_ahead_s=self.max_ahead_s, stopping=stopping)]

    def next_awake(self) -> datetime | None:
        # caught up: poll again shortly instead of spinning
        return None if self.idle_since is None else datetime.now(UTC) + timedelta(seconds=0.2)

    def snapshot(self) -> int | None:
        return self.next_offset

    def close(self) -> None:
        self.consumer.close()


class KafkaSource(FixedPartitionedSource[Chunk, int]):
    def __init__(self, brokers: str, topics: tuple[str, ...] = DEFAULT_TOPICS,
                 batch_size: int = 2000, until_end: bool = False,
                 stop: StopSignal | None = None, max_ahead_s: float = 0) -> None:
        """`max_ahead_s`: how far ahead of the wall clock an event may be (0: no bound)."""
        self.brokers = brokers
        self.stop = stop or StopSignal()
        self.parts = list_partitions(brokers, topics)
        self.batch_size = batch_size
        self.until_end = until_end
        self.max_ahead_s = max_ahead_s or math.inf

    def list_parts(self) -> list[str]:
        return self.parts

    def build_part(self, step_id: str, for_part: str, resume_state: int | None
                   ) -> _KafkaPartition:
        return _KafkaPartition(self.brokers, for_part, len(self.parts), self.batch_size,
                               self.until_end, resume_state, self.stop, self.max_ahead_s)
