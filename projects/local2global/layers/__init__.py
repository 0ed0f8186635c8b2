"""Building blocks with no model semantics: kernels and tensor utilities the models share.

==========================  ==================================================================================
module                      what it holds
==========================  ==================================================================================
``ms_deform_attn``          multi-scale deformable attention: the reference, the pure-PyTorch fast path and the
                            probed compiled kernels, with the fallback between them
``box_ops``                 box conversions (``torchvision.ops`` where the numerics agree), MaskDINO's GIoU,
                            ``inverse_sigmoid``, the box sine embedding, ``mask2box``
``point_sampling``          ``point_sample`` and uncertainty-based point selection (detectron2's), mask resizing
``position_encoding``       the sine positional embedding of feature maps
``activation``              activation by name
==========================  ==================================================================================
"""
