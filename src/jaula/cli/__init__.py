"""`jaula`, the human CLI (main.py): a client of jaulad."""
