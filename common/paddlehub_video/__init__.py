"""paddlehub_video: the shared layer of the videotag_tsn_lstm and stnet_kinetics400 modules.

Data flows one way: path -> frames (`decode`) -> tensor (`decode.preprocess`) -> predictor
(`model`) -> probabilities -> result dict (`model.postprocess`). `module_base` and `pipeline` run a
call; `interfaces` are the ways in (`hub run`, `hub serving`, Ray).
"""
from . import _moved

__version__ = "0.1.0"

_moved.install()
