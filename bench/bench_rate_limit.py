"""A bulk job against a rate-limited server: adaptive throttling vs the old behaviour.

The local server (`chroma-sparse-ef serve --rate-limit 5/s`, its own process) allows
5 requests/s per token, in bursts of 5, and answers 429 with Retry-After beyond that.
4,000 texts (40 requests of 100) are embedded, sync and async, by:

- defaults: the shared adaptive throttle (issue 8);
- old: the throttle switched off (the private `_core.throttle.enabled`), every worker
  retrying on its own, as before issue 8;
- old, max_retries=20: the workaround notebook 03 used to need.

Each run uses its own token, so each starts with a full bucket. The best a client can do
is 5 requests at once (the burst) then 5/s: 40 requests in 7 s, i.e. slightly above the
limit's throughput (500 texts/s) over so short a job.

Run: python bench/bench_rate_limit.py [--texts 4000] [--rate 5/s]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _local_server import server_process

from chroma_sparse_ef import ChromaSparseEmbeddingFunction, EmbeddingError
from chroma_sparse_ef._corpus import stdlib_docstrings


def corpus(n: int) -> list[str]:
    docs = [d.text for d in stdlib_docstrings()]
    return [f"{i} {text}" for i, text in zip(range(n), itertools.cycle(docs), strict=False)]


def run(
    url: str, texts: list[str], token: str, *, throttle: bool, retries: int | None, mode: str
) -> dict[str, object]:
    kwargs: dict[str, object] = {} if retries is None else {"max_retries": retries}
    ef = ChromaSparseEmbeddingFunction(base_url=url, api_key=token, **kwargs)  # type: ignore[arg-type]
    ef._core.throttle.enabled = throttle
    start = time.perf_counter()
    outcome = "ok"
    try:
        if mode == "sync":
            ef(texts)
        else:
            asyncio.run(_arun(ef, texts))
    except EmbeddingError as exc:
        outcome = f"failed: {type(exc).__name__}"
    seconds = time.perf_counter() - start
    usage = ef.usage
    ef.close()
    return {
        "seconds": seconds,
        "outcome": outcome,
        "texts": usage.texts,
        "requests": usage.requests,
        "429s": usage.rate_limited,
        "throttled_s": usage.throttled_seconds,
    }


async def _arun(ef: ChromaSparseEmbeddingFunction, texts: list[str]) -> None:
    async with ef:
        await ef.acall(texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--texts", type=int, default=4000)
    parser.add_argument("--rate", default="5/s")
    args = parser.parse_args()
    per_second = float(args.rate.split("/")[0])
    limit_tps = per_second * 100
    texts = corpus(args.texts)
    print(f"{args.texts} texts, server limit {args.rate} x 100 texts = {limit_tps:g} texts/s")
    print(f"{'client':<28}{'mode':<7}{'outcome':<26}{'s':>7}{'share':>8}{'429s':>6}{'reqs':>6}")
    with server_process("--rate-limit", args.rate) as url:
        cases = [
            ("defaults (throttle)", True, None),
            ("old (no throttle)", False, None),
            ("old, max_retries=20", False, 20),
        ]
        for n, ((name, throttle, retries), mode) in enumerate(
            itertools.product(cases, ("sync", "async"))
        ):
            r = run(url, texts, f"bench-{n}", throttle=throttle, retries=retries, mode=mode)
            seconds = float(r["seconds"])  # type: ignore[arg-type]
            share = (int(r["texts"]) / seconds) / limit_tps if r["outcome"] == "ok" else 0.0  # type: ignore[call-overload]
            print(
                f"{name:<28}{mode:<7}{r['outcome']!s:<26}{seconds:>7.2f}{share:>8.0%}"
                f"{r['429s']!s:>6}{r['requests']!s:>6}"
            )
            # Let the bucket of the next token be as full as this one's was.
            time.sleep(1.0)


if __name__ == "__main__":
    main()
