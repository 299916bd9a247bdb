"""Looking inside a model: per-layer shapes, parameters, MACs and receptive fields, and pictures.

Pure functions returning arrays, each jit-compiled and taking batches, for any zoo model
(`cnnjax.models.create`); the figures are kept apart in `plots`, the one module here that
imports matplotlib. Import the modules themselves (this package imports none of them):

  summary          per-layer output shapes, parameters, MACs, receptive field size and jump
  network          the spatial network of any model (classifier, embedding net, detector
                   backbone, U-Net) and its named feature maps
  receptive_field  theoretical receptive field of each unit of a feature map
  gradients        Grad-CAM, saliency, SmoothGrad, effective receptive field
  filters          the first convolution's kernels as images, per-layer kernel norms
  outputs          top-k, confusion matrix, nearest neighbours, strongest channels
  plots            matplotlib figures of the above
  show             `cnnjax show KIND --workdir=D`: a restored run drawn as one PNG
"""
