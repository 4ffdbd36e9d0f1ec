"""The model layer: what generates images and carries LoRA adapters, below everything that uses it.

``backend`` (the ``FlowModel`` interface), ``sd3`` and ``mini`` (backends), ``models`` (the loader: hub ids, local
folders, built-in names; device and dtype resolution), ``tiny`` (an SD3 built from a config for offline tests),
``adapters`` (LoRA adapters by name), ``sampling`` (the SDE/ODE step, rollouts and their log-densities) and
``images`` (tensors to 8-bit images). It imports nothing of scorers, harness, trainer or service.
"""
