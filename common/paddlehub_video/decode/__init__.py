"""Decoding: path -> the sampled frames, and the pixel work before the model.

`sampling` (which frame indices a model reads), `video` (which decoder for which file),
`packet_plan` and `bitstream` (decoding only the packets the sampled frames depend on),
`av_sequential` (PyAV frame by frame), `limits` (frame and pixel limits, probed before decoding),
`preprocess` (scale, crop and normalise). Independent of `paddlehub_video.model`.
"""
