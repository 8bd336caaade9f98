"""``make demo``: a simulated call floor against the real services.

CRMs post leads through intake's signed webhook, agents loop next-lead →
outcome with chances that depend on the attempt number, and the report shows
the metrics service's penetration, speed to lead and the attempt at which
deals closed beside the demo's own tally. ``docs/demo.md`` explains it.

``model``, ``places``, ``crm``, ``tally`` and ``report`` are pure; ``floor``
does the HTTP and ``stack`` finds or starts the stack.
"""
