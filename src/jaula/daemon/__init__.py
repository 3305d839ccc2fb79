"""`jaulad`, the daemon: REST API, long operations, event stream, supervision of instances.

Its state lives in one SQLite database (`db.py`, schema in `migrations.py`, records in
`models.py`): the source of truth for instances, profiles, templates, operations and events.
"""
