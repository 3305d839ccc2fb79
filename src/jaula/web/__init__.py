"""The web control center: served by jaulad on its own loopback listener (`jaulad --web`), with
login by the API token or a password, sessions kept in jaulad's database and CSRF checks (gate.py)."""
