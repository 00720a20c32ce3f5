"""The documentation's recipes: each file is included by a page under docs/recipes/ and
imported by tests/test_recipes.py, so what the page shows is what the test runs."""
