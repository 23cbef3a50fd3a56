"""Kafka out: engine traffic to the three topics, and bad records to a dead-letter topic."""

from __future__ import annotations

import logging
from typing import Any

import orjson
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from confluent_kafka import KafkaError, Message, Producer

from orderwatch.pipelines.decoding import Decoded
from orderwatch.pipelines.kafka_source import list_partitions

TOPIC_OF_STREAM = {"order": "orders", "callback": "callbacks", "logistics": "logistics"}
DEAD_LETTER_TOPIC = "orderwatch.dead_letters"
log = logging.getLogger(__name__)


class EventPublisher:
    """Publishes contract events keyed by `order_no` (one order stays in one partition)."""

    def __init__(self, brokers: str, topics: dict[str, str] | None = None) -> None:
        self.topics = topics or TOPIC_OF_STREAM
        # a broker down or a topic missing is said now, in one line, rather than after a
        # minute of librdkafka's connection errors as undelivered messages
        list_partitions(brokers, tuple(dict.fromkeys(self.topics.values())))
        self.producer = Producer({"bootstrap.servers": brokers, "linger.ms": 20,
                                  "enable.idempotence": False})
        self.sent = 0

    def publish(self, event: dict[str, Any]) -> None:
        topic = self.topics.get(event.get("stream"), self.topics["order"])
        key = event.get("order_no")
        self.publish_raw(topic, orjson.dumps(event),
                         key.encode() if isinstance(key, str) else None)

    def publish_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        while True:
            try:
                self.producer.produce(topic, value=value, key=key)
                break
            except BufferError:  # the local queue is full: let it drain
                self.producer.poll(0.5)
        self.sent += 1
        self.producer.poll(0)

    def close(self) -> None:
        left = self.producer.flush(60)
        if left:
            raise RuntimeError(f"{left} messages were not delivered to Kafka")


class _DeadLetterPartition(StatelessSinkPartition[Decoded]):
    """The copies are a convenience: every dead letter is kept in ClickHouse whatever
    happens here, so a copy that cannot be delivered is logged, not retried forever."""

    def __init__(self, brokers: str, topic: str) -> None:
        self.producer = Producer({"bootstrap.servers": brokers, "log_level": 0,
                                  "message.timeout.ms": 30_000})
        self.topic = topic

    def write_batch(self, items: list[Decoded]) -> None:
        for decoded in items:
            for dead in decoded.dead:
                self.producer.produce(
                    self.topic, value=dead.payload, on_delivery=self._delivered,
                    headers=[("reason", dead.reason.encode()),
                             ("source", f"{dead.source}@{dead.position}".encode())])
        self._flush()

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            log.warning("dead letter %s not copied to Kafka topic %r: %s (it is kept in "
                        "ClickHouse)", dict(message.headers() or [])["source"].decode(), self.topic,
                        error.str())

    def _flush(self) -> None:
        left = self.producer.flush(35)
        if left:
            log.warning("%d dead letters not copied to Kafka topic %r yet (they are kept "
                        "in ClickHouse)", left, self.topic)

    def close(self) -> None:
        self._flush()


class DeadLetterTopicSink(DynamicSink[Decoded]):
    """Copies every dead-lettered record to a Kafka topic, the reason in a header."""

    def __init__(self, brokers: str, topic: str = DEAD_LETTER_TOPIC) -> None:
        list_partitions(brokers, (topic,))  # missing: said now, not once per dead letter
        self.brokers = brokers
        self.topic = topic

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _DeadLetterPartition:
        return _DeadLetterPartition(self.brokers, self.topic)
