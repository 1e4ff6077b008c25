"""Whole-slide inference: a patch classifier over slides into probability maps and regions."""
