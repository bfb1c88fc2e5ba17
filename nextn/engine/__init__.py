"""The engine: requests, scheduling, speculative decode steps, sampling and statistics. Pure-Python
bookkeeping (sequence, scheduler, tuner, stats, params) is kept apart from the tensor code (runner,
sampling)."""
