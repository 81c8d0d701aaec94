"""The local server's defaults, each with where its number comes from."""

from __future__ import annotations

#: Environment variable the CLI reads the server's API key from, so it stays out of `ps`.
API_KEY_ENV_VAR = "CHROMA_SPARSE_EF_SERVER_API_KEY"

#: Loopback only unless asked: a dev server must not be reachable from the network.
DEFAULT_HOST = "127.0.0.1"
#: The port FastAPI/uvicorn tutorials (and Chroma's own dev server) use.
DEFAULT_PORT = 8000

#: Longest text accepted, in characters. BGE-M3, the longest-context sparse model in the
#: catalog, reads 8,192 tokens (about 35,000 English characters); 100,000 leaves room
#: for other scripts while bounding the work one text can cause.
DEFAULT_MAX_TEXT_CHARS = 100_000
#: Largest request body, in bytes. 100 texts (the service's cap) of 100,000 ASCII
#: characters plus JSON framing is about 10 MB; 16 MiB is that with headroom, and it is
#: checked from Content-Length and again while reading, so a huge body never sits in memory.
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024

#: Response header naming the backend that produced the vectors: the local server never
#: lets BM25 weights pass for SPLADE vectors unannounced.
BACKEND_HEADER = "x-chroma-sparse-ef-backend"
#: Millisecond twin of Retry-After, as the hosted OpenAI-style services send it and as
#: this package's client reads it.
RETRY_AFTER_MS_HEADER = "retry-after-ms"

#: Distinct tokens the rate limiter remembers before forgetting the least recently seen
#: one: bounds its memory when clients invent tokens (any token is accepted without a key).
MAX_RATE_LIMIT_KEYS = 10_000

#: Distinct words whose stems the BM25 backend memoises for token counting. English
#: corpora rarely exceed this many distinct words; at ~100 bytes an entry it is ~6 MB.
STEM_CACHE_SIZE = 65_536

#: Longest quoted header value in an error message (model names are ~40 characters).
MAX_QUOTED_HEADER = 80

# Limits against slow or hostile clients. Each is a field of `ServerLimits`, shown by
# `serve --help` and `/healthz`.

#: Open connections at once; more are closed as soon as they are accepted. The client's
#: default is 16 requests in flight, so this serves 8 such clients at full speed, and
#: at 16 MiB per body it bounds what bodies alone could hold.
DEFAULT_MAX_CONNECTIONS = 128
#: Seconds a connection may take to send a request's headers (from connect, or from the
#: previous response on a kept-alive connection) before it is closed. Apache's
#: mod_reqtimeout allows 20 s, nginx 60 s, for clients across the Internet; headers from
#: a loopback client take well under a millisecond, so 10 s only ever catches stallers.
DEFAULT_HEADER_TIMEOUT_S = 10.0
#: Largest request head (request line and headers), in bytes; larger closes the
#: connection. h11's own default; this API's headers are a few hundred bytes.
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
#: Seconds to receive a whole body once the headers are in; slower gives 408. The
#: largest body (16 MiB) at 1 MB/s, a slow link, takes 16 s: 30 s leaves room.
DEFAULT_BODY_TIMEOUT_S = 30.0
#: Seconds an idle kept-alive connection stays open: uvicorn's default, and httpx's
#: pool forgets idle connections after the same 5 s.
DEFAULT_KEEP_ALIVE_S = 5.0
#: Request bodies held in memory at once, all requests together, in bytes; a request
#: that would go above it gets 503 with Retry-After (the client retries). Four bodies of
#: the largest size: the server's memory stays bounded whatever clients send.
DEFAULT_MAX_BUFFERED_BYTES = 64 * 1024 * 1024
#: Large bodies (over 64 KiB) parsed at once, each in a worker thread so the event loop
#: (and `/healthz`) never waits on them. Parsing is CPU-bound and the GIL serialises it anyway: two keeps
#: one parse going while another request is handed off.
DEFAULT_MAX_PARALLEL_PARSES = 2
#: JSON strings a body may hold besides its texts. The spec's body has three keys and
#: two short strings beside `texts`; unknown fields are allowed, but no client sends
#: thousands. Counting quotes (a byte count, no parsing) then refuses a body of millions
#: of tiny strings before any of them is built.
MAX_OTHER_JSON_STRINGS = 1_000
