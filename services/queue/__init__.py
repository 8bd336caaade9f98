"""Queue service: shared, prioritized dialing pools that agents draw from.

Leads arrive on ``lead.received``, are routed to a pool and called until their
call target is met, spaced by the pool's cadence, only inside legal calling
hours in the lead's own zones and under the frequency caps.
"""
