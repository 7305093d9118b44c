"""Streaming calibration statistics with constant memory: observers and ``collect``.

``create_observer(method)`` gives a minmax, percentile, entropy (KL, Migacz 2017) or MSE (Banner et
al. 2019) observer; ``collect(model, source, tensors)`` streams batches through ONNX Runtime and
returns the range of every requested tensor, reading the source in several passes when fetching
all tensors at once would exceed the memory budget.
"""

from edgequant.observe.collect import CollectResult, collect
from edgequant.observe.histogram import PowerOfTwoHistogram
from edgequant.observe.observers import (
    METHODS,
    EntropyObserver,
    MinMaxObserver,
    MseObserver,
    Observer,
    PercentileObserver,
    create_observer,
)

__all__ = [
    "METHODS",
    "CollectResult",
    "EntropyObserver",
    "MinMaxObserver",
    "MseObserver",
    "Observer",
    "PercentileObserver",
    "PowerOfTwoHistogram",
    "collect",
    "create_observer",
]
