"""The provider call ledger: the one way any outbound provider call is made (generation, background removal,
LLM, speech). `ledger.Ledger.call` runs a connector's single attempt under the provider's concurrency limit,
retries what may succeed later (exponential backoff with full jitter, Retry-After honoured), stops on cancel,
refuses calls the project's budget cannot pay for, records every attempt in `provider_calls` and the cost of each
successful call, once, in `cost_events`."""
