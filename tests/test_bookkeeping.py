"""Pure-Python bookkeeping: the adaptive draft-length tuner, the scheduler, statistics."""

from nextn.engine.params import SamplingParams
from nextn.engine.scheduler import Scheduler
from nextn.engine.sequence import Sequence, SpecConfig, Status
from nextn.engine.stats import SpecStats
from nextn.engine.tuner import Acceptance, KTuner


def _tuner(trunk: dict, draft: float, k_max=3, explore_every=10**9) -> KTuner:
    t = KTuner(k_max, explore_every=explore_every)
    for T, secs in trunk.items():
        for _ in range(5):
            t.costs.observe_trunk(1, T, secs)
    t.costs.observe_draft(1, 1, draft)
    return t


def _acceptance(rate: float, n=200) -> Acceptance:
    a = Acceptance(3)
    for i in range(n):
        accepted = 0
        while accepted < 3 and (i * 7 + accepted * 13) % 100 < rate * 100:
            accepted += 1
        a.update(3, accepted)
    return a


def test_measures_plain_then_drafting_first():
    t = KTuner(3)
    assert t.choose([Acceptance(3)]) == 0
    t.costs.observe_trunk(1, 1, 0.01)
    assert t.choose([Acceptance(3)]) == 3


def test_high_acceptance_and_cheap_verification_drafts_the_most():
    t = _tuner({1: 0.010, 2: 0.0105, 3: 0.011, 4: 0.0115}, draft=0.001)
    assert t.choose([_acceptance(0.9)]) == 3


def test_useless_drafts_turn_speculation_off():
    t = _tuner({1: 0.010, 2: 0.014, 3: 0.018, 4: 0.022}, draft=0.002)
    assert t.choose([_acceptance(0.0)]) == 0


def test_expensive_verification_limits_k():
    t = _tuner({1: 0.010, 2: 0.011, 3: 0.030, 4: 0.040}, draft=0.001)
    assert t.choose([_acceptance(0.8)]) == 1


def test_the_heads_catch_up_is_a_cost_of_drafting():
    """Before drafting, the head runs the pairs the last step committed: a step cost that k = 0 avoids."""
    t = _tuner({1: 0.010, 2: 0.012, 3: 0.014, 4: 0.016}, draft=0.001)
    assert t.choose([_acceptance(0.5)]) > 0
    for _ in range(5):
        t.costs.observe_catch_up(1, 0.010)
    assert t.choose([_acceptance(0.5)]) == 0


def test_whole_steps_as_timed_overrule_the_cost_model():
    """Acceptance, commit and bookkeeping are outside the component model: once steps of a given k have
    been timed whole, their wall time decides."""
    t = _tuner({1: 0.010, 2: 0.012, 3: 0.014, 4: 0.016}, draft=0.001)
    good = _acceptance(0.5)
    assert t.choose([good]) > 0                       # the model says drafting pays
    for k, secs in ((0, 0.010), (1, 0.020), (2, 0.030), (3, 0.040)):
        for _ in range(2):
            t.costs.observe_step(1, k, secs)
    assert t.choose([good]) > 0                       # two samples are not enough to overrule it
    for k, secs in ((0, 0.010), (1, 0.020), (2, 0.030), (3, 0.040)):
        t.costs.observe_step(1, k, secs)
    assert t.choose([good]) == 0                      # measured: every k loses to plain decoding
    for _ in range(10):
        t.costs.observe_step(1, 2, 0.012)
    assert t.choose([good]) == 2


def test_one_outlier_does_not_freeze_a_choice():
    t = _tuner({1: 0.010, 2: 0.0105, 3: 0.011, 4: 0.0115}, draft=0.001)
    t.costs.observe_trunk(1, 4, 0.5)           # a scheduler hiccup
    assert t.choose([_acceptance(0.9)]) == 3


def test_exploration_revisits_a_neighbour_less_often_while_the_choice_holds():
    t = _tuner({1: 0.010, 2: 0.014, 3: 0.018, 4: 0.022}, draft=0.002, explore_every=4)
    t.explore_max = 16
    picks = [t.choose([_acceptance(0.0)]) for _ in range(80)]
    explored = [i + 1 for i, k in enumerate(picks) if k]
    assert set(picks) == {0, 1}
    assert explored == [5, 13, 29, 45, 61, 77]        # gaps 8, 16, then capped at 16
    good = _acceptance(0.9)
    assert t.choose([good]) > 0 and t._interval == 4    # a new choice: look around soon again


def test_new_requests_start_from_the_models_recent_acceptance():
    t = KTuner(3)
    assert abs(t.new_acceptance(3).rate(0) - 0.7) < 1e-9      # nothing seen yet: optimistic
    for _ in range(100):
        t.observe(3, 0)
    a = t.new_acceptance(3)
    assert a.rate(0) < 0.1 and a.expected_tokens(3) < 1.1
    for _ in range(200):
        t.observe(3, 3)
    assert t.new_acceptance(2).rate(1) > 0.9


