"""Configuration: the dataclass schemas (`schema`, the only place a default lives), Hydra
composition (`compose`), the eval command's config (`eval_config`) and the recipe listing."""
