"""Prometheus metrics: request counters plus speculative-decoding counters named after vLLM's
(`spec_decode_num_drafts`, `..._num_draft_tokens`, `..._num_accepted_tokens`,
`..._num_accepted_tokens_per_pos{position}`), read live from the engine's cumulative statistics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

PREFIX = "nextn:"


class EngineCollector:
    def __init__(self, engine):
        self.engine = engine

    def collect(self):
        st = self.engine.stats
        for name, value, doc in (
            ("prompt_tokens", st.prompt_tokens, "Prompt tokens processed"),
            ("generation_tokens", st.n_generated, "Tokens generated"),
            ("spec_decode_num_drafts", st.n_drafts, "Verify steps that carried drafts"),
            ("spec_decode_num_draft_tokens", st.n_draft_tokens, "Draft tokens proposed (all drafters)"),
            ("spec_decode_num_accepted_tokens", st.n_accepted, "Draft tokens accepted"),
        ):
            yield CounterMetricFamily(PREFIX + name, doc, value=value)
        per_pos = CounterMetricFamily(PREFIX + "spec_decode_num_accepted_tokens_per_pos",
                                      "Accepted draft tokens by draft position", labels=["position"])
        for pos, n in enumerate(st.accepted_per_pos):
            per_pos.add_metric([str(pos)], n)
        yield per_pos
        yield from _per_drafter(st.by_drafter)
        sched = self.engine.scheduler
        yield GaugeMetricFamily(PREFIX + "num_requests_running", "Requests holding a slot", value=len(sched.active))
        yield GaugeMetricFamily(PREFIX + "num_requests_waiting", "Requests waiting for a slot", value=len(sched.waiting))


def _per_drafter(by_drafter: dict):
    """The same counters per drafter (label `drafter`: mtp, ngram), accepted tokens also per position."""
    families = {key: CounterMetricFamily(PREFIX + f"spec_decode_drafter_{key}", doc, labels=["drafter"])
                for key, doc in (("num_drafts", "Verify steps that carried this drafter's drafts"),
                                 ("num_draft_tokens", "Draft tokens this drafter proposed"),
                                 ("num_accepted_tokens", "This drafter's draft tokens accepted"))}
    per_pos = CounterMetricFamily(PREFIX + "spec_decode_drafter_num_accepted_tokens_per_pos",
                                  "Accepted draft tokens by drafter and draft position", labels=["drafter", "position"])
    for name, c in sorted(by_drafter.items()):
        for key, value in (("num_drafts", c.n_drafts), ("num_draft_tokens", c.n_draft_tokens),
                           ("num_accepted_tokens", c.n_accepted)):
            families[key].add_metric([name], value)
        for pos, n in enumerate(c.accepted_per_pos):
            per_pos.add_metric([name, str(pos)], n)
    yield from families.values()
    yield per_pos


class Metrics:
    def __init__(self, engine):
        self.registry = CollectorRegistry()
        self.registry.register(EngineCollector(engine))
        self.requests = Counter(PREFIX + "requests", "Finished HTTP requests", ["endpoint", "status"],
                                registry=self.registry)
        self.ttft = Histogram(PREFIX + "time_to_first_token_seconds", "Time to first token", registry=self.registry,
                              buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.latency = Histogram(PREFIX + "e2e_request_latency_seconds", "Request latency", registry=self.registry,
                                 buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))

    def render(self) -> bytes:
        return generate_latest(self.registry)