def test_acceptance_is_conditional_per_position():
    a = Acceptance(3, prior=0.5, weight=1e-9)
    for _ in range(10):
        a.update(3, 1)            # first kept, second rejected, third never reached
    assert a.rate(0) > 0.99 and a.rate(1) < 0.01 and abs(a.rate(2) - 0.5) < 1e-6
    assert abs(a.expected_tokens(3) - 2.0) < 1e-6


def test_scheduler_admits_within_slots_and_batches_prefill():
    sched = Scheduler(n_slots=2, prefill_chunk=100)
    seqs = [Sequence(list(range(n)), SamplingParams(), SpecConfig()) for n in (60, 70, 10)]
    for s in seqs:
        sched.add(s)
    plan = sched.schedule()
    assert plan.prefill == seqs[:2] and plan.prefill_tokens == [60, 40] and not plan.decode
    assert sorted(s.slot for s in seqs[:2]) == [0, 1] and seqs[2].status == Status.WAITING
    seqs[0].num_cached, seqs[0].status = 60, Status.DECODE
    seqs[1].num_cached = 40
    plan = sched.schedule()
    assert plan.prefill == [seqs[1]] and plan.prefill_tokens == [30] and plan.decode == [seqs[0]]
    seqs[0].cancelled = True
    sched.schedule()
    assert sched.release_finished() == [seqs[0]] and seqs[0].finish_reason == "cancelled"
    plan = sched.schedule()
    assert seqs[2] in plan.prefill and seqs[2].slot == seqs[0].slot


def test_stats_merge_and_rates():
    a, b = SpecStats(), SpecStats()
    a.record(3, 2)
    a.record(3, 0)
    b.record(2, 2)
    b.record(0, 0)
    a.merge(b)
    assert (a.n_drafts, a.n_draft_tokens, a.n_accepted, a.n_steps) == (3, 8, 4, 4)
    assert a.drafted_per_pos == [3, 3, 2] and a.accepted_per_pos == [2, 2, 0]
    assert a.acceptance_rate == 0.5 and abs(a.mean_accepted_length - (1 + 4 / 3)) < 1e-9


def test_step_breakdown_accounts_for_the_wall_time():
    st = SpecStats()
    st.record(3, 1)
    st.add_step(0.010, draft=0.001, catch_up=0.002, verify=0.005, commit=0.001)
    st.record(0, 0)
    st.add_step(0.006, draft=0.0, catch_up=0.0, verify=0.005, commit=0.0005)
    ms = st.step_ms
    assert ms == {"draft": 0.5, "catch_up": 1.0, "verify": 5.0, "commit": 0.75, "other": 0.75}
    assert abs(sum(ms.values()) - 1e3 * st.decode_seconds / st.n_steps) < 1e-9
    other = SpecStats()
    other.merge(st)
    assert other.step_ms == ms and other.to_dict()["step_ms"] == ms


def test_exploration_remeasures_plain_decoding_too():
    """A choice of k > 0 revisits its neighbours and k = 0 in turn: a plain-step cost measured once (in a
    request's cold first steps) must not keep speculation on for good."""
    t = _tuner({1: 0.010, 2: 0.0105, 3: 0.011, 4: 0.0115}, draft=0.001, explore_every=2)
    t.explore_max = 4
    picks = [t.choose([_acceptance(0.9)]) for _ in range(40)]
    assert picks.count(3) >= 30 and {0, 2} <= set(picks) <= {0, 2, 3}
    t = _tuner({1: 0.010, 2: 0.011, 3: 0.030, 4: 0.040}, draft=0.001, explore_every=2)
    t.explore_max = 4
    picks = [t.choose([_acceptance(0.8)]) for _ in range(40)]
    assert picks.count(1) >= 30 and {0, 2} <= set(picks)
    assert [KTuner(3, k_min=2).revisit(0, i) for i in range(3)] == [2, 2, 2]     # k_min bounds the neighbour


def test_from_plain_decoding_the_runner_up_is_revisited_not_only_k1():
    """k = 1 may be the one draft length that never pays (verify cost ~ a second step): exploring away from
    k = 0 must also try the draft length the model ranks next."""
    t = _tuner({1: 0.010, 2: 0.019, 3: 0.020, 4: 0.021}, draft=0.0005, explore_every=2)
    t.explore_max = 4
    for k, secs in ((0, 0.010), (1, 0.0195), (2, 0.0205), (3, 0.0225)):
        for _ in range(3):
            t.costs.observe_step(1, k, secs)
    a = _acceptance(0.55)
    picks = [t.choose([a]) for _ in range(30)]
    assert picks.count(0) >= 20 and 3 in picks          # 3 ranks second: 2.19 tokens in 2.25 steps


def test_evidence_fades_while_not_drafting():
    """A request whose first drafts failed gets back to the model's overall acceptance after plain steps."""
    a = Acceptance(3, prior=0.8)
    for _ in range(3):
        a.update(3, 0)
    low = a.rate(0)
    for _ in range(60):
        a.relax()
    assert low < 0.5 < a.rate(0) and abs(a.rate(0) - 0.8) < 0.1
