"""`learnd demo --label-delay 5s`: a client that asks for predictions, and labels that come later.

For each event of the drifting stream the client asks the daemon's socket for a prediction with
the event's id (so serving logs it to the prediction topic), and sends the event's label to the
label topic ``delay`` seconds later. The daemon joins the two (``labels.mode = "join"``).
"""

from __future__ import annotations

import heapq
import re
import threading
import time

import orjson
from kafka import KafkaProducer

from learnd.adapters.serving.client import LearndClient
from learnd.daemon.events.synthetic import DriftingSEA

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")


def parse_delay(text: str) -> float:
    """Seconds from ``5s``, ``500ms``, ``2m`` or ``5``.

    >>> parse_delay("5s"), parse_delay("500ms"), parse_delay("2m"), parse_delay("1.5")
    (5.0, 0.5, 120.0, 1.5)
    """
    m = _DURATION.match(text)
    if m is None:
        raise ValueError(f"--label-delay {text!r}: give a duration such as 5s, 500ms or 2m")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[m.group(2)]
    return float(m.group(1)) * scale


class DelayedLabels(threading.Thread):
    """Queries a prediction per event at ``rate``/s; sends each label ``delay`` s later."""

    def __init__(
        self,
        bootstrap: str,
        labels_topic: str,
        address: tuple[str, int],
        rate: float,
        delay: float,
        switch_every: int,
        seed: int = 42,
    ):
        super().__init__(name="learnd-demo-client", daemon=True)
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks="all")
        self.topic = labels_topic
        self.address = address
        self.rate = rate
        self.delay = delay
        self.stream = DriftingSEA(seed=seed, switch_every=switch_every)
        self.sent = 0  # predictions asked for
        self.labels_sent = 0
        self.concept = 0
        self.stop_event = threading.Event()

    def run(self) -> None:
        due: list[tuple[float, int, bytes]] = []
        start = time.monotonic()
        with LearndClient.tcp(*self.address) as client:
            for event in self.stream:
                if self.stop_event.is_set():
                    break
                self.concept = event.pop("concept")
                eid = self.sent
                client.request({"op": "predict", "features": event["features"], "id": eid})
                label = orjson.dumps({"id": eid, "label": event["label"], "ts": time.time()})
                heapq.heappush(due, (time.monotonic() + self.delay, eid, label))
                self.sent += 1
                now = time.monotonic()
                while due and due[0][0] <= now:
                    self.producer.send(self.topic, heapq.heappop(due)[2])
                    self.labels_sent += 1
                ahead = self.sent / self.rate - (now - start)
                if ahead > 0.005:
                    time.sleep(ahead)
        self.producer.flush(10)
        self.producer.close(5)
