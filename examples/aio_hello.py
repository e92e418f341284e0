"""zrpc on asyncio: server and client in one process. Run: python examples/aio_hello.py"""
import asyncio

import zrpc.aio


class Hello:
    async def add(self, a: int, b: int) -> int:
        """async def methods are awaited."""
        return a + b

    async def count(self, n: int):
        """Async generators stream, item by item, under the client's credit."""
        for i in range(n):
            yield i

    def shout(self, text: str) -> str:
        """Plain functions run in the server's thread pool, never blocking the loop."""
        return text.upper()

    async def nap(self, seconds: float) -> float:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            print("nap cancelled")  # the client's task was cancelled: so is this call
            raise
        return seconds


async def main() -> None:
    async with zrpc.aio.Server(Hello()) as server:
        endpoint = server.bind("tcp://127.0.0.1:*")
        server.start()
        async with zrpc.aio.Client(endpoint, timeout=5) as client:
            print(await client.add(1, 2))
            async for item in client.count(5):
                print(item)
            print(await client.shout("hello"))
            print(sum(await asyncio.gather(*[client.add(i, i) for i in range(1000)])))
            try:
                await client.with_options(timeout=0.2).nap(10)
            except zrpc.aio.TimeoutExpired as exc:
                print("timeout:", exc)
            # The cancel reached the server before this call, which it serves in order.
            await client.add(0, 0)


if __name__ == "__main__":
    asyncio.run(main())
