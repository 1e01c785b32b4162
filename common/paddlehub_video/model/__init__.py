"""The model: files -> Paddle Inference predictor -> probabilities -> labels.

`assets` (fetching and caching the publisher's files), `weights` (reading `.pdparams`),
`networks` (the static-graph programs), `inference_model` (conversion, once), `predictor` (Paddle
Inference), `postprocess` (probabilities -> top-k labels). Independent of `paddlehub_video.decode`.
"""
