"""Model families (gan, vae, ...) behind one registry."""
