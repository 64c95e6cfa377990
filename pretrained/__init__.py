"""Pretrained learned optimizers shipped with the package (installed as learned_optim.pretrained).

Each sub-folder ``NAME/`` holds ``model.safetensors`` and ``config.json`` written by the
MetaTrainer; ``config.json["provenance"]`` records how it was made.
"""
