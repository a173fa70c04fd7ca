"""One-off studies: each answers one question about a lever or a ceiling.

Their committed results are under benchmarks/results/.
"""
