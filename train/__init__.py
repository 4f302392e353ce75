"""Training engine for ddakern models: `python -m train.run` (see train/run.py).

The library `ddakern` never imports this package.
"""
