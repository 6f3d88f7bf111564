"""Slice VAE training: losses, the 3D patch discriminator, and the two-stage trainer."""
