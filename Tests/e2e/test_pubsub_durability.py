"""Durability of `pubsub.sqlite` under `kill -9`, end to end with the official SDK: publisher threads publish
numbered events (`publish_event`) and record every publish the daemon acknowledged, while streaming subscribers
(`client.subscribe`, then `subscribe_with_handler`) of two app ids receive and acknowledge them; hangard is killed
with SIGKILL in the middle of it and restarted on the same data directory. Every acknowledged publish must reach
every subscribing app id (duplicates are allowed by at-least-once delivery: they are counted and printed), and what
a subscriber held unanswered at the kill must be delivered again after the restart."""

from __future__ import annotations

import queue
import threading
import time

from tenancy_files import STORE, component_yaml, tenant_yaml

PUBSUB = "pubsub"
TOPIC = "durability"
PUBLISHERS = 4
KILL_AFTER = 300  # acknowledged publishes before the kill
HOLD = 5  # events the first `orders` subscriber leaves unanswered at the kill
WAIT = 120  # seconds to collect after the restart: a bound against hangs, not a timing assertion


class Collector:
    """Reads a `client.subscribe` subscription on a daemon thread and records each event's data. Answers SUCCESS,
    except that it leaves `hold` events unanswered once it has answered `hold_after` (they are still pending for
    its app id when the daemon dies)."""

    def __init__(self, subscription, seen: queue.Queue, hold: int = 0, hold_after: int = 0):
        self.subscription = subscription
        self.seen = seen
        self.hold = hold
        self.hold_after = hold_after
        self.held: list[str] = []
        self.answered = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                message = self.subscription.next_message()
            except Exception:
                return  # closed, or the daemon is gone
            if message is None or not message.id():
                continue
            data = message.raw_data().decode()
            self.seen.put(data)
            if self.answered >= self.hold_after and len(self.held) < self.hold:
                self.held.append(data)
                continue
            try:
                self.subscription.respond_success(message)
                self.answered += 1
            except Exception:
                return

    def close(self) -> None:
        try:
            self.subscription.close()
        except Exception:
            pass


def drain(seen: queue.Queue) -> list[str]:
    items = []
    while True:
        try:
            items.append(seen.get_nowait())
        except queue.Empty:
            return items


def publisher(client, number: int, acked: list[str], stop: threading.Event) -> None:
    """Publishes `p<number>-<n>` until stopped or the daemon dies; records each one the daemon acknowledged."""
    n = 0
    while not stop.is_set():
        data = f"p{number}-{n}"
        try:
            client.publish_event(PUBSUB, TOPIC, data, data_content_type="text/plain")
        except Exception:
            return  # killed: this publish was never acknowledged
        acked.append(data)
        n += 1


def start(factory, root):
    tenancy, resources = root / "tenancy", root / "resources"
    return factory.start(root, tenancy=tenancy, resources=resources,
                         apps=(("team-a", "orders"), ("team-a", "billing"), ("team-a", "audit")))


