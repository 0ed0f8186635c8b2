"""The per-frame segmenter (detrex-parity MaskDINO): ``backbone`` (ResNet glue), ``pixel_decoder`` (the deformable
encoder ``deformable_encoder`` + mask features), ``decoder`` (MaskDINO's decoder on ``deformable_decoder`` layers,
``query_selection`` of the top-K encoder tokens, ``denoising`` queries). Every tracker shares it unchanged."""
