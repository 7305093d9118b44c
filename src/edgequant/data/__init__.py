"""Calibration and evaluation data: every format is one small adapter to ``CalibrationSource``.

``open_source`` opens any supported data (see ``edgequant.data.open``) for a model's inputs
(``input_specs``); ``synthetic`` makes random data when there is none; ``load_labels`` gives the
labels of the samples a source yields, for evaluation.
"""

from edgequant.data.base import Batch, CalibrationSource, InputSpec, SourceStats, check_batch
from edgequant.data.model_inputs import input_specs
from edgequant.data.open import load_labels, open_source
from edgequant.data.options import SourceOptions
from edgequant.data.source import IndexedSource, StreamSource
from edgequant.data.synthetic import synthetic

__all__ = [
    "Batch",
    "CalibrationSource",
    "IndexedSource",
    "InputSpec",
    "SourceOptions",
    "SourceStats",
    "StreamSource",
    "check_batch",
    "input_specs",
    "load_labels",
    "open_source",
    "synthetic",
]
