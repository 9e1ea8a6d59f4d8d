"""Pure decisions: phases, cutoffs, suppression, limits, retries. No I/O, clock or logging."""
