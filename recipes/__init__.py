"""Recipes: short scripts that train real models with the public toolkit API (see docs/recipes.md)."""
