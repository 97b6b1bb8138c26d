"""Everything that makes a model (JAX trainer, data, configs, export, card); nothing the decoder needs."""
