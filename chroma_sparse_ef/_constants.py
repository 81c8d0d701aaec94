"""Defaults, each with where its number comes from. One place, so nothing drifts."""

from __future__ import annotations

#: Hosted service, as chromadb's own clients default to it.
DEFAULT_BASE_URL = "https://embed.trychroma.com"
#: The environment variable chromadb reads for the service URL (`get_chroma_embed_url`).
BASE_URL_ENV_VAR = "CHROMA_EMBED_URL"
#: The environment variable chromadb's Chroma Cloud functions read for the key.
DEFAULT_API_KEY_ENV_VAR = "CHROMA_API_KEY"
#: Path of the endpoint, from `spec/embed_sparse.openapi.yaml`.
EMBED_SPARSE_PATH = "/embed_sparse"

#: The service answers 413 above 100 texts per request (chroma-core/chroma PR #7234).
MAX_BATCH_SIZE = 100
DEFAULT_BATCH_SIZE = MAX_BATCH_SIZE
#: Requests in flight per call. With 100 ms of service latency, 2,048 texts (21 batches)
#: take 3 rounds at 8 and 2 rounds at 16: 0.62 s vs 0.52 s against the local server, whose
#: own BM25 work is 0.37 s of that (bench/bench_embedding_function.py). After a 429 the
#: shared throttle (`_throttle.py`) paces requests, so fewer are in flight.
DEFAULT_MAX_CONCURRENCY = 16
#: Retries after the first attempt (openai-python and stamina also default to 2).
DEFAULT_MAX_RETRIES = 2
#: Seconds one attempt may take, connect to last byte (a deadline, not httpx's per-read
#: timeout); chromadb's built-in uses 60 for a whole call.
DEFAULT_TIMEOUT = 60.0
#: Exponential backoff, 0.5 s doubling to 8 s, each wait cut by up to 25 % at random
#: (openai-python's numbers).
INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
#: A Retry-After hint longer than this raises RateLimitError at once instead of sleeping.
MAX_RETRY_AFTER = 60.0

#: Header names and the status codes that are retried, from the spec and issue #2.
TOKEN_HEADER = "x-chroma-token"
MODEL_HEADER = "x-chroma-embedding-model"
RETRYABLE_STATUS_CODES = frozenset({408, 429, 500, 502, 503, 504})
#: Sent as `x-chroma-token` to a keyless server on a loopback address: the spec makes the
#: header required, and this value is not a secret.
LOCAL_PLACEHOLDER_TOKEN = "local-no-key"

#: Name under which the function is registered with chromadb. Persisted in users'
#: collection configurations: never rename it.
EMBEDDING_FUNCTION_NAME = "chroma_sparse_ef"

#: Adaptive throttling (`_throttle.py`), the shape of the AWS SDKs' "adaptive" retry mode.
#: After a 429 the pacing rate becomes 0.7x what was too much: the SDKs' CUBIC beta.
THROTTLE_BETA = 0.7
#: Each success adds 2 % of the rate set at the last decrease: 15 successes climb back
#: from 0.7x to 1x, so a steady job meets about one 429 per 15 requests at most while
#: its pace averages about 0.85x of the limit (the sawtooth between 0.7x and 1x).
RATE_INCREASE_STEP = 0.02
#: Successes of the last second are the estimate of what the service allows.
RATE_WINDOW = 1.0
#: Never pace slower than one request per 10 s: a lower estimate is noise, and the
#: service's own hints still pause everything as long as it asks.
MIN_THROTTLE_RATE = 0.1

#: Connect timeout unless an `httpx.Timeout` says otherwise (openai-python's is 5 s too):
#: a host that does not accept a connection in 5 s is down, and the retry comes sooner.
DEFAULT_CONNECT_TIMEOUT = 5.0

#: Response cap (issue 9): reading stops past RESPONSE_BYTES_BASE + texts x
#: RESPONSE_BYTES_PER_TEXT bytes and the call raises InvalidResponseError. The largest
#: real answer for one text is BGE-M3 at its 8,192-token limit with every token distinct
#: and labelled: about 8,192 x 45 bytes = 0.37 MB (index, float and label as JSON);
#: SPLADE's whole 30,522-term vocabulary, which no text activates, would be about
#: 0.8 MB without labels. 1 MiB a text is above both, and 100 texts fit in 100 MiB.
RESPONSE_BYTES_PER_TEXT = 1024 * 1024
#: Room for `num_tokens`, the envelope and whitespace.
RESPONSE_BYTES_BASE = 64 * 1024
#: An error body is read up to 64 KiB: messages quote its first 300 characters.
MAX_ERROR_BODY_BYTES = 64 * 1024
