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
