"""Image work that no provider owns: the packshot cut out of the product's own photo, the channels' rules and the
check of a stored image against them, the fidelity check of a generated image, and provenance metadata."""
