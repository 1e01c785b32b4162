"""paddlehub_video: the shared layer of the videotag_tsn_lstm and stnet_kinetics400 modules.

Data flows one way: path -> frames (video) -> tensor (preprocess) -> predictor -> probabilities
-> result dict (postprocess). Model files come from `assets` and are turned into Paddle Inference
models by `inference_model`.
"""

__version__ = "0.1.0"