def test_kill_9_loses_no_acknowledged_publish_and_redelivers_what_was_unanswered(hangard_factory):
    root = hangard_factory.root()
    (root / "tenancy").mkdir()
    (root / "resources").mkdir()
    (root / "tenancy" / "a.yaml").write_text(
        tenant_yaml("team-a", [{"appId": "orders"}, {"appId": "billing"}, {"appId": "audit"}]))
    # The examples' settings, with a short trim interval so that trimming runs during the test too.
    (root / "resources" / "pubsub.yaml").write_text(component_yaml(
        PUBSUB, "pubsub.sqlite", {"connectionString": "pubsub.db", "cleanupInterval": "1s"}))
    (root / "resources" / "store.yaml").write_text(component_yaml(STORE, "state.in-memory"))
    daemon = start(hangard_factory, root)

    # Two competing subscribers of `orders` (one holds some events unanswered) and one of `audit`: every event
    # must reach both app ids. The subscriptions exist (their cursors) before anything is published.
    seen = {"orders": queue.Queue(), "audit": queue.Queue()}
    orders_client = daemon.client("team-a", "orders")
    holder = Collector(orders_client.subscribe(PUBSUB, TOPIC), seen["orders"], hold=HOLD, hold_after=20)
    collectors = [
        holder,
        Collector(daemon.client("team-a", "orders").subscribe(PUBSUB, TOPIC), seen["orders"]),
        Collector(daemon.client("team-a", "audit").subscribe(PUBSUB, TOPIC), seen["audit"]),
    ]

    acked: list[list[str]] = [[] for _ in range(PUBLISHERS)]
    stop = threading.Event()
    clients = [daemon.client("team-a", "billing") for _ in range(PUBLISHERS)]
    threads = [threading.Thread(target=publisher, args=(clients[number], number, acked[number], stop), daemon=True)
               for number in range(PUBLISHERS)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 90
    while (sum(map(len, acked)) < KILL_AFTER or len(holder.held) < HOLD) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sum(map(len, acked)) >= KILL_AFTER and len(holder.held) == HOLD, (
        f"the publishers and subscribers did not get going: {sum(map(len, acked))} acknowledged, "
        f"{len(holder.held)} held\n{daemon.log[-3000:]}")
    daemon.kill()  # SIGKILL, publishers and subscribers in full flight
    stop.set()
    for thread in threads:
        thread.join(timeout=20)
    for collector in collectors:
        collector.close()
    acknowledged = {data for published in acked for data in published}
    held = list(holder.held)
    before = {app: drain(q) for app, q in seen.items()}

    # The same data directory: the log, the cursors and the pending (unanswered) events are in pubsub.db.
    restarted = start(hangard_factory, root)
    after = {"orders": [], "audit": []}
    lock = threading.Lock()

    def on_orders(message):
        from dapr.clients.grpc._response import TopicEventResponse

        with lock:
            after["orders"].append(message.raw_data().decode())
        return TopicEventResponse("success")

    close_orders = restarted.client("team-a", "orders").subscribe_with_handler(PUBSUB, TOPIC, on_orders)
    audit = Collector(restarted.client("team-a", "audit").subscribe(PUBSUB, TOPIC), seen["audit"])
    try:
        def missing(app: str) -> set[str]:
            with lock:
                received = set(before[app]) | set(after[app])
            return acknowledged - received

        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            after["audit"] += drain(seen["audit"])
            with lock:
                held_back = set(held) <= set(after["orders"])
            if not missing("orders") and not missing("audit") and held_back:
                break
            time.sleep(0.05)
        after["audit"] += drain(seen["audit"])

        for app in ("orders", "audit"):
            with lock:
                deliveries = before[app] + after[app]
            duplicates = len(deliveries) - len(set(deliveries))
            unconfirmed = set(deliveries) - acknowledged  # published as the daemon died: committed, unanswered
            print(f"{app}: {len(acknowledged)} acknowledged publishes, {len(deliveries)} deliveries "
                  f"({len(before[app])} before the kill, {len(after[app])} after), {duplicates} duplicates, "
                  f"{len(unconfirmed)} delivered whose publish was never acknowledged")
            assert not missing(app), f"{app} never received {sorted(missing(app))[:20]}"
            assert all(d.startswith("p") and "-" in d for d in deliveries), "only what was published"
        with lock:
            assert set(held) <= set(after["orders"]), "every event unanswered at the kill is delivered again"
        # Each publisher's acknowledged events are consecutive: the ones after a gap were never acknowledged.
        for number, published in enumerate(acked):
            assert published == [f"p{number}-{n}" for n in range(len(published))]

        # The restarted daemon serves as before.
        restarted.client("team-a", "billing").publish_event(PUBSUB, TOPIC, "after-restart")
        restarted.client("team-a", "billing").save_state(STORE, "alive", "yes")
        assert restarted.client("team-a", "billing").get_state(STORE, "alive").data == b"yes"
    finally:
        close_orders()
        audit.close()
