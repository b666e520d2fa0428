"""Benchmark of the ryx-desktop proxy against a fast fake upstream.

* :mod:`bench.upstream` a fake OpenAI upstream on raw ``asyncio.Protocol`` that streams hundreds
  of thousands of SSE chunks per second (not the test fake: that one is built to be faithful, this
  one to be fast).
* :mod:`bench.load` a load generator: N concurrent keep-alive clients, per-request latency, time
  to first token, streamed chunks and errors.
* :mod:`bench.bare_proxy` the reference: the barest aiohttp.web + aiohttp client proxy.
* :mod:`bench.run` runs the workloads against the upstream directly, through
  ``ryx-desktop serve`` and through the bare proxy, interleaved, and prints the table.

See ``bench/README.md``.
"""
