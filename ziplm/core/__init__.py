"""Pure torch + numpy core: Hessians, structured OBS, levels database, latency model, search, losses.

This package must not import lightning, hydra, omegaconf, wandb or transformers (a test enforces it).
"""
