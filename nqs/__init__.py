"""nqs: autoregressive neural quantum states for ab initio quantum chemistry, and their scaling laws."""
__version__ = "0.1.0"
