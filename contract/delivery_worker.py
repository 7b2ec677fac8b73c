"""Handling QoS 1 messages off paho's network thread, acknowledging each once handled.

A `DeliveryWorker` takes the messages of one topic filter from an `MqttLink`. The network
thread only appends each to a bounded queue; the worker's own thread calls the handler,
then acknowledges the message to the broker. So a slow or failing handler never holds up
the connection: publishing, its confirmations and other subscriptions keep flowing.

- **Handled, then acknowledged.** A handler that returns has handled the message (done,
  stored, or deliberately dropped as bad input); only then is it acknowledged.
- **Retried only when the handler says so.** A handler that raises `RetryLaterError`
  could not handle the message yet (its database is away): it is called again for the
  same message with capped doubling back-off (0.5 s up to `retry_max_s`), logged once at
  ERROR then at DEBUG, INFO when it works again, and nothing behind the message is taken
  meanwhile (messages are handled in the order they came; `stuck` says so).
- **Any other exception drops the message.** It can never be handled (its content is
  refused, or the handler has a bug): it is logged (with its traceback, once at ERROR
  then at DEBUG until a message is handled again), counted in `dropped_total` and
  `on_dropped`, and acknowledged, so one bad message never stops the queue and is not
  delivered again.
- **Full queue: stop reading.** The link is built with `receive_maximum` equal to the
  queue's capacity, so the broker never has more unacknowledged messages out to us than
  the queue holds; beyond that it holds them back (MQTT 5 flow control) while the
  network thread keeps working. A queued message from an earlier connection that the
  broker will deliver again (the link resumed its session) is skipped, not handled
  twice. When the broker lost the session while the handler was failing, the old
  messages are kept (their only copy) beside the new ones, up to twice the capacity;
  only past that (sessions lost again and again while the handler kept failing) is a
  new message left unacknowledged and not queued, counted in `refused_total` and
  logged, and the broker delivers it again after the next reconnect.
- **Stopping** (`close()`): nothing more is taken; a message being handled is finished
  and acknowledged, one being retried is given up. The rest stays unacknowledged, and
  the broker's persistent session delivers it again to the next run.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable

from paho.mqtt.client import Client, MQTTMessage

from contract.failure_log import FailureLog
from contract.mqtt import Delivery, MqttLink

log = logging.getLogger(__name__)

# Called with (topic, payload) on the worker's thread; raises RetryLaterError when the
# message could not be handled yet and should be tried again.
Handler = Callable[[str, bytes], None]


class RetryLaterError(Exception):
    """Raised by a handler that could not handle a message now but will be able to
    (its database is unavailable): the same message is tried again, before any other."""


class DeliveryWorker:
    def __init__(
        self,
        link: MqttLink,
        topic_filter: str,
        handle: Handler,
        *,
        name: str,
        retry_max_s: float = 30.0,
        on_dropped: Callable[[], None] = lambda: None,
    ) -> None:
        if link.receive_maximum is None:
            raise ValueError("a DeliveryWorker's link needs a receive_maximum (its capacity)")
        self._link = link
        self._handle = handle
        self._name = name
        self._capacity = link.receive_maximum
        self._retry_max_s = retry_max_s
        self._on_dropped = on_dropped
        self._items: deque[Delivery] = deque()
        self._in_hand = 0  # 1 from taking a message until it is acknowledged or given up
        self._changed = threading.Condition()
        self._closed = False
        self._failures = FailureLog(log)
        self._drops = FailureLog(log)
        self._full = FailureLog(log)  # network thread only
        self.refused_total = 0
        self.dropped_total = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        link.client.message_callback_add(topic_filter, self._offer)

    def __len__(self) -> int:
        """Messages taken in and not finished: queued, or being handled and acknowledged."""
        return len(self._items) + self._in_hand

    @property
    def stuck(self) -> bool:
        """True while the message in hand has failed and waits to be tried again:
        everything behind it waits too."""
        return self._failures.failing

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        """Takes no more messages (safe from the handler itself); returns at once."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Closes, then waits up to `timeout_s` for the message being handled."""
        self.close()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    # -- paho's network thread: never waits -----------------------------------------------

    def _offer(self, _client: Client, _userdata: object, msg: MQTTMessage) -> None:
        delivery = Delivery(msg.topic, bytes(msg.payload), msg.mid, msg.qos, self._link.generation)
        with self._changed:
            if len(self._items) >= self._capacity and self._full_for(delivery):
                self.refused_total += 1
                self._full.failed(
                    "%s queue full (%d): a message is left to the broker until the next reconnect",
                    self._name,
                    self._capacity,
                )
                return
            self._items.append(delivery)
            self._changed.notify()
        if self._full.recover():
            log.info("%s queue takes messages again", self._name)

    def _full_for(self, delivery: Delivery) -> bool:
        """Whether a full queue must leave `delivery` to the broker. Copies the broker
        will deliver again go first. Messages from a connection whose session was lost
        are their only copy and are kept, but only messages of the current connection
        count against the capacity: the broker bounds those (receive maximum), and a
        message left unacknowledged would hold one of its slots until a reconnect, so
        refusing it would starve the connection. Twice the capacity bounds the rest."""
        redelivered = self._link.will_redeliver
        self._items = deque(item for item in self._items if not redelivered(item))
        current = sum(1 for item in self._items if item.generation == delivery.generation)
        return current >= self._capacity or len(self._items) >= 2 * self._capacity

    # -- the worker's thread ----------------------------------------------------------------

    def _run(self) -> None:
        while (delivery := self._next()) is not None:
            # Skipped when its copy from the broker is queued behind it.
            if not self._link.will_redeliver(delivery) and self._handled(delivery):
                self._link.ack(delivery)
            self._in_hand = 0

    def _next(self) -> Delivery | None:
        with self._changed:
            while not self._items and not self._closed:
                self._changed.wait()
            if self._closed:
                return None
            self._in_hand = 1
            return self._items.popleft()

    def _handled(self, delivery: Delivery) -> bool:
        """Calls the handler until it returns (True); False if closed or the broker will
        deliver the message again while it was still failing."""
        delay_s = 0.5
        while True:
            try:
                self._handle(delivery.topic, delivery.payload)
            except RetryLaterError:
                self._failures.failed(
                    "%s: handling a message from %s failed; retrying",
                    self._name,
                    delivery.topic,
                    exc_info=True,
                )
            except Exception:  # the top of this thread: never handled, so never retried
                self._failures.recover()
                self.dropped_total += 1
                self._on_dropped()
                self._drops.failed(
                    "%s: a message from %s cannot be handled; dropped",
                    self._name,
                    delivery.topic,
                    exc_info=True,
                )
                return True
            else:
                if any([self._failures.recover(), self._drops.recover()]):
                    log.info("%s: handling messages again", self._name)
                return True
            with self._changed:
                if self._changed.wait_for(lambda: self._closed, delay_s):
                    return False
            if self._link.will_redeliver(delivery):
                return False
            delay_s = min(delay_s * 2, self._retry_max_s)
