"""Experience Reconstruction: a teacher model turns a profile into scenes and experiences."""
