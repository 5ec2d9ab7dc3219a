"""Using synthetic EGMs: the BSPM -> EGM reconstruction network and the augmentation experiment
of notebook 05, beside the classical Tikhonov solution. Imports the layers below it.

- :mod:`egmlib.augmentation.recon`     the dual-branch reconstruction VAE, its loss and training
- :mod:`egmlib.augmentation.augment`   one augmentation run: pairs, training, evaluation
- :mod:`egmlib.augmentation.baselines` Tikhonov and the floor on the same test BSPMs
- :mod:`egmlib.augmentation.linear`    a learned linear correction of Tikhonov (no network)
- :mod:`egmlib.augmentation.residual`  a residual network on that correction
"""
