"""Load generator for OpenAI-compatible servers: `herd serve` and llama.cpp's `llama-server`
side by side (tools/bench/serve_side_by_side.sh runs both).

For each concurrency level C, C client streams each send streamed chat completions one after
another until R requests are done: every request a user message from a fixed list, `max_tokens`
tokens with `ignore_eos` (so every reply has the same length on both servers), temperature 0.
Measured per level: total generated tokens per second (wall time from the first request to the
last answer), time to first token (request sent → first content chunk) and inter-token latency
(between consecutive content chunks of a stream), p50 and p99. Prints one JSON line per level.

    python tools/bench/serve_load.py --base-url http://127.0.0.1:8080/v1 --levels 1 4 16 64
"""

import argparse
import asyncio
import json
import time

import aiohttp

PROMPTS = [
    "Write a story about a lighthouse keeper.",
    "Explain how a steam engine works.",
    "Describe a walk through a forest in autumn.",
    "Tell me about the history of bread.",
    "What makes a good teacher? Answer at length.",
    "Write a letter to a friend about your holiday.",
    "Describe the planets of the solar system.",
    "How do bees make honey?",
]


def percentile(values, q):
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


async def one_request(session, url, prompt, max_tokens):
    body = {
        "model": "bench",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    sent = time.perf_counter()
    first = None
    last = None
    gaps = []
    chunks = 0
    async with session.post(url, json=body) as response:
        response.raise_for_status()
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            data = line[6:]
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            choices = chunk.get("choices") or []
            if not choices or not choices[0].get("delta", {}).get("content"):
                continue
            now = time.perf_counter()
            if first is None:
                first = now - sent
            else:
                gaps.append(now - last)
            last = now
            chunks += 1
    return first, gaps, chunks


async def level(url, concurrency, requests, max_tokens):
    timeout = aiohttp.ClientTimeout(total=3600)
    # A new connection per request: llama-server closes kept-alive connections that aiohttp
    # would otherwise reuse.
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=True)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        queue = asyncio.Queue()
        for i in range(requests):
            queue.put_nowait(PROMPTS[i % len(PROMPTS)])
        ttfts, gaps, tokens = [], [], 0

        async def client():
            nonlocal tokens
            while not queue.empty():
                prompt = queue.get_nowait()
                first, request_gaps, chunks = await one_request(session, url, prompt, max_tokens)
                if first is not None:
                    ttfts.append(first)
                gaps.extend(request_gaps)
                tokens += chunks

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        wall = time.perf_counter() - start
    return {
        "concurrency": concurrency,
        "requests": requests,
        "tokens": tokens,
        "seconds": round(wall, 3),
        "tokens_per_second": round(tokens / wall, 2),
        "ttft_p50_ms": round(1000 * percentile(ttfts, 50), 1),
        "ttft_p99_ms": round(1000 * percentile(ttfts, 99), 1),
        "itl_p50_ms": round(1000 * percentile(gaps, 50), 2),
        "itl_p99_ms": round(1000 * percentile(gaps, 99), 2),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--requests-per-stream", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--label", default="")
    args = parser.parse_args()
    url = args.base_url.rstrip("/") + "/chat/completions"
    # One short warm-up request.
    asyncio.run(level(url, 1, 1, 8))
    for concurrency in args.levels:
        requests = max(concurrency * args.requests_per_stream, 8)
        result = asyncio.run(level(url, concurrency, requests, args.max_tokens))
        result["server"] = args.label
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
