"""One-way events in one process: a publisher with two subscribers, then a pusher with two pullers.

Run: python examples/events.py
"""
from gevent.event import Event

import zrpc


def main() -> None:
    # Publish/subscribe: every subscriber gets every event, keyword arguments included.
    done, alerted = Event(), Event()

    def alert(text):
        print("alerts:", text)
        alerted.set()
    with zrpc.Publisher() as publisher:
        endpoint = publisher.bind("tcp://127.0.0.1:*")

        class Dashboard:
            def __init__(self, name):
                self.name, self.seen = name, 0

            def price(self, symbol, value, currency="EUR"):
                self.seen += 1
                print(f"{self.name}: {symbol} {value} {currency}")
                if self.seen == 2:
                    done.set()

        with zrpc.Subscriber(Dashboard("left"), names=["price"], pool_size=1) as left, \
                zrpc.Subscriber({"alert": alert}, names=["alert"]) as alerts:
            for subscriber in (left, alerts):
                subscriber.connect(endpoint)
                subscriber.start()
            # A subscriber misses what is sent before its subscription arrives: wait for both.
            publisher.wait_for_subscribers(2, timeout=10)
            publisher.price("ACME", 12.5)
            publisher.price("INIT", 3, currency="USD")
            done.wait(10)  # subscribers run independently: wait for the dashboard before going on
            publisher.alert("market closes in 5 minutes")  # "left" skips it: it listens to prices only
            alerted.wait(10)
            print("left missed", left.dropped, "events")

    # Push/pull: each event goes to one puller; a pusher with no puller raises after its timeout.
    handled = []
    finished = Event()

    def resize(worker, image):
        handled.append((worker, image))
        if len(handled) == 6:
            finished.set()

    with zrpc.Pusher(timeout=5) as pusher:
        endpoint = pusher.bind("tcp://127.0.0.1:*")
        workers = [zrpc.Puller({"resize": lambda image, w=w: resize(w, image)}) for w in ("a", "b")]
        for worker in workers:
            worker.connect(endpoint)
            worker.start()
        for i in range(6):
            pusher.resize(f"img{i}.png")
        finished.wait(10)
        print("resized", sorted(image for _, image in handled))
        for worker in workers:
            worker.close()
    with zrpc.Pusher(timeout=0.2) as lonely:
        lonely.connect("tcp://127.0.0.1:9")  # nobody pulls there
        try:
            lonely.resize("lost.png")
        except zrpc.TimeoutExpired as exc:
            print("lonely pusher:", exc)


if __name__ == "__main__":
    main()
