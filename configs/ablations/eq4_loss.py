"""The paper's Eq. 4 as the whole loss: focal class + mask BCE + dice of the final decoder layer, per frame.

MaskDINO's recipe (the default) adds deep supervision of every decoder layer, the encoder's top-K token loss and box
L1 / GIoU; Eq. 4 writes none of them. Reduced supervision stays on (the paper applies it to Eq. 4). See README.md.
"""

from ..local2global_r50_ytvis19 import dataloader, lr_multiplier, model, optimizer, train

model.criterion.deep_supervision = False
model.criterion.interm_loss = False
model.criterion.box_loss = False
train.output_dir = "./output/ablations/eq4_loss"
