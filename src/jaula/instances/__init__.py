"""Instances: the model (`model.py`), its settings (`settings.py`) and one driver per kind
behind one interface (`driver.py`; containers in `container.py`)."""
