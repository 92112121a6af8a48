"""The audited latent diffusion models: where a model comes from (:mod:`.sources`), loading it
(:mod:`.loading`), LoRA adapters (:mod:`.lora_files`, :mod:`.lora_plan`, :mod:`.lora_apply`), the
analysed latents (:mod:`.latents`), the noise-prediction view the attacks use
(:mod:`.noise_prediction`), and the image encoder of the blind baseline (:mod:`.blind_encoder`).

Import the submodules themselves; this package imports none of them (they load torch).
"""
