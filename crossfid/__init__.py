"""crossfid: multi-fidelity DFT data curation, CHGNet cross-fidelity fine-tuning and benchmarks.

Data lives in PostgreSQL (an embedded server by default); see ``crossfid.db``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("crossfid")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
