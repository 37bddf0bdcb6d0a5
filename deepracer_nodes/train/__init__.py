"""Training the bundled camera policy: random tracks, expert labels, DAgger, export.

Everything here except network.py, trainer.py and export.py is plain numpy/OpenCV, so
data collection, labelling and evaluation run (and are tested) without PyTorch.
"""
