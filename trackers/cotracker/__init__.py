"""CoTracker3 in PyTorch, written for samtrack: the model (:mod:`.modeling`), the builder
registry (:mod:`.build`) and the official predictors' pre- and post-processing (:mod:`.predictor`).
Needs the ``samtrack[torch]`` extra."""
