"""`canaria` and `kubectl canaria`: the operator's entry point and the day-2 commands.

The CLI reads resources through the core's API models and asks the core for its rules; it never re-derives
them.
"""
